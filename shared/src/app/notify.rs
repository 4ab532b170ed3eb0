//! The notification relay: tails the committed audit log (the [`Outbox`]) and publishes what
//! the app should hear about. It runs beside the service, never inside a request, so a slow or
//! dead receiver delays notifications, never a grant, a mint or a use; and it advances its
//! saved position only past what was delivered, so a failure or a restart loses nothing
//! (delivery is at least once, in commit order; consumers deduplicate by the event id).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hashlink::LruCache;

use crate::domain::{AuditEvent, AuditEventType, EventId, Notification, is_notified};
use crate::ports::{FirstUses, Outbox, Publisher, StoreError};

/// How many tokens' first-use claims a [`FirstUseMemory`] remembers (about 100 bytes each).
pub const FIRST_USE_MEMORY: usize = 10_000;

/// What one notifier process remembers of the first-use claims it won: a token's later uses
/// that reach it are answered from here, without a claim. On DynamoDB a claim is one
/// conditional `PutItem`, billed one write unit whether it wins or is refused, so without this
/// every use of a token costs a unit at the notifier, and with it about one per token: a
/// token is one user's, whose records one stream shard carries, in order, to one instance at
/// a time. Only a claim won here is remembered, because then its holder is known exactly (it
/// never changes): a later use is another event (`false`), a redelivered one the same
/// (`true`). A claim refused here says only that another event holds it, which a
/// redelivery of that event in this process (after a shard moved) must still be told apart
/// from, so those ask the store each time, as before. Bounded: the least recently used is
/// forgotten first, and then only costs a unit again.
pub struct FirstUseMemory {
    won: Mutex<LruCache<String, EventId>>,
}

impl FirstUseMemory {
    pub fn new(capacity: usize) -> Self {
        Self { won: Mutex::new(LruCache::new(capacity.max(1))) }
    }

    /// `store`'s claims, answered from this memory where it can.
    pub fn over<'a>(&'a self, store: &'a dyn FirstUses) -> RememberedFirstUses<'a> {
        RememberedFirstUses { memory: self, store }
    }

    fn holder(&self, jti: &str) -> Option<EventId> {
        self.won.lock().unwrap_or_else(|e| e.into_inner()).get(jti).cloned()
    }

    fn remember(&self, jti: &str, holder: &EventId) {
        self.won.lock().unwrap_or_else(|e| e.into_inner()).insert(jti.to_owned(), holder.clone());
    }
}

impl Default for FirstUseMemory {
    fn default() -> Self {
        Self::new(FIRST_USE_MEMORY)
    }
}

/// A store's first-use claims through a [`FirstUseMemory`].
pub struct RememberedFirstUses<'a> {
    memory: &'a FirstUseMemory,
    store: &'a dyn FirstUses,
}

#[async_trait]
impl FirstUses for RememberedFirstUses<'_> {
    async fn claim_first_use(&self, used: &AuditEvent) -> Result<bool, StoreError> {
        let Some(jti) = &used.jti else { return self.store.claim_first_use(used).await };
        if let Some(holder) = self.memory.holder(jti.as_str()) {
            return Ok(holder == used.event_id);
        }
        let won = self.store.claim_first_use(used).await?;
        if won {
            self.memory.remember(jti.as_str(), &used.event_id);
        }
        Ok(won)
    }
}

/// What a relay did, for logs and tests.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub delivered: AtomicU64,
    pub failed_attempts: AtomicU64,
}

impl RelayStats {
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    pub fn failed_attempts(&self) -> u64 {
        self.failed_attempts.load(Ordering::Relaxed)
    }
}

/// How a relay paces itself.
#[derive(Debug, Clone, Copy)]
pub struct RelaySettings {
    /// Events read per pass.
    pub batch: usize,
    /// Pause when caught up.
    pub idle: Duration,
    /// First pause after a failed delivery; it doubles on each failure in a row, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch: 100,
            idle: Duration::from_millis(200),
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Why a pass stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] crate::ports::PublishError),
}

/// Whether `event` is announced: a notified type, and for a use, its token's first (claimed
/// here, before the publish: see [`FirstUses`] for why this order loses nothing).
pub async fn should_publish(event: &AuditEvent, first_uses: &dyn FirstUses) -> Result<bool, StoreError> {
    if !is_notified(event.event_type) {
        return Ok(false);
    }
    if event.event_type == AuditEventType::TokenUsed {
        return first_uses.claim_first_use(event).await;
    }
    Ok(true)
}

/// Publishes, in order, the wanted ones of `events` (newly committed, as a stream delivers
/// them). On a failure, the index of the event that failed: everything before it is done.
pub async fn publish_committed(
    events: &[AuditEvent],
    first_uses: &dyn FirstUses,
    publisher: &dyn Publisher,
    stats: &RelayStats,
) -> Result<(), (usize, RelayError)> {
    for (i, event) in events.iter().enumerate() {
        match should_publish(event, first_uses).await {
            Ok(false) => {}
            Ok(true) => {
                if let Err(e) = publisher.publish(&Notification::of(event.clone())).await {
                    stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    return Err((i, e.into()));
                }
                stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => return Err((i, e.into())),
        }
    }
    Ok(())
}

/// One pass over what was committed since `relay`'s saved position: publishes each wanted
/// event in order and saves the position past everything delivered (or skipped). Returns how
/// many events the pass moved past; on a failed delivery, the position stops before it. A
/// relay's first pass only records where the log ends (it announces no history).
pub async fn relay_once(
    outbox: &dyn Outbox,
    first_uses: &dyn FirstUses,
    publisher: &dyn Publisher,
    relay: &str,
    batch: usize,
    stats: &RelayStats,
) -> Result<usize, RelayError> {
    let start = match outbox.position(relay).await? {
        Some(position) => position,
        None => {
            // A relay's first run starts at the end of the log: what happened before the app
            // was listening is on the audit log, not news.
            let last = outbox.last_position().await?;
            outbox.save_position(relay, last).await?;
            return Ok(0);
        }
    };
    let entries = outbox.committed_after(start, batch).await?;
    let events: Vec<AuditEvent> = entries.iter().map(|e| e.event.clone()).collect();
    let (done, failure) = match publish_committed(&events, first_uses, publisher, stats).await {
        Ok(()) => (entries.len(), None),
        Err((i, e)) => (i, Some(e)),
    };
    if done > 0 {
        outbox.save_position(relay, entries[done - 1].position).await?;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(entries.len()),
    }
}

/// Relays until the process ends: a pass, then a pause (`idle` when caught up, a doubling
/// backoff after failures), logging failures with how many attempts failed so far.
pub async fn relay_forever(
    outbox: Arc<dyn Outbox>,
    first_uses: Arc<dyn FirstUses>,
    publisher: Arc<dyn Publisher>,
    relay: String,
    settings: RelaySettings,
    stats: Arc<RelayStats>,
) {
    let mut backoff = settings.backoff;
    loop {
        match relay_once(outbox.as_ref(), first_uses.as_ref(), publisher.as_ref(), &relay, settings.batch, &stats).await
        {
            Ok(n) => {
                backoff = settings.backoff;
                if n < settings.batch {
                    tokio::time::sleep(settings.idle).await;
                }
            }
            Err(e) => {
                tracing::warn!(relay, error = %e, failed_attempts = stats.failed_attempts(), retry_in = ?backoff, "notification relay");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(settings.max_backoff);
            }
        }
    }
}
