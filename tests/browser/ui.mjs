// Drives the operator dashboard (/ui) in Debian's headless Chromium the way an
// operator would: a wrong token first, then the right one; every page from the
// navigation, each checked with axe-core (no serious or critical violation) and kept
// as a screenshot; the metrics page's charts drawn; a job started through the API
// appearing on the open timeline by itself; signing out. Any console error or page
// error fails the run. Run by crates/cigate-server/tests/browser.rs; prints one JSON
// line with what it saw and exits non-zero on any failure.
//
// Environment: CIGATE_URL, API_TOKEN, RUN_JOB_PATH (the API path that starts a job of
// the linked account), ARTIFACTS (screenshot dir).
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { launch } from './chromium.mjs';

const require = createRequire(import.meta.url);
const TIMEOUT_MS = 30_000;
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const cfg = {
  cigate: env('CIGATE_URL').replace(/\/$/, ''),
  token: env('API_TOKEN'),
  runJob: env('RUN_JOB_PATH'),
  artifacts: env('ARTIFACTS'),
};
mkdirSync(cfg.artifacts, { recursive: true });

const problems = [];
// The one error a browser reports on purpose here: the wrong token's 401 page.
let expected401 = false;

async function shot(page, name) {
  await page.screenshot({ path: join(cfg.artifacts, `${name}.png`), fullPage: true });
}

/** axe-core on the page as it is now; serious and critical violations are failures. */
async function audit(page, name) {
  // Evaluated through DevTools, so the page's CSP (no inline script) does not apply.
  await page.evaluate(AXE);
  const result = await page.evaluate(async () =>
    // eslint-disable-next-line no-undef
    axe.run(document, { resultTypes: ['violations'] }),
  );
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  for (const v of bad) {
    problems.push(
      `${name}: axe ${v.impact} ${v.id} (${v.help}) at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`,
    );
  }
  return { page: name, violations: result.violations.length, serious_or_critical: bad.length };
}

async function visit(page, linkName, heading) {
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: linkName, exact: true }).click();
  await page.getByRole('heading', { level: 1, name: heading }).waitFor({ timeout: TIMEOUT_MS });
  const current = await page
    .getByRole('navigation', { name: 'Main' })
    .getByRole('link', { name: linkName, exact: true })
    .getAttribute('aria-current');
  if (current !== 'page') problems.push(`${linkName}: its navigation link is not marked current`);
}

const browser = await launch();
let code = 0;
const out = { audits: [] };
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    if (expected401 && /status of 401/.test(msg.text())) return;
    problems.push(`console error on ${page.url()}: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`page error on ${page.url()}: ${err.message}`));

  // Signed out, the dashboard asks for a token.
  await page.goto(`${cfg.cigate}/ui`);
  await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor();
  out.audits.push(await audit(page, 'sign-in'));
  await shot(page, '01-sign-in');

  // A wrong token is refused in words.
  expected401 = true;
  await page.getByLabel('API token').fill('cgt_this-is-not-a-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  const refusal = await page.getByRole('alert').textContent();
  expected401 = false;
  if (!/not accepted/.test(refusal || '')) problems.push(`wrong token: unexpected message ${refusal}`);
  out.wrong_token_message = refusal;
  out.audits.push(await audit(page, 'sign-in-refused'));
  await shot(page, '02-sign-in-refused');

  await page.getByLabel('API token').fill(cfg.token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
  const session = (await context.cookies()).find((c) => c.name === 'cigate_session');
  if (!session) throw new Error('no session cookie after signing in');
  out.cookie = { httpOnly: session.httpOnly, sameSite: session.sameSite, path: session.path };
  if (!session.httpOnly || session.sameSite !== 'Strict') problems.push(`session cookie ${JSON.stringify(out.cookie)}`);
  out.audits.push(await audit(page, 'overview'));
  await shot(page, '03-overview');

  await visit(page, 'Accounts', 'Accounts');
  out.accounts = await page.locator('tbody tr').count();
  out.tenant_shown = await page.getByRole('cell', { name: 'acme', exact: true }).count();
  out.audits.push(await audit(page, 'accounts'));
  await shot(page, '04-accounts');

  await visit(page, 'Timeline', 'Timeline');
  const statuses = page.locator('#timeline-rows .status');
  await statuses.first().waitFor();
  out.timeline_rows = await page.locator('#timeline-rows tr').count();
  out.timeline_first_status = (await statuses.first().textContent()).trim();
  out.audits.push(await audit(page, 'timeline'));
  await shot(page, '05-timeline');

  // A job started elsewhere appears on the open timeline (job events, no reload).
  const started = await fetch(`${cfg.cigate}${cfg.runJob}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${cfg.token}`, 'content-type': 'application/json' },
    body: '{}',
  });
  if (started.status !== 201) throw new Error(`starting a job answered ${started.status}: ${await started.text()}`);
  const job = await started.json();
  await page.getByText(/^Updated at /).waitFor({ timeout: TIMEOUT_MS });
  out.live_update = true;
  out.started_job = job.id;
  out.timeline_rows_after = await page.locator('#timeline-rows tr').count();
  await shot(page, '06-timeline-live');

  await visit(page, 'Metrics', 'Metrics');
  await page.locator('.canvas-box canvas').first().waitFor();
  out.charts = await page.locator('.canvas-box canvas').count();
  out.audits.push(await audit(page, 'metrics'));
  await shot(page, '07-metrics');
  // The README's picture: the first screen of the metrics page.
  await page.screenshot({ path: join(cfg.artifacts, 'readme-metrics.png') });

  await visit(page, 'Webhooks', 'Webhooks');
  out.subscriptions = await page.locator('section[aria-labelledby="subscriptions-heading"] tbody tr').count();
  await page.getByRole('button', { name: /^Send test event to / }).first().click();
  await page.getByRole('status').filter({ hasText: 'A test event was queued' }).waitFor();
  out.deliveries = await page.locator('section[aria-labelledby="deliveries-heading"] tbody tr').count();
  out.audits.push(await audit(page, 'webhooks'));
  await shot(page, '08-webhooks');

  // Keyboard: the skip link is the first stop and leads to the content.
  await page.keyboard.press('Tab');
  const first = await page.evaluate(() => document.activeElement && document.activeElement.textContent);
  if (first !== 'Skip to content') problems.push(`first Tab stop is ${first}`);

  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByText('You are signed out.').waitFor();
  await page.goto(`${cfg.cigate}/ui/accounts`);
  await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor();
  out.signed_out = true;

  // The API still wants a bearer token.
  out.api_without_token = (await fetch(`${cfg.cigate}/integrated-account`)).status;
  await context.close();
} catch (err) {
  problems.push(`failed: ${err && err.stack ? err.stack : err}`);
} finally {
  await browser.close();
}
if (problems.length) {
  console.error(problems.join('\n'));
  code = 1;
}
console.log(JSON.stringify(out));
process.exit(code);
