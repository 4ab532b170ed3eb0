//! Refusals of tokens whose signature failed, counted per process and written as one event
//! per window (#18 item 3). Anyone can send such a token, and its claims name no one, so each
//! would otherwise be one append to the one unattributed stream: one shared chain head that a
//! flood would contend for and grow without bound. Instead every process keeps a tally
//! (counts per rejection code and the first refusal's detail as a sample) and appends it as
//! ONE `token.rejected` event of the unattributed stream when the window closes:
//! [`REFUSAL_WINDOW_SECONDS`] after the previous write, or at [`REFUSAL_WINDOW_COUNT`]
//! refusals, whichever comes first. A refusal after a quiet window is written at once (a lone
//! probe is as visible as before); the refusals of a flood cost one write per process per
//! window. What a crash loses: the open window of that process (SECURITY.md).
//!
//! Who writes: where a task runs [`flush_refusals_every`] (local-api), the refused request
//! only counts and wakes it; elsewhere (a Lambda instance, frozen between invocations, runs
//! no timer) every request of an entry point that counts refusals (the authorizer, a
//! reported use, introspection) writes a window that is due, beside its own work
//! ([`beside_due_refusals`]), and the refused request that closes a window writes it before
//! answering. So an instance that gets only valid requests after a refusal still writes it
//! once due, at most once per instance per window, and no request waits for the write on
//! top of its own work.
//! Refusals with authentic claims are not counted here: each is its user's own event.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Services;
use crate::domain::{Actor, AuditEvent, AuditEventType, Timestamp};
use crate::ports::StoreError;

/// A window closes this long after the previous write (and the background task writes an
/// open window at this period).
pub const REFUSAL_WINDOW_SECONDS: i64 = 5;
/// A window closes at this many refusals, whatever its age.
pub const REFUSAL_WINDOW_COUNT: u64 = 1_000;
/// The sample's length in characters (it is the first refusal's detail, hostile text).
pub const REFUSAL_SAMPLE_CHARS: usize = 300;

/// The refusals counted since the last write, and the write to retry if it failed.
#[derive(Debug, Default)]
struct Window {
    counts: BTreeMap<&'static str, u64>,
    total: u64,
    sample: String,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    /// When a write was last tried (`None`: never, so the next refusal is written at once).
    last_write: Option<Timestamp>,
    /// Whether that write failed: then only the age closes a window (no retry per refusal).
    failing: bool,
    /// A closed window whose write failed: retried as the same event (same id), so a write
    /// that landed after all is recorded once where the store is idempotent by event id.
    unwritten: Option<AuditEvent>,
}

impl Window {
    fn due(&self, now: Timestamp) -> bool {
        let aged = self.last_write.is_none_or(|at| now.unix() - at.unix() >= REFUSAL_WINDOW_SECONDS);
        (self.total > 0 || self.unwritten.is_some()) && (aged || (!self.failing && self.total >= REFUSAL_WINDOW_COUNT))
    }

    /// The counted refusals as one event, the window emptied.
    fn close(&mut self, now: Timestamp) -> Option<AuditEvent> {
        if self.total == 0 {
            return None;
        }
        let counts = self.counts.iter().map(|(code, n)| format!("{code}={n}")).collect::<Vec<_>>().join(" ");
        let (from, to) = (self.from.unwrap_or(now), self.to.unwrap_or(now));
        // The sample last: it is the caller's text, so nothing it says can pass for a count.
        let detail =
            format!("refused {}: {counts}; {}..{}; sample: {}", self.total, from.rfc3339(), to.rfc3339(), self.sample);
        *self = Self {
            last_write: self.last_write,
            failing: self.failing,
            unwritten: self.unwritten.take(),
            ..Self::default()
        };
        Some(AuditEvent::new(AuditEventType::TokenRejected, now, None, Actor::unknown()).with_detail(detail))
    }
}

/// The per-process tally of unattributed refusals, in [`Services::refusals`].
#[derive(Debug, Default)]
pub struct RefusalTally {
    window: Mutex<Window>,
    /// Set by [`flush_refusals_every`]: a task writes, requests only wake it.
    background: AtomicBool,
    wake: tokio::sync::Notify,
}

impl RefusalTally {
    /// Counts one refusal (`code`, its `detail`) at `now`; whether its window is due.
    fn count(&self, code: &'static str, detail: &str, now: Timestamp) -> bool {
        let mut w = self.window.lock().expect("the tally lock is never poisoned");
        if w.total == 0 {
            w.sample = truncate(detail, REFUSAL_SAMPLE_CHARS).to_owned();
            w.from = Some(now);
        }
        w.total += 1;
        w.to = Some(now);
        *w.counts.entry(code).or_default() += 1;
        w.due(now)
    }

    /// The events to write now: a failed write's first, then the window (closed if `force`
    /// or due). Marks the write as tried.
    fn take(&self, now: Timestamp, force: bool) -> Vec<AuditEvent> {
        let mut w = self.window.lock().expect("the tally lock is never poisoned");
        let nothing = w.total == 0 && w.unwritten.is_none();
        if nothing || (!force && !w.due(now)) {
            // An idle tick is no write: the next refusal after a quiet window is still due at once.
            return Vec::new();
        }
        w.last_write = Some(now);
        let closed = w.close(now);
        w.unwritten.take().into_iter().chain(closed).collect()
    }

    /// The write of `events` failed at the first of `failed`: keep them for the next write.
    fn failed(&self, mut failed: Vec<AuditEvent>) {
        let mut w = self.window.lock().expect("the tally lock is never poisoned");
        w.failing = true;
        // At most two events fail together (an older failure and a window); merging them
        // would change the retried one's id, so the older is kept and the newer's counts
        // go back into the open window.
        let retried = failed.remove(0);
        for other in failed {
            w.merge_back(&other);
        }
        w.unwritten = Some(retried);
    }

    fn written(&self) {
        self.window.lock().expect("the tally lock is never poisoned").failing = false;
    }

    /// How many refusals are counted and not yet written (tests, shutdown logs).
    pub fn open(&self) -> u64 {
        let w = self.window.lock().expect("the tally lock is never poisoned");
        w.total + w.unwritten.as_ref().map_or(0, |e| refused_in(e).unwrap_or(0))
    }
}

impl Window {
    /// Adds a closed window's counts (parsed back from its detail) to this one.
    fn merge_back(&mut self, event: &AuditEvent) {
        let Some(detail) = event.detail.as_deref() else { return };
        let Some((head, _)) = detail.split_once(';') else { return };
        for pair in head.split_once(": ").map_or("", |(_, c)| c).split(' ') {
            if let Some((code, n)) = pair.split_once('=')
                && let (Some(code), Ok(n)) = (known_code(code), n.parse::<u64>())
            {
                *self.counts.entry(code).or_default() += n;
                self.total += n;
            }
        }
        if self.sample.is_empty() {
            let sample = detail.split_once("; sample: ").map_or("", |(_, s)| s);
            self.sample = sample.to_owned();
        }
        if self.from.is_none_or(|f| event.at < f) {
            self.from = Some(event.at);
        }
        self.to = self.to.max(Some(event.at));
    }
}

/// The number of refusals an aggregated `token.rejected` event counts (`None` for any other).
pub fn refused_in(event: &AuditEvent) -> Option<u64> {
    let detail = event.detail.as_deref()?.strip_prefix("refused ")?;
    detail.split_once(':')?.0.parse().ok()
}

fn known_code(code: &str) -> Option<&'static str> {
    crate::token::Rejection::ALL.iter().map(|r| r.code()).find(|c| *c == code)
}

/// Counts an unattributed refusal; writes its window if due and no task does.
pub(super) async fn count_refusal(services: &Services, code: &'static str, detail: &str) {
    let now = services.clock.now();
    if !services.refusals.count(code, detail, now) {
        return;
    }
    if services.refusals.background.load(Ordering::Relaxed) {
        services.refusals.wake.notify_one();
    } else if let Err(e) = write(services, now, false).await {
        // Kept for the next window's write; the refusal itself is answered as such.
        tracing::warn!(error = %e, "the unattributed refusals could not be written; kept for the next window");
    }
}

/// Writes this process's window if it is due, where no task writes them (a Lambda instance).
async fn flush_due(services: &Services) {
    if services.refusals.background.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = write(services, services.clock.now(), false).await {
        tracing::warn!(error = %e, "the unattributed refusals could not be written; kept for the next window");
    }
}

/// Runs `work`, a request of an entry point that counts refusals, together with the write of
/// this process's due window ([`flush_due`]; nothing to do, the usual case, costs a lock).
/// Joined, not spawned: Lambda freezes the process as soon as the handler answers, so a
/// detached write could sit frozen until the next invocation (its connection timed out by
/// then) or be lost with the instance; joined, it has landed (or failed, and is kept for the
/// next window) before the answer, which waits for the longer of the two, not their sum.
/// Never cancelled either: a write dropped midway would lose the window it took.
pub(super) async fn beside_due_refusals<T>(services: &Services, work: impl Future<Output = T>) -> T {
    let ((), out) = tokio::join!(flush_due(services), work);
    out
}

/// Writes the counted refusals now, whatever the window (shutdown, tests); how many
/// refusals the written events count.
pub async fn flush_refusals(services: &Services) -> Result<u64, StoreError> {
    write(services, services.clock.now(), true).await
}

async fn write(services: &Services, now: Timestamp, force: bool) -> Result<u64, StoreError> {
    let events = services.refusals.take(now, force);
    if events.is_empty() {
        // Nothing taken (the usual case for a request): nothing written, nothing learnt.
        return Ok(0);
    }
    let mut written = 0;
    for (i, event) in events.iter().enumerate() {
        if let Err(e) = services.audit_appender.append(event.clone()).await {
            services.refusals.failed(events[i..].to_vec());
            return Err(e);
        }
        written += refused_in(event).unwrap_or(0);
    }
    services.refusals.written();
    Ok(written)
}

/// Writes the unattributed refusals of this process in the background until it ends: at
/// once when a window is due (woken by the refusal that makes it so), and every
/// [`REFUSAL_WINDOW_SECONDS`] whatever is counted. Requests then never write them.
pub async fn flush_refusals_every(services: Services) {
    services.refusals.background.store(true, Ordering::Relaxed);
    let period = Duration::from_secs(REFUSAL_WINDOW_SECONDS as u64);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        let force = tokio::select! {
            _ = ticker.tick() => true,
            _ = services.refusals.wake.notified() => false,
        };
        if let Err(e) = write(&services, services.clock.now(), force).await {
            tracing::error!(error = %e, "the unattributed refusals could not be written; kept for the next window");
        }
    }
}

fn truncate(s: &str, max_chars: usize) -> &str {
    s.char_indices().nth(max_chars).map_or(s, |(i, _)| &s[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_unix(T0 + s)
    }

    #[test]
    fn the_first_refusal_is_due_at_once_then_a_window_closes_by_age_or_count() {
        let tally = RefusalTally::default();
        assert!(tally.count("signature", "signature GET /a", at(0)), "nothing written yet: at once");
        assert_eq!(tally.take(at(0), false).len(), 1);
        for i in 1..REFUSAL_WINDOW_COUNT {
            assert!(!tally.count("typ", "typ GET /b", at(1)), "refusal {i} within the window");
        }
        assert!(tally.count("typ", "typ GET /b", at(1)), "the 1,000th closes it");
        let events = tally.take(at(1), false);
        assert_eq!(events.len(), 1);
        assert_eq!(refused_in(&events[0]), Some(REFUSAL_WINDOW_COUNT));
        assert!(!tally.count("malformed", "malformed GET /c", at(3)));
        assert!(tally.count("malformed", "malformed GET /c", at(6)), "5 s after the last write");
        assert_eq!(tally.take(at(6), false).len(), 1);
        assert!(tally.take(at(8), true).is_empty(), "an idle tick writes nothing");
        assert!(tally.count("malformed", "malformed GET /d", at(11)), "and does not move the window");
    }

    #[test]
    fn an_event_counts_per_code_with_the_first_refusals_detail_last_and_truncated() {
        let tally = RefusalTally::default();
        tally.take(at(0), true);
        let hostile = format!("signature GET /x; refused 9: typ=9 <script>{}", "€".repeat(400));
        tally.count("signature", &hostile, at(1));
        tally.count("typ", "typ GET /y", at(2));
        tally.count("signature", "signature GET /z", at(2));
        let event = tally.take(at(2), true).pop().unwrap();
        let detail = event.detail.clone().unwrap();
        let sample = format!("sample: {}", truncate(&hostile, REFUSAL_SAMPLE_CHARS));
        assert_eq!(detail, format!("refused 3: signature=2 typ=1; {}..{}; {sample}", at(1).rfc3339(), at(2).rfc3339()));
        assert_eq!(refused_in(&event), Some(3), "the sample cannot change the count");
        assert_eq!((event.user_id, event.actor), (None, Actor::unknown()));
        assert_eq!(tally.open(), 0);
    }

    #[test]
    fn a_failed_write_is_retried_as_the_same_event_and_no_refusal_is_lost() {
        let tally = RefusalTally::default();
        tally.count("signature", "signature GET /a", at(0));
        let first = tally.take(at(0), false);
        tally.failed(first.clone());
        assert!(!tally.count("typ", "typ GET /b", at(1)), "a failing store is not retried per refusal");
        assert!(tally.count("typ", "typ GET /b", at(5)));
        let retried = tally.take(at(5), false);
        assert_eq!(retried[0].event_id, first[0].event_id, "the same event, so written once");
        assert_eq!(retried.len(), 2);
        tally.failed(retried);
        assert_eq!(tally.open(), 3, "the newer window's counts went back into the open one");
        let last = tally.take(at(10), false);
        assert_eq!(last[0].event_id, first[0].event_id);
        assert_eq!(last.iter().filter_map(refused_in).sum::<u64>(), 3);
    }
}
