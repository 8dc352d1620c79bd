//! Keeps the running pipelines in line with the store: starts those that should run, stops
//! those stopped or deleted, and restarts one whose definition or state changed. It wakes on
//! a nudge from the API in this process and checks every few seconds for changes made by
//! another.
//!
//! Invariant: a pipeline runs in one process at a time, the holder of its lease in the store.
//! Each pass takes or renews the leases of the pipelines that should run (a third of a lease
//! apart at most), stops those whose lease another process took, and gives back the leases of
//! those it stops; a source page commits only under its pipeline's holder, so a process that
//! lost a lease without noticing yet cannot collect beside the new one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::model::{Pipeline, PipelineState};
use super::runtime::{LiveView, PipelineContext, Runtime};
use crate::clock::Millis;

/// How often the store is checked for changes made by another process.
const RECONCILE_EVERY: Duration = Duration::from_secs(2);

struct Running {
    updated_at: Millis,
    runtime: Arc<Runtime>,
}

/// The pipelines this process runs.
pub struct PipelineManager {
    ctx: PipelineContext,
    running: Mutex<HashMap<Uuid, Running>>,
    /// Why a pipeline could not start, by id (cleared when it starts).
    failures: std::sync::Mutex<HashMap<Uuid, String>>,
    nudge: Notify,
    /// Parent of every runtime's token: cancelled when [`Self::run`] ends or is dropped, so
    /// no pipeline task outlives the manager's loop.
    root: CancellationToken,
}

impl PipelineManager {
    pub fn new(ctx: PipelineContext) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            running: Mutex::new(HashMap::new()),
            failures: std::sync::Mutex::new(HashMap::new()),
            nudge: Notify::new(),
            root: CancellationToken::new(),
        })
    }

    /// Asks for a reconcile now (after a change through the API).
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Reconciles until cancelled, then stops every pipeline and gives back its lease.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let _stop_all = self.root.clone().drop_guard();
        let every = RECONCILE_EVERY.min(self.ctx.lease / 3);
        loop {
            if let Err(error) = self.reconcile().await {
                tracing::error!(%error, "cannot reconcile pipelines with the store");
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.nudge.notified() => {}
                _ = tokio::time::sleep(every) => {}
            }
        }
        let running: Vec<(Uuid, Running)> = self.running.lock().await.drain().collect();
        let mut stopped = Vec::with_capacity(running.len());
        for (id, pipeline) in running {
            pipeline.runtime.stop().await;
            stopped.push(id);
        }
        self.release(stopped).await;
    }

    /// Gives back the leases of pipelines this process stopped running.
    async fn release(&self, ids: Vec<Uuid>) {
        if ids.is_empty() {
            return;
        }
        if let Err(error) = self
            .ctx
            .store
            .release_pipelines(self.ctx.owner.to_string(), ids)
            .await
        {
            tracing::warn!(%error, "cannot give back pipeline leases; they expire instead");
        }
    }

    /// One pass: take or renew the leases of the pipelines that should run, then start, stop
    /// and restart pipelines to match the store and the leases held.
    pub async fn reconcile(&self) -> Result<(), crate::store::Error> {
        let pipelines = self.ctx.store.list_pipelines().await?;
        let mut running = self.running.lock().await;
        let runnable: Vec<Uuid> = pipelines
            .iter()
            .filter(|pipeline| pipeline.state != PipelineState::Stopped)
            .map(|pipeline| pipeline.id)
            .collect();
        let now = self.ctx.clock.now();
        // No write at all on a store without runnable pipelines (every pass, most stores).
        let held: HashSet<Uuid> = if runnable.is_empty() {
            HashSet::new()
        } else {
            self.ctx
                .store
                .lease_pipelines(
                    self.ctx.owner.to_string(),
                    runnable,
                    now,
                    now + self.ctx.lease.as_millis() as Millis,
                )
                .await?
                .into_iter()
                .collect()
        };
        let wanted: HashMap<Uuid, &Pipeline> = pipelines
            .iter()
            .filter(|pipeline| held.contains(&pipeline.id))
            .map(|pipeline| (pipeline.id, pipeline))
            .collect();
        let stale: Vec<Uuid> = running
            .iter()
            .filter(|(id, run)| {
                wanted
                    .get(id)
                    .is_none_or(|pipeline| pipeline.updated_at != run.updated_at)
            })
            .map(|(id, _)| *id)
            .collect();
        let mut released = Vec::new();
        for id in stale {
            if let Some(run) = running.remove(&id) {
                run.runtime.stop().await;
                if held.contains(&id) {
                    // Its definition or state changed: started again below.
                    continue;
                }
                match pipelines.iter().find(|pipeline| pipeline.id == id) {
                    Some(pipeline) if pipeline.state != PipelineState::Stopped => {
                        tracing::warn!(pipeline = %pipeline.spec.name, "another process took this pipeline over; stopped here");
                    }
                    _ => released.push(id),
                }
            }
        }
        self.release(released).await;
        for (id, pipeline) in wanted {
            if running.contains_key(&id) {
                continue;
            }
            match Runtime::start(self.ctx.clone(), pipeline, &self.root).await {
                Ok(runtime) => {
                    self.lock_failures().remove(&id);
                    tracing::info!(pipeline = %pipeline.spec.name, state = pipeline.state.as_str(), "pipeline started");
                    running.insert(
                        id,
                        Running {
                            updated_at: pipeline.updated_at,
                            runtime,
                        },
                    );
                }
                Err(error) => {
                    let known = self.lock_failures().insert(id, error.to_string());
                    if known.is_none() {
                        tracing::error!(pipeline = %pipeline.spec.name, %error, "pipeline cannot start");
                    }
                }
            }
        }
        self.lock_failures()
            .retain(|id, _| pipelines.iter().any(|p| p.id == *id));
        Ok(())
    }

    fn lock_failures(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, String>> {
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The live view of a pipeline running here.
    pub async fn live(&self, id: Uuid) -> Option<LiveView> {
        self.running
            .lock()
            .await
            .get(&id)
            .map(|run| run.runtime.live())
    }

    /// Live views of every pipeline running here, for metrics.
    pub async fn live_all(&self) -> Vec<(Uuid, LiveView)> {
        self.running
            .lock()
            .await
            .iter()
            .map(|(id, run)| (*id, run.runtime.live()))
            .collect()
    }

    /// Why a pipeline that should run could not start.
    pub fn start_failure(&self, id: Uuid) -> Option<String> {
        self.lock_failures().get(&id).cloned()
    }
}
