// Drives the Link page in Debian's headless Chromium, the way an end customer would:
// (a) a personal access token, (b) OAuth through the simulator's auto-approve, and
// (c) Truto's published Link SDK, unmodified, in popup mode from a host page, and with a
// link token that names the Buddy (the simulator as a self-hosted Buddy): (d) through the
// SDK and (e) through OAuth, where the page must not ask where the account is.
// Run by crates/cigate-server/tests/browser.rs; prints one JSON line with the linked
// account ids and exits non-zero on any failure.
//
// Environment: CIGATE_URL, BUDDY_URL (the simulator, chosen as "self-hosted"),
// LINK_URL_TOKEN, LINK_URL_OAUTH, BUDDY_TOKEN, SDK_LINK_TOKEN, and for the link tokens
// that carry `context.base_url` SDK_NAMED_LINK_TOKEN, LINK_URL_NAMED_OAUTH; ARTIFACTS
// (screenshot dir).
import { createServer } from 'node:http';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { launch } from './chromium.mjs';

const require = createRequire(import.meta.url);
const TIMEOUT_MS = 30_000;

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const cfg = {
  cigate: env('CIGATE_URL').replace(/\/$/, ''),
  buddy: env('BUDDY_URL'),
  linkToken: env('LINK_URL_TOKEN'),
  linkOauth: env('LINK_URL_OAUTH'),
  buddyToken: env('BUDDY_TOKEN'),
  sdkLinkToken: env('SDK_LINK_TOKEN'),
  sdkNamedLinkToken: env('SDK_NAMED_LINK_TOKEN'),
  linkNamedOauth: env('LINK_URL_NAMED_OAUTH'),
  artifacts: env('ARTIFACTS'),
};
mkdirSync(cfg.artifacts, { recursive: true });

async function shot(page, name) {
  await page.screenshot({ path: join(cfg.artifacts, `${name}.png`), fullPage: true });
}

/** The account id the success page carries, after checking it is a success. */
async function successAccount(page) {
  const result = page.locator('#cigate-result');
  await result.waitFor({ state: 'attached', timeout: TIMEOUT_MS });
  const outcome = await result.getAttribute('data-result');
  const message = await page.locator('#message').textContent();
  if (outcome !== 'success') throw new Error(`Link page ended in ${outcome}: ${message}`);
  const id = await result.getAttribute('data-account-id');
  if (!id) throw new Error('success page without an account id');
  return id;
}

/** Picks "Self-hosted Buddy" and types the simulator's address, as a user would. */
async function chooseSelfHosted(page) {
  await page.getByLabel('Self-hosted Buddy').check();
  await page.getByLabel('Address of your Buddy API').fill(cfg.buddy);
}

/** Checks the page names the simulator and offers no region choice. */
async function expectNamedBuddy(page) {
  const pickers = await page.locator('input[name="region"], input[name="base_url"]').count();
  if (pickers !== 0) throw new Error('the page asks where the account is, though the link token says');
  const where = (await page.locator('#buddy-location').textContent()) || '';
  const buddy = cfg.buddy.replace(/\/$/, '');
  if (!where.includes(`Self-hosted Buddy at ${buddy}`)) {
    throw new Error(`the page names "${where.trim()}", not the simulator ${buddy}`);
  }
}

async function linkWithToken(context) {
  const page = await context.newPage();
  await page.goto(cfg.linkToken);
  await shot(page, 'a1-token-link-page');
  await chooseSelfHosted(page);
  await page.getByLabel('Personal access token', { exact: true }).fill(cfg.buddyToken);
  await shot(page, 'a2-token-filled');
  await Promise.all([
    page.waitForURL(/\/connect\/token/, { timeout: TIMEOUT_MS }),
    page.getByRole('button', { name: 'Connect with token' }).click(),
  ]);
  const id = await successAccount(page);
  await shot(page, 'a3-token-success');
  await page.close();
  return id;
}

async function linkWithOauth(context, { url, named, shots }) {
  const page = await context.newPage();
  const visited = [];
  // Requests, not navigations: Buddy's authorize answers with a redirect.
  page.on('request', (request) => {
    if (request.isNavigationRequest()) visited.push(new URL(request.url()).pathname);
  });
  await page.goto(url);
  await shot(page, shots[0]);
  if (named) await expectNamedBuddy(page);
  else await chooseSelfHosted(page);
  await page.getByRole('button', { name: 'Connect with Buddy' }).click();
  // The interstitial continues to Buddy on its own; the simulator approves and sends
  // the browser back to /oauth/callback, which renders the success page.
  await page.waitForURL(/\/oauth\/callback/, { timeout: TIMEOUT_MS });
  const id = await successAccount(page);
  await shot(page, shots[1]);
  if (!visited.some((p) => p.endsWith('/oauth2/authorize'))) {
    throw new Error(`OAuth never reached the authorize endpoint: ${visited.join(' -> ')}`);
  }
  await page.close();
  return id;
}

/** Serves a host page that loads Truto's Link SDK as published (its dist bundle). */
async function hostServer() {
  const sdkPath = require.resolve('@truto/truto-link-sdk');
  const sdk = readFileSync(sdkPath);
  const html = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Host app</title></head>
<body><h1>Host app</h1><button id="connect" type="button">Connect Buddy</button><pre id="out"></pre>
<script type="module">
import authenticate from '/truto-link-sdk.js';
document.getElementById('connect').addEventListener('click', () => {
  const link = new URLSearchParams(location.search).get('link_token');
  const base = new URLSearchParams(location.search).get('base_url');
  authenticate(link, { baseUrl: base, iframe: false }).then(
    (r) => { window.__linkResult = { ok: r }; document.getElementById('out').textContent = JSON.stringify(r); },
    (e) => { window.__linkResult = { err: String(e && (e.message || e.error) || e) }; document.getElementById('out').textContent = 'error: ' + window.__linkResult.err; },
  );
});
window.__sdkReady = true;
</script></body></html>`;
  const server = createServer((req, res) => {
    const path = new URL(req.url, 'http://host').pathname;
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(html);
    } else if (path === '/truto-link-sdk.js') {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' });
      res.end(sdk);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

async function linkWithSdk(context, { linkToken, named, shots }) {
  const server = await hostServer();
  try {
    const { port } = server.address();
    const page = await context.newPage();
    const host = new URL(`http://127.0.0.1:${port}/`);
    host.searchParams.set('link_token', linkToken);
    host.searchParams.set('base_url', cfg.cigate);
    await page.goto(host.toString());
    await page.waitForFunction(() => window.__sdkReady === true, null, { timeout: TIMEOUT_MS });
    const [popup] = await Promise.all([
      page.waitForEvent('popup', { timeout: TIMEOUT_MS }),
      page.getByRole('button', { name: 'Connect Buddy' }).click(),
    ]);
    await popup.waitForLoadState();
    if (!new URL(popup.url()).pathname.endsWith('/connect-account')) {
      throw new Error(`the SDK opened ${popup.url()}`);
    }
    await shot(popup, shots[0]);
    if (named) await expectNamedBuddy(popup);
    else await chooseSelfHosted(popup);
    await popup.getByLabel('Personal access token', { exact: true }).fill(cfg.buddyToken);
    await popup.getByRole('button', { name: 'Connect with token' }).click();
    // The popup posts its result to the opener and closes itself; the SDK's promise
    // settles in the host page.
    await page.waitForFunction(() => window.__linkResult !== undefined, null, { timeout: TIMEOUT_MS });
    const outcome = await page.evaluate(() => window.__linkResult);
    await shot(page, shots[1]);
    if (!outcome.ok) throw new Error(`the SDK's promise was rejected: ${outcome.err}`);
    const { result, integration, integrated_account_id: id } = outcome.ok;
    if (result !== 'success' || integration !== 'buddy' || !id) {
      throw new Error(`the SDK resolved with ${JSON.stringify(outcome.ok)}`);
    }
    await page.close();
    return id;
  } finally {
    server.close();
  }
}

const browser = await launch();
let code = 0;
try {
  const context = await browser.newContext({ viewport: { width: 800, height: 900 } });
  context.setDefaultTimeout(TIMEOUT_MS);
  const only = (process.env.FLOWS || 'token,oauth,sdk,named_sdk,named_oauth').split(',');
  const out = {};
  if (only.includes('token')) out.token = await linkWithToken(context);
  if (only.includes('oauth')) {
    out.oauth = await linkWithOauth(context, {
      url: cfg.linkOauth, named: false, shots: ['b1-oauth-link-page', 'b2-oauth-success'],
    });
  }
  if (only.includes('sdk')) {
    out.sdk = await linkWithSdk(context, {
      linkToken: cfg.sdkLinkToken, named: false, shots: ['c1-sdk-popup', 'c2-sdk-host-resolved'],
    });
  }
  if (only.includes('named_sdk')) {
    out.named_sdk = await linkWithSdk(context, {
      linkToken: cfg.sdkNamedLinkToken, named: true,
      shots: ['d1-named-sdk-popup', 'd2-named-sdk-host-resolved'],
    });
  }
  if (only.includes('named_oauth')) {
    out.named_oauth = await linkWithOauth(context, {
      url: cfg.linkNamedOauth, named: true,
      shots: ['e1-named-oauth-link-page', 'e2-named-oauth-success'],
    });
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
} catch (error) {
  console.error(`browser flow failed: ${error && error.stack ? error.stack : error}`);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
