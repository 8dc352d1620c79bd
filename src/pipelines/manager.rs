//! Keeps the running pipelines in line with the store: starts those that should run, stops
//! those stopped or deleted, and restarts one whose definition or state changed. It wakes on
//! a nudge from the API in this process and checks every few seconds for changes made by
//! another.

use std::collections::HashMap;
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

    /// Reconciles until cancelled, then stops every pipeline.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let _stop_all = self.root.clone().drop_guard();
        loop {
            if let Err(error) = self.reconcile().await {
                tracing::error!(%error, "cannot read pipelines");
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.nudge.notified() => {}
                _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            }
        }
        let running: Vec<Running> = self.running.lock().await.drain().map(|(_, r)| r).collect();
        for pipeline in running {
            pipeline.runtime.stop().await;
        }
    }

    /// One pass: start, stop and restart pipelines to match the store.
    pub async fn reconcile(&self) -> Result<(), crate::store::Error> {
        let pipelines = self.ctx.store.list_pipelines().await?;
        let mut running = self.running.lock().await;
        let wanted: HashMap<Uuid, &Pipeline> = pipelines
            .iter()
            .filter(|pipeline| pipeline.state != PipelineState::Stopped)
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
        for id in stale {
            if let Some(run) = running.remove(&id) {
                run.runtime.stop().await;
            }
        }
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
