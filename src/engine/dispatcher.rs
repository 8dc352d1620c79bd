//! The dispatcher: claims due steps in batches while there are free worker slots, runs each on
//! its own task (and then the deliver step a finished collect step hands back, in the same
//! slot), and sleeps until the store signals new work, a slot frees, or the next retry falls
//! due.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::EngineContext;
use super::execute::run_step;
use crate::job::Claimed;
use crate::store::Handed;

/// Runs steps for one process. Several dispatchers (processes) may share one store: claims are
/// exclusive and every write is fenced.
pub struct Dispatcher {
    context: EngineContext,
    /// The lease owner name of this process's workers.
    owner: String,
}

impl Dispatcher {
    pub fn new(context: EngineContext) -> Self {
        let owner = format!("worker-{}", uuid::Uuid::now_v7().simple());
        Self { context, owner }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Runs until `shutdown`, then waits for the steps in flight to end.
    pub async fn run(self, shutdown: CancellationToken) {
        let context = self.context;
        let slots = Arc::new(Semaphore::new(context.config.concurrency.max(1)));
        let slot_freed = Arc::new(Notify::new());
        let work = context.store.work_available();
        let tracker = TaskTracker::new();
        let owner: Arc<str> = self.owner.into();
        while !shutdown.is_cancelled() {
            // Arm the wake-ups before looking, so a signal between the claim and the wait is kept.
            let new_work = work.notified();
            let freed = slot_freed.notified();
            tokio::pin!(new_work, freed);
            new_work.as_mut().enable();
            freed.as_mut().enable();

            let free = slots
                .available_permits()
                .min(context.config.claim_batch.max(1));
            let mut claimed_all = false;
            if free > 0 {
                let now = context.clock.now();
                let lease_until = context.config.lease_until(now);
                match context.store.claim(&owner, free, now, lease_until).await {
                    Ok(claimed) => {
                        claimed_all = claimed.len() == free;
                        for step in claimed {
                            let Ok(permit) = slots.clone().try_acquire_owned() else {
                                tracing::error!(
                                    step_id = step.step.id,
                                    "claimed a step without a free slot"
                                );
                                break;
                            };
                            let context = context.clone();
                            let slot_freed = slot_freed.clone();
                            let stopping = shutdown.clone();
                            tracker.spawn(async move {
                                run_slot(&context, step, &stopping).await;
                                drop(permit);
                                slot_freed.notify_one();
                            });
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "claiming steps failed");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                            _ = shutdown.cancelled() => {}
                        }
                        continue;
                    }
                }
            }
            if claimed_all {
                continue;
            }
            if slots.available_permits() == 0 {
                tokio::select! {
                    _ = &mut freed => {}
                    _ = shutdown.cancelled() => {}
                }
                settle().await;
                continue;
            }
            let next_due = context.store.next_due().await.unwrap_or(None);
            let due = async {
                match next_due {
                    Some(at) => context.clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let slot_freed_first = tokio::select! {
                _ = &mut new_work => false,
                _ = &mut freed => true,
                _ = due => false,
                _ = shutdown.cancelled() => false,
            };
            if slot_freed_first {
                settle().await;
            }
        }
        tracker.close();
        tracker.wait().await;
    }
}

/// Runs `step` and then each step it hands back, in one worker slot. A stopping worker takes
/// on no delivery: it is queued for the next process instead.
async fn run_slot(context: &EngineContext, step: Claimed, stopping: &CancellationToken) {
    let mut next = Some(Handed {
        claimed: step,
        input: None,
    });
    while let Some(Handed { claimed, input }) = next {
        next = run_step(context, claimed, input, !stopping.is_cancelled()).await;
    }
}

/// Lets the other tasks woken with the one that freed a slot run first. One group commit ends
/// many steps at once, and their tasks release their slots one after another: claiming at the
/// first release claimed one step per round trip to the store, each a transaction of its own.
/// Yielding a few times (microseconds, not a timer) turns those into one claim of many.
async fn settle() {
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}
