//! Read-only connections for the embedded store, so reads never queue behind the group
//! commit's fsync: in WAL mode a reader sees the last committed state without waiting for a
//! writer. Every call answered by the writer is already committed, so a client reads its own
//! writes. Each read runs in one read transaction: one consistent snapshot for all its queries.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::store::{stable_plans, unavailable};
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
                stable_plans(&conn)?;
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
            in_snapshot(&conn, work)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("sqlite reader task: {e}")))?
    }

    /// Runs `work`, a lookup of a few rows by key, on one snapshot on the calling thread when
    /// a connection is free, else as [`Self::run`]. Such a read takes microseconds and, in WAL
    /// mode, never waits for the writer; handing it to a blocking thread and back cost more
    /// than the read (two thread wake-ups per read: BENCHMARKS.md, "Load on local-api").
    pub(super) async fn lookup<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some(conn) = (0..self.pool.len()).find_map(|i| self.pool[(start + i) % self.pool.len()].try_lock().ok())
        {
            return in_snapshot(&conn, work);
        }
        self.run(work).await
    }
}

/// Runs `work` in one read transaction of `conn`.
fn in_snapshot<T>(conn: &Connection, work: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
    let sql = |statement: &str| conn.prepare_cached(statement)?.execute([]).map(|_| ());
    sql("BEGIN").map_err(unavailable)?;
    let out = work(conn);
    // Ending a read transaction cannot lose anything; a failure only means a stale lock.
    sql("COMMIT").map_err(unavailable)?;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readers() -> (tempfile::TempDir, Arc<Readers>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v INTEGER)")
            .unwrap();
        let readers = Readers::open(&path, 2).unwrap();
        (dir, readers)
    }

    #[tokio::test]
    async fn a_lookup_runs_on_the_calling_thread_when_a_reader_is_free() {
        let (_dir, readers) = readers();
        let ran_on = readers.lookup(|_| Ok(std::thread::current().id())).await.unwrap();
        assert_eq!(ran_on, std::thread::current().id());
    }

    #[tokio::test]
    async fn a_lookup_waits_on_a_blocking_thread_while_every_reader_is_busy() {
        let (_dir, readers) = readers();
        let (held, is_held) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let holder = {
            let readers = readers.clone();
            std::thread::spawn(move || {
                let _guards: Vec<_> = readers.pool.iter().map(|c| c.lock().unwrap()).collect();
                held.send(()).unwrap();
                released.recv().unwrap();
            })
        };
        is_held.recv().unwrap();
        let lookup = tokio::spawn({
            let readers = readers.clone();
            async move { readers.lookup(|_| Ok(std::thread::current().id())).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!lookup.is_finished(), "the lookup did not wait for a reader");
        release.send(()).unwrap();
        holder.join().unwrap();
        assert_ne!(lookup.await.unwrap().unwrap(), std::thread::current().id());
    }
}
