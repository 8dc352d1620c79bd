//! The fast read of a well-formed JSON or NDJSON ingest body straight into an [`EventBatch`]: no JSON
//! tree, no intermediate events, strings borrowed from the body, and each series' key built
//! and validated once per batch however many events name it.
//!
//! It answers only "here is the batch" or "no": anything unusual (a malformed or mistyped
//! event, an invalid name, a type conflict, too many events) makes it give up, and the caller
//! reads the body again the slow way to say exactly what is wrong.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{Event, EventBatch, MetricType, SeriesKey};

/// A string borrowed from the body when it holds no escapes.
#[derive(Deserialize, PartialEq, Eq, Hash)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// One event as sent, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow, default, deserialize_with = "tag_pairs")]
    tags: Vec<(Text<'a>, Text<'a>)>,
    #[serde(rename = "type", borrow)]
    kind: Text<'a>,
    value: f64,
}

/// A `tags` object as its pairs, in the order sent.
fn tag_pairs<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<(Text<'de>, Text<'de>)>, D::Error> {
    struct Pairs;
    impl<'de> Visitor<'de> for Pairs {
        type Value = Vec<(Text<'de>, Text<'de>)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of tags")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(2));
            while let Some(pair) = map.next_entry()? {
                pairs.push(pair);
            }
            Ok(pairs)
        }
    }
    deserializer.deserialize_map(Pairs)
}

/// The name and tags exactly as sent: events that spell a series the same way find it without
/// building its key.
type RawKey<'a> = (Text<'a>, Vec<(Text<'a>, Text<'a>)>);

/// A batch being read, with the series seen so far by their spelling.
struct Reader<'a> {
    batch: EventBatch,
    spelled: HashMap<RawKey<'a>, usize>,
    max: usize,
}

/// Why the fast read gave up; never shown (the slow read explains).
#[derive(Debug)]
struct GiveUp;

impl<'a> Reader<'a> {
    fn new(max: usize) -> Self {
        Self {
            batch: EventBatch::new(),
            spelled: HashMap::new(),
            max,
        }
    }

    fn push(&mut self, raw: RawEvent<'a>) -> Result<(), GiveUp> {
        if self.batch.len() >= self.max || !raw.value.is_finite() {
            return Err(GiveUp);
        }
        let kind = MetricType::from_name(&raw.kind.0).ok_or(GiveUp)?;
        let spelling = (raw.name, raw.tags);
        if let Some(&position) = self.spelled.get(&spelling) {
            if self.batch.series()[position].kind != kind {
                return Err(GiveUp);
            }
            self.batch.push_value(position, raw.value);
            return Ok(());
        }
        let tags: BTreeMap<String, String> = spelling
            .1
            .iter()
            .map(|(key, value)| (key.0.to_string(), value.0.to_string()))
            .collect();
        let key = SeriesKey::new(spelling.0.0.to_string(), tags).map_err(|_| GiveUp)?;
        let position = self
            .batch
            .push(Event {
                key,
                kind,
                value: raw.value,
            })
            .map_err(|_| GiveUp)?;
        self.spelled.insert(spelling, position);
        Ok(())
    }
}

/// Reads a JSON array of events into the reader.
struct Events<'r, 'a>(&'r mut Reader<'a>);

impl<'de> DeserializeSeed<'de> for Events<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Events<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of events")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<RawEvent<'de>>()? {
            self.0
                .push(raw)
                .map_err(|_| de::Error::custom("not for the fast read"))?;
        }
        Ok(())
    }
}

/// Reads `{"batch_id"?, "events": […]}` into the reader; the value is the batch id.
struct Object<'r, 'a>(&'r mut Reader<'a>);

impl<'de> Visitor<'de> for Object<'_, 'de> {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a batch object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut batch_id, mut events) = (None, false);
        while let Some(Text(field)) = map.next_key::<Text<'de>>()? {
            match field.as_ref() {
                "batch_id" if batch_id.is_none() => {
                    batch_id = Some(map.next_value::<Option<String>>()?);
                }
                "events" if !events => {
                    map.next_value_seed(Events(&mut *self.0))?;
                    events = true;
                }
                _ => return Err(de::Error::custom("not for the fast read")),
            }
        }
        if !events {
            return Err(de::Error::missing_field("events"));
        }
        Ok(batch_id.flatten())
    }
}

/// Whether an object's first key is one of a batch object's (else it is read as one event).
/// A guess from the bytes: a wrong one only sends the body to the slow read.
fn starts_as_batch(body: &[u8]) -> bool {
    let inside = body
        .iter()
        .position(|byte| *byte == b'{')
        .map_or(&[][..], |brace| &body[brace + 1..]);
    let key = inside.trim_ascii_start();
    key.starts_with(b"\"events\"") || key.starts_with(b"\"batch_id\"")
}

/// Reads a well-formed JSON body (one event, an array of events, or a `{batch_id, events}`
/// object) of at most `max` events into a batch and the body's batch id; `None` for anything
/// else, which the caller then reads the slow way.
pub fn read_json(body: &[u8], max: usize) -> Option<(Option<String>, EventBatch)> {
    let start = body.iter().find(|byte| !byte.is_ascii_whitespace())?;
    let mut reader = Reader::new(max);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let batch_id = match start {
        b'[' => {
            Events(&mut reader).deserialize(&mut deserializer).ok()?;
            None
        }
        b'{' if starts_as_batch(body) => deserializer.deserialize_map(Object(&mut reader)).ok()?,
        b'{' => {
            // One event: one pass, no failed attempt at a batch object first.
            let raw: RawEvent<'_> = serde_json::from_slice(body).ok()?;
            reader.push(raw).ok()?;
            return Some((None, reader.batch));
        }
        _ => return None,
    };
    deserializer.end().ok()?;
    (!reader.batch.is_empty()).then_some((batch_id, reader.batch))
}

/// Reads an NDJSON body (one event per line, blank lines skipped) of at most `max` events into
/// a batch; `None` for anything else.
pub fn read_ndjson(body: &[u8], max: usize) -> Option<EventBatch> {
    let mut reader = Reader::new(max);
    for line in body.split(|byte| *byte == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let raw: RawEvent<'_> = serde_json::from_slice(line).ok()?;
        reader.push(raw).ok()?;
    }
    (!reader.batch.is_empty()).then_some(reader.batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(batch: &EventBatch) -> Vec<(String, MetricType, Vec<f64>)> {
        batch
            .series()
            .iter()
            .map(|s| (s.key.to_string(), s.kind, s.values.clone()))
            .collect()
    }

    #[test]
    fn reads_one_event_an_array_and_a_batch_object() {
        let (id, one) = read_json(br#"{"name":"a","type":"COUNTER","value":2}"#, 10).unwrap();
        assert_eq!(id, None);
        assert_eq!(
            series(&one),
            vec![("a".into(), MetricType::Counter, vec![2.0])]
        );

        let body = br#" [{"name":"t","tags":{"b":"2","a":"1"},"type":"timer","value":5},
            {"name":"t","tags":{"a":"1","b":"2"},"type":"histogram","value":7},
            {"name":"t","tags":{"b":"2","a":"1"},"type":"timer","value":1.5}] "#;
        let (id, array) = read_json(body, 10).unwrap();
        assert_eq!(id, None);
        assert_eq!(
            series(&array),
            vec![("t{a=1,b=2}".into(), MetricType::Timer, vec![5.0, 7.0, 1.5])]
        );
        assert_eq!(array.len(), 3);

        let body = br#"{"events":[{"name":"g","type":"gauge","value":1},{"name":"g\u002e2","type":"gauge","value":2}],"batch_id":"b-1"}"#;
        let (id, object) = read_json(body, 10).unwrap();
        assert_eq!(id.as_deref(), Some("b-1"));
        assert_eq!(
            series(&object),
            vec![
                ("g".into(), MetricType::Gauge, vec![1.0]),
                ("g.2".into(), MetricType::Gauge, vec![2.0]),
            ]
        );
    }

    #[test]
    fn reads_ndjson_lines() {
        let body = b"{\"name\":\"a\",\"type\":\"counter\",\"value\":1}\r\n\n  \n{\"name\":\"a\",\"type\":\"counter\",\"value\":2}";
        let batch = read_ndjson(body, 10).unwrap();
        assert_eq!(
            series(&batch),
            vec![("a".into(), MetricType::Counter, vec![1.0, 2.0])]
        );
        assert!(read_ndjson(body, 1).is_none());
    }

    #[test]
    fn gives_up_on_anything_the_slow_read_must_explain() {
        for body in [
            &br#"{"name":"a","type":"counter","value":"5"}"#[..],
            br#"{"name":"a","type":"counter","value":1,"level":"x"}"#,
            br#"{"name":"9a","type":"counter","value":1}"#,
            br#"{"name":"a","type":"set","value":1}"#,
            br#"[]"#,
            br#"[{"name":"a","type":"counter","value":1},{"name":"a","type":"gauge","value":1}]"#,
            br#"{"events":[{"name":"a","type":"counter","value":1}],"extra":1}"#,
            br#"{"batch_id":"x"}"#,
            br#"[{"name":"a","type":"counter","value":1}] trailing"#,
            br#"[{"name":"a","type":"counter","value":1e999}]"#,
            br#"{"name":"a","tags":{"k":"a,b"},"type":"counter","value":1}"#,
            b"x",
            b"",
        ] {
            assert!(
                read_json(body, 10).is_none(),
                "{} was read",
                String::from_utf8_lossy(body)
            );
        }
        assert!(
            read_ndjson(b"{\"name\":\"a\",\"type\":\"counter\",\"value\":\"1\"}", 10).is_none()
        );
        assert!(read_ndjson(b"\n \n", 10).is_none());
        assert!(read_ndjson(b"{\"name\":\"a\",\"type\":\"counter\",\"value\":1} x", 10).is_none());
        let three = br#"[{"name":"a","type":"counter","value":1},{"name":"a","type":"counter","value":1},{"name":"a","type":"counter","value":1}]"#;
        assert!(read_json(three, 2).is_none());
        assert_eq!(read_json(three, 3).unwrap().1.len(), 3);
    }
}
