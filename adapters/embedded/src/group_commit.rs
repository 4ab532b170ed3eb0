//! Group commit for the embedded store: one writer thread runs every port call queued while
//! the previous commit was syncing, each inside its own savepoint of one shared transaction,
//! and answers them only after that transaction's commit is durable. A commit costs one
//! fsync (WAL, `synchronous=FULL`), so this is what lets many concurrent requests each make
//! a durable audit write without each paying for its own fsync.
//!
//! Every call keeps the guarantees it had as its own transaction: its writes land entirely or
//! not at all (a failing call is rolled back to its savepoint; the others in the batch are
//! unaffected), later calls see earlier ones' writes exactly as if run one after another, and
//! nobody hears "done" before the commit that holds their write has reached the disk.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::oneshot;

use shared::ports::StoreError;

/// Calls taken into one transaction at most: bounds how long the first of them waits.
const MAX_BATCH: usize = 256;

/// One queued port call, type-erased so calls of any result type share the queue.
trait Job: Send {
    /// Runs the call inside the batch's transaction; `true` when it succeeded (and its
    /// savepoint is to be kept).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the batch's fate is known.
    fn finish(self: Box<Self>, commit: Result<(), String>);
}

struct Call<T, F> {
    work: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Call<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else { return false };
        // A panic in one call must not take the writer (and every later call) down with it.
        let result = catch_unwind(AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(StoreError::Unavailable("sqlite call panicked".into())));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), String>) {
        let answer = match (self.result, commit) {
            // The call's own failure stands whatever happened to the batch: it wrote nothing.
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (_, Err(e)) => Err(StoreError::Unavailable(e)),
            (None, Ok(())) => Err(StoreError::Unavailable("sqlite call never ran".into())),
        };
        // The caller may have gone away (request cancelled); its write stands either way.
        let _ = self.reply.send(answer);
    }
}

/// The handle to the writer thread; the thread stops when the last handle is dropped.
pub(super) struct GroupCommit {
    jobs: Sender<Box<dyn Job>>,
    /// Read only by the tests, as the proof that concurrent calls were grouped.
    #[cfg_attr(not(test), allow(dead_code))]
    commits: Arc<AtomicU64>,
}

impl GroupCommit {
    /// Starts the writer thread over `conn`.
    pub(super) fn start(conn: Arc<Mutex<Connection>>) -> Result<Self, StoreError> {
        let (jobs, queue) = channel();
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer(&conn, &queue, &counted))
            .map_err(|e| StoreError::Unavailable(format!("sqlite writer thread: {e}")))?;
        Ok(Self { jobs, commits })
    }

    /// Transactions the writer has run so far (each one fsync when it wrote): what shows, in
    /// the tests, that concurrent calls were grouped.
    #[cfg(test)]
    fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs `work` atomically and answers once it is durably committed.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Call { work: Some(work), result: None, reply });
        self.jobs.send(job).map_err(|_| StoreError::Unavailable("sqlite writer stopped".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("sqlite writer dropped the call".into()))?
    }
}

fn writer(conn: &Mutex<Connection>, queue: &Receiver<Box<dyn Job>>, commits: &AtomicU64) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commits.fetch_add(1, Ordering::Relaxed);
        match conn.lock() {
            Ok(conn) => commit_batch(&conn, batch),
            Err(_) => batch.into_iter().for_each(|job| job.finish(Err("sqlite connection poisoned".into()))),
        }
    }
}

/// Runs `batch` in one immediate transaction, each call in its own savepoint, commits, and
/// answers every call.
fn commit_batch(conn: &Connection, mut batch: Vec<Box<dyn Job>>) {
    let outcome = run_batch(conn, &mut batch);
    if outcome.is_err() && !conn.is_autocommit() {
        // Nothing of a failed batch may stay behind for the next one to commit.
        let _ = conn.execute_batch("ROLLBACK");
    }
    let outcome = outcome.map_err(|e| format!("sqlite: {e}"));
    for job in batch {
        job.finish(outcome.clone());
    }
}

fn run_batch(conn: &Connection, batch: &mut [Box<dyn Job>]) -> rusqlite::Result<()> {
    // Cached: these run around every call, and parsing them each time showed in profiles.
    let sql = |statement: &str| conn.prepare_cached(statement)?.execute([]).map(|_| ());
    sql("BEGIN IMMEDIATE")?;
    for job in batch.iter_mut() {
        sql("SAVEPOINT call")?;
        if !job.run(conn) {
            sql("ROLLBACK TO call")?;
        }
        sql("RELEASE call")?;
    }
    sql("COMMIT")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER NOT NULL)").unwrap();
        conn
    }

    fn call<T: Send + 'static>(
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> (Box<dyn Job>, oneshot::Receiver<Result<T, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        (Box::new(Call { work: Some(work), result: None, reply }), answer)
    }

    fn insert(v: i64) -> impl FnOnce(&Connection) -> Result<i64, StoreError> + Send + 'static {
        move |c| {
            c.execute("INSERT INTO t (v) VALUES (?1)", [v]).map_err(|e| StoreError::Unavailable(e.to_string()))?;
            Ok(v)
        }
    }

    fn values(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn.prepare("SELECT v FROM t ORDER BY rowid").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn a_failing_call_is_rolled_back_alone_and_the_rest_of_its_batch_commits() {
        let conn = store();
        let (a, a_answer) = call(insert(1));
        let (b, b_answer) = call(|c| {
            insert(2)(c)?;
            Err::<i64, _>(StoreError::ConsentChanged)
        });
        let (c, c_answer) = call(insert(3));
        commit_batch(&conn, vec![a, b, c]);
        assert_eq!(a_answer.blocking_recv().unwrap().unwrap(), 1);
        assert!(matches!(b_answer.blocking_recv().unwrap(), Err(StoreError::ConsentChanged)));
        assert_eq!(c_answer.blocking_recv().unwrap().unwrap(), 3);
        assert_eq!(values(&conn), vec![1, 3]);
    }

    #[test]
    fn later_calls_of_a_batch_see_earlier_ones_writes() {
        let conn = store();
        let (a, _a) = call(insert(5));
        let (b, b_answer) = call(|c| {
            c.query_row("SELECT SUM(v) FROM t", [], |r| r.get::<_, i64>(0))
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        });
        commit_batch(&conn, vec![a, b]);
        assert_eq!(b_answer.blocking_recv().unwrap().unwrap(), 5);
    }

    #[test]
    fn a_panicking_call_is_answered_unavailable_and_writes_nothing() {
        let conn = store();
        let (a, a_answer) = call(|c| {
            insert(7)(c)?;
            panic!("bug in a call");
        });
        let (b, b_answer) = call(insert(8));
        commit_batch(&conn, vec![a, b]);
        assert!(matches!(a_answer.blocking_recv().unwrap(), Err::<i64, _>(StoreError::Unavailable(_))));
        assert_eq!(b_answer.blocking_recv().unwrap().unwrap(), 8);
        assert_eq!(values(&conn), vec![8]);
    }

    #[test]
    fn a_batch_whose_commit_fails_answers_every_call_unavailable_and_leaves_nothing() {
        let conn = store();
        // A deferred foreign key is checked at COMMIT: the whole batch must fail there.
        conn.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);",
        )
        .unwrap();
        let (a, a_answer) = call(insert(1));
        let (b, b_answer) = call(|c| {
            c.execute("INSERT INTO child (p) VALUES (42)", []).map_err(|e| StoreError::Unavailable(e.to_string()))?;
            Ok(0_i64)
        });
        commit_batch(&conn, vec![a, b]);
        assert!(matches!(a_answer.blocking_recv().unwrap(), Err(StoreError::Unavailable(_))));
        assert!(matches!(b_answer.blocking_recv().unwrap(), Err(StoreError::Unavailable(_))));
        assert!(conn.is_autocommit(), "the failed transaction was left open");
        assert!(values(&conn).is_empty());
        // And the next batch works normally.
        let (c, c_answer) = call(insert(9));
        commit_batch(&conn, vec![c]);
        assert_eq!(c_answer.blocking_recv().unwrap().unwrap(), 9);
        assert_eq!(values(&conn), vec![9]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_queued_during_a_commit_share_the_next_one_and_each_is_answered_once_committed() {
        let conn = Arc::new(Mutex::new(store()));
        let writer = Arc::new(GroupCommit::start(conn.clone()).unwrap());
        // Stand in for a slow fsync: hold the connection while the calls arrive.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (locked, is_locked) = std::sync::mpsc::channel::<()>();
        let holder = {
            let conn = conn.clone();
            std::thread::spawn(move || {
                let _guard = conn.lock().unwrap();
                locked.send(()).unwrap();
                released.recv().unwrap();
            })
        };
        is_locked.recv().unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|v| {
                let (writer, conn) = (writer.clone(), conn.clone());
                tokio::spawn(async move {
                    let value = writer.run(insert(v)).await.unwrap();
                    // Answered means committed: with the writer between batches (it holds the
                    // connection for a whole batch), no transaction is open and the row is there.
                    tokio::task::spawn_blocking(move || {
                        let conn = conn.lock().unwrap();
                        assert!(conn.is_autocommit());
                        conn.query_row("SELECT COUNT(*) FROM t WHERE v = ?1", [value], |r| r.get::<_, i64>(0)).unwrap()
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        release.send(()).unwrap();
        holder.join().unwrap();
        for task in tasks {
            assert_eq!(task.await.unwrap(), 1);
        }
        let mut all = values(&conn.lock().unwrap());
        all.sort();
        assert_eq!(all, (0..200).collect::<Vec<_>>());
        assert!(writer.commits() <= 10, "{} commits for 200 queued calls: they were not grouped", writer.commits());
    }
}
