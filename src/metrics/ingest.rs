//! Durable ingest: a batch is checked, appended to the store's metric log (group-committed),
//! then aggregated in memory; the answer goes out after both. At start the aggregates are
//! rebuilt from the last snapshot plus the log after it, so an acknowledged event survives
//! kill -9 and is counted once.
//!
//! Invariants: a series' type is claimed (under one lock) before its batch is logged, so two
//! concurrent batches can never log different types for one new series and the log replays to
//! exactly the state that was acknowledged; a snapshot is taken with ingest paused, so it holds
//! exactly the batches logged up to its sequence number.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{RwLock, Semaphore};
use tokio_util::sync::CancellationToken;

use super::batch::{self, BatchConflict};
use super::{Event, EventBatch, MetricType, MetricsConfig, MetricsRegistry, SeriesKey, Windowed};
use crate::clock::{Millis, SharedClock};
use crate::store::{Error as StoreError, SharedStore};

/// The kind of a log entry holding a grouped batch ([`EventBatch::to_log`]); entries of
/// kind `events` hold the first, one-entry-per-event form.
const LOG_KIND: &str = "series";

/// How long a batch id is recognised after its batch.
const BATCH_ID_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why a batch (or a deletion) was not taken.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(
        "events[{index}]: series {key} is a {existing}, not a {got}; a series keeps the type of its first event"
    )]
    TypeMismatch {
        index: usize,
        key: String,
        existing: &'static str,
        got: &'static str,
    },
    #[error("ingest is saturated; retry shortly")]
    Saturated,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The outcome of an accepted batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ingested {
    pub accepted: usize,
    /// The batch id was seen before: nothing was counted again.
    pub duplicate: bool,
}

/// Metric ingest and the aggregates behind the query routes.
pub struct MetricsService {
    store: SharedStore,
    clock: SharedClock,
    registry: MetricsRegistry,
    config: MetricsConfig,
    /// The type each known series was claimed with.
    types: Mutex<HashMap<SeriesKey, MetricType>>,
    /// Ingest holds it shared; a snapshot or a deletion holds it alone.
    gate: RwLock<()>,
    in_flight: Semaphore,
    /// Highest log sequence number written.
    last_seq: AtomicI64,
    /// Events logged since the last snapshot.
    since_snapshot: AtomicU64,
    /// The StatsD listener's address and counters, once it runs.
    statsd: std::sync::OnceLock<(std::net::SocketAddr, Arc<super::StatsdStats>)>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl From<BatchConflict> for IngestError {
    fn from(conflict: BatchConflict) -> Self {
        IngestError::TypeMismatch {
            index: conflict.index,
            key: conflict.key.to_string(),
            existing: conflict.existing.as_str(),
            got: conflict.got.as_str(),
        }
    }
}

impl MetricsService {
    /// Rebuilds the aggregates from the snapshot and the log after it.
    pub async fn open(
        store: SharedStore,
        clock: SharedClock,
        config: MetricsConfig,
    ) -> Result<Arc<Self>, StoreError> {
        let registry = MetricsRegistry::new(config.window, config.keep_windows);
        let mut through = 0;
        if let Some((seq, data)) = store.metric_snapshot().await? {
            let series: Vec<(SeriesKey, Windowed)> = serde_json::from_slice(&data)
                .map_err(|error| StoreError::Corrupt(format!("metric snapshot: {error}")))?;
            registry.restore(series);
            through = seq;
        }
        let entries = store.metric_log_after(through).await?;
        let replayed = entries.len();
        let mut last = through;
        for entry in entries {
            last = entry.seq;
            match entry.kind.as_str() {
                "delete" => {
                    if let Ok(key) = SeriesKey::parse(&entry.payload) {
                        registry.delete(&key);
                    }
                }
                kind => {
                    let batch = if kind == LOG_KIND {
                        EventBatch::from_log(&entry.payload)
                    } else {
                        batch::from_event_log(&entry.payload)
                    }
                    .map_err(|error| {
                        StoreError::Corrupt(format!("metric log entry {}: {error}", entry.seq))
                    })?;
                    if let Err(error) = registry.apply(&batch, entry.received_at) {
                        tracing::error!(seq = entry.seq, %error, "a logged metric batch no longer applies");
                    }
                }
            }
        }
        let types = registry.kinds().into_iter().collect();
        if replayed > 0 {
            tracing::info!(
                replayed,
                series = registry.len(),
                "metric aggregates rebuilt from the log"
            );
        }
        Ok(Arc::new(Self {
            store,
            clock,
            in_flight: Semaphore::new(config.max_in_flight.max(1)),
            registry,
            config,
            types: Mutex::new(types),
            gate: RwLock::new(()),
            last_seq: AtomicI64::new(last),
            since_snapshot: AtomicU64::new(replayed as u64),
            statsd: std::sync::OnceLock::new(),
        }))
    }

    pub fn registry(&self) -> &MetricsRegistry {
        &self.registry
    }

    pub fn config(&self) -> &MetricsConfig {
        &self.config
    }

    /// Records the running StatsD listener (its bound address, its counters).
    pub fn attach_statsd(&self, addr: std::net::SocketAddr, stats: Arc<super::StatsdStats>) {
        let _ = self.statsd.set((addr, stats));
    }

    /// The StatsD listener's address and counters, if it runs.
    pub fn statsd(&self) -> Option<(std::net::SocketAddr, Arc<super::StatsdStats>)> {
        self.statsd.get().cloned()
    }

    /// Every series in Prometheus text (`user_*`), with the StatsD counters.
    pub fn exposition(&self) -> String {
        let now = self.clock.now();
        let mut series = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .registry
                .list(&Default::default(), after.as_deref(), 1000, now);
            let more = page.len() == 1000;
            after = page.last().map(|view| view.key.clone());
            series.extend(page);
            if !more {
                break;
            }
        }
        let statsd = self.statsd.get().map(|(_, stats)| stats.as_ref());
        super::exposition::render(&series, statsd)
    }

    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    /// Claims the type of every series in the batch; returns the keys claimed anew (to give
    /// back if the batch is not logged).
    fn claim(&self, batch: &EventBatch) -> Result<Vec<SeriesKey>, IngestError> {
        let mut types = lock(&self.types);
        let mut claimed: Vec<SeriesKey> = Vec::new();
        for series in batch.series() {
            match types.get(&series.key) {
                Some(existing) if *existing != series.kind => {
                    let error = IngestError::TypeMismatch {
                        index: series.first,
                        key: series.key.to_string(),
                        existing: existing.as_str(),
                        got: series.kind.as_str(),
                    };
                    for key in &claimed {
                        types.remove(key);
                    }
                    return Err(error);
                }
                Some(_) => {}
                None => {
                    types.insert(series.key.clone(), series.kind);
                    claimed.push(series.key.clone());
                }
            }
        }
        Ok(claimed)
    }

    fn unclaim(&self, keys: &[SeriesKey]) {
        let mut types = lock(&self.types);
        for key in keys {
            types.remove(key);
        }
    }

    /// Groups `events` into a batch and ingests it (see [`Self::ingest`]).
    pub async fn ingest_events(
        &self,
        batch_id: Option<String>,
        events: Vec<Event>,
    ) -> Result<Ingested, IngestError> {
        let batch = EventBatch::from_events(events)?;
        self.ingest(batch_id, batch).await
    }

    /// Logs and aggregates a batch; with a `batch_id` seen before, counts nothing again.
    pub async fn ingest(
        &self,
        batch_id: Option<String>,
        batch: EventBatch,
    ) -> Result<Ingested, IngestError> {
        let _slot = self
            .in_flight
            .try_acquire()
            .map_err(|_| IngestError::Saturated)?;
        let _shared = self.gate.read().await;
        let claimed = self.claim(&batch)?;
        let now = self.clock.now();
        let appended = self
            .store
            .append_metric_log(batch_id, LOG_KIND, batch.to_log(), now)
            .await;
        let seq = match appended {
            Ok(Some(seq)) => seq,
            Ok(None) => {
                self.unclaim(&claimed);
                return Ok(Ingested {
                    accepted: 0,
                    duplicate: true,
                });
            }
            Err(error) => {
                self.unclaim(&claimed);
                return Err(error.into());
            }
        };
        if let Err(error) = self.registry.apply(&batch, now) {
            // Cannot happen: the types were claimed above. Logged loudly if it ever does.
            tracing::error!(seq, %error, "a logged metric batch did not apply");
        }
        self.last_seq.fetch_max(seq, Ordering::SeqCst);
        self.since_snapshot
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(Ingested {
            accepted: batch.len(),
            duplicate: false,
        })
    }

    /// Deletes a series durably; `false` when it does not exist.
    pub async fn delete(&self, key: &SeriesKey) -> Result<bool, IngestError> {
        let _alone = self.gate.write().await;
        if !lock(&self.types).contains_key(key) {
            return Ok(false);
        }
        let now = self.clock.now();
        if let Some(seq) = self
            .store
            .append_metric_log(None, "delete", key.to_string(), now)
            .await?
        {
            self.last_seq.fetch_max(seq, Ordering::SeqCst);
        }
        lock(&self.types).remove(key);
        self.registry.delete(key);
        self.since_snapshot.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Writes a snapshot of every aggregate and drops the log it covers.
    pub async fn snapshot(&self) -> Result<(), StoreError> {
        let _alone = self.gate.write().await;
        let through = self.last_seq.load(Ordering::SeqCst);
        let mut data = Vec::new();
        self.registry
            .write_snapshot(&mut data)
            .map_err(|error| StoreError::Database(format!("metric snapshot: {error}")))?;
        let now = self.clock.now();
        let keep_after = now - BATCH_ID_TTL.as_millis() as Millis;
        self.store
            .save_metric_snapshot(through, data, keep_after, now)
            .await?;
        self.since_snapshot.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Snapshots every `snapshot_every` when something changed, and forgets old batch ids,
    /// until cancelled; then takes a last snapshot.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(self.config.snapshot_every) => {}
            }
            if self.since_snapshot.load(Ordering::Relaxed) > 0
                && let Err(error) = self.snapshot().await
            {
                tracing::error!(%error, "cannot snapshot the metric aggregates");
            }
            let before = self.clock.now() - BATCH_ID_TTL.as_millis() as Millis;
            if let Err(error) = self.store.prune_metric_ids(before).await {
                tracing::warn!(%error, "cannot prune old metric batch ids");
            }
        }
        if self.since_snapshot.load(Ordering::Relaxed) > 0
            && let Err(error) = self.snapshot().await
        {
            tracing::error!(%error, "cannot snapshot the metric aggregates at shutdown");
        }
    }
}
