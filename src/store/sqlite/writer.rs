//! The single writer: one OS thread owns the only write connection and commits whatever
//! operations queued up meanwhile in one transaction (group commit), each in its own savepoint.
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

/// What an operation tells the writer after running inside its savepoint.
struct Ran {
    ok: bool,
    wake: bool,
    reply: Box<dyn FnOnce(Result<()>) + Send>,
}

/// A queued write: run it in the transaction, or abort it when no transaction can begin.
trait Operation: Send {
    fn run(self: Box<Self>, conn: &Connection) -> Ran;
    fn abort(self: Box<Self>, error: Error);
}

struct Typed<T, F> {
    operation: F,
    sender: oneshot::Sender<Result<T>>,
}

impl<T, F> Operation for Typed<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<(T, Wake)> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Ran {
        let Typed { operation, sender } = *self;
        let result = operation(conn);
        let ok = result.is_ok();
        let wake = matches!(result, Ok((_, Wake::Yes)));
        Ran {
            ok,
            wake,
            reply: Box::new(move |committed| {
                let _ = sender.send(committed.and(result.map(|(value, _)| value)));
            }),
        }
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
    pub async fn write<T, F>(&self, operation: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<(T, Wake)> + Send + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        let boxed: Box<dyn Operation> = Box::new(Typed { operation, sender });
        self.queue.send(boxed).await.map_err(|_| Error::Closed)?;
        receiver.await.map_err(|_| Error::Closed)?
    }
}

fn run(conn: Connection, mut inbox: mpsc::Receiver<Box<dyn Operation>>, notify: Arc<Notify>) {
    let mut batch: Vec<Box<dyn Operation>> = Vec::with_capacity(MAX_BATCH);
    let mut replies: Vec<Box<dyn FnOnce(Result<()>) + Send>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = inbox.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(operation) => batch.push(operation),
                Err(_) => break,
            }
        }
        let mut wake = false;
        let began = conn.execute_batch("BEGIN IMMEDIATE").map_err(map_error);
        if let Err(error) = began {
            tracing::error!(%error, "cannot begin write transaction");
            for operation in batch.drain(..) {
                operation.abort(Error::Database("cannot begin write transaction".into()));
            }
            continue;
        }
        for operation in batch.drain(..) {
            let ran = run_in_savepoint(&conn, operation);
            wake |= ran.ok && ran.wake;
            replies.push(ran.reply);
        }
        let committed = conn.execute_batch("COMMIT").map_err(map_error);
        if let Err(error) = &committed {
            tracing::error!(%error, "group commit failed");
            let _ = conn.execute_batch("ROLLBACK");
        }
        for reply in replies.drain(..) {
            reply(match &committed {
                Ok(()) => Ok(()),
                Err(_) => Err(Error::Database("commit failed".into())),
            });
        }
        if wake && committed.is_ok() {
            notify.notify_one();
        }
    }
}

/// Runs one operation inside a savepoint, rolling back only its own changes when it fails.
fn run_in_savepoint(conn: &Connection, operation: Box<dyn Operation>) -> Ran {
    if let Err(error) = execute_cached(conn, "SAVEPOINT op") {
        operation.abort(map_error(error));
        return Ran {
            ok: false,
            wake: false,
            reply: Box::new(|_| {}),
        };
    }
    let ran = operation.run(conn);
    if !ran.ok {
        let _ = execute_cached(conn, "ROLLBACK TO op");
    }
    let _ = execute_cached(conn, "RELEASE op");
    ran
}

/// Runs a savepoint statement from the statement cache: they run twice per operation, and
/// parsing them each time (`execute_batch`) was a measurable share of the writer's time.
fn execute_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}
