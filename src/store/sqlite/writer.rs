//! The single writer: one OS thread owns the only write connection and commits whatever
//! operations queued up meanwhile in one transaction (group commit).
//!
//! Operations run one after the other directly in the group's transaction. An operation that
//! fails without having written anything (a fenced step, a conflict, a missing row: checked by
//! its error kind and by the connection's change counter) needs nothing undone. Any other
//! failure rolls the whole group back and runs it again with each operation in its own
//! savepoint, so a failed operation still undoes only its own changes. Operations therefore
//! must be re-runnable (`Fn`) and touch nothing but the connection. Savepoints are not taken
//! on the fast path because each one copies every page its operation touches into the
//! statement journal: that was a fifth of the writer's time.
//!
//! Invariant: an operation's reply is sent only after the transaction holding it committed, so
//! an `Ok` means the write is on disk (`synchronous=FULL`).

use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::{Notify, mpsc, oneshot};

use super::super::{Error, Result};
use super::map_error;

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 4096;

/// What an operation tells the writer after running.
#[derive(Clone, Copy)]
struct Ran {
    ok: bool,
    /// It failed before writing anything, by design (fenced, conflict, not found).
    clean: bool,
    wake: bool,
}

/// A queued write: run it in the transaction (possibly again, after a rollback), then answer
/// once the transaction ended; or abort it when no transaction can begin.
trait Operation: Send {
    fn run(&mut self, conn: &Connection) -> Ran;
    /// Records that the operation could not run (its earlier run, if any, was rolled back).
    fn fail(&mut self, error: Error);
    fn reply(self: Box<Self>, committed: Result<()>);
    fn abort(self: Box<Self>, error: Error);
}

struct Typed<T, F> {
    operation: F,
    sender: oneshot::Sender<Result<T>>,
    result: Option<Result<T>>,
}

impl<T, F> Operation for Typed<T, F>
where
    T: Send + 'static,
    F: Fn(&Connection) -> Result<(T, Wake)> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> Ran {
        let result = (self.operation)(conn);
        let ran = Ran {
            ok: result.is_ok(),
            clean: matches!(
                result,
                Err(Error::Fenced | Error::Conflict(_) | Error::NotFound)
            ),
            wake: matches!(result, Ok((_, Wake::Yes))),
        };
        self.result = Some(result.map(|(value, _)| value));
        ran
    }

    fn fail(&mut self, error: Error) {
        self.result = Some(Err(error));
    }

    fn reply(self: Box<Self>, committed: Result<()>) {
        let Typed { sender, result, .. } = *self;
        let result = result.unwrap_or_else(|| Err(Error::Database("operation did not run".into())));
        let _ = sender.send(committed.and(result));
    }

    fn abort(self: Box<Self>, error: Error) {
        let _ = self.sender.send(Err(error));
    }
}

/// The handle that queues operations for the writer thread.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Box<dyn Operation>>,
}

/// Whether a committed operation made work runnable (and workers should be woken).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    No,
    Yes,
}

impl Writer {
    /// Starts the writer thread on `conn`; it ends when every `Writer` handle is dropped.
    pub fn start(conn: Connection, notify: Arc<Notify>) -> std::io::Result<Self> {
        let (queue, inbox) = mpsc::channel(65_536);
        std::thread::Builder::new()
            .name("gleaner-sqlite-writer".into())
            .spawn(move || run(conn, inbox, notify))?;
        Ok(Self { queue })
    }

    /// Runs `operation` in the next group commit and returns its result once committed.
    /// `operation` may run more than once (after a rollback of its group); only the last run's
    /// result is returned, and only its writes are committed.
    pub async fn write<T, F>(&self, operation: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<(T, Wake)> + Send + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        let boxed: Box<dyn Operation> = Box::new(Typed {
            operation,
            sender,
            result: None,
        });
        self.queue.send(boxed).await.map_err(|_| Error::Closed)?;
        receiver.await.map_err(|_| Error::Closed)?
    }
}

fn run(conn: Connection, mut inbox: mpsc::Receiver<Box<dyn Operation>>, notify: Arc<Notify>) {
    let mut batch: Vec<Box<dyn Operation>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = inbox.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(operation) => batch.push(operation),
                Err(_) => break,
            }
        }
        let committed = match commit_group(&conn, &mut batch) {
            Ok(wake) => {
                if wake {
                    notify.notify_one();
                }
                Ok(())
            }
            Err(GroupError::Begin) => {
                for operation in batch.drain(..) {
                    operation.abort(Error::Database("cannot begin write transaction".into()));
                }
                continue;
            }
            Err(GroupError::Commit) => Err(Error::Database("commit failed".into())),
        };
        for operation in batch.drain(..) {
            operation.reply(match &committed {
                Ok(()) => Ok(()),
                Err(_) => Err(Error::Database("commit failed".into())),
            });
        }
    }
}

enum GroupError {
    Begin,
    Commit,
}

/// Runs `batch` in one transaction and commits it; returns whether to wake the workers.
fn commit_group(
    conn: &Connection,
    batch: &mut [Box<dyn Operation>],
) -> std::result::Result<bool, GroupError> {
    begin(conn)?;
    let mut wake = false;
    let mut undo = false;
    for operation in batch.iter_mut() {
        let before = conn.total_changes();
        let ran = operation.run(conn);
        if !ran.ok && (!ran.clean || conn.total_changes() != before || conn.is_autocommit()) {
            undo = true;
            break;
        }
        wake |= ran.ok && ran.wake;
    }
    if undo {
        // Something failed after (or while) writing: start over with each operation in its
        // own savepoint, so only the failed ones lose their changes.
        tracing::debug!("an operation failed after writing; re-running its group with savepoints");
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        begin(conn)?;
        wake = false;
        for operation in batch.iter_mut() {
            let ran = run_in_savepoint(conn, operation.as_mut());
            wake |= ran.ok && ran.wake;
        }
    }
    match conn.execute_batch("COMMIT").map_err(map_error) {
        Ok(()) => Ok(wake),
        Err(error) => {
            tracing::error!(%error, "group commit failed");
            let _ = conn.execute_batch("ROLLBACK");
            Err(GroupError::Commit)
        }
    }
}

fn begin(conn: &Connection) -> std::result::Result<(), GroupError> {
    execute_cached(conn, "BEGIN IMMEDIATE").map_err(|error| {
        tracing::error!(error = %map_error(error), "cannot begin write transaction");
        GroupError::Begin
    })
}

/// Runs one operation inside a savepoint, rolling back only its own changes when it fails.
fn run_in_savepoint(conn: &Connection, operation: &mut dyn Operation) -> Ran {
    let failed = Ran {
        ok: false,
        clean: false,
        wake: false,
    };
    if let Err(error) = execute_cached(conn, "SAVEPOINT op") {
        operation.fail(map_error(error));
        return failed;
    }
    let ran = operation.run(conn);
    if !ran.ok {
        let _ = execute_cached(conn, "ROLLBACK TO op");
    }
    let _ = execute_cached(conn, "RELEASE op");
    ran
}

/// Runs a transaction control statement from the statement cache: they run for every group
/// (or operation), and parsing them each time (`execute_batch`) was a measurable share of the
/// writer's time.
fn execute_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}
