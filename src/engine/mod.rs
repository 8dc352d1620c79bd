//! The job engine: claims due steps under a fenced lease, runs them (collect from a connector,
//! deliver to a sink), and records each attempt's outcome with its retry schedule.
//!
//! Invariants: workers wake on the store's notify, never by polling the hot path; every write
//! about a claimed step carries its fence; a finished step is never run again unless a client
//! retries or replays it.

mod backoff;
pub mod breaker;
mod dispatcher;
mod execute;
mod maintenance;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::{Millis, SharedClock};
use crate::config::duration;
use crate::connectors::{ConnectorContext, ConnectorRegistry};
use crate::job::RetryBudget;
use crate::job::spec::StepDefaults;
use crate::observability::Telemetry;
use crate::sinks::{SinkContext, SinkRegistry};
use crate::store::SharedStore;

pub use backoff::{BackoffPolicy, FixedSchedule};
pub use breaker::{BreakerConfig, Breakers};
pub use dispatcher::Dispatcher;
pub use execute::{breaker_key, classify};
pub use maintenance::Maintenance;

/// Engine settings (`[engine]` in `gleaner.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Steps running at once in this process.
    pub concurrency: usize,
    /// Most steps claimed in one store round trip.
    pub claim_batch: usize,
    /// How long a claimed step stays leased without a heartbeat.
    #[serde(with = "duration")]
    pub lease_timeout: Duration,
    /// Default attempt limit per step.
    pub max_attempts: u32,
    /// Default time budget per step, counted from when it first became runnable.
    #[serde(with = "duration")]
    pub time_budget: Duration,
    #[serde(with = "duration")]
    pub backoff_base: Duration,
    #[serde(with = "duration")]
    pub backoff_cap: Duration,
    /// How often expired leases are looked for.
    #[serde(with = "duration")]
    pub sweep_interval: Duration,
    /// Finished jobs older than this are deleted.
    #[serde(with = "duration")]
    pub retention: Duration,
    #[serde(with = "duration")]
    pub prune_interval: Duration,
    /// Circuit breakers per upstream host and callback endpoint.
    pub breaker: BreakerConfig,
    /// Records kept per collect step as collected, before its processors (the "original"
    /// dataset of `GET /v1/jobs/{id}/records?dataset=original`); 0 keeps none.
    pub keep_original_records: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            concurrency: 256,
            claim_batch: 512,
            lease_timeout: Duration::from_secs(30),
            max_attempts: 25,
            time_budget: Duration::from_secs(24 * 3600),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(600),
            sweep_interval: Duration::from_secs(5),
            retention: Duration::from_secs(7 * 24 * 3600),
            prune_interval: Duration::from_secs(3600),
            breaker: BreakerConfig::default(),
            keep_original_records: 10_000,
        }
    }
}

impl EngineConfig {
    /// When a lease taken or extended at `now` expires.
    pub fn lease_until(&self, now: Millis) -> Millis {
        now + self.lease_timeout.as_millis() as i64
    }

    pub fn step_defaults(&self) -> StepDefaults {
        StepDefaults {
            max_attempts: self.max_attempts,
            budget_ms: self.time_budget.as_millis() as i64,
        }
    }

    /// The fresh budget a retried or replayed step gets.
    pub fn retry_budget(&self) -> RetryBudget {
        RetryBudget {
            max_attempts: self.max_attempts,
            budget_ms: self.time_budget.as_millis() as i64,
        }
    }

    pub fn backoff(&self) -> BackoffPolicy {
        BackoffPolicy {
            base: self.backoff_base,
            cap: self.backoff_cap,
        }
    }
}

/// Everything a running step may use, shared by all workers of a process.
#[derive(Clone)]
pub struct EngineContext {
    pub store: SharedStore,
    pub clock: SharedClock,
    pub connectors: ConnectorRegistry,
    pub sinks: SinkRegistry,
    pub connector_context: ConnectorContext,
    pub sink_context: SinkContext,
    pub telemetry: Telemetry,
    pub config: Arc<EngineConfig>,
    pub breakers: Breakers,
    /// Opens the sealed secrets of a step's settings when it runs.
    pub sealer: crate::secrets::Sealer,
}
