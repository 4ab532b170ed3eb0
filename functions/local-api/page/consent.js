// The consent screen: a user grants, reviews and revokes support's access, answers support's
// access requests and reads who acted on their account. Plain DOM, no framework; everything
// that comes from the API goes into the page through textContent, never as HTML.
'use strict';

(function () {
  const TOKEN_KEY = 'support-access.identity-token';
  const SUB_KEY = 'support-access.sub';
  const LOG_LIMIT = 50;
  // Pages of pending requests the screen reads at most (100 each).
  const REQUEST_PAGES = 20;
  const POLL_MS = 30 * 1000;

  const $ = (id) => document.getElementById(id);

  const el = {
    status: $('status'),
    error: $('error'),
    signedOut: $('signed-out'),
    signedIn: $('signed-in'),
    signInForm: $('sign-in-form'),
    signInSub: $('sign-in-sub'),
    who: $('who'),
    signOut: $('sign-out'),
    refresh: $('refresh'),
    consentNone: $('consent-none'),
    consentActive: $('consent-active'),
    consentScope: $('consent-scope'),
    consentExpires: $('consent-expires'),
    consentRemaining: $('consent-remaining'),
    consentGranted: $('consent-granted'),
    consentNote: $('consent-note'),
    revoke: $('revoke'),
    grantForm: $('grant-form'),
    grantDuration: $('grant-duration'),
    grantNote: $('grant-note'),
    requests: $('requests'),
    requestsNone: $('requests-none'),
    logBody: $('log-body'),
    log: $('log'),
    logNone: $('log-none'),
    logMore: $('log-more'),
  };

  let currentConsent = null;
  let remainingTimer = null;
  let logCursor = null;
  let logExpanded = false; // older events shown: the poll leaves the table alone

  // ---- helpers -------------------------------------------------------------------------

  /** An element with text content (never HTML) and optional class. */
  function make(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function setStatus(text) {
    el.status.textContent = text;
  }

  function showError(text) {
    el.error.textContent = text;
    el.error.hidden = false;
  }

  function clearError() {
    el.error.textContent = '';
    el.error.hidden = true;
  }

  function scopeLabel(scope) {
    if (scope === 'read') return 'read-only';
    if (scope === 'full') return 'read and write';
    return String(scope);
  }

  /** A time in the viewer's own time zone, with the zone named (e.g. "GMT+2" or "CET"). */
  function formatTime(rfc3339) {
    const d = new Date(rfc3339);
    if (Number.isNaN(d.getTime())) return String(rfc3339);
    return d.toLocaleString(undefined, {
      year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
      timeZoneName: 'short',
    });
  }

  function formatDuration(seconds) {
    let s = Math.max(0, Math.floor(seconds));
    const days = Math.floor(s / 86400);
    s -= days * 86400;
    const hours = Math.floor(s / 3600);
    s -= hours * 3600;
    const minutes = Math.floor(s / 60);
    const parts = [];
    if (days) parts.push(days + (days === 1 ? ' day' : ' days'));
    if (hours) parts.push(hours + (hours === 1 ? ' hour' : ' hours'));
    if (minutes && !days) parts.push(minutes + (minutes === 1 ? ' minute' : ' minutes'));
    if (!parts.length) return seconds > 0 ? 'less than a minute' : '0 minutes';
    return parts.join(' ');
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  /** An API error carrying the problem+json detail (or what we know) and the status. */
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /**
   * Calls the API with the user's identity token. Resolves to {status, body} for 2xx and for
   * any status in `allow`; otherwise rejects with an ApiError whose message is the problem's
   * detail.
   */
  async function api(method, path, body, allow) {
    const headers = { Accept: 'application/json, application/problem+json' };
    const t = token();
    if (t) headers.Authorization = 'Bearer ' + t;
    const init = { method, headers, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'The service is unreachable: ' + e.message);
    }
    const text = await res.text();
    let parsed = null;
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch (e) {
        parsed = null;
      }
    }
    if (res.ok || (allow && allow.includes(res.status))) {
      return { status: res.status, body: parsed };
    }
    if (res.status === 401 && t) {
      // The identity token ran out or the data directory changed: back to the sign-in form.
      signOut('Your session ended; sign in again.');
    }
    const detail = parsed && typeof parsed.detail === 'string' ? parsed.detail : null;
    const title = parsed && typeof parsed.title === 'string' ? parsed.title : res.statusText;
    throw new ApiError(res.status, detail ? detail : res.status + ' ' + title);
  }

  /** Runs `action`, shows its failure's detail, and always refreshes the data afterwards. */
  async function act(busyText, action, doneText) {
    clearError();
    setStatus(busyText);
    let ok = false;
    try {
      await action();
      ok = true;
    } catch (e) {
      showError(e.message);
      setStatus('');
    }
    if (token()) await refresh();
    if (ok && doneText) setStatus(doneText);
  }

  // ---- sign-in -------------------------------------------------------------------------

  function render() {
    const signedIn = Boolean(token());
    el.signedOut.hidden = signedIn;
    el.signedIn.hidden = !signedIn;
    el.who.textContent = signedIn ? sessionStorage.getItem(SUB_KEY) || '' : '';
  }

  async function signIn(sub) {
    const { body } = await api('POST', '/dev/sign-in', { sub });
    if (!body || typeof body.token !== 'string') throw new ApiError(0, 'The sign-in answer had no token.');
    sessionStorage.setItem(TOKEN_KEY, body.token);
    sessionStorage.setItem(SUB_KEY, sub);
    render();
  }

  function signOut(why) {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(SUB_KEY);
    currentConsent = null;
    stopTimer();
    clearChildren(el.requests);
    clearChildren(el.logBody);
    logCursor = null;
    el.logMore.hidden = true;
    render();
    setStatus(why || 'Signed out.');
    el.signInSub.focus();
  }

  function clearChildren(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  // ---- current consent -----------------------------------------------------------------

  function stopTimer() {
    if (remainingTimer !== null) {
      clearInterval(remainingTimer);
      remainingTimer = null;
    }
  }

  function updateRemaining() {
    if (!currentConsent) return;
    const left = (new Date(currentConsent.expires_at).getTime() - Date.now()) / 1000;
    el.consentRemaining.textContent = formatDuration(left);
    if (left <= 0) {
      stopTimer();
      refresh();
    }
  }

  function renderConsent(consent) {
    currentConsent = consent;
    stopTimer();
    el.consentActive.hidden = !consent;
    el.consentNone.hidden = Boolean(consent);
    if (!consent) return;
    el.consentScope.textContent = scopeLabel(consent.scope);
    el.consentExpires.textContent = formatTime(consent.expires_at);
    el.consentExpires.dateTime = consent.expires_at;
    el.consentGranted.textContent = formatTime(consent.granted_at);
    el.consentGranted.dateTime = consent.granted_at;
    el.consentNote.textContent = consent.note ? consent.note : '(none)';
    updateRemaining();
    remainingTimer = setInterval(updateRemaining, 30 * 1000);
  }

  async function loadConsent() {
    const { status, body } = await api('GET', '/consents/current', undefined, [404]);
    renderConsent(status === 200 ? body : null);
  }

  // ---- access requests -----------------------------------------------------------------

  function agentName(agent) {
    if (agent && typeof agent === 'object') return agent.sub || agent.id || agent.agent_id || JSON.stringify(agent);
    return agent === undefined || agent === null ? 'unknown agent' : String(agent);
  }

  function renderRequests(requests) {
    clearChildren(el.requests);
    const pending = requests.filter((r) => r && r.status === 'pending');
    el.requestsNone.hidden = pending.length > 0;
    for (const r of pending) {
      const li = make('li', null, 'request');
      li.dataset.requestId = String(r.request_id);
      const headingId = 'request-' + String(r.request_id).replace(/[^A-Za-z0-9_-]/g, '_');
      const title = make('p', null, 'request-title');
      title.id = headingId;
      title.append(make('strong', agentName(r.agent), 'request-agent'), ' asks for ',
        make('strong', scopeLabel(r.scope), 'request-scope'), ' access for ',
        make('strong', formatDuration(r.duration_seconds), 'request-duration'));
      li.append(title);
      const reason = make('p', null, 'request-reason');
      reason.append(make('span', 'Reason: ', 'label'), make('span', r.reason, 'request-reason-text'));
      li.append(reason);
      if (r.expires_at) {
        li.append(make('p', 'Request open until ' + formatTime(r.expires_at), 'hint'));
      }
      const buttons = make('div', null, 'actions');
      // The decision routes take no body: a request is decided exactly as it was filed.
      const approve = make('button', 'Approve', 'approve');
      approve.type = 'button';
      approve.setAttribute('aria-describedby', headingId);
      approve.addEventListener('click', () =>
        act('Approving…', () => api('POST', '/me/access-requests/' + encodeURIComponent(r.request_id) + '/approve'),
          'Request approved: support now has ' + scopeLabel(r.scope) + ' access.'));
      const deny = make('button', 'Deny', 'secondary deny');
      deny.type = 'button';
      deny.setAttribute('aria-describedby', headingId);
      deny.addEventListener('click', () =>
        act('Denying…', () => api('POST', '/me/access-requests/' + encodeURIComponent(r.request_id) + '/deny'),
          'Request denied.'));
      buttons.append(approve, deny);
      li.append(buttons);
      el.requests.append(li);
    }
  }

  async function loadRequests() {
    // Only the pending ones, every page of them: newer requests never hide an older one.
    const list = [];
    let cursor = null;
    for (let page = 0; page < REQUEST_PAGES; page++) {
      const query = '?status=pending&limit=100' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : '');
      const { body } = await api('GET', '/me/access-requests' + query);
      if (!body || !Array.isArray(body.requests)) break;
      list.push(...body.requests);
      cursor = typeof body.next_cursor === 'string' ? body.next_cursor : null;
      if (!cursor) break;
    }
    renderRequests(list);
  }

  // ---- access log ----------------------------------------------------------------------

  // Why support was refused, in plain words: every refusal code the service writes in an
  // event's `detail` (the verifier's rejection codes on `token.rejected`, the refusals of
  // `token.denied`). A code not listed here is shown as it is.
  const REFUSALS = {
    // token.rejected: the token was shown and refused.
    'oversized': 'the token was too large',
    'malformed': 'the token was malformed',
    'algorithm': 'the token was not signed the expected way',
    'typ': 'the token was of the wrong type',
    'embedded-key': 'the token tried to bring its own key',
    'unknown-kid': 'the token was signed with an unknown key',
    'signature': 'the token\'s signature was forged or damaged',
    'malleable': 'the token\'s signature had been altered',
    'claims': 'the token\'s contents were invalid',
    'issuer': 'the token came from the wrong issuer',
    'audience': 'the token was meant for another service',
    'expired': 'the token had expired',
    'not-yet-valid': 'the token was not valid yet',
    'no-consent': 'you had not let support in',
    'consent-replaced': 'the token was for access you had since replaced',
    'scope': 'read-only access cannot change data',
    'inactive': 'the token was no longer active',
    'emergency-stop': 'an operator had stopped all support access',
    'agent-revoked': 'an operator had cancelled this agent\'s tokens',
    // token.denied: asking for a token (or filing or approving a request) was refused.
    'feature-disabled': 'support access is turned off',
    'self-impersonation': 'support agents cannot act on their own account',
    'self-approval': 'nobody may approve their own request',
    'consent-changed': 'your access changed at that very moment',
    'step-up-required: amr': 'the agent had not signed in with the required method',
    'step-up-required: auth_time': 'the agent had not signed in recently enough',
  };

  function refusal(code) {
    return Object.prototype.hasOwnProperty.call(REFUSALS, code) ? REFUSALS[code] : 'refusal code ' + code;
  }

  /** Who acted, as the subject of a sentence. */
  function actorName(actor) {
    const sub = actor && actor.sub ? String(actor.sub) : 'unknown';
    switch (actor && actor.role) {
      case 'support': return 'Support (' + sub + ')';
      case 'user': return sub === sessionStorage.getItem(SUB_KEY) ? 'You' : sub;
      case 'operator': return 'An operator (' + sub + ')';
      case 'system': return 'The service';
      default: return 'Someone unidentified';
    }
  }

  /**
   * What a use or refusal was for: `GET /path` in words (with the resource server that
   * reported it, `GET /path reported by rs-1`), or the introspection.
   */
  function useWords(rest) {
    const m = /^([A-Z]+) (\/\S*)(?: reported by (\S+))?$/.exec(rest);
    if (m) {
      const by = m[3] ? ' (reported by ' + m[3] + ')' : '';
      return (['GET', 'HEAD', 'OPTIONS'].includes(m[1]) ? 'looked at ' : 'changed data through ') + m[1] + ' ' + m[2] + by;
    }
    const by = /^introspect by (.+)$/.exec(rest);
    if (by) return 'had its token checked by ' + by[1];
    return rest;
  }

  const scopeWords = (e) => (e.scope ? ' with ' + scopeLabel(e.scope) + ' access' : '');
  const until = (e) => (e.expires_at ? ' until ' + formatTime(e.expires_at) : '');
  const detailText = (e) => (typeof e.detail === 'string' ? e.detail : '');

  // One sentence for every event type on the log (shared/src/domain/audit.rs,
  // AuditEventType::ALL; a unit test of local-api holds this list to it).
  const SENTENCES = {
    'consent.granted': (e, who) =>
      who + ' let support in' + scopeWords(e) + until(e) + (e.request_id ? ', approving a request.' : '.'),
    'consent.revoked': (e, who) => who + ' revoked support\'s access.',
    'consent.expired': () => 'Support\'s access ran out.',
    'token.issued': (e, who) => who + ' got a token to act as you' + scopeWords(e) + until(e) + '.',
    'token.denied': (e, who) => who + ' was refused access: ' + refusal(detailText(e)) + '.',
    'token.used': (e, who) => who + ' ' + useWords(detailText(e)) + '.',
    'token.rejected': (e, who) => {
      const d = detailText(e);
      const space = d.indexOf(' ');
      const code = space < 0 ? d : d.slice(0, space);
      const rest = space < 0 ? '' : ' (' + d.slice(space + 1) + ')';
      return who + ' was refused: ' + refusal(code) + rest + '.';
    },
    'request.filed': (e, who) => {
      const m = /^duration_seconds=(\d+)$/.exec(detailText(e));
      const duration = m ? ' for ' + formatDuration(Number(m[1])) : '';
      return who + ' asked for ' + (e.scope ? scopeLabel(e.scope) + ' ' : '') + 'access' + duration + '.';
    },
    'request.approved': (e, who) => who + ' approved a request from support' + scopeWords(e) + '.',
    'request.denied': (e, who) => who + ' denied a request from support.',
    'request.expired': () => 'A request from support expired unanswered.',
    'token.revoked': (e, who) => {
      const m = /^agent=(.+)$/.exec(detailText(e));
      return who + ' cancelled every token of ' + (m ? 'support agent ' + m[1] : 'a support agent') + '.';
    },
    'stop.engaged': (e, who) => who + ' stopped all support access (emergency stop).',
    'stop.lifted': (e, who) => who + ' lifted the emergency stop.',
  };

  /** The event as a sentence (an unknown type as its code, with any detail). */
  function sentence(e) {
    const who = actorName(e.actor);
    const type = String(e.type);
    if (Object.prototype.hasOwnProperty.call(SENTENCES, type)) return SENTENCES[type](e, who);
    return who + ': ' + type + (e.detail ? ' (' + e.detail + ')' : '') + '.';
  }

  /** A cell with its column's name, which the narrow layout shows above the value. */
  function cell(label, className) {
    const td = make('td', null, className);
    td.dataset.label = label;
    return td;
  }

  function logRow(e) {
    const tr = make('tr', null, 'event');
    tr.dataset.type = String(e.type);
    const time = make('time', formatTime(e.at));
    time.dateTime = e.at;
    const timeCell = cell('Time', 'time');
    timeCell.append(time);
    const what = cell('What happened', 'what');
    what.textContent = sentence(e);
    what.title = String(e.type);
    // Decided but not yet sealed into the tamper-evident log (#18): said, not hidden.
    if (e.pending === true) what.append(' ', make('span', '(pending: not yet sealed into the log)', 'pending'));
    const who = cell('Who', 'actor-cell');
    const actor = e.actor || {};
    who.append(make('span', actor.sub || '?', 'actor'), ' ',
      make('span', actor.role || '?', 'role role-' + String(actor.role || 'unknown').replace(/[^a-z]/g, '')));
    const reason = cell('Reason', 'reason');
    reason.textContent = e.reason ? String(e.reason) : '—';
    if (!e.reason) reason.classList.add('none');
    tr.append(timeCell, what, who, reason);
    return tr;
  }

  /** Shows a page of events: the newest (replacing the table) or older ones (appended). */
  function renderLog(body, append) {
    const events = body && Array.isArray(body.events) ? body.events : [];
    if (!append) clearChildren(el.logBody);
    for (const e of events) el.logBody.append(logRow(e));
    const any = el.logBody.childElementCount > 0;
    el.logNone.hidden = any;
    el.log.hidden = !any;
    logCursor = body && typeof body.next_cursor === 'string' ? body.next_cursor : null;
    el.logMore.hidden = !logCursor;
  }

  async function loadLog() {
    const { body } = await api('GET', '/me/access-log?limit=' + LOG_LIMIT);
    logExpanded = false;
    renderLog(body, false);
  }

  async function loadOlder() {
    if (!logCursor) return;
    const path = '/me/access-log?limit=' + LOG_LIMIT + '&cursor=' + encodeURIComponent(logCursor);
    const { body } = await api('GET', path);
    logExpanded = true;
    renderLog(body, true);
  }

  // ---- wiring --------------------------------------------------------------------------

  /** Reloads what the page shows; `poll` keeps older log events the user opened. */
  async function refresh(poll) {
    if (!token()) return;
    const loads = [loadConsent(), loadRequests()];
    if (!(poll && logExpanded)) loads.push(loadLog());
    const results = await Promise.allSettled(loads);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed && token()) showError(failed.reason.message);
  }

  el.signInForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const sub = el.signInSub.value.trim();
    clearError();
    setStatus('Signing in…');
    signIn(sub)
      .then(async () => {
        await refresh();
        setStatus('Signed in as ' + sub + '.');
      })
      .catch((e) => {
        setStatus('');
        showError(e.message);
      });
  });

  el.signOut.addEventListener('click', () => {
    clearError();
    signOut();
  });

  el.grantForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const scopeInput = el.grantForm.querySelector('input[name="scope"]:checked');
    const body = {
      duration_seconds: Number(el.grantDuration.value),
      scope: scopeInput ? scopeInput.value : 'read',
      note: el.grantNote.value,
    };
    act('Granting…', () => api('POST', '/consents', body),
      'Access granted: ' + scopeLabel(body.scope) + ' for ' + formatDuration(body.duration_seconds) + '.')
      .then(() => {
        if (el.error.hidden) el.grantNote.value = '';
      });
  });

  el.revoke.addEventListener('click', () => {
    act('Revoking…', () => api('DELETE', '/consents/current', undefined, [404]), 'Access revoked: support has no access.');
  });

  el.logMore.addEventListener('click', () => {
    clearError();
    loadOlder().catch((e) => showError(e.message));
  });

  el.refresh.addEventListener('click', () => act('Refreshing…', async () => {}, 'Up to date.'));

  // New access requests show up without a click while the page is in view.
  setInterval(() => {
    if (token() && document.visibilityState === 'visible') refresh(true);
  }, POLL_MS);

  render();
  if (token()) {
    setStatus('Loading…');
    refresh().then(() => setStatus(''));
  }
})();
