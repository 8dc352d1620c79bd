//! Metric events and series keys: what a client sends, checked once at the edge.
//!
//! A series is identified by its name and its tags. The canonical id, used for storage, sorting
//! and URLs, is `name` alone without tags and `name{k1=v1,k2=v2}` with them (keys sorted).
//! `SeriesKey::parse` is the exact inverse of `Display`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest series name, in characters.
pub const MAX_NAME_LEN: usize = 200;
/// Longest tag key, in characters.
pub const MAX_TAG_KEY_LEN: usize = 100;
/// Longest tag value, in characters.
pub const MAX_TAG_VALUE_LEN: usize = 200;
/// Most tags on one series.
pub const MAX_TAGS: usize = 32;

/// The four metric types; see the module documentation of `metrics` for their semantics.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MetricType {
    Counter,
    Gauge,
    Meter,
    /// Also accepted as `histogram` on input.
    #[serde(alias = "histogram")]
    Timer,
}

impl MetricType {
    pub const ALL: [MetricType; 4] = [
        MetricType::Counter,
        MetricType::Gauge,
        MetricType::Meter,
        MetricType::Timer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Meter => "meter",
            MetricType::Timer => "timer",
        }
    }

    /// Parses a type name case-insensitively (`COUNTER`, `timer`, `Histogram`, …).
    pub fn from_name(name: &str) -> Option<Self> {
        [
            ("counter", MetricType::Counter),
            ("gauge", MetricType::Gauge),
            ("meter", MetricType::Meter),
            ("timer", MetricType::Timer),
            ("histogram", MetricType::Timer),
        ]
        .into_iter()
        .find_map(|(known, kind)| name.eq_ignore_ascii_case(known).then_some(kind))
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an event or a key was refused; the message starts with the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("name: {0}")]
    Name(String),
    #[error("tags: {0}")]
    Tags(String),
    #[error("type: unknown metric type {0:?}, expected counter, gauge, meter or timer")]
    Type(String),
    #[error("value: must be a finite number, got {0}")]
    Value(&'static str),
    #[error("key: {0}")]
    Key(String),
}

impl EventError {
    /// The input field the error is about: `name`, `tags`, `type`, `value` or `key`.
    pub fn field(&self) -> &'static str {
        match self {
            EventError::Name(_) => "name",
            EventError::Tags(_) => "tags",
            EventError::Type(_) => "type",
            EventError::Value(_) => "value",
            EventError::Key(_) => "key",
        }
    }
}

/// A series identity: a name and a sorted set of tags.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

impl SeriesKey {
    /// A validated key.
    pub fn new(
        name: impl Into<String>,
        tags: BTreeMap<String, String>,
    ) -> Result<Self, EventError> {
        let key = SeriesKey {
            name: name.into(),
            tags,
        };
        key.validate()?;
        Ok(key)
    }

    /// Checks the name and tag rules (see the constants of this module).
    pub fn validate(&self) -> Result<(), EventError> {
        validate_name(&self.name)?;
        if self.tags.len() > MAX_TAGS {
            return Err(EventError::Tags(format!(
                "at most {MAX_TAGS} tags, got {}",
                self.tags.len()
            )));
        }
        for (key, value) in &self.tags {
            validate_tag(key, value)?;
        }
        Ok(())
    }

    /// Parses the canonical id written by `Display`, validating it.
    pub fn parse(id: &str) -> Result<Self, EventError> {
        let Some(open) = id.find('{') else {
            return SeriesKey::new(id, BTreeMap::new());
        };
        let Some(inner) = id[open + 1..].strip_suffix('}') else {
            return Err(EventError::Key(format!(
                "{id:?} has '{{' without a final '}}'"
            )));
        };
        let mut tags = BTreeMap::new();
        for pair in inner.split(',') {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(EventError::Key(format!("tag {pair:?} is not key=value")));
            };
            if tags.insert(key.to_owned(), value.to_owned()).is_some() {
                return Err(EventError::Key(format!("tag {key:?} appears twice")));
            }
        }
        SeriesKey::new(&id[..open], tags)
    }
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if self.tags.is_empty() {
            return Ok(());
        }
        f.write_str("{")?;
        for (i, (key, value)) in self.tags.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{key}={value}")?;
        }
        f.write_str("}")
    }
}

fn validate_name(name: &str) -> Result<(), EventError> {
    let length = name.chars().count();
    if length == 0 || length > MAX_NAME_LEN {
        return Err(EventError::Name(format!(
            "must be 1 to {MAX_NAME_LEN} characters, got {length}"
        )));
    }
    let first = name.chars().next().unwrap_or('0');
    if !(first.is_ascii_alphabetic() || first == '_') {
        return Err(EventError::Name(format!(
            "must start with a letter or '_', got {first:?}"
        )));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_.:/-".contains(c);
    if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        return Err(EventError::Name(format!(
            "may only contain letters, digits and _ . : / -, got {bad:?}"
        )));
    }
    Ok(())
}

fn validate_tag(key: &str, value: &str) -> Result<(), EventError> {
    let key_length = key.chars().count();
    if key_length == 0 || key_length > MAX_TAG_KEY_LEN {
        return Err(EventError::Tags(format!(
            "key {key:?} must be 1 to {MAX_TAG_KEY_LEN} characters"
        )));
    }
    let key_allowed = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
    if let Some(bad) = key.chars().find(|c| !key_allowed(*c)) {
        return Err(EventError::Tags(format!(
            "key {key:?} may only contain letters, digits and _ . -, got {bad:?}"
        )));
    }
    let value_length = value.chars().count();
    if value_length == 0 || value_length > MAX_TAG_VALUE_LEN {
        return Err(EventError::Tags(format!(
            "value of {key:?} must be 1 to {MAX_TAG_VALUE_LEN} characters"
        )));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| c.is_control() || ",{}=".contains(*c))
    {
        return Err(EventError::Tags(format!(
            "value of {key:?} may not contain , {{ }} = or control characters, got {bad:?}"
        )));
    }
    Ok(())
}

/// One measurement for one series, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub key: SeriesKey,
    pub kind: MetricType,
    /// Always finite.
    pub value: f64,
}

/// The JSON wire form of an event, before validation.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    pub name: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `counter`, `gauge`, `meter` or `timer` (`histogram`), in any case.
    #[serde(rename = "type")]
    pub kind: String,
    /// A finite JSON number; strings such as `"5"` are refused.
    #[schema(value_type = f64)]
    pub value: serde_json::Value,
}

impl EventInput {
    pub fn validate(self) -> Result<Event, EventError> {
        let key = SeriesKey::new(self.name, self.tags)?;
        let kind = MetricType::from_name(&self.kind).ok_or(EventError::Type(self.kind))?;
        let value = match &self.value {
            serde_json::Value::Number(number) => number
                .as_f64()
                .filter(|v| v.is_finite())
                .ok_or(EventError::Value("a number out of range"))?,
            serde_json::Value::String(_) => return Err(EventError::Value("a string")),
            serde_json::Value::Null => return Err(EventError::Value("null")),
            serde_json::Value::Bool(_) => return Err(EventError::Value("a boolean")),
            serde_json::Value::Array(_) => return Err(EventError::Value("an array")),
            serde_json::Value::Object(_) => return Err(EventError::Value("an object")),
        };
        Ok(Event { key, kind, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn input(body: serde_json::Value) -> Result<Event, EventError> {
        serde_json::from_value::<EventInput>(body)
            .expect("well-formed input")
            .validate()
    }

    #[test]
    fn metric_type_names() {
        assert_eq!(MetricType::from_name("COUNTER"), Some(MetricType::Counter));
        assert_eq!(MetricType::from_name("Gauge"), Some(MetricType::Gauge));
        assert_eq!(MetricType::from_name("METER"), Some(MetricType::Meter));
        assert_eq!(MetricType::from_name("histogram"), Some(MetricType::Timer));
        assert_eq!(MetricType::from_name("set"), None);
        let parsed: MetricType = serde_json::from_value(json!("histogram")).unwrap();
        assert_eq!(parsed, MetricType::Timer);
        assert_eq!(
            serde_json::to_value(MetricType::Timer).unwrap(),
            json!("timer")
        );
        for kind in MetricType::ALL {
            assert_eq!(MetricType::from_name(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn series_key_display_and_parse_round_trip() {
        let plain = SeriesKey::new("app.requests", BTreeMap::new()).unwrap();
        assert_eq!(plain.to_string(), "app.requests");
        let tagged =
            SeriesKey::new("http.latency", tags(&[("route", "/v1/x"), ("host", "a:1")])).unwrap();
        assert_eq!(tagged.to_string(), "http.latency{host=a:1,route=/v1/x}");
        assert_eq!(SeriesKey::parse(&tagged.to_string()).unwrap(), tagged);
        assert_eq!(SeriesKey::parse("app.requests").unwrap(), plain);
    }

    #[test]
    fn series_key_parse_refuses_malformed_ids() {
        for id in [
            "a{",
            "a{b}",
            "a{b=1,b=2}",
            "a{=1}",
            "a{b=}",
            "{b=1}",
            "9a",
            "a b",
            "",
        ] {
            assert!(SeriesKey::parse(id).is_err(), "{id:?} accepted");
        }
    }

    #[test]
    fn name_and_tag_rules() {
        assert!(SeriesKey::new("_x:y/z-1.2", BTreeMap::new()).is_ok());
        assert!(SeriesKey::new("a".repeat(200), BTreeMap::new()).is_ok());
        let long = SeriesKey::new("a".repeat(201), BTreeMap::new()).unwrap_err();
        assert_eq!(long.field(), "name");
        assert!(SeriesKey::new("1abc", BTreeMap::new()).is_err());
        assert!(SeriesKey::new("a{b}", BTreeMap::new()).is_err());
        for (key, value) in [
            ("k k", "v"),
            ("k", "a,b"),
            ("k", "a=b"),
            ("k", "a\nb"),
            ("", "v"),
        ] {
            let err = SeriesKey::new("m", tags(&[(key, value)])).unwrap_err();
            assert_eq!(err.field(), "tags", "{key:?}={value:?}");
        }
        let many: BTreeMap<String, String> = (0..33)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert!(
            SeriesKey::new("m", many)
                .unwrap_err()
                .to_string()
                .contains("at most 32")
        );
    }

    #[test]
    fn event_input_validates_value_and_type() {
        let event = input(json!({"name": "c", "type": "COUNTER", "value": 5})).unwrap();
        assert_eq!(event.kind, MetricType::Counter);
        assert_eq!(event.value, 5.0);
        let err = input(json!({"name": "c", "type": "counter", "value": "5"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "value: must be a finite number, got a string"
        );
        let err = input(json!({"name": "c", "type": "counter", "value": null})).unwrap_err();
        assert_eq!(err.field(), "value");
        let err = input(json!({"name": "c", "type": "set", "value": 1})).unwrap_err();
        assert_eq!(err.field(), "type");
        let err = input(json!({"name": "", "type": "gauge", "value": 1})).unwrap_err();
        assert_eq!(err.field(), "name");
        let unknown = serde_json::from_value::<EventInput>(
            json!({"name": "c", "type": "counter", "value": 1, "level": "x"}),
        );
        assert!(unknown.is_err());
    }
}
