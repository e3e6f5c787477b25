// cigate Link SDK: `CigateLink.authenticate(linkToken, options)` opens the Link page in
// a popup (default) or an iframe overlay (`iframe: true`) and resolves with
// `{ result: "success", integration: "buddy", integrated_account_id }`, or rejects with an
// Error carrying `error_type`. Messages are accepted only from cigate's origin and only
// from the window it opened.
(function (global) {
  'use strict';
  var script = document.currentScript;
  var defaultBase = script && script.src ? new URL(script.src).origin : window.location.origin;

  function fail(data) {
    var error = new Error(typeof data === 'string' ? data : (data && data.error) || 'failed');
    if (data && typeof data === 'object') {
      Object.keys(data).forEach(function (k) { error[k] = data[k]; });
    }
    return error;
  }

  function authenticate(linkToken, options) {
    options = options || {};
    var base = String(options.baseUrl || defaultBase).replace(/\/+$/, '');
    var url = new URL(base + '/connect-account');
    var origin = url.origin;
    url.searchParams.set('link_token', linkToken);
    if (options.integration) { url.searchParams.set('integration', options.integration); }
    if (options.authFormat) { url.searchParams.set('auth_format', options.authFormat); }
    if (options.noBack) { url.searchParams.set('no_back', 'true'); }
    if (options.iframe) { url.searchParams.set('iframe', 'true'); }
    if (options.sameWindow) {
      window.location.href = url.toString();
      return Promise.resolve('redirected');
    }
    return new Promise(function (resolve, reject) {
      var frame = null, popup = null, watcher = null, settled = false;
      function finish(ok, value) {
        if (settled) { return; }
        settled = true;
        window.removeEventListener('message', onMessage);
        if (watcher) { clearInterval(watcher); }
        if (frame && frame.parentNode) { frame.parentNode.removeChild(frame); }
        if (popup && !popup.closed) { popup.close(); }
        if (ok) { resolve(value); } else { reject(value); }
      }
      function onMessage(event) {
        if (event.origin !== origin) { return; }
        var source = frame ? frame.contentWindow : popup;
        if (event.source !== source) { return; }
        var data = event.data;
        if (data === 'closed') { finish(false, fail('closed')); return; }
        if (!data || typeof data !== 'object') { return; }
        if (data.error) { finish(false, fail(data)); return; }
        if (data.result === 'success') { finish(true, data); }
      }
      window.addEventListener('message', onMessage);
      if (options.iframe) {
        frame = document.createElement('iframe');
        frame.src = url.toString();
        frame.title = 'Connect your Buddy account';
        frame.setAttribute('style', 'position:fixed;inset:0;width:100%;height:100%;border:0;z-index:2147483647;background:rgba(0,0,0,.6)');
        document.body.appendChild(frame);
        frame.focus();
        return;
      }
      popup = window.open(url.toString(), 'cigate-connect', 'popup=yes,width=' + (options.width || 620) + ',height=' + (options.height || 780));
      if (!popup) { finish(false, fail('blocked')); return; }
      // A closed popup rejects, after a grace period for a message already on its way.
      watcher = setInterval(function () {
        if (popup.closed) {
          clearInterval(watcher);
          watcher = null;
          setTimeout(function () { finish(false, fail('closed')); }, 500);
        }
      }, 250);
    });
  }

  global.CigateLink = { authenticate: authenticate };
})(window);
