//! The instance's one writer: a thread that owns a connection and applies write jobs in
//! batches. Every job queued while a batch commits goes into the next transaction
//! (group commit), each in a savepoint of its own, so one job's failure undoes only that
//! job. SQLite lets one writer in at a time anyway; batching makes one commit (and under
//! `synchronous = "full"`, one fsync) serve many writes, and no write of this instance
//! sleeps in SQLite's busy handler waiting for another. The busy timeout is left for
//! other processes and for the other instance during a reload.

use std::cell::Cell;
use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};

use plugin_abi::{PluginError, PluginResult};
use rusqlite::{Connection, OptionalExtension};

use crate::errors::db_error;

/// Most writes one transaction takes.
const MAX_BATCH: usize = 256;
/// Writes waiting for the writer; past it callers wait to queue.
const QUEUE: usize = 4096;

/// A queued write: it runs inside the batch's transaction (or learns why there is
/// none) and returns what to tell its caller once the batch's commit is known.
type Job = Box<dyn FnOnce(Result<&Batch<'_>, &PluginError>) -> Completion + Send>;

/// What a write runs in: the batch's transaction (a `Connection` by deref), and the
/// namespace's version counter, read once per batch and written back once before the
/// commit — the writer is the only one writing while the batch holds SQLite's write
/// lock, so versions can be handed out from memory.
pub struct Batch<'a> {
    connection: &'a Connection,
    versions: &'a Versions,
    /// The batch's time (Unix ms), taken once the write lock is held.
    now: i64,
}

#[derive(Default)]
struct Versions {
    /// The next version to hand out, once read from the table in this batch.
    next: Cell<Option<i64>>,
}

impl Deref for Batch<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.connection
    }
}

impl Batch<'_> {
    /// The next key version: above every version this namespace ever handed out, so a
    /// key deleted and written again never gets back a version it had. A write undone
    /// by its savepoint leaves a gap, never a reuse.
    pub fn next_version(&self) -> rusqlite::Result<i64> {
        let next = match self.versions.next.get() {
            Some(next) => next,
            None => {
                let last: Option<i64> = self
                    .connection
                    .query_row("SELECT value FROM prism_counters WHERE name = 'kv_version'", [], |row| {
                        row.get(0)
                    })
                    .optional()?;
                last.unwrap_or(0) + 1
            }
        };
        self.versions.next.set(Some(next + 1));
        Ok(next)
    }
}

impl Versions {
    /// Writes the last version handed out back to the table, if this batch gave any.
    fn save(&self, connection: &Connection) -> rusqlite::Result<()> {
        let Some(next) = self.next.get() else { return Ok(()) };
        connection
            .prepare_cached(
                "INSERT INTO prism_counters (name, value) VALUES ('kv_version', ?1) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )?
            .execute([next - 1])
            .map(drop)
    }
}
type Completion = Box<dyn FnOnce(Option<&PluginError>) + Send>;

/// A handle on the writer; the thread stops once every handle is gone and the queued
/// writes are done.
#[derive(Clone)]
pub struct Writer {
    jobs: tokio::sync::mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread on `connection`; it stops when the `Writer` is dropped
    /// and the queued jobs are done.
    pub fn start(connection: Connection) -> PluginResult<Writer> {
        let (jobs, mut queue) = tokio::sync::mpsc::channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("prism-sqlite-writer".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(MAX_BATCH);
                while let Some(first) = queue.blocking_recv() {
                    batch.push(first);
                    while batch.len() < MAX_BATCH {
                        match queue.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    apply(&connection, &mut batch);
                }
            })
            .map_err(|error| {
                PluginError::internal(format!("sqlite: cannot start the writer thread: {error}"))
            })?;
        Ok(Writer { jobs })
    }

    /// Whether the writer thread is gone (it died: every write would fail).
    pub fn stopped(&self) -> bool {
        self.jobs.is_closed()
    }

    /// Runs `work` in the next batch's transaction, with the batch's time (Unix ms);
    /// answers once that transaction committed (or with why it did not).
    pub async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Batch<'_>, i64) -> rusqlite::Result<T> + Send + 'static,
    ) -> PluginResult<T> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |begun| {
            let outcome = match begun {
                Err(error) => Err(error.clone()),
                Ok(batch) => in_savepoint(batch, |b| work(b, b.now)),
            };
            Box::new(move |commit_error: Option<&PluginError>| {
                let _ = done.send(match commit_error {
                    Some(error) => Err(error.clone()),
                    None => outcome,
                });
            })
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| PluginError::unavailable("sqlite: the instance is shutting down"))?;
        answer.await.map_err(|_| PluginError::internal("sqlite: a write panicked and was undone"))?
    }
}

/// Runs one job's work in a savepoint: kept when it succeeds, undone when it fails.
fn in_savepoint<T>(
    batch: &Batch<'_>,
    work: impl FnOnce(&Batch<'_>) -> rusqlite::Result<T>,
) -> PluginResult<T> {
    let connection = batch.connection;
    connection.execute_batch("SAVEPOINT job").map_err(db_error)?;
    let outcome = work(batch).and_then(|value| connection.execute_batch("RELEASE job").map(|()| value));
    outcome.map_err(|error| {
        let _ = connection.execute_batch("ROLLBACK TO job; RELEASE job");
        db_error(error)
    })
}

/// Why the rest of a batch is not run: SQLite rolled the whole transaction back.
fn batch_lost() -> PluginError {
    PluginError::unavailable(
        "sqlite: the transaction this write shared was rolled back by SQLite (disk full, an I/O error or \
         out of memory in the batch); nothing of it was written",
    )
    .with_retryable(true)
}

/// One transaction for the whole batch; each job hears the commit's outcome.
fn apply(connection: &Connection, batch: &mut Vec<Job>) {
    let begun = connection.execute_batch("BEGIN IMMEDIATE").map_err(db_error);
    let now = plugin_abi::unix_millis();
    // Some errors (disk full, I/O, out of memory) make SQLite roll back the whole
    // transaction, not just a savepoint. Jobs run after that would each autocommit on
    // their own while being told the batch failed, so they are not run at all.
    let mut lost: Option<PluginError> = None;
    let versions = Versions::default();
    let shared = Batch { connection, versions: &versions, now };
    let mut completions = Vec::with_capacity(batch.len());
    for job in batch.drain(..) {
        let ran = catch_unwind(AssertUnwindSafe(|| match (&begun, &lost) {
            (Err(error), _) | (Ok(()), Some(error)) => job(Err(error)),
            (Ok(()), None) => job(Ok(&shared)),
        }));
        match ran {
            Ok(completion) => completions.push(completion),
            // The job's caller hears of it through its dropped answer; its savepoint goes.
            Err(_) => {
                let _ = connection.execute_batch("ROLLBACK TO job; RELEASE job");
            }
        }
        if begun.is_ok() && lost.is_none() && connection.is_autocommit() {
            lost = Some(batch_lost());
        }
    }
    let committed = match (begun, lost) {
        (Err(error), _) | (Ok(()), Some(error)) => Err(error),
        (Ok(()), None) => {
            versions.save(connection).and_then(|()| connection.execute_batch("COMMIT")).map_err(db_error)
        }
    };
    if committed.is_err() && !connection.is_autocommit() {
        let _ = connection.execute_batch("ROLLBACK");
    }
    for completion in completions {
        completion(committed.as_ref().err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_in_a_batch_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let connection = Connection::open(dir.path().join("t.db")).unwrap();
        connection.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)").unwrap();
        let writer = Writer::start(connection).unwrap();
        // Queued together, so they share batches; the duplicate insert fails.
        let writes = (0..50).map(|n| {
            let writer = writer.clone();
            async move {
                let n = if n == 25 { 24 } else { n };
                writer.write(move |c, _| c.execute("INSERT INTO t (n) VALUES (?1)", [n])).await
            }
        });
        let outcomes: Vec<_> = futures_join(writes).await;
        assert_eq!(outcomes.iter().filter(|o| o.is_err()).count(), 1, "{outcomes:?}");
        let count =
            writer.write(|c, _| c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))).await;
        assert_eq!(count.unwrap(), 49);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn when_sqlite_rolls_the_whole_batch_back_every_write_in_it_fails_and_none_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let connection = Connection::open(dir.path().join("t.db")).unwrap();
        connection.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)").unwrap();
        let writer = Writer::start(connection).unwrap();
        // Holds the writer so the next three writes queue up and share one batch.
        let busy = {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .write(|_, _| {
                        std::thread::sleep(std::time::Duration::from_millis(300));
                        Ok(())
                    })
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let insert = |n: i64| {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer.write(move |c, _| c.execute("INSERT INTO t (n) VALUES (?1)", [n])).await
            })
        };
        let before = insert(1);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        // What SQLite does on a full disk or an I/O error: the whole transaction goes.
        let rollback = {
            let writer = writer.clone();
            tokio::spawn(async move { writer.write(|c, _| c.execute_batch("ROLLBACK")).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let after = insert(3);
        busy.await.unwrap().unwrap();
        assert!(before.await.unwrap().is_err(), "the write before the rollback was lost, so it must fail");
        assert!(rollback.await.unwrap().is_err());
        assert!(after.await.unwrap().is_err(), "the write after the rollback must not run on its own");
        let count =
            writer.write(|c, _| c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))).await;
        assert_eq!(count.unwrap(), 0, "nothing of the lost batch is kept");
        writer.write(|c, _| c.execute("INSERT INTO t (n) VALUES (4)", [])).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn versions_only_grow_across_undone_writes_batches_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        let open = || {
            let connection = Connection::open(&path).unwrap();
            crate::schema::create(&connection).unwrap();
            Writer::start(connection).unwrap()
        };
        let version = |writer: &Writer| {
            let writer = writer.clone();
            async move { writer.write(|b, _| b.next_version()).await.unwrap() }
        };
        let writer = open();
        let first = version(&writer).await;
        // A write that takes a version and then fails is undone; its version is not reused.
        let undone = writer
            .write(|b, _| {
                b.next_version()?;
                b.execute("INSERT INTO no_such_table VALUES (1)", [])
            })
            .await;
        assert!(undone.is_err());
        let after_undone = version(&writer).await;
        assert!(
            after_undone > first + 1,
            "{first} then {after_undone}: the undone write's version came back"
        );
        drop(writer);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let reopened = open();
        let after_restart = version(&reopened).await;
        assert!(after_restart > after_undone, "{after_undone} then {after_restart} after a restart");
    }

    async fn futures_join<F: std::future::Future + Send + 'static>(
        futures: impl Iterator<Item = F>,
    ) -> Vec<F::Output>
    where
        F::Output: Send + 'static,
    {
        let handles: Vec<_> = futures.map(tokio::spawn).collect();
        let mut outputs = Vec::new();
        for handle in handles {
            outputs.push(handle.await.unwrap());
        }
        outputs
    }
}
