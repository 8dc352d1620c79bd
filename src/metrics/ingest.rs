//! Durable ingest: a batch is checked, appended to the store's metric log (group-committed),
//! then aggregated in memory; the answer goes out after both. At start the aggregates are
//! rebuilt from the last snapshot plus the log after it, so an acknowledged event survives
//! kill -9 and is counted once.
//!
//! Invariants: a series' type is claimed (under one lock) before its batch is logged, so two
//! concurrent batches can never log different types for one new series and the log replays to
//! exactly the state that was acknowledged; a snapshot is serialised with ingest paused, so it
//! holds exactly the batches logged up to its sequence number.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{RwLock, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

use super::batch::{self, BatchConflict};
use super::claims::{Held, TypeClaims};
use super::{Event, EventBatch, MetricsConfig, MetricsRegistry, SeriesKey, Windowed};
use crate::clock::{Millis, SharedClock};
use crate::store::{Error as StoreError, NewLogEntry, SharedStore};

/// The kind of a log entry holding a grouped batch ([`EventBatch::to_log`]); entries of
/// kind `events` hold the first, one-entry-per-event form.
const LOG_KIND: &str = "series";
/// The kind of a log entry deleting the series its payload names.
const DELETE_KIND: &str = "delete";

/// How long a batch id is recognised after its batch.
const BATCH_ID_TTL: Duration = Duration::from_secs(24 * 3600);

/// Most bytes of one stored part of a snapshot.
const SNAPSHOT_PART_BYTES: usize = 1 << 20;

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

/// What a snapshot wrote.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotTaken {
    pub series: usize,
    /// Serialised size of the aggregates.
    pub bytes: usize,
    /// How long ingest waited: until in-flight batches were applied and the aggregates
    /// serialised (not while they were written).
    pub ingest_paused: Duration,
}

/// Metric ingest and the aggregates behind the query routes.
pub struct MetricsService {
    store: SharedStore,
    clock: SharedClock,
    registry: MetricsRegistry,
    config: MetricsConfig,
    /// The type each known series was claimed with.
    types: TypeClaims,
    /// Ingest holds it shared; a snapshot or a deletion holds it alone.
    gate: RwLock<()>,
    in_flight: Semaphore,
    /// Highest log sequence number written.
    last_seq: AtomicI64,
    /// Events logged since the last snapshot.
    since_snapshot: AtomicU64,
    /// The StatsD listener's address and counters, once it runs.
    statsd: std::sync::OnceLock<(std::net::SocketAddr, Arc<super::StatsdStats>)>,
    /// Entries waiting for the flusher, and whether it runs.
    queue: Mutex<Queue>,
    /// Held while the flusher applies entries and moves `last_seq`, and while a snapshot
    /// reads both.
    applying: Mutex<()>,
    /// Held through a whole snapshot, its write included.
    snapshotting: tokio::sync::Mutex<()>,
}

/// A log entry waiting for the flusher.
enum Pending {
    /// Batches without a batch id, from one request or several combined, with the log form
    /// of each (written by its request, so that work is spread over the requests).
    Combined {
        batch: EventBatch,
        logged: Vec<String>,
        held: Held,
    },
    Identified {
        batch_id: String,
        batch: EventBatch,
        logged: String,
        held: Held,
    },
    Delete(SeriesKey),
}

impl Pending {
    /// The log entry to write; takes the log form out (it is not needed afterwards).
    fn entry(&mut self) -> NewLogEntry {
        match self {
            Pending::Combined { logged, .. } => NewLogEntry {
                batch_id: None,
                kind: LOG_KIND,
                payload: batch::join_logs(std::mem::take(logged)),
            },
            Pending::Identified {
                batch_id, logged, ..
            } => NewLogEntry {
                batch_id: Some(batch_id.clone()),
                kind: LOG_KIND,
                payload: std::mem::take(logged),
            },
            Pending::Delete(key) => NewLogEntry {
                batch_id: None,
                kind: DELETE_KIND,
                payload: key.to_string(),
            },
        }
    }
}

/// A log write in flight and the entries it holds.
struct Writing {
    queued: Vec<(Pending, Vec<Answer>)>,
    now: Millis,
    write: tokio::task::JoinHandle<Result<Vec<Option<i64>>, StoreError>>,
}

/// What a request waiting on the flusher is told: its entry's sequence number, `None` when
/// its batch id was seen before.
type Answer = oneshot::Sender<Result<Option<i64>, StoreError>>;

/// The flusher's queue, in log order.
#[derive(Default)]
struct Queue {
    pending: Vec<(Pending, Vec<Answer>)>,
    flushing: bool,
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
        if let Some((seq, parts)) = store.metric_snapshot().await? {
            for (index, part) in parts.into_iter().enumerate() {
                let series: Vec<(SeriesKey, Windowed)> =
                    serde_json::from_slice(&part).map_err(|error| {
                        StoreError::Corrupt(format!("metric snapshot part {index}: {error}"))
                    })?;
                registry.restore(series);
            }
            through = seq;
        }
        let entries = store.metric_log_after(through).await?;
        let replayed = entries.len();
        let mut last = through;
        for entry in entries {
            last = entry.seq;
            match entry.kind.as_str() {
                DELETE_KIND => {
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
        let types = TypeClaims::settled(registry.kinds());
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
            types,
            gate: RwLock::new(()),
            last_seq: AtomicI64::new(last),
            since_snapshot: AtomicU64::new(replayed as u64),
            statsd: std::sync::OnceLock::new(),
            queue: Mutex::new(Queue::default()),
            applying: Mutex::new(()),
            snapshotting: tokio::sync::Mutex::new(()),
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

    /// Groups `events` into a batch and ingests it (see [`Self::ingest`]).
    pub async fn ingest_events(
        self: &Arc<Self>,
        batch_id: Option<String>,
        events: Vec<Event>,
    ) -> Result<Ingested, IngestError> {
        let batch = EventBatch::from_events(events)?;
        self.ingest(batch_id, batch).await
    }

    /// Logs and aggregates a batch; with a `batch_id` seen before, counts nothing again.
    pub async fn ingest(
        self: &Arc<Self>,
        batch_id: Option<String>,
        batch: EventBatch,
    ) -> Result<Ingested, IngestError> {
        let _slot = self
            .in_flight
            .try_acquire()
            .map_err(|_| IngestError::Saturated)?;
        let _shared = self.gate.read().await;
        let held = self.types.claim(&batch)?;
        let accepted = batch.len();
        let logged = batch.to_log();
        let pending = match batch_id {
            Some(batch_id) => Pending::Identified {
                batch_id,
                batch,
                logged,
                held,
            },
            None => Pending::Combined {
                batch,
                logged: vec![logged],
                held,
            },
        };
        // The flusher ends the type claims, logged or not, even if this request goes away.
        match self.submit(pending).await? {
            Some(_) => Ok(Ingested {
                accepted,
                duplicate: false,
            }),
            None => Ok(Ingested {
                accepted: 0,
                duplicate: true,
            }),
        }
    }

    /// Deletes a series durably; `false` when it does not exist.
    pub async fn delete(self: &Arc<Self>, key: &SeriesKey) -> Result<bool, IngestError> {
        let _alone = self.gate.write().await;
        if !self.types.contains(key) {
            return Ok(false);
        }
        self.submit(Pending::Delete(key.clone())).await?;
        Ok(true)
    }

    /// Queues `pending` for the flusher (combined with the batch queued last when both carry
    /// no batch id and together fit in `max_batch`), starts the flusher if it is idle, and
    /// waits for the answer: the entry's log sequence number, `None` for a batch id seen
    /// before.
    async fn submit(self: &Arc<Self>, pending: Pending) -> Result<Option<i64>, StoreError> {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut queue = lock(&self.queue);
            let max = self.config.max_batch.max(1);
            let alone = match (pending, queue.pending.last_mut()) {
                (
                    Pending::Combined {
                        batch,
                        logged,
                        held,
                    },
                    Some((
                        Pending::Combined {
                            batch: last,
                            logged: last_logged,
                            held: last_held,
                        },
                        answers,
                    )),
                ) if last.len() + batch.len() <= max => match last.merge(batch) {
                    Ok(()) => {
                        last_logged.extend(logged);
                        last_held.absorb(held);
                        answers.push(answer);
                        None
                    }
                    Err(batch) => Some((
                        Pending::Combined {
                            batch,
                            logged,
                            held,
                        },
                        answer,
                    )),
                },
                (pending, _) => Some((pending, answer)),
            };
            if let Some((pending, answer)) = alone {
                queue.pending.push((pending, vec![answer]));
            }
            !std::mem::replace(&mut queue.flushing, true)
        };
        if start {
            tokio::spawn(Arc::clone(self).flush());
        }
        answered.await.unwrap_or(Err(StoreError::Closed))
    }

    /// The flusher: writes whatever is queued as log entries in one transaction, then applies
    /// them in log order and answers their requests; until the queue is empty. The next write
    /// goes out before the last one is applied, so the store is busy meanwhile. It runs as its
    /// own task, so a request that goes away cannot leave a logged batch unapplied.
    async fn flush(self: Arc<Self>) {
        let mut writing = self.start_write(true);
        while let Some(current) = writing {
            let written = current.write.await.unwrap_or_else(|error| {
                Err(StoreError::Database(format!("metric log write: {error}")))
            });
            let next = self.start_write(false);
            self.settle(current.queued, written, current.now);
            writing = next.or_else(|| self.start_write(true));
        }
    }

    /// Takes whatever is queued and starts writing it; `None` when nothing is queued, and then,
    /// with `stop`, the flusher is marked idle (under the same lock as the check).
    fn start_write(&self, stop: bool) -> Option<Writing> {
        let mut queued = {
            let mut queue = lock(&self.queue);
            if queue.pending.is_empty() {
                if stop {
                    queue.flushing = false;
                }
                return None;
            }
            std::mem::take(&mut queue.pending)
        };
        let entries = queued
            .iter_mut()
            .map(|(pending, _)| pending.entry())
            .collect();
        let now = self.clock.now();
        let store = Arc::clone(&self.store);
        let write = tokio::spawn(async move { store.append_metric_log(entries, now).await });
        Some(Writing { queued, now, write })
    }

    /// Applies written entries in order, ends their type claims and answers their requests.
    fn settle(
        &self,
        queued: Vec<(Pending, Vec<Answer>)>,
        written: Result<Vec<Option<i64>>, StoreError>,
        now: Millis,
    ) {
        if let Ok(seqs) = &written {
            let _applying = lock(&self.applying);
            for ((pending, _), seq) in queued.iter().zip(seqs) {
                if let Some(seq) = seq {
                    self.apply(pending, *seq, now);
                }
            }
        }
        for (index, (pending, waiters)) in queued.into_iter().enumerate() {
            let answer = match &written {
                Ok(seqs) => Ok(seqs.get(index).copied().flatten()),
                Err(error) => Err(error.clone()),
            };
            if let Pending::Combined { held, .. } | Pending::Identified { held, .. } = pending {
                self.types.release(held, matches!(answer, Ok(Some(_))));
            }
            for waiter in waiters {
                let _ = waiter.send(answer.clone());
            }
        }
    }

    /// Applies a logged entry to the aggregates (the caller holds `applying`).
    fn apply(&self, pending: &Pending, seq: i64, now: Millis) {
        match pending {
            Pending::Combined { batch, .. } | Pending::Identified { batch, .. } => {
                if let Err(error) = self.registry.apply(batch, now) {
                    // Cannot happen: the types were claimed before the batch was queued.
                    tracing::error!(seq, %error, "a logged metric batch did not apply");
                }
                self.since_snapshot
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Pending::Delete(key) => {
                self.types.remove(key);
                self.registry.delete(key);
                self.since_snapshot.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.last_seq.fetch_max(seq, Ordering::SeqCst);
    }

    /// Writes a snapshot of every aggregate and drops the log it covers. Ingest is paused only
    /// while the aggregates are serialised; batches logged while the snapshot is being written
    /// have later sequence numbers, so the log after `through` still holds them.
    pub async fn snapshot(&self) -> Result<SnapshotTaken, StoreError> {
        // One snapshot at a time: an older one saved after a newer one would replace it after
        // the newer one dropped the log between them.
        let _one = self.snapshotting.lock().await;
        let started = std::time::Instant::now();
        let (through, parts, series, events) = {
            let _alone = self.gate.write().await;
            // A batch whose request went away may still be flushing: it is either wholly in
            // this snapshot and covered by `through`, or in neither.
            let _applying = lock(&self.applying);
            let through = self.last_seq.load(Ordering::SeqCst);
            let parts = self
                .registry
                .write_snapshot(SNAPSHOT_PART_BYTES)
                .map_err(|error| StoreError::Database(format!("metric snapshot: {error}")))?;
            let series = self.registry.len();
            let events = self.since_snapshot.swap(0, Ordering::Relaxed);
            (through, parts, series, events)
        };
        let taken = SnapshotTaken {
            series,
            bytes: parts.iter().map(Vec::len).sum(),
            ingest_paused: started.elapsed(),
        };
        let now = self.clock.now();
        let keep_after = now - BATCH_ID_TTL.as_millis() as Millis;
        if let Err(error) = self
            .store
            .save_metric_snapshot(through, parts, keep_after, now)
            .await
        {
            self.since_snapshot.fetch_add(events, Ordering::Relaxed);
            return Err(error);
        }
        tracing::debug!(
            through,
            series = taken.series,
            bytes = taken.bytes,
            ingest_paused_ms = taken.ingest_paused.as_millis() as u64,
            "metric snapshot written"
        );
        Ok(taken)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::metrics::AggregateView;
    use crate::metrics::MetricType;
    use crate::store::sqlite::SqliteStore;

    fn counter(name: &str, value: f64) -> Event {
        Event {
            key: SeriesKey::parse(name).unwrap(),
            kind: MetricType::Counter,
            value,
        }
    }

    async fn service(dir: &std::path::Path) -> Arc<MetricsService> {
        let store: SharedStore = Arc::new(SqliteStore::open(&dir.join("m.db"), 2).unwrap());
        MetricsService::open(
            store,
            Arc::new(ManualClock::new(1_000)),
            MetricsConfig::default(),
        )
        .await
        .unwrap()
    }

    fn count(service: &MetricsService, name: &str) -> Option<(f64, u64)> {
        let view = service
            .registry()
            .get(&SeriesKey::parse(name).unwrap(), service.now())?;
        match view.aggregate {
            AggregateView::Counter(counter) => Some((counter.value, counter.count)),
            other => panic!("{name} is not a counter: {other:?}"),
        }
    }

    /// Waits until the flusher has nothing queued and has stopped.
    async fn idle(service: &MetricsService) {
        for _ in 0..500 {
            if !lock(&service.queue).flushing {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the flusher did not finish");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_that_goes_away_still_has_its_batch_applied_and_a_retry_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(dir.path()).await;
        // Dropped after its first poll: queued, then abandoned while its write is in flight.
        let abandoned = service.ingest_events(Some("b-1".into()), vec![counter("hits", 5.0)]);
        tokio::select! {
            biased;
            _ = abandoned => panic!("the write cannot have finished within one poll"),
            _ = std::future::ready(()) => {}
        }
        idle(&service).await;
        assert_eq!(count(&service, "hits"), Some((5.0, 1)));
        let retried = service
            .ingest_events(Some("b-1".into()), vec![counter("hits", 5.0)])
            .await
            .unwrap();
        assert!(retried.duplicate);
        assert_eq!(count(&service, "hits"), Some((5.0, 1)));

        // The log replays to the same state.
        service.snapshot().await.unwrap();
        drop(service);
        let reopened = self::service(dir.path()).await;
        assert_eq!(count(&reopened, "hits"), Some((5.0, 1)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_acknowledged_while_snapshots_are_written_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(dir.path()).await;
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let service = Arc::clone(&service);
                tokio::spawn(async move {
                    for _ in 0..100 {
                        service
                            .ingest_events(None, vec![counter("hits", 1.0)])
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        // Snapshots, two at a time, interleaved with the writes.
        for _ in 0..10 {
            let (first, second) = tokio::join!(service.snapshot(), service.snapshot());
            first.unwrap();
            second.unwrap();
            tokio::task::yield_now().await;
        }
        for writer in writers {
            writer.await.unwrap();
        }
        idle(&service).await;
        assert_eq!(count(&service, "hits"), Some((400.0, 400)));
        drop(service);
        let reopened = self::service(dir.path()).await;
        assert_eq!(count(&reopened, "hits"), Some((400.0, 400)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_batches_are_combined_yet_answered_and_refused_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(dir.path()).await;
        service
            .ingest_events(None, vec![counter("typed", 1.0)])
            .await
            .unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let service = Arc::clone(&service);
                tokio::spawn(async move {
                    let events = if i % 50 == 49 {
                        // A gauge event for a counter: this request alone is refused.
                        vec![Event {
                            kind: MetricType::Gauge,
                            ..counter("typed", 1.0)
                        }]
                    } else {
                        vec![counter("many", 1.0), counter(&format!("own{i}"), 2.0)]
                    };
                    service.ingest_events(None, events).await
                })
            })
            .collect();
        let mut refused = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(ingested) => assert_eq!(ingested.accepted, 2),
                Err(IngestError::TypeMismatch { .. }) => refused += 1,
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!(refused, 4);
        assert_eq!(count(&service, "many"), Some((196.0, 196)));
        assert_eq!(count(&service, "own0"), Some((2.0, 1)));
        assert_eq!(count(&service, "typed"), Some((1.0, 1)));
        let entries = service.store.metric_log_after(0).await.unwrap();
        assert!(
            entries.len() < 197,
            "{} log entries for 197 batches: nothing was combined",
            entries.len()
        );

        // A deletion goes through the same queue, in order.
        assert!(
            service
                .delete(&SeriesKey::parse("many").unwrap())
                .await
                .unwrap()
        );
        assert_eq!(count(&service, "many"), None);
        drop(service);
        let reopened = self::service(dir.path()).await;
        assert_eq!(count(&reopened, "many"), None);
        assert_eq!(count(&reopened, "own199"), None);
        assert_eq!(count(&reopened, "own198"), Some((2.0, 1)));
    }
}
