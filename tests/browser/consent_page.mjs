// End-to-end test of local-api's consent screen in headless Chromium (playwright-core, the
// system's /usr/bin/chromium). scripts/browser-test starts local-api and passes:
//   BASE_URL     where local-api listens, e.g. http://127.0.0.1:41234
//   AGENT_TOKEN  an identity token of a support agent (local-api dev-token --groups support)
//   SCREENSHOT   where to save a full-page screenshot at the end (desktop); the phone's goes
//                next to it, with -390 before the extension
// It starts nothing but Chromium. Every wait is bounded; any failed check exits 1 naming it.
// The browser reads English in India's time zone (UTC+5:30, no daylight saving), so the
// test can tell that times are shown in the viewer's zone, with the zone named.

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
const TIME_ZONE = 'Asia/Kolkata';
const ZONE_NAME = 'GMT+5:30';
// Widths the layout is checked at: a desktop window and a phone (iPhone 12-15: 390 CSS px).
const DESKTOP = { width: 1100, height: 900 };
const PHONE = { width: 390, height: 844 };
// The one failed request the page makes in normal use, and so the one error the browser logs
// for it: GET /consents/current answers 404 while the user has no consent (openapi.yaml), and
// that is how the page learns that support has no access. Any other answer of 400 or more
// (bar the test's deliberate bad sign-in) fails the test.
const EXPECTED_FAILURE = { method: 'GET', path: '/consents/current', status: 404 };

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

/**
 * The page at `viewport` (already set): nothing wider than the window, and every field of
 * every access-log row shown whole inside it: on the desktop as table columns side by side,
 * on the phone as a card per event with each field on its own line, labelled, full width.
 */
async function checkLayout(page, name, viewport) {
  log(`layout at ${viewport.width} px (${name})`);
  const measured = await page.evaluate(() => {
    const box = (el) => {
      const r = el.getBoundingClientRect();
      return { left: r.left, right: r.right, top: r.top, width: r.width, height: r.height };
    };
    const rows = [...document.querySelectorAll('#log-body tr')].map((tr) => ({
      type: tr.dataset.type,
      row: box(tr),
      cells: [...tr.children].map((td) => ({
        label: td.dataset.label,
        text: td.textContent.trim(),
        box: box(td),
        visible: td.checkVisibility(),
        before: getComputedStyle(td, '::before').content,
      })),
    }));
    return {
      pageWidth: document.documentElement.scrollWidth,
      bodyWidth: document.body.scrollWidth,
      tableWrapOverflow: (() => {
        const w = document.querySelector('.table-wrap');
        return w.scrollWidth - w.clientWidth;
      })(),
      headVisible: document.querySelector('#log thead').getBoundingClientRect().height > 1,
      rows,
    };
  });
  check(
    measured.pageWidth <= viewport.width && measured.bodyWidth <= viewport.width,
    `${name}: the page is ${measured.pageWidth} px wide in a ${viewport.width} px window`,
  );
  check(measured.tableWrapOverflow <= 0, `${name}: the access log scrolls sideways by ${measured.tableWrapOverflow} px`);
  check(measured.rows.length >= 8, `${name}: only ${measured.rows.length} log rows to check`);
  const phone = viewport.width < 640;
  check(measured.headVisible === !phone, `${name}: the column headings are ${measured.headVisible ? 'shown' : 'hidden'}`);
  for (const { type, row, cells } of measured.rows) {
    check(cells.length === 4, `${name}: ${type} has ${cells.length} cells`);
    const labels = cells.map((c) => c.label).join(', ');
    check(labels === 'Time, What happened, Who, Reason', `${name}: ${type}'s cells are ${labels}`);
    for (const c of cells) {
      const where = `${name}: ${type}'s ${c.label}`;
      check(c.visible && c.text !== '' && c.box.width > 0 && c.box.height > 0, `${where} is not visible`);
      check(c.box.left >= 0 && c.box.right <= viewport.width + 0.5, `${where} runs off the screen (${c.box.left}..${c.box.right})`);
      if (phone) {
        // A card: every field on its own line under its label, as wide as the card.
        check(c.box.width >= row.width * 0.8, `${where} is squeezed to ${c.box.width} of ${row.width} px`);
        check(c.before === `"${c.label}"`, `${where} has no label (::before is ${c.before})`);
      } else {
        check(Math.abs(c.box.top - row.top) < 2, `${where} is not on the row's line`);
      }
    }
    // The phone's cards used to be one word wide and very tall: a card stays compact.
    const limit = phone ? 360 : 160;
    check(row.height <= limit, `${name}: the ${type} row is ${row.height} px tall (at most ${limit})`);
  }
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
      viewport: DESKTOP,
      locale: 'en-US',
      timezoneId: TIME_ZONE,
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
    const isExpected = (method, url, status) => {
      const path = new URL(url, BASE_URL).pathname;
      const expected =
        method === EXPECTED_FAILURE.method && path === EXPECTED_FAILURE.path && status === EXPECTED_FAILURE.status;
      return expected || (badSignInExpected && path === '/dev/sign-in' && status === 400);
    };
    page.on('response', (res) => {
      if (res.status() >= 400 && !isExpected(res.request().method(), res.url(), res.status())) {
        problems.push(`failed request: ${res.request().method()} ${res.url()} answered ${res.status()}`);
      }
    });
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      const url = msg.location().url || '';
      // Chromium logs a failed fetch as "Failed to load resource: ... status of 404 (Not Found)",
      // without the method: the response listener above holds the method to the one expected.
      const status = Number((/status of (\d{3})/.exec(msg.text()) || [])[1]);
      const expected = status && (isExpected('GET', url, status) || isExpected('POST', url, status));
      if (!expected) problems.push(`console error: ${msg.text()} (${url})`);
    });
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));

    const status = page.locator('#status');
    const errorBox = page.locator('#error');
    const logRows = page.locator('#log-body tr');
    const logRow = (type) => page.locator(`#log-body tr[data-type="${type}"]`);
    const sentenceOf = async (type) => {
      const row = logRow(type).first();
      await row.waitFor();
      return row.locator('td.what').textContent();
    };
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

    log('the read-only token may not write: 403, token.rejected');
    const write = await apiCall('POST', '/app/whoami', undefined, minted.json.access_token);
    check(write.status === 403, `POST /app/whoami with a read-only token answered ${write.status}: ${write.text}`);

    log('reload: the log tells what the agent did, in sentences, with the reason and the zone');
    await page.reload();
    await page.locator('#who').filter({ hasText: USER }).waitFor();
    const issuedSentence = await sentenceOf('token.issued');
    check(
      issuedSentence.startsWith(`Support (${AGENT}) got a token to act as you with read-only access until `),
      `token.issued does not read as a sentence naming ${AGENT}: ${issuedSentence}`,
    );
    const issuedRow = logRow('token.issued').first();
    check((await issuedRow.locator('td.reason').textContent()) === reason, 'token.issued does not show the reason');
    check((await issuedRow.locator('td.actor-cell').textContent()).includes(AGENT), `the Who of token.issued is not ${AGENT}`);
    const usedSentence = await sentenceOf('token.used');
    check(usedSentence === `Support (${AGENT}) looked at GET /app/whoami.`, `token.used reads: ${usedSentence}`);
    const rejectedSentence = await sentenceOf('token.rejected');
    check(
      rejectedSentence === `Support (${AGENT}) was refused: read-only access cannot change data (POST /app/whoami).`,
      `token.rejected reads: ${rejectedSentence}`,
    );
    const grantedSentence = await sentenceOf('consent.granted');
    check(grantedSentence.startsWith('You let support in with read-only access until '), `consent.granted reads: ${grantedSentence}`);
    check(
      !/\b(token|consent|request)\.[a-z]+\b/.test(await page.locator('#log-body').textContent()),
      'the log shows a raw event code',
    );
    log(`times are in the viewer's zone (${TIME_ZONE}), named`);
    const usedTime = logRow('token.used').first().locator('time');
    const at = await usedTime.getAttribute('datetime');
    const shown = await usedTime.textContent();
    const hourMinute = new Intl.DateTimeFormat('en-US', {
      timeZone: TIME_ZONE, hour: '2-digit', minute: '2-digit', hour12: true,
    }).formatToParts(new Date(at));
    const hhmm = `${hourMinute.find((p) => p.type === 'hour').value}:${hourMinute.find((p) => p.type === 'minute').value}`;
    check(shown.includes(ZONE_NAME) && shown.includes(hhmm), `${at} is shown as ${shown}, not ${hhmm} ${ZONE_NAME}`);
    check((await page.textContent('#consent-expires')).includes(ZONE_NAME), 'the expiry does not name its zone');
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
    check((await sentenceOf('consent.revoked')) === "You revoked support's access.", 'consent.revoked does not read as a sentence');
    const stillWorks = await apiCall('GET', '/app/whoami', undefined, minted.json.access_token);
    check(stillWorks.status === 401, `the agent's token still works after revoking (${stillWorks.status})`);

    log(`${AGENT} asks for a token without consent: refused, and the log says why`);
    const refused = await apiCall('POST', '/tokens', { user_id: USER, reason: 'ticket 4413: <i>one more look</i>' });
    check(refused.status === 403, `POST /tokens without consent answered ${refused.status}: ${refused.text}`);
    await page.click('#refresh');
    const deniedSentence = await sentenceOf('token.denied');
    check(
      deniedSentence === `Support (${AGENT}) was refused access: you had not let support in.`,
      `token.denied reads: ${deniedSentence}`,
    );
    const deniedReason = logRow('token.denied').first().locator('td.reason');
    check((await deniedReason.textContent()) === 'ticket 4413: <i>one more look</i>', 'the reason is not shown verbatim');
    check((await deniedReason.locator('i').count()) === 0, 'the reason was interpreted as HTML');
    for (const type of ['request.filed', 'request.approved', 'request.denied']) {
      const text = await sentenceOf(type);
      check(!text.includes(type) && /\.$/.test(text), `${type} does not read as a sentence: ${text}`);
    }

    log('a request is pending while the layout is checked');
    await fileRequest('ticket 4414: a request that waits', 'read', 900);
    await checkLayout(page, 'desktop', DESKTOP);

    log('no console errors and no CSP violations');
    const violations = await page.evaluate(() => window.__cspViolations);
    for (const v of violations) problems.push(`CSP violation: ${v}`);
    check(problems.length === 0, `the page logged problems:\n  ${problems.join('\n  ')}`);

    log(`screenshot to ${SCREENSHOT}`);
    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true, timeout: 15_000 });

    await page.setViewportSize(PHONE);
    await checkLayout(page, 'phone', PHONE);
    const phoneShot = SCREENSHOT.replace(/(\.png)?$/, '-390.png');
    await page.screenshot({ path: phoneShot, fullPage: true, timeout: 15_000 });
    for (const v of await page.evaluate(() => window.__cspViolations)) problems.push(`CSP violation: ${v}`);
    check(problems.length === 0, `the page logged problems:\n  ${problems.join('\n  ')}`);
    console.log(`PASS: consent page end to end as ${USER} with ${AGENT}; screenshots ${SCREENSHOT}, ${phoneShot}`);
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
