//! The in-memory series registry: every series' aggregates, safe for many concurrent writers.
//!
//! Series live in 16 shards, each a `Mutex<HashMap>`, chosen by the key's hash. A batch locks
//! the shards it touches in ascending order (so batches never deadlock), checks every series'
//! type, and only then applies: a batch is all-or-nothing and atomic with respect to other
//! batches. Locks are never held across an `.await`.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::ToSchema;

use super::aggregate::AggregateView;
use super::window::{WindowView, Windowed};
use super::{EventBatch, MetricType, SeriesKey};
use crate::clock::Millis;

const SHARDS: usize = 16;
const UPDATE_CAPACITY: usize = 4096;

/// An event whose type differs from its series' type; the batch was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("type: series {key} is a {existing}, got a {got} event")]
pub struct TypeMismatch {
    pub key: SeriesKey,
    pub existing: MetricType,
    pub got: MetricType,
}

/// Which series `list` returns; every given criterion must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// The series name starts with this.
    pub prefix: Option<String>,
    pub kind: Option<MetricType>,
    /// The series has this tag (key, value).
    pub tag: Option<(String, String)>,
}

impl ListFilter {
    fn matches(&self, key: &SeriesKey, kind: MetricType) -> bool {
        let prefix_ok = self
            .prefix
            .as_deref()
            .is_none_or(|prefix| key.name.starts_with(prefix));
        let kind_ok = self.kind.is_none_or(|wanted| wanted == kind);
        let tags_ok = self
            .tag
            .as_ref()
            .is_none_or(|(name, value)| key.tags.get(name) == Some(value));
        prefix_ok && kind_ok && tags_ok
    }
}

/// One series as readers see it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SeriesView {
    /// The canonical id: `name` or `name{k1=v1,k2=v2}`.
    pub key: String,
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub kind: MetricType,
    /// Over the series' whole life.
    pub aggregate: AggregateView,
    /// The retained tumbling windows, oldest first.
    pub windows: Vec<WindowView>,
}

impl SeriesView {
    fn new(key: &SeriesKey, series: &Windowed, now: Millis) -> Self {
        let view = series.view(now);
        SeriesView {
            key: key.to_string(),
            name: key.name.clone(),
            tags: key.tags.clone(),
            kind: series.kind(),
            aggregate: view.aggregate,
            windows: view.windows,
        }
    }
}

type Shard = HashMap<SeriesKey, Windowed>;

/// All series in memory.
#[derive(Debug)]
pub struct MetricsRegistry {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    window_width: Duration,
    keep_windows: usize,
    updates: broadcast::Sender<SeriesKey>,
}

impl MetricsRegistry {
    /// A registry whose series keep `keep_windows` tumbling windows of `window_width` each
    /// (0 disables windows).
    pub fn new(window_width: Duration, keep_windows: usize) -> Self {
        let (updates, _) = broadcast::channel(UPDATE_CAPACITY);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            window_width,
            keep_windows,
            updates,
        }
    }

    pub fn window_width(&self) -> Duration {
        self.window_width
    }

    pub fn keep_windows(&self) -> usize {
        self.keep_windows
    }

    fn shard_of(&self, key: &SeriesKey) -> usize {
        (self.hasher.hash_one(key) % SHARDS as u64) as usize
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding the lock cannot leave a series half-updated in a way that
        // matters more than losing the whole registry, so poisoning is ignored.
        self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The shard of each series of the batch, hashed once per series.
    fn shards_of(&self, batch: &EventBatch) -> Vec<usize> {
        batch
            .series()
            .iter()
            .map(|series| self.shard_of(&series.key))
            .collect()
    }

    /// Locks `shards` in ascending order; the map goes from shard to guard.
    fn lock_for(&self, shards: &[usize]) -> BTreeMap<usize, MutexGuard<'_, Shard>> {
        let shards: BTreeSet<usize> = shards.iter().copied().collect();
        shards
            .into_iter()
            .map(|shard| (shard, self.lock(shard)))
            .collect()
    }

    /// Checks and applies a batch received at `at`, creating series as needed. On a type
    /// mismatch nothing changes. Subscribers then get each updated key once per batch.
    pub fn apply(&self, batch: &EventBatch, at: Millis) -> Result<(), TypeMismatch> {
        let shards = self.shards_of(batch);
        let mut guards = self.lock_for(&shards);
        for (series, shard) in batch.series().iter().zip(&shards) {
            if let Some(existing) = guards[shard].get(&series.key).map(Windowed::kind)
                && existing != series.kind
            {
                return Err(TypeMismatch {
                    key: series.key.clone(),
                    existing,
                    got: series.kind,
                });
            }
        }
        for (series, shard) in batch.series().iter().zip(&shards) {
            let shard = guards
                .get_mut(shard)
                .expect("every series' shard was locked above");
            // The key is cloned only for a new series.
            let apply_all = |target: &mut Windowed| {
                for &value in &series.values {
                    target.apply(value, at);
                }
            };
            match shard.get_mut(&series.key) {
                Some(existing) => apply_all(existing),
                None => {
                    let mut new =
                        Windowed::new(series.kind, at, self.window_width, self.keep_windows);
                    apply_all(&mut new);
                    shard.insert(series.key.clone(), new);
                }
            }
        }
        drop(guards);
        if self.updates.receiver_count() > 0 {
            for series in batch.series() {
                // Lossy by design: a lagging subscriber skips updates.
                let _ = self.updates.send(series.key.clone());
            }
        }
        Ok(())
    }

    pub fn get(&self, key: &SeriesKey, now: Millis) -> Option<SeriesView> {
        let shard = self.lock(self.shard_of(key));
        shard
            .get(key)
            .map(|series| SeriesView::new(key, series, now))
    }

    /// Up to `limit` series matching `filter`, sorted by canonical id, starting after the id
    /// `after` (keyset pagination).
    pub fn list(
        &self,
        filter: &ListFilter,
        after: Option<&str>,
        limit: usize,
        now: Millis,
    ) -> Vec<SeriesView> {
        let mut matching: Vec<(String, SeriesKey)> = Vec::new();
        for shard in 0..SHARDS {
            let guard = self.lock(shard);
            for (key, series) in guard.iter() {
                if !filter.matches(key, series.kind()) {
                    continue;
                }
                let id = key.to_string();
                if after.is_some_and(|after| id.as_str() <= after) {
                    continue;
                }
                matching.push((id, key.clone()));
            }
        }
        matching.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        matching.truncate(limit);
        // A series deleted since the first pass is skipped.
        matching
            .into_iter()
            .filter_map(|(_, key)| self.get(&key, now))
            .collect()
    }

    /// Removes a series; `false` when it did not exist.
    pub fn delete(&self, key: &SeriesKey) -> bool {
        self.lock(self.shard_of(key)).remove(key).is_some()
    }

    pub fn len(&self) -> usize {
        (0..SHARDS).map(|shard| self.lock(shard).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of every series, sorted by key. Each shard is copied under its lock, so a batch
    /// spanning shards may be seen half-applied; callers that need a consistent cut pause
    /// writers (or replay the log from a position taken before the snapshot).
    pub fn snapshot(&self) -> Vec<(SeriesKey, Windowed)> {
        let mut series: Vec<(SeriesKey, Windowed)> = (0..SHARDS)
            .flat_map(|shard| {
                let guard = self.lock(shard);
                guard
                    .iter()
                    .map(|(key, series)| (key.clone(), series.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        series.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        series
    }

    /// Writes every series as JSON texts of `Vec<(SeriesKey, Windowed)>` (together what
    /// [`Self::snapshot`] returns, unsorted), each at most `part_bytes` long (one series longer
    /// than that is a part of its own); no series, no parts. Each shard is serialised under its
    /// lock instead of being copied first, and parts of a fixed size never regrow, so a
    /// snapshot costs memory for its text once (the store copies one part at a time), not for
    /// a doubling buffer and copies of the whole. The same cut caveat as `snapshot` holds.
    pub fn write_snapshot(&self, part_bytes: usize) -> serde_json::Result<Vec<Vec<u8>>> {
        let new_part = || {
            let mut part = Vec::with_capacity(part_bytes + 2);
            part.push(b'[');
            part
        };
        let mut parts = Vec::new();
        let mut part = new_part();
        let mut entry = Vec::new();
        for shard in 0..SHARDS {
            let guard = self.lock(shard);
            for pair in guard.iter() {
                entry.clear();
                serde_json::to_writer(&mut entry, &pair)?;
                if part.len() > 1 && part.len() + entry.len() + 1 > part_bytes {
                    part.push(b']');
                    parts.push(std::mem::replace(&mut part, new_part()));
                }
                if part.len() > 1 {
                    part.push(b',');
                }
                part.extend_from_slice(&entry);
            }
        }
        if part.len() > 1 {
            part.push(b']');
            part.shrink_to_fit();
            parts.push(part);
        }
        Ok(parts)
    }

    /// Each series' key and type.
    pub fn kinds(&self) -> Vec<(SeriesKey, MetricType)> {
        (0..SHARDS)
            .flat_map(|shard| {
                let guard = self.lock(shard);
                guard
                    .iter()
                    .map(|(key, series)| (key.clone(), series.kind()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Inserts series (replacing those with the same key; others are kept). Their windows are
    /// fitted to this registry's geometry: windows of another width are dropped.
    pub fn restore(&self, series: Vec<(SeriesKey, Windowed)>) {
        for (key, mut windowed) in series {
            windowed.rewindow(self.window_width, self.keep_windows);
            self.lock(self.shard_of(&key)).insert(key, windowed);
        }
    }

    /// Keys of updated series, once per applied batch; a slow receiver gets `Lagged` and skips.
    pub fn subscribe(&self) -> broadcast::Receiver<SeriesKey> {
        self.updates.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::Event;

    fn key(id: &str) -> SeriesKey {
        SeriesKey::parse(id).unwrap()
    }

    fn event(id: &str, kind: MetricType, value: f64) -> Event {
        Event {
            key: key(id),
            kind,
            value,
        }
    }

    /// Applies `events` as one batch.
    fn apply(
        registry: &MetricsRegistry,
        events: impl IntoIterator<Item = Event>,
        at: Millis,
    ) -> Result<(), TypeMismatch> {
        registry.apply(
            &EventBatch::from_events(events).expect("one type per series"),
            at,
        )
    }

    fn registry() -> MetricsRegistry {
        MetricsRegistry::new(Duration::from_secs(60), 5)
    }

    #[test]
    fn concurrent_increments_are_not_lost() {
        let registry = Arc::new(registry());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let registry = Arc::clone(&registry);
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let batch = [event("app.hits", MetricType::Counter, 1.0)];
                        apply(&registry, batch, 1_000 + i).unwrap();
                    }
                })
            })
            .collect();
        threads
            .into_iter()
            .for_each(|thread| thread.join().unwrap());
        let view = registry.get(&key("app.hits"), 2_000).unwrap();
        let AggregateView::Counter(counter) = view.aggregate else {
            panic!("not a counter")
        };
        assert_eq!((counter.value, counter.count), (200.0, 200));
    }

    #[test]
    fn type_mismatch_refuses_the_whole_batch() {
        let registry = registry();
        apply(&registry, [event("c", MetricType::Counter, 5.0)], 0).unwrap();
        let before = registry.snapshot();
        let batch = [
            event("new.one", MetricType::Gauge, 1.0),
            event("c", MetricType::Timer, 1.0),
        ];
        let err = apply(&registry, batch, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "type: series c is a counter, got a timer event"
        );
        assert_eq!(registry.snapshot(), before);
        assert_eq!(registry.len(), 1);

        // A new series takes the type of its first event in the batch.
        let mixed_new = [
            event("n", MetricType::Meter, 1.0),
            event("n", MetricType::Gauge, 1.0),
        ];
        assert_eq!(
            EventBatch::from_events(mixed_new).unwrap_err().existing,
            MetricType::Meter
        );
        assert!(registry.get(&key("n"), 1).is_none());
    }

    #[test]
    fn list_filters_sorts_and_paginates() {
        let registry = registry();
        let batch = [
            event("b.latency{route=/x}", MetricType::Timer, 3.0),
            event("a.hits{env=prod}", MetricType::Counter, 1.0),
            event("a.hits{env=dev}", MetricType::Counter, 1.0),
            event("a.temp", MetricType::Gauge, 20.0),
        ];
        apply(&registry, batch, 0).unwrap();
        let all = registry.list(&ListFilter::default(), None, 10, 0);
        let ids: Vec<&str> = all.iter().map(|view| view.key.as_str()).collect();
        assert_eq!(
            ids,
            [
                "a.hits{env=dev}",
                "a.hits{env=prod}",
                "a.temp",
                "b.latency{route=/x}"
            ]
        );

        let page = registry.list(&ListFilter::default(), Some("a.hits{env=prod}"), 1, 0);
        assert_eq!(page[0].key, "a.temp");

        let counters = ListFilter {
            kind: Some(MetricType::Counter),
            ..ListFilter::default()
        };
        assert_eq!(registry.list(&counters, None, 10, 0).len(), 2);
        let prod = ListFilter {
            prefix: Some("a.".into()),
            tag: Some(("env".into(), "prod".into())),
            ..ListFilter::default()
        };
        let found = registry.list(&prod, None, 10, 0);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "a.hits");
    }

    #[test]
    fn delete_snapshot_restore_and_subscribe() {
        let registry = registry();
        let mut updates = registry.subscribe();
        let batch = [
            event("t", MetricType::Timer, 100.0),
            event("t", MetricType::Timer, 50.0),
            event("g", MetricType::Gauge, 1.0),
        ];
        apply(&registry, batch, 0).unwrap();
        let mut seen = vec![updates.try_recv().unwrap(), updates.try_recv().unwrap()];
        seen.sort();
        assert_eq!(seen, vec![key("g"), key("t")]);
        assert!(updates.try_recv().is_err());

        let snapshot = registry.snapshot();
        let json = serde_json::to_string(&snapshot).unwrap();
        let restored = MetricsRegistry::new(Duration::from_secs(60), 5);
        restored.restore(serde_json::from_str(&json).unwrap());
        assert_eq!(restored.snapshot(), snapshot);
        assert_eq!(restored.get(&key("t"), 10), registry.get(&key("t"), 10));

        assert!(registry.delete(&key("t")));
        assert!(!registry.delete(&key("t")));
        assert_eq!(registry.len(), 1);
        assert!(registry.get(&key("t"), 0).is_none());
    }

    #[test]
    fn a_written_snapshot_reads_back_as_the_snapshot() {
        let registry = MetricsRegistry::new(Duration::from_secs(60), 3);
        let events: Vec<Event> = (0..50)
            .map(|i| Event {
                key: SeriesKey::new(format!("s{}", i % 7), BTreeMap::new()).expect("key"),
                kind: MetricType::Counter,
                value: i as f64,
            })
            .collect();
        apply(&registry, events, 1_000).expect("apply");
        // Parts of about 200 bytes: each a JSON array of whole series, none empty.
        let parts = registry.write_snapshot(200).expect("write");
        assert!(parts.len() > 1, "{} parts", parts.len());
        let mut read: Vec<(SeriesKey, Windowed)> = Vec::new();
        for part in &parts {
            let series: Vec<(SeriesKey, Windowed)> = serde_json::from_slice(part).expect("read");
            assert!(!series.is_empty());
            assert!(
                part.len() <= 200 || series.len() == 1,
                "{} bytes",
                part.len()
            );
            read.extend(series);
        }
        read.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(read, registry.snapshot());
        let mut kinds = registry.kinds();
        kinds.sort();
        assert_eq!(kinds.len(), 7);
        let one = registry.write_snapshot(1 << 20).expect("write");
        assert_eq!(one.len(), 1);
        let empty = MetricsRegistry::new(Duration::from_secs(60), 3);
        assert!(empty.write_snapshot(1 << 20).expect("write").is_empty());
    }
}
