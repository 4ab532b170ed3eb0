//! Read-only connections for the embedded store, so reads never queue behind the group
//! commit's fsync: in WAL mode a reader sees the last committed state without waiting for a
//! writer. Every call answered by the writer is already committed, so a client reads its own
//! writes. Each read runs in one read transaction: one consistent snapshot for all its queries.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::store::unavailable;
use shared::ports::StoreError;

pub(super) struct Readers {
    pool: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl Readers {
    /// Opens `n` (at least one) query-only connections to the database at `path`.
    pub(super) fn open(path: &Path, n: usize) -> Result<Arc<Self>, StoreError> {
        let pool = (0..n.max(1))
            .map(|_| {
                let conn = Connection::open(path).map_err(unavailable)?;
                conn.pragma_update(None, "query_only", true).map_err(unavailable)?;
                conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(unavailable)?;
                Ok(Mutex::new(conn))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Arc::new(Self { pool, next: AtomicUsize::new(0) }))
    }

    /// Runs `work` on one snapshot, on a blocking thread.
    pub(super) async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = self.clone();
        tokio::task::spawn_blocking(move || {
            let slot = readers.next.fetch_add(1, Ordering::Relaxed) % readers.pool.len();
            let conn =
                readers.pool[slot].lock().map_err(|_| StoreError::Unavailable("sqlite reader poisoned".into()))?;
            let sql = |statement: &str| conn.prepare_cached(statement)?.execute([]).map(|_| ());
            sql("BEGIN").map_err(unavailable)?;
            let out = work(&conn);
            // Ending a read transaction cannot lose anything; a failure only means a stale lock.
            sql("COMMIT").map_err(unavailable)?;
            out
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("sqlite reader task: {e}")))?
    }
}
