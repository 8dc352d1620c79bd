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
//!
//! Operations come in two lanes. A foreground one has a client waiting on it (an HTTP request
//! that answers once the write is durable); a background one is the engine's own bookkeeping
//! (claims, page saves, finishes). A group of background operations only, started while a
//! client is submitting in a close loop, waits a moment ([`Pacing`]) for that client's next
//! request to join it: otherwise the request arrives just after the group began and waits for
//! that group's fsync and then its own, twice the commit latency it needs.

use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// When a client queued it; `None` for a background operation.
    fn foreground(&self) -> Option<Instant>;
}

struct Typed<T, F> {
    operation: F,
    sender: oneshot::Sender<Result<T>>,
    result: Option<Result<T>>,
    queued_at: Option<Instant>,
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

    fn foreground(&self) -> Option<Instant> {
        self.queued_at
    }
}

/// The handle that queues operations for the writer thread.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Box<dyn Operation>>,
    /// The writer thread, unparked when a foreground operation may end its wait.
    thread: std::thread::Thread,
}

/// Which lane an operation is queued in (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Foreground,
    Background,
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
        let handle = std::thread::Builder::new()
            .name("gleaner-sqlite-writer".into())
            .spawn(move || run(conn, inbox, notify))?;
        Ok(Self {
            queue,
            thread: handle.thread().clone(),
        })
    }

    /// Runs `operation` in the next group commit and returns its result once committed.
    /// `operation` may run more than once (after a rollback of its group); only the last run's
    /// result is returned, and only its writes are committed.
    pub async fn write<T, F>(&self, lane: Lane, operation: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<(T, Wake)> + Send + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        let queued_at = (lane == Lane::Foreground).then(Instant::now);
        let boxed: Box<dyn Operation> = Box::new(Typed {
            operation,
            sender,
            result: None,
            queued_at,
        });
        self.queue.send(boxed).await.map_err(|_| Error::Closed)?;
        if queued_at.is_some() {
            // Ends a wait for foreground work, if the writer is in one (else a no-op).
            self.thread.unpark();
        }
        receiver.await.map_err(|_| Error::Closed)?
    }
}

/// Longest a background group waits for a client's next request.
const HOLD_MAX: Duration = Duration::from_micros(500);
/// Added to the expected arrival, for the request's own jitter.
const HOLD_SLACK: Duration = Duration::from_micros(50);

/// Whether clients submit in a close loop, learnt from foreground operations: the time from a
/// group's reply to the next foreground operation (the client's think time, HTTP included),
/// smoothed.
#[derive(Debug, Default)]
struct Pacing {
    last_reply: Option<Instant>,
    think: Option<Duration>,
}

impl Pacing {
    /// Learns from a foreground operation queued at `queued_at`.
    fn arrived(&mut self, queued_at: Instant) {
        let Some(gap) = self
            .last_reply
            .and_then(|reply| queued_at.checked_duration_since(reply))
        else {
            return;
        };
        let gap = gap.min(Duration::from_millis(10));
        self.think = Some(match self.think {
            // An exponentially weighted mean, weight 1/8 for the new sample.
            Some(think) => (think * 7 + gap) / 8,
            None => gap,
        });
    }

    /// A group with foreground operations was answered at `at`.
    fn replied(&mut self, at: Instant) {
        self.last_reply = Some(at);
    }

    /// Until when a background-only group starting at `now` should wait for the next
    /// foreground operation: only while clients loop closely and that one is about due.
    fn hold_until(&self, now: Instant) -> Option<Instant> {
        let think = self.think?;
        if think > HOLD_MAX {
            return None;
        }
        let due = self.last_reply? + think + HOLD_SLACK;
        (due > now).then(|| due.min(now + HOLD_MAX))
    }
}

/// Moves whatever is queued into `batch`, up to [`MAX_BATCH`].
fn drain(inbox: &mut mpsc::Receiver<Box<dyn Operation>>, batch: &mut Vec<Box<dyn Operation>>) {
    while batch.len() < MAX_BATCH {
        match inbox.try_recv() {
            Ok(operation) => batch.push(operation),
            Err(_) => break,
        }
    }
}

/// Whether any operation of `batch` has a client waiting on it.
fn has_foreground(batch: &[Box<dyn Operation>]) -> bool {
    batch.iter().any(|op| op.foreground().is_some())
}

/// Waits until `until` for a foreground operation to join `batch`, taking in whatever is
/// queued meanwhile; a foreground send unparks the thread.
fn hold(
    inbox: &mut mpsc::Receiver<Box<dyn Operation>>,
    batch: &mut Vec<Box<dyn Operation>>,
    until: Instant,
) {
    loop {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::park_timeout(until - now);
        drain(inbox, batch);
        if has_foreground(batch) || batch.len() >= MAX_BATCH {
            return;
        }
    }
}

fn run(conn: Connection, mut inbox: mpsc::Receiver<Box<dyn Operation>>, notify: Arc<Notify>) {
    let mut batch: Vec<Box<dyn Operation>> = Vec::with_capacity(MAX_BATCH);
    let mut pacing = Pacing::default();
    while let Some(first) = inbox.blocking_recv() {
        batch.push(first);
        drain(&mut inbox, &mut batch);
        if !has_foreground(&batch)
            && let Some(until) = pacing.hold_until(Instant::now())
        {
            hold(&mut inbox, &mut batch, until);
        }
        let mut clients = false;
        for queued_at in batch.iter().filter_map(|op| op.foreground()) {
            pacing.arrived(queued_at);
            clients = true;
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
        if clients {
            pacing.replied(Instant::now());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn pacing_holds_only_for_a_client_in_a_close_loop() {
        let start = Instant::now();
        let mut pacing = Pacing::default();
        assert_eq!(pacing.hold_until(start), None, "nothing learnt yet");

        // A client that asks again 80 µs after each answer.
        let mut reply = start;
        for _ in 0..4 {
            pacing.replied(reply);
            pacing.arrived(reply + micros(80));
            reply += micros(400);
        }
        pacing.replied(reply);
        let until = pacing
            .hold_until(reply + micros(20))
            .expect("a close-loop client is about due");
        assert_eq!(until, reply + micros(80) + HOLD_SLACK);
        assert_eq!(
            pacing.hold_until(reply + micros(200)),
            None,
            "past the expected arrival"
        );

        // The client slows to one request every 2 ms: the mean passes the longest hold.
        for _ in 0..32 {
            pacing.arrived(reply + micros(2_000));
            reply += micros(2_400);
            pacing.replied(reply);
        }
        assert_eq!(pacing.hold_until(reply + micros(10)), None);
    }

    #[test]
    fn a_hold_never_exceeds_the_longest_wait() {
        let start = Instant::now();
        let mut pacing = Pacing::default();
        pacing.replied(start);
        pacing.arrived(start + HOLD_MAX);
        pacing.replied(start + micros(1_000));
        let now = start + micros(1_000);
        let until = pacing.hold_until(now).expect("due within the longest hold");
        assert!(until <= now + HOLD_MAX);
    }
}
