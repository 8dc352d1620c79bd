//! A small dedicated pool of OS threads for CPU-bound jobs that may never end (jq filters).
//!
//! Invariant: at most [`WORKERS`] live threads take jobs, and a caller waits at most its budget
//! once its job has started. An overrunning job's thread is abandoned (it runs on until the job
//! ends, then exits) and a fresh thread replaces it; past [`MAX_ABANDONED`] jobs are refused.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Threads taking jobs at any time.
pub const WORKERS: usize = 2;

/// Abandoned threads (still running an overrun job) tolerated before new jobs are refused.
pub const MAX_ABANDONED: usize = 16;

/// Stack of each pool thread: jaq recurses natively, so deep (but finite) filters and values
/// need room; the memory is only reserved, pages are committed as they are touched.
const STACK_BYTES: usize = 64 * 1024 * 1024;

/// Longest wait for a free thread before a job is given up as "pool busy".
const QUEUE_WAIT: Duration = Duration::from_secs(60);

/// Extra wait after the deadline, so a job that notices the deadline itself can report it
/// without its thread being abandoned.
const GRACE: Duration = Duration::from_millis(100);

/// Why a job produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("exceeded its time budget of {0:?}")]
    TimedOut(Duration),
    #[error("no pool thread became free within {0:?}")]
    Busy(Duration),
    #[error(
        "refused: {MAX_ABANDONED} earlier runs that overran their time budget are still running"
    )]
    Exhausted,
    #[error("panicked: {0}")]
    Panicked(String),
    #[error("cannot start a pool thread: {0}")]
    Spawn(String),
}

/// Runs `job` on the pool and blocks the calling thread until it returns or overruns `budget`
/// (counted from when a pool thread starts it). `job` receives its deadline so it can stop
/// itself between steps.
pub fn run<R, F>(budget: Duration, job: F) -> Result<R, PoolError>
where
    R: Send + 'static,
    F: FnOnce(Instant) -> R + Send + 'static,
{
    let pool = Pool::global();
    pool.ensure_workers()?;
    if pool.abandoned() >= MAX_ABANDONED {
        return Err(PoolError::Exhausted);
    }
    let slot = Arc::new(Slot::<R> {
        state: Mutex::new(State::Queued),
        changed: Condvar::new(),
    });
    let task_slot = Arc::clone(&slot);
    let task: Task = Box::new(move || task_slot.execute(budget, job));
    pool.sender
        .send(task)
        .map_err(|_| PoolError::Spawn("the pool queue is closed".into()))?;
    slot.wait(pool, budget)
}

/// A queued job, wrapped to report its result into its slot; returns whether the thread that
/// ran it was abandoned meanwhile (and must therefore exit).
type Task = Box<dyn FnOnce() -> Abandoned + Send>;

/// Whether a pool thread was given up on while running a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Abandoned(bool);

/// Where a job's caller and its pool thread meet.
struct Slot<R> {
    state: Mutex<State<R>>,
    changed: Condvar,
}

enum State<R> {
    Queued,
    Running {
        deadline: Instant,
    },
    Done(Result<R, PoolError>),
    /// The caller stopped waiting before a thread picked the job up.
    Cancelled,
    /// The caller stopped waiting while the job ran; the running thread is being replaced.
    Abandoned,
    /// The caller has taken the result.
    Taken,
}

impl<R> Slot<R> {
    fn lock(&self) -> MutexGuard<'_, State<R>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Pool-thread side: starts the job unless the caller gave up, and reports its result.
    fn execute<F: FnOnce(Instant) -> R>(&self, budget: Duration, job: F) -> Abandoned {
        let deadline = {
            let mut state = self.lock();
            if !matches!(*state, State::Queued) {
                return Abandoned(false);
            }
            if Pool::global().abandoned() >= MAX_ABANDONED {
                *state = State::Done(Err(PoolError::Exhausted));
                self.changed.notify_all();
                return Abandoned(false);
            }
            let deadline = Instant::now() + budget;
            *state = State::Running { deadline };
            deadline
        };
        self.changed.notify_all();
        let result = catch_unwind(AssertUnwindSafe(|| job(deadline))).map_err(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            PoolError::Panicked(message)
        });
        let mut state = self.lock();
        match *state {
            State::Running { .. } => {
                *state = State::Done(result);
                self.changed.notify_all();
                Abandoned(false)
            }
            State::Abandoned => Abandoned(true),
            _ => Abandoned(false),
        }
    }

    /// Caller side: waits for the result, cancelling a job that stays queued too long and
    /// abandoning one that overruns its deadline.
    fn wait(&self, pool: &'static Pool, budget: Duration) -> Result<R, PoolError> {
        let queue_deadline = Instant::now() + QUEUE_WAIT;
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            let until = match *state {
                State::Queued if now >= queue_deadline => {
                    *state = State::Cancelled;
                    return Err(PoolError::Busy(QUEUE_WAIT));
                }
                State::Queued => queue_deadline,
                State::Running { deadline } if now >= deadline + GRACE => {
                    *state = State::Abandoned;
                    drop(state);
                    pool.abandon();
                    return Err(PoolError::TimedOut(budget));
                }
                State::Running { deadline } => deadline + GRACE,
                State::Done(_) => {
                    return match std::mem::replace(&mut *state, State::Taken) {
                        State::Done(result) => result,
                        _ => Err(PoolError::Panicked("job result vanished".into())),
                    };
                }
                State::Cancelled | State::Abandoned | State::Taken => {
                    return Err(PoolError::Panicked("job result vanished".into()));
                }
            };
            state = self
                .changed
                .wait_timeout(state, until.saturating_duration_since(now))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Thread counts of the pool.
#[derive(Debug, Default)]
struct Counts {
    /// Threads taking jobs.
    live: usize,
    /// Threads still running a job their caller gave up on.
    abandoned: usize,
}

/// The process-wide pool: one queue shared by its threads.
struct Pool {
    sender: Sender<Task>,
    receiver: Mutex<Receiver<Task>>,
    counts: Mutex<Counts>,
}

impl Pool {
    fn global() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| {
            let (sender, receiver) = mpsc::channel();
            Pool {
                sender,
                receiver: Mutex::new(receiver),
                counts: Mutex::new(Counts::default()),
            }
        })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn abandoned(&self) -> usize {
        self.counts().abandoned
    }

    /// Starts threads until [`WORKERS`] are live; fails only if none can be started at all.
    fn ensure_workers(&'static self) -> Result<(), PoolError> {
        let mut counts = self.counts();
        while counts.live < WORKERS {
            let spawned = std::thread::Builder::new()
                .name("jq-worker".into())
                .stack_size(STACK_BYTES)
                .spawn(move || self.work());
            match spawned {
                Ok(_) => counts.live += 1,
                Err(error) if counts.live == 0 => return Err(PoolError::Spawn(error.to_string())),
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Records that a live thread was given up on and starts its replacement.
    fn abandon(&'static self) {
        {
            let mut counts = self.counts();
            counts.live = counts.live.saturating_sub(1);
            counts.abandoned += 1;
        }
        // A failed replacement is retried by the next caller's `ensure_workers`.
        let _ = self.ensure_workers();
    }

    /// A pool thread: takes tasks until it is abandoned (or the queue closes).
    fn work(&self) {
        loop {
            let task = {
                let receiver = self.receiver.lock().unwrap_or_else(PoisonError::into_inner);
                receiver.recv()
            };
            let Ok(task) = task else { return };
            if task() == Abandoned(true) {
                let mut counts = self.counts();
                counts.abandoned = counts.abandoned.saturating_sub(1);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_results_and_panics_as_errors() {
        // Budgets far above the work: with RUST_BACKTRACE set, the panic hook resolves a
        // backtrace on the pool thread, which took over a second on a loaded machine.
        let budget = Duration::from_secs(60);
        assert_eq!(run(budget, |_| 41 + 1), Ok(42));
        let panicked = run(budget, |_| -> u8 { panic!("boom") });
        assert_eq!(panicked, Err(PoolError::Panicked("boom".into())));
    }

    #[test]
    fn overrunning_job_is_abandoned_and_capacity_kept() {
        let started = Instant::now();
        let result = run(Duration::from_millis(50), |_| {
            std::thread::sleep(Duration::from_millis(600))
        });
        assert_eq!(result, Err(PoolError::TimedOut(Duration::from_millis(50))));
        assert!(started.elapsed() < Duration::from_millis(500));
        // Both live threads are free again even though one is still sleeping.
        let handles: Vec<_> = (0..WORKERS)
            .map(|i| std::thread::spawn(move || run(Duration::from_secs(1), move |_| i)))
            .collect();
        for (i, handle) in handles.into_iter().enumerate() {
            assert_eq!(handle.join().ok(), Some(Ok(i)));
        }
    }
}
