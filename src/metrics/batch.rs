//! A batch of events grouped by series, the unit that ingest logs and applies: each distinct
//! series once (its key built, validated and hashed once), with its type and its values in
//! arrival order.
//!
//! Grouping changes no result: aggregates are per series, every event of a batch shares the
//! batch's receive time, and the values of one series keep their order. A batch that gives one
//! series two types is refused when it is built, naming the event that disagreed.

use std::collections::HashMap;

use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};

use super::{Event, MetricType, SeriesKey};

/// One series of a batch and the values the batch brings it.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesValues {
    pub key: SeriesKey,
    pub kind: MetricType,
    /// Index in the batch of the series' first event, to name it in errors.
    pub first: usize,
    /// In arrival order; never empty.
    pub values: Vec<f64>,
}

/// An event of a batch whose type differs from the type an earlier event of the same batch
/// gave its series.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("events[{index}]: series {key} is a {existing} in this batch, not a {got}")]
pub struct BatchConflict {
    pub index: usize,
    pub key: SeriesKey,
    pub existing: MetricType,
    pub got: MetricType,
}

/// Events grouped by series, in the order each series first appeared.
#[derive(Debug, Default, Clone)]
pub struct EventBatch {
    series: Vec<SeriesValues>,
    positions: HashMap<SeriesKey, usize>,
    events: usize,
}

impl EventBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Groups `events`; fails on the first event whose type disagrees with its series'.
    pub fn from_events(events: impl IntoIterator<Item = Event>) -> Result<Self, BatchConflict> {
        let mut batch = Self::new();
        for event in events {
            batch.push(event)?;
        }
        Ok(batch)
    }

    /// Adds the next event; returns the position of its series in [`Self::series`].
    pub fn push(&mut self, event: Event) -> Result<usize, BatchConflict> {
        let index = self.events;
        let position = self
            .add(event.key, event.kind, index, [event.value])
            .map_err(|(key, existing)| BatchConflict {
                index,
                key,
                existing,
                got: event.kind,
            })?;
        self.events += 1;
        Ok(position)
    }

    /// Adds one more value to the series at `position` (as returned by [`Self::push`]), whose
    /// type the caller checked.
    pub(crate) fn push_value(&mut self, position: usize, value: f64) {
        self.series[position].values.push(value);
        self.events += 1;
    }

    /// Appends `other`'s events after this batch's; gives `other` back untouched when one of
    /// its series has another type here.
    pub fn merge(&mut self, other: EventBatch) -> Result<(), EventBatch> {
        let conflict = other.series.iter().any(|series| {
            self.positions
                .get(&series.key)
                .is_some_and(|&position| self.series[position].kind != series.kind)
        });
        if conflict {
            return Err(other);
        }
        let offset = self.events;
        for series in other.series {
            // Cannot fail: every type was checked above.
            let _ = self.add(
                series.key,
                series.kind,
                offset + series.first,
                series.values,
            );
        }
        self.events += other.events;
        Ok(())
    }

    /// Appends `values` to the series `key`, first creating it (its first event at index
    /// `first`) when new; the series' position, or the key back with the type the series
    /// already has when that is not `kind`. Leaves the event count to the caller.
    fn add(
        &mut self,
        key: SeriesKey,
        kind: MetricType,
        first: usize,
        values: impl IntoIterator<Item = f64>,
    ) -> Result<usize, (SeriesKey, MetricType)> {
        if let Some(&position) = self.positions.get(&key) {
            let series = &mut self.series[position];
            if series.kind != kind {
                return Err((key, series.kind));
            }
            series.values.extend(values);
            return Ok(position);
        }
        let position = self.series.len();
        self.positions.insert(key.clone(), position);
        self.series.push(SeriesValues {
            key,
            kind,
            first,
            values: values.into_iter().collect(),
        });
        Ok(position)
    }

    /// Events in the batch.
    pub fn len(&self) -> usize {
        self.events
    }

    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    pub fn series(&self) -> &[SeriesValues] {
        &self.series
    }

    /// The log form: `[[series, type, [values…]], …]`.
    pub fn to_log(&self) -> String {
        serde_json::to_string(&LogForm(&self.series)).unwrap_or_else(|_| "[]".into())
    }

    /// Reads the log form back.
    pub fn from_log(payload: &str) -> Result<Self, String> {
        let logged: Vec<(String, MetricType, Vec<f64>)> =
            serde_json::from_str(payload).map_err(|error| error.to_string())?;
        let mut batch = Self::new();
        for (key, kind, values) in logged {
            let key = SeriesKey::parse(&key).map_err(|error| error.to_string())?;
            if values.is_empty() {
                continue;
            }
            let count = values.len();
            batch
                .add(key, kind, batch.events, values)
                .map_err(|(key, existing)| format!("series {key} is a {existing} and a {kind}"))?;
            batch.events += count;
        }
        Ok(batch)
    }
}

/// Joins the log forms of several batches into one entry's (a series may then appear more
/// than once; [`EventBatch::from_log`] reads it back as one series with the values in order).
pub fn join_logs(mut parts: Vec<String>) -> String {
    if parts.len() == 1 {
        return parts.pop().unwrap_or_default();
    }
    let mut joined = String::with_capacity(parts.iter().map(String::len).sum::<usize>() + 2);
    joined.push('[');
    for part in &parts {
        let inner = part
            .strip_prefix('[')
            .and_then(|part| part.strip_suffix(']'))
            .unwrap_or_default();
        if inner.is_empty() {
            continue;
        }
        if joined.len() > 1 {
            joined.push(',');
        }
        joined.push_str(inner);
    }
    joined.push(']');
    joined
}

/// Serialises series as the log keeps them, writing each key's text straight into the output.
struct LogForm<'a>(&'a [SeriesValues]);

impl Serialize for LogForm<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Key<'a>(&'a SeriesKey);
        impl Serialize for Key<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self.0)
            }
        }
        let mut list = serializer.serialize_seq(Some(self.0.len()))?;
        for series in self.0 {
            list.serialize_element(&(Key(&series.key), series.kind, &series.values))?;
        }
        list.end()
    }
}

/// The first log form, one entry per event: `[[series, type, value], …]`; still read so that
/// logs written before batches were grouped replay.
pub fn from_event_log(payload: &str) -> Result<EventBatch, String> {
    #[derive(Deserialize)]
    struct Logged(String, MetricType, f64);
    let logged: Vec<Logged> = serde_json::from_str(payload).map_err(|error| error.to_string())?;
    let mut batch = EventBatch::new();
    for Logged(key, kind, value) in logged {
        let key = SeriesKey::parse(&key).map_err(|error| error.to_string())?;
        batch
            .push(Event { key, kind, value })
            .map_err(|error| error.to_string())?;
    }
    Ok(batch)
}

/// Writes a batch in the first log form (tests of the replay of old logs).
#[cfg(test)]
pub(crate) fn to_event_log(events: &[Event]) -> String {
    let logged: Vec<_> = events
        .iter()
        .map(|event| (event.key.to_string(), event.kind, event.value))
        .collect();
    serde_json::to_string(&logged).expect("events serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, kind: MetricType, value: f64) -> Event {
        Event {
            key: SeriesKey::parse(id).unwrap(),
            kind,
            value,
        }
    }

    #[test]
    fn groups_by_series_in_first_appearance_order_keeping_value_order() {
        let batch = EventBatch::from_events([
            event("b", MetricType::Gauge, 1.0),
            event("a{x=1}", MetricType::Counter, 5.0),
            event("b", MetricType::Gauge, 2.0),
            event("a{x=1}", MetricType::Counter, 3.0),
            event("b", MetricType::Gauge, 0.5),
        ])
        .unwrap();
        assert_eq!(batch.len(), 5);
        let series: Vec<(String, MetricType, usize, Vec<f64>)> = batch
            .series()
            .iter()
            .map(|s| (s.key.to_string(), s.kind, s.first, s.values.clone()))
            .collect();
        assert_eq!(
            series,
            vec![
                ("b".into(), MetricType::Gauge, 0, vec![1.0, 2.0, 0.5]),
                ("a{x=1}".into(), MetricType::Counter, 1, vec![5.0, 3.0]),
            ]
        );
    }

    #[test]
    fn merge_appends_or_gives_the_batch_back_on_a_type_conflict() {
        let mut batch = EventBatch::from_events([
            event("a", MetricType::Counter, 1.0),
            event("b", MetricType::Gauge, 1.0),
        ])
        .unwrap();
        let more = EventBatch::from_events([
            event("c", MetricType::Timer, 7.0),
            event("a", MetricType::Counter, 2.0),
        ])
        .unwrap();
        batch.merge(more).unwrap();
        assert_eq!(batch.len(), 4);
        let merged: Vec<(String, usize, Vec<f64>)> = batch
            .series()
            .iter()
            .map(|s| (s.key.to_string(), s.first, s.values.clone()))
            .collect();
        assert_eq!(
            merged,
            vec![
                ("a".into(), 0, vec![1.0, 2.0]),
                ("b".into(), 1, vec![1.0]),
                ("c".into(), 2, vec![7.0]),
            ]
        );
        let clash = EventBatch::from_events([
            event("d", MetricType::Counter, 1.0),
            event("b", MetricType::Counter, 1.0),
        ])
        .unwrap();
        let back = batch.merge(clash.clone()).unwrap_err();
        assert_eq!(back.series(), clash.series());
        assert_eq!(batch.len(), 4);
        assert!(batch.series().iter().all(|s| s.key.name != "d"));
    }

    #[test]
    fn a_second_type_for_a_series_names_the_event() {
        let conflict = EventBatch::from_events([
            event("n", MetricType::Meter, 1.0),
            event("m", MetricType::Gauge, 1.0),
            event("n", MetricType::Gauge, 1.0),
        ])
        .unwrap_err();
        assert_eq!(conflict.index, 2);
        assert_eq!(conflict.existing, MetricType::Meter);
        assert_eq!(conflict.got, MetricType::Gauge);
        assert_eq!(
            conflict.to_string(),
            "events[2]: series n is a meter in this batch, not a gauge"
        );
    }

    #[test]
    fn both_log_forms_read_back_to_the_same_batch() {
        let events = vec![
            event("t{route=/x,host=a:1}", MetricType::Timer, 100.0),
            event("c", MetricType::Counter, -2.5),
            event("t{host=a:1,route=/x}", MetricType::Timer, 50.0),
        ];
        let batch = EventBatch::from_events(events.clone()).unwrap();
        let logged = batch.to_log();
        assert_eq!(
            logged,
            r#"[["t{host=a:1,route=/x}","timer",[100.0,50.0]],["c","counter",[-2.5]]]"#
        );
        // What the aggregates depend on; `first` only names events in errors.
        let grouped = |batch: &EventBatch| -> Vec<(SeriesKey, MetricType, Vec<f64>)> {
            batch
                .series()
                .iter()
                .map(|s| (s.key.clone(), s.kind, s.values.clone()))
                .collect()
        };
        let read = EventBatch::from_log(&logged).unwrap();
        assert_eq!(grouped(&read), grouped(&batch));
        assert_eq!(read.len(), 3);
        let old = from_event_log(&to_event_log(&events)).unwrap();
        assert_eq!(old.series(), batch.series());
        assert!(EventBatch::from_log(r#"[["9bad","counter",[1]]]"#).is_err());

        // Joined log forms read back as the merged batch.
        let more = EventBatch::from_events([
            event("c", MetricType::Counter, 4.0),
            event("g", MetricType::Gauge, 1.0),
        ])
        .unwrap();
        let joined = join_logs(vec![
            batch.to_log(),
            EventBatch::new().to_log(),
            more.to_log(),
        ]);
        let mut merged = batch.clone();
        merged.merge(more).unwrap();
        let read = EventBatch::from_log(&joined).unwrap();
        assert_eq!(grouped(&read), grouped(&merged));
        assert_eq!(read.len(), 5);
        assert_eq!(join_logs(vec![batch.to_log()]), batch.to_log());
        assert!(from_event_log("{").is_err());
    }
}
