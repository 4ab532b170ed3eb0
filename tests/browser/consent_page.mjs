// End-to-end test of local-api's consent screen in headless Chromium (playwright-core, the
// system's /usr/bin/chromium). scripts/browser-test starts local-api and passes:
//   BASE_URL     where local-api listens, e.g. http://127.0.0.1:41234
//   AGENT_TOKEN  an identity token of a support agent (local-api dev-token --groups support)
//   SCREENSHOT   where to save a full-page screenshot at the end
// It starts nothing but Chromium. Every wait is bounded; any failed check exits 1 naming it.

import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';

const BASE_URL = requiredEnv('BASE_URL').replace(/\/$/, '');
const AGENT_TOKEN = requiredEnv('AGENT_TOKEN');
const SCREENSHOT = process.env.SCREENSHOT || 'target/artifacts/consent-page.png';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const STEP_MS = 10_000; // any one wait in the page
const FETCH_MS = 10_000; // any one API call from node
const TOTAL_MS = 180_000; // the whole test

const AGENT = jwtSub(AGENT_TOKEN);
const USER = 'page-user-' + randomBytes(6).toString('hex');
// API 404s the page expects and handles (no consent yet; access requests not on this server).
const EXPECTED_404 = [/\/consents\/current$/, /\/me\/access-requests$/];

function requiredEnv(name) {
  const value = process.env[name];
  if (!value) fail(`${name} is not set (run scripts/browser-test, which starts local-api and sets it)`);
  return value;
}

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

function jwtSub(token) {
  try {
    return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')).sub;
  } catch {
    fail('AGENT_TOKEN is not a JWT');
  }
}

class CheckFailed extends Error {}

function check(condition, message) {
  if (!condition) throw new CheckFailed(message);
}

let step = 'start';
function log(message) {
  step = message;
  console.log(`-- ${message}`);
}

/** An API call from node (as the agent, or with another token), bounded. */
async function apiCall(method, path, body, token = AGENT_TOKEN) {
  const res = await fetch(BASE_URL + path, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(FETCH_MS),
  });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  return { status: res.status, json, text };
}

async function main() {
  const userDataDir = mkdtempSync(join(tmpdir(), 'consent-page-chromium-'));
  let context;
  const problems = []; // console errors, page errors and CSP violations
  let badSignInExpected = false; // the one deliberate 400, from the bad user id
  try {
    log(`launching ${CHROMIUM}`);
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      timeout: 60_000,
      viewport: { width: 1100, height: 900 },
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    context.setDefaultTimeout(STEP_MS);
    context.setDefaultNavigationTimeout(15_000);
    // CSP violations reach the console as errors too; this catches them even if not.
    await context.addInitScript(() => {
      window.__cspViolations = [];
      document.addEventListener('securitypolicyviolation', (e) => {
        window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || '(inline)'}`);
      });
    });
    const page = context.pages()[0] || (await context.newPage());
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      const url = msg.location().url || '';
      const expected404 =
        /status of 404/.test(msg.text()) && EXPECTED_404.some((re) => re.test(new URL(url, BASE_URL).pathname));
      const expected400 = badSignInExpected && /status of 400/.test(msg.text()) && url.endsWith('/dev/sign-in');
      if (!expected404 && !expected400) problems.push(`console error: ${msg.text()} (${url})`);
    });
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));

    const status = page.locator('#status');
    const errorBox = page.locator('#error');
    const logRows = page.locator('#log-body tr');
    const requests = page.locator('#requests li.request');

    // The agent files a request for USER; the page shows it after a refresh.
    const fileRequest = async (reason, scope, durationSeconds) => {
      const filed = await apiCall('POST', '/access-requests', {
        user_id: USER,
        reason,
        scope,
        duration_seconds: durationSeconds,
      });
      check(filed.status === 201, `POST /access-requests answered ${filed.status}: ${filed.text}`);
      await page.click('#refresh');
      const shown = requests.filter({ hasText: reason.split(':')[0] });
      await shown.waitFor();
      return shown;
    };

    const expectNoErrorShown = async (what) => {
      check(await errorBox.isHidden(), `${what}: the page shows an error: ${await errorBox.textContent()}`);
    };

    log('open the page');
    const response = await page.goto(BASE_URL + '/');
    check(response && response.status() === 200, `GET / answered ${response && response.status()}`);
    const csp = response.headers()['content-security-policy'] || '';
    check(csp.includes("default-src 'none'") && csp.includes("script-src 'self'"), `weak or no CSP: ${csp}`);
    await page.locator('#sign-in-sub').waitFor({ state: 'visible' });

    log('a bad user id is refused with the problem detail');
    badSignInExpected = true;
    await page.fill('#sign-in-sub', 'no spaces allowed');
    await page.click('#sign-in-form button[type="submit"]');
    await errorBox.waitFor({ state: 'visible' });
    check(/user id/i.test(await errorBox.textContent()), `unexpected sign-in error: ${await errorBox.textContent()}`);
    badSignInExpected = false;

    log(`sign in as ${USER}`);
    await page.fill('#sign-in-sub', USER);
    await page.click('#sign-in-form button[type="submit"]');
    await page.locator('#who').filter({ hasText: USER }).waitFor();
    await page.locator('#consent-none').waitFor({ state: 'visible' });
    await page.locator('#requests-none').waitFor({ state: 'visible' });
    await expectNoErrorShown('after sign-in');
    const stored = await page.evaluate(() => sessionStorage.getItem('support-access.identity-token'));
    check(typeof stored === 'string' && stored.split('.').length === 3, 'no identity token in sessionStorage');

    log('grant read access for 1 hour');
    await page.selectOption('#grant-duration', '3600');
    check(await page.isChecked('input[name="scope"][value="read"]'), 'read is not the default scope');
    await page.fill('#grant-note', 'page test: <b>not bold</b>');
    await page.click('#grant-form button[type="submit"]');
    await page.locator('#consent-active').waitFor({ state: 'visible' });
    await expectNoErrorShown('after granting');
    check((await page.textContent('#consent-scope')) === 'read-only', 'the consent does not show read-only');
    check(
      (await page.textContent('#consent-note')) === 'page test: <b>not bold</b>',
      'the note is not shown verbatim (as text)',
    );
    check((await page.locator('#consent-note b').count()) === 0, 'the note was interpreted as HTML');
    const remaining = await page.textContent('#consent-remaining');
    check(/minute|hour/.test(remaining), `remaining time looks wrong: ${remaining}`);
    check((await page.textContent('#consent-expires')).trim() !== '', 'no expiry time shown');

    log(`${AGENT} mints a token and uses it`);
    const reason = `ticket ${1000 + Math.floor(Math.random() * 9000)}: consent page test`;
    const minted = await apiCall('POST', '/tokens', { user_id: USER, reason });
    check(minted.status === 201, `POST /tokens answered ${minted.status}: ${minted.text}`);
    const whoami = await apiCall('GET', '/app/whoami', undefined, minted.json.access_token);
    check(whoami.status === 200 && whoami.json.user_id === USER, `GET /app/whoami answered ${whoami.status}: ${whoami.text}`);

    log('reload: the log shows token.issued and token.used by the agent');
    await page.reload();
    await page.locator('#who').filter({ hasText: USER }).waitFor();
    const issued = logRows.filter({ has: page.locator('td.type', { hasText: 'token.issued' }) });
    const used = logRows.filter({ has: page.locator('td.type', { hasText: 'token.used' }) });
    await issued.first().waitFor();
    await used.first().waitFor();
    const issuedText = await issued.first().textContent();
    check(issuedText.includes(AGENT) && issuedText.includes('support'), `token.issued does not name ${AGENT}: ${issuedText}`);
    check(issuedText.includes(reason), `token.issued does not show the reason: ${issuedText}`);
    const usedText = await used.first().textContent();
    check(usedText.includes(AGENT) && usedText.includes('/app/whoami'), `token.used does not show ${AGENT} and the path: ${usedText}`);
    check(await page.locator('#consent-active').isVisible(), 'the consent is gone after reload');

    log(`${AGENT} files an access request (full, 1 day)`);
    const request = await fileRequest('ticket 4411: needs to fix the billing plan', 'full', 86400);
    const requestText = await request.textContent();
    check(requestText.includes(AGENT), `the request does not name ${AGENT}: ${requestText}`);
    check(requestText.includes('read and write') && requestText.includes('1 day'), `the request's scope or duration is missing: ${requestText}`);

    log('approve it: the consent now has the requested scope');
    await request.getByRole('button', { name: 'Approve' }).click();
    await page.locator('#consent-scope').filter({ hasText: 'read and write' }).waitFor();
    await request.waitFor({ state: 'detached' });
    await expectNoErrorShown('after approving');
    const remainingAfter = await page.textContent('#consent-remaining');
    check(/23 hours|1 day/.test(remainingAfter), `remaining time after approval is not about a day: ${remainingAfter}`);
    const granted = await apiCall('GET', '/consents/current', undefined, stored);
    check(granted.status === 200 && granted.json.scope === 'full', `the approved consent is not full: ${granted.text}`);

    log(`${AGENT} files another request; deny it`);
    const denied = await fileRequest('ticket 4412: wants to look at invoices', 'read', 3600);
    await denied.getByRole('button', { name: 'Deny' }).click();
    await denied.waitFor({ state: 'detached' });
    await expectNoErrorShown('after denying');
    check(
      (await page.textContent('#consent-scope')) === 'read and write',
      'denying a request changed the current consent',
    );
    const after = await apiCall('GET', '/me/access-requests', undefined, stored);
    const views = (after.json && after.json.requests) || [];
    const viewOf = (text) => views.find((v) => v.reason.includes(text)) || {};
    const statusOf = (text) => viewOf(text).status;
    check(statusOf('ticket 4411') === 'approved', `the first request is ${statusOf('ticket 4411')}, not approved`);
    check(
      viewOf('ticket 4411').consent_id === granted.json.consent_id,
      'the approved request does not name the consent it granted',
    );
    check(statusOf('ticket 4412') === 'denied', `the second request is ${statusOf('ticket 4412')}, not denied`);

    log('revoke: the page says support has no access');
    await page.click('#revoke');
    await page.locator('#consent-none').waitFor({ state: 'visible' });
    check(await page.locator('#consent-active').isHidden(), 'the consent is still shown after revoking');
    await expectNoErrorShown('after revoking');
    await status.filter({ hasText: 'revoked' }).waitFor();
    await logRows.filter({ has: page.locator('td.type', { hasText: 'consent.revoked' }) }).first().waitFor();
    const stillWorks = await apiCall('GET', '/app/whoami', undefined, minted.json.access_token);
    check(stillWorks.status === 401, `the agent's token still works after revoking (${stillWorks.status})`);

    log('no console errors and no CSP violations');
    const violations = await page.evaluate(() => window.__cspViolations);
    for (const v of violations) problems.push(`CSP violation: ${v}`);
    check(problems.length === 0, `the page logged problems:\n  ${problems.join('\n  ')}`);

    log(`screenshot to ${SCREENSHOT}`);
    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true, timeout: 15_000 });
    console.log(`PASS: consent page end to end as ${USER} with ${AGENT}; screenshot ${SCREENSHOT}`);
  } finally {
    if (context) await context.close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
  }
}

const overall = setTimeout(() => fail(`the whole test took over ${TOTAL_MS / 1000} s (at step: ${step})`), TOTAL_MS);
main()
  .then(() => {
    clearTimeout(overall);
    process.exit(0);
  })
  .catch((e) => {
    const what = e instanceof CheckFailed ? e.message : `${e.name}: ${e.message}`;
    fail(`${what}\n   at step: ${step}`);
  });
