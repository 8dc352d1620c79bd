//! `[metrics]`: windows, snapshots, ingest limits and the StatsD listener.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::duration;

/// Settings of metric ingest and aggregation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Width of the tumbling windows kept besides each series' lifetime aggregate.
    #[serde(with = "duration")]
    pub window: Duration,
    /// How many windows each series keeps (the retention is `window × keep_windows`).
    pub keep_windows: usize,
    /// How often the aggregates are snapshotted (and the ingest log behind them dropped).
    #[serde(with = "duration")]
    pub snapshot_every: Duration,
    /// Batches being ingested at once; more are answered 429 with `Retry-After`.
    pub max_in_flight: usize,
    /// Most events in one batch.
    pub max_batch: usize,
    /// Address of the StatsD UDP listener (`"127.0.0.1:8125"`); off when absent.
    pub statsd_listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            keep_windows: 60,
            snapshot_every: Duration::from_secs(30),
            max_in_flight: 512,
            max_batch: 10_000,
            statsd_listen: None,
        }
    }
}
