//! Background upkeep: rescuing steps whose lease expired (a crashed worker's steps run again)
//! and pruning finished jobs past their retention.

use tokio_util::sync::CancellationToken;

use super::EngineContext;

/// The rescue sweep and the pruning loop of one process.
pub struct Maintenance {
    context: EngineContext,
}

impl Maintenance {
    pub fn new(context: EngineContext) -> Self {
        Self { context }
    }

    /// Rescues at once every step left running by an earlier process. Only safe when this
    /// process is the only one using the store (the caller holds the data directory's lock).
    pub async fn rescue_all_now(&self) -> Result<u64, crate::store::Error> {
        let rescued = self
            .context
            .store
            .rescue(self.context.clock.now(), true)
            .await?;
        if rescued > 0 {
            tracing::info!(rescued, "rescued steps left running by an earlier process");
        }
        Ok(rescued)
    }

    /// Sweeps expired leases and prunes old jobs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let config = self.context.config.clone();
        let mut sweep = tokio::time::interval(config.sweep_interval);
        let mut prune = tokio::time::interval(config.prune_interval);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sweep.tick() => {
                    match self.context.store.rescue(self.context.clock.now(), false).await {
                        Ok(0) => {}
                        Ok(rescued) => tracing::info!(rescued, "rescued steps whose lease expired"),
                        Err(error) => tracing::warn!(%error, "lease sweep failed"),
                    }
                }
                _ = prune.tick() => {
                    let now = self.context.clock.now();
                    let before = now - config.retention.as_millis() as i64;
                    match self.context.store.prune(before, now).await {
                        Ok(0) => {}
                        Ok(pruned) => tracing::info!(pruned, "pruned finished jobs past retention"),
                        Err(error) => tracing::warn!(%error, "pruning failed"),
                    }
                }
            }
        }
    }
}
