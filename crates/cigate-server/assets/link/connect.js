// cigate Link page behaviour: region field, popup/iframe results. No framework, no
// inline script (the page's CSP forbids it).
(function () {
  'use strict';
  function inPopup() {
    try { return !!window.opener && !window.opener.closed && window.opener !== window; } catch (e) { return false; }
  }
  function inFrame() {
    try { return window.parent !== window; } catch (e) { return true; }
  }
  // Delivers a result to whoever opened or embeds the page; false when nobody does.
  function deliver(message, origin) {
    if (inPopup()) {
      window.opener.postMessage(message, origin);
      setTimeout(function () { window.close(); }, 300);
      return true;
    }
    if (inFrame()) {
      window.parent.postMessage(message, origin);
      return true;
    }
    return false;
  }
  function onResult(el) {
    var d = el.dataset;
    var origin = d.targetOrigin || '*';
    if (d.result === 'success') {
      var message = { result: 'success', integration: 'buddy', integrated_account_id: d.accountId, source: 'cigate' };
      if (!deliver(message, origin) && d.redirect) {
        window.location.replace(d.redirect);
      }
      return;
    }
    var close = document.getElementById('cigate-close');
    if (close && (inPopup() || inFrame())) {
      close.hidden = false;
      close.addEventListener('click', function () {
        deliver({ error: d.error, error_type: d.errorType, integration: 'buddy', source: 'cigate' }, origin);
      });
    }
  }
  function onForm() {
    var box = document.getElementById('self-hosted');
    var url = document.getElementById('base_url');
    function sync() {
      var chosen = document.querySelector('input[name="region"]:checked');
      var selfHosted = !!chosen && chosen.value === 'self_hosted';
      if (box) { box.hidden = !selfHosted; }
      if (url) { url.required = selfHosted; }
    }
    var radios = document.querySelectorAll('input[name="region"]');
    for (var i = 0; i < radios.length; i++) { radios[i].addEventListener('change', sync); }
    sync();
    var error = document.getElementById('error');
    if (error) { error.focus(); }
    var cancel = document.getElementById('cigate-cancel');
    if (cancel && (inPopup() || inFrame())) {
      cancel.hidden = false;
      cancel.addEventListener('click', function () {
        if (inPopup()) { window.close(); } else { window.parent.postMessage('closed', '*'); }
      });
    }
  }
  function start() {
    var result = document.getElementById('cigate-result');
    if (result) { onResult(result); return; }
    var go = document.getElementById('cigate-continue');
    if (go && go.dataset.auto) { window.location.assign(go.href); return; }
    onForm();
  }
  if (document.readyState === 'loading') { document.addEventListener('DOMContentLoaded', start); } else { start(); }
})();
