//! Decide now, sequence later (#18): the ports of the audit intake and the sequencer.
//!
//! A decision (a token's use above all) is recorded as ONE durable single-item write into the
//! intake, keyed by the event alone: no transaction, no item shared by a user's uses or by
//! everyone, no condition on a chain head. The sequencer, the only writer of the chains, later
//! appends each stream's pending events to its chain in the order they were decided, gapless,
//! with the chain's own hash encoding. See docs/design.md ("Decide now, sequence later") for
//! the argument that this is as strong for the user as recording each use on condition that
//! the consent is still live.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::StoreError;
use crate::domain::AuditEvent;

/// How long a use's intake write may take, counted from before the consent read that decided
/// it: past it the use is refused (`unavailable`). The sequencer holds every consent change
/// for longer than this ([`SEQUENCER_HOLD`]), which is what places every use decided under a
/// consent before the event that ended it.
pub const INTAKE_DEADLINE: Duration = Duration::from_millis(700);

/// How long the sequencer holds an event that ends a consent (revoke, expiry, replacement by a
/// grant or an approval) after it first saw it committed, before appending it: longer than
/// [`INTAKE_DEADLINE`], plus a margin for clock skew between instances on AWS.
pub const SEQUENCER_HOLD: Duration = Duration::from_millis(1_000);

/// When a write was decided and by when it must be durable, on the caller's monotonic
/// clock; taken before the read that decided the write, so the whole decision is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    decided: Instant,
    by: Instant,
}

impl Deadline {
    /// Decided now, due `budget` from now.
    pub fn after(budget: Duration) -> Self {
        let decided = Instant::now();
        Self { decided, by: decided + budget }
    }

    /// The deadline of a use decided now: [`INTAKE_DEADLINE`] from now.
    pub fn for_use() -> Self {
        Self::after(INTAKE_DEADLINE)
    }

    /// Whether the deadline is behind us.
    pub fn passed(self) -> bool {
        Instant::now() > self.by
    }

    /// What is left of it (zero once passed).
    pub fn remaining(self) -> Duration {
        self.by.saturating_duration_since(Instant::now())
    }

    /// How long ago the write was decided. A sequencing store also refuses a write decided
    /// longer ago than its hold, whatever budget the caller gave it: its ordering rests on
    /// that bound, not on every caller's configuration.
    pub fn age(self) -> Duration {
        self.decided.elapsed()
    }
}

/// Records decided events, one durable single-item write each.
#[async_trait]
pub trait AuditIntake: Send + Sync {
    /// Records `event` (decided at `event.at`, under `event.consent_id` for a use) as pending
    /// on its stream. `Ok` only once the write is durable and before `deadline`; otherwise
    /// [`StoreError::Unavailable`], and the caller refuses what it decided. A write that
    /// lands after its deadline anyway (on AWS: in flight when the client gave up) is
    /// sequenced as a use the app refused (see docs/design.md): over-reporting, never under.
    /// Recording the same event (same `event_id`) again changes nothing.
    async fn record(&self, event: AuditEvent, deadline: Deadline) -> Result<(), StoreError>;
}

/// What one run of the sequencer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SequencerRun {
    /// Events appended to their chains.
    pub sequenced: usize,
    /// Events still pending after the run (held consent changes and everything behind them
    /// on their stream, or beyond the run's limit).
    pub pending: usize,
}

/// Moves pending events onto their chains. Any number of runs may race or repeat (a
/// redelivered batch): each event is appended exactly once, in decision order.
#[async_trait]
pub trait Sequencer: Send + Sync {
    /// Appends at most `limit` pending events to their chains, in order per stream: the
    /// order they were recorded, except that a `token.used` decided under a consent that an
    /// earlier recorded event ended (it was decided before that event committed, its consent
    /// read proves it) goes just before that event. A consent-ending event waits
    /// [`SEQUENCER_HOLD`] after it was first seen, and everything recorded after it on its
    /// stream waits with it.
    async fn sequence(&self, limit: usize) -> Result<SequencerRun, StoreError>;

    /// As [`Self::sequence`], over the streams named only: the entry point of a sequencer
    /// driven by a trigger that names the streams with something new (on AWS the `sequencer`
    /// function, whose batch of intake stream records names users). `pending` counts what
    /// those streams still hold.
    async fn sequence_streams(&self, streams: &[String], limit: usize) -> Result<SequencerRun, StoreError>;

    /// The pending events of `stream`, in the order the sequencer will append them
    /// (unsealed: `seq` 0, no hashes), at most `limit`.
    async fn pending(&self, stream: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError>;

    /// Lists `streams` as stalled: their events have been pending longer than a healthy
    /// sequencer leaves them (a failed or unfinished run, or a trigger delivered late), so
    /// the auditor's queries by actor and by time, which otherwise read sealed events only,
    /// read their pending events too ([`crate::ports::AuditReader::query`]). Listing a
    /// stream again changes nothing. A store whose readers see every pending event without
    /// such a list (the embedded one: its intake holds pending rows only) does nothing.
    async fn mark_stalled(&self, streams: &[String]) -> Result<(), StoreError>;

    /// Takes `streams` off that list: a run left nothing pending on them.
    async fn clear_stalled(&self, streams: &[String]) -> Result<(), StoreError>;
}

/// The sequencer's ordering rule, shared by every backend: `events` are one stream's pending
/// events in the order they were recorded; the answer is the order to append them. Each
/// `token.used` or `token.issued` that names a consent ended by an event recorded before it
/// (a revoke or an expiry of that consent, a grant of another one, or an approval, which
/// always grants) and after that consent's own grant moves to just before the first such
/// event: a use was decided, and a mint committed on condition, while the consent was live,
/// so before its end committed (on DynamoDB, where the recorded order is each writer's clock
/// when it sent its write, a mint sent after a revoke can commit before it). Nothing else
/// moves.
pub fn decision_order(events: Vec<AuditEvent>) -> Vec<AuditEvent> {
    use crate::domain::AuditEventType as T;
    let ends = |ender: &AuditEvent, consent: &crate::domain::ConsentId| match ender.event_type {
        T::ConsentRevoked | T::ConsentExpired => ender.consent_id.as_ref() == Some(consent),
        T::ConsentGranted => ender.consent_id.as_ref() != Some(consent),
        T::RequestApproved => true,
        _ => false,
    };
    // Where each event goes: (the index of the event it must precede, or its own; 0 for a
    // moved use, 1 for an event in its own place; its recorded index), so moved uses stand
    // just before the event that ended their consent, in their recorded order.
    let mut keyed: Vec<(usize, u8, usize)> = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let mut slot = i;
        if let (T::TokenUsed | T::TokenIssued, Some(consent)) = (e.event_type, e.consent_id.as_ref()) {
            // The consent's own grant, if recorded in this batch, bounds the search.
            let granted = events[..i]
                .iter()
                .rposition(|g| g.event_type == T::ConsentGranted && g.consent_id.as_ref() == Some(consent))
                .map_or(0, |g| g + 1);
            if let Some(end) = events[granted..i].iter().position(|x| ends(x, consent)) {
                slot = granted + end;
            }
        }
        keyed.push((slot, u8::from(slot == i), i));
    }
    keyed.sort_unstable();
    let mut events: Vec<Option<AuditEvent>> = events.into_iter().map(Some).collect();
    keyed.into_iter().filter_map(|(_, _, i)| events[i].take()).collect()
}

/// Whether `event` ends a consent, and so is held by the sequencer.
pub fn ends_a_consent(event: &AuditEvent) -> bool {
    use crate::domain::AuditEventType as T;
    matches!(event.event_type, T::ConsentRevoked | T::ConsentExpired | T::ConsentGranted | T::RequestApproved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Actor, AuditEventType as T, ConsentId, Scope, Timestamp, UserId};

    fn event(t: T, consent: &str) -> AuditEvent {
        let e = AuditEvent::new(t, Timestamp::from_unix(1), Some(UserId::parse("alice").unwrap()), Actor::system());
        if consent.is_empty() {
            e
        } else {
            e.with_consent(&ConsentId::parse(consent).unwrap(), Scope::Read, Timestamp::from_unix(9))
        }
    }

    fn order(events: &[AuditEvent]) -> Vec<String> {
        let ids: Vec<_> = events.iter().map(|e| e.event_id.clone()).collect();
        decision_order(events.to_vec())
            .iter()
            .map(|e| {
                let i = ids.iter().position(|id| *id == e.event_id).unwrap();
                format!("{i}:{}:{}", e.event_type.as_str(), e.consent_id.as_ref().map_or("", |c| c.as_str()))
            })
            .collect()
    }

    #[test]
    fn a_use_recorded_after_the_revoke_of_its_consent_goes_before_it() {
        let events = [
            event(T::TokenUsed, "c1"),
            event(T::ConsentRevoked, "c1"),
            event(T::TokenRejected, "c1"),
            event(T::TokenUsed, "c1"),
            event(T::TokenUsed, "c1"),
        ];
        assert_eq!(
            order(&events),
            ["0:token.used:c1", "3:token.used:c1", "4:token.used:c1", "1:consent.revoked:c1", "2:token.rejected:c1"]
        );
    }

    #[test]
    fn a_grant_of_another_consent_or_an_approval_ends_the_old_one_and_nothing_else_moves() {
        let events = [
            event(T::ConsentGranted, "c1"),
            event(T::TokenUsed, "c1"),
            event(T::RequestApproved, ""),
            event(T::ConsentGranted, "c2"),
            event(T::TokenUsed, "c2"),
            event(T::TokenUsed, "c1"),
            event(T::ConsentGranted, "c3"),
            event(T::TokenUsed, "c2"),
            event(T::TokenIssued, "c3"),
        ];
        assert_eq!(
            order(&events),
            [
                "0:consent.granted:c1",
                "1:token.used:c1",
                "5:token.used:c1",
                "2:request.approved:",
                "3:consent.granted:c2",
                "4:token.used:c2",
                "7:token.used:c2",
                "6:consent.granted:c3",
                "8:token.issued:c3"
            ]
        );
    }

    #[test]
    fn a_mint_recorded_after_the_revoke_of_its_consent_goes_before_it() {
        let events = [event(T::ConsentGranted, "c1"), event(T::ConsentRevoked, "c1"), event(T::TokenIssued, "c1")];
        assert_eq!(order(&events), ["0:consent.granted:c1", "2:token.issued:c1", "1:consent.revoked:c1"]);
    }

    #[test]
    fn a_use_of_a_consent_granted_again_after_an_end_stays_after_the_new_grant() {
        // c1 revoked, then (a test's fixed ids) granted again as c1: the use belongs to the
        // second grant and moves nowhere.
        let events = [event(T::ConsentRevoked, "c1"), event(T::ConsentGranted, "c1"), event(T::TokenUsed, "c1")];
        assert_eq!(order(&events), ["0:consent.revoked:c1", "1:consent.granted:c1", "2:token.used:c1"]);
    }

    #[test]
    fn deadlines_count_down() {
        assert!(Deadline::after(Duration::ZERO).remaining() <= Duration::from_millis(1));
        assert!(!Deadline::for_use().passed());
        assert!(Deadline::for_use().remaining() > Duration::from_millis(600));
        assert!(Deadline::for_use().age() < Duration::from_millis(100));
    }
}
