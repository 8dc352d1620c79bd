//! A pipeline as written by its user (`[[pipeline]]` in `gleaner.toml`, `POST /v1/pipelines`):
//! one source, processors in order, and sinks that each receive every processed record.
//!
//! Stages are written flat — `{"type": "http", "url": …, "workers": 4}` — so the options every
//! stage shares are split off before the stage's own fields are read, which keeps unknown
//! fields an error on both.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::duration;
pub use crate::net::RateWindow;
use crate::processors::ProcessorSpec;
use crate::processors::tabular::{
    DropRowsSpec, ExtractSpec, MapSpec, MultiplySpec, RenameSpec, SetSpec,
};

/// Most processors or sinks one pipeline may hold.
pub const MAX_STAGES: usize = 16;
/// Most workers one stage may run.
pub const MAX_WORKERS: u32 = 64;

/// A whole pipeline definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Unique name (1–100 characters: letters, digits, `-`, `_`, `.`).
    pub name: String,
    pub source: SourceStage,
    /// Applied in order; each is a stage with its own queue and workers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processors: Vec<Stage<ProcessorKind>>,
    /// Every processed record goes to each sink (1–16).
    pub sinks: Vec<Stage<SinkKind>>,
    /// Most messages waiting at one stage (queued, retrying or in flight) before the stage
    /// feeding it waits: the bound on memory and on work fetched ahead (default 1000).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: u32,
    /// Retry policy of every stage that does not set its own `max_attempts`.
    #[serde(default)]
    pub retry: MessageRetry,
}

fn default_queue_capacity() -> u32 {
    1000
}

/// Where messages come from: a connector run page by page, its checkpoint kept in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceStage {
    /// A connector name from `GET /v1/connectors`.
    pub connector: String,
    #[serde(default = "empty_object")]
    pub settings: Value,
    /// Request limits of the source, all enforced at once (e.g. 10 per 1 s and 1000 per 1 m).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limit: Vec<RateWindow>,
    /// Wait before asking again after a page without records (default 1 s).
    #[serde(
        default = "default_idle_interval",
        with = "duration",
        skip_serializing_if = "is_default_idle"
    )]
    pub idle_interval: Duration,
    /// How long a failing source waits at most between tries (default 1 m).
    #[serde(
        default = "default_max_backoff",
        with = "duration",
        skip_serializing_if = "is_default_max_backoff"
    )]
    pub max_backoff: Duration,
}

fn empty_object() -> Value {
    json!({})
}

fn default_idle_interval() -> Duration {
    Duration::from_secs(1)
}

fn is_default_idle(value: &Duration) -> bool {
    *value == default_idle_interval()
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}

fn is_default_max_backoff(value: &Duration) -> bool {
    *value == default_max_backoff()
}

/// How often and how patiently a message is retried at a stage before it is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageRetry {
    /// Attempts in all, the first included (default 3).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Ceiling of the first retry's delay; later ones double it (full jitter; default 1 s).
    #[serde(default = "default_backoff", with = "duration")]
    pub backoff: Duration,
    /// Largest delay between two attempts (default 1 m).
    #[serde(default = "default_max_backoff", with = "duration")]
    pub max_backoff: Duration,
}

fn default_max_attempts() -> u32 {
    3
}

fn default_backoff() -> Duration {
    Duration::from_secs(1)
}

impl Default for MessageRetry {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

/// What a processor stage does to each message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProcessorKind {
    /// A jq filter over each record; no output drops it, several split it.
    Jq {
        filter: String,
    },
    /// POSTs each record; the response body (JSON) becomes the record.
    Http(HttpCall),
    /// The row processors of jobs, on each record (see [`crate::processors::tabular`]);
    /// `drop_rows` drops it, `map` with a `table` reads a lookup table.
    Rename(RenameSpec),
    Set(SetSpec),
    Multiply(MultiplySpec),
    Map(MapSpec),
    Extract(ExtractSpec),
    DropRows(DropRowsSpec),
}

/// Where a sink stage stores each message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkKind {
    /// POSTs each record; the response body is ignored.
    Http(HttpCall),
    /// Upserts records into a table on its key columns, in batches.
    Sql(crate::sinks::sql::SqlSinkSpec),
}

/// One HTTP call per message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCall {
    /// Absolute http(s) URL the record is POSTed to as JSON.
    pub url: String,
    /// The only status that counts as success (default 200 for a processor, 201 for a sink).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_status: Option<u16>,
    /// Extra request headers (e.g. an API token).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// A processor or sink with the options every stage has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    try_from = "Map<String, Value>",
    into = "Map<String, Value>",
    bound(
        serialize = "K: Serialize + Clone",
        deserialize = "K: DeserializeOwned"
    )
)]
pub struct Stage<K> {
    pub options: StageOptions,
    pub kind: K,
}

/// Options shared by all processor and sink stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageOptions {
    /// The stage's name in views and metrics (default: its type and position, `http-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Messages handled at once (1–64, default 3).
    #[serde(default = "default_workers")]
    pub workers: u32,
    /// Request limits of this stage, all enforced at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limit: Vec<RateWindow>,
    /// Time allowed for one message (default 5 s).
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Overrides the pipeline's `retry.max_attempts` for this stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

fn default_workers() -> u32 {
    3
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl StageOptions {
    const KEYS: [&'static str; 5] = ["name", "workers", "rate_limit", "timeout", "max_attempts"];
}

impl<K: DeserializeOwned> TryFrom<Map<String, Value>> for Stage<K> {
    type Error = String;

    fn try_from(mut fields: Map<String, Value>) -> Result<Self, String> {
        let mut shared = Map::new();
        for key in StageOptions::KEYS {
            if let Some(value) = fields.remove(key) {
                shared.insert(key.to_owned(), value);
            }
        }
        let options = serde_json::from_value(Value::Object(shared)).map_err(|e| e.to_string())?;
        let kind = serde_json::from_value(Value::Object(fields)).map_err(|e| e.to_string())?;
        Ok(Self { options, kind })
    }
}

impl<K: Serialize> From<Stage<K>> for Map<String, Value> {
    fn from(stage: Stage<K>) -> Self {
        let mut fields = match serde_json::to_value(&stage.kind) {
            Ok(Value::Object(fields)) => fields,
            _ => Map::new(),
        };
        if let Ok(Value::Object(shared)) = serde_json::to_value(&stage.options) {
            fields.extend(shared);
        }
        fields
    }
}

impl ProcessorKind {
    pub fn type_name(&self) -> &'static str {
        match self.row_processor() {
            Some(row) => row.kind(),
            None => match self {
                ProcessorKind::Jq { .. } => "jq",
                _ => "http",
            },
        }
    }

    /// The job processor a row stage applies to each record; `None` for `jq` (which runs on
    /// the jq pool itself) and `http`.
    pub fn row_processor(&self) -> Option<ProcessorSpec> {
        Some(match self {
            ProcessorKind::Jq { .. } | ProcessorKind::Http(_) => return None,
            ProcessorKind::Rename(spec) => ProcessorSpec::Rename(spec.clone()),
            ProcessorKind::Set(spec) => ProcessorSpec::Set(spec.clone()),
            ProcessorKind::Multiply(spec) => ProcessorSpec::Multiply(spec.clone()),
            ProcessorKind::Map(spec) => ProcessorSpec::Map(spec.clone()),
            ProcessorKind::Extract(spec) => ProcessorSpec::Extract(spec.clone()),
            ProcessorKind::DropRows(spec) => ProcessorSpec::DropRows(spec.clone()),
        })
    }
}

impl SinkKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkKind::Http(_) => "http",
            SinkKind::Sql(_) => "sql",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_written_flat_and_round_trip() {
        let spec: PipelineSpec = serde_json::from_value(json!({
            "name": "messages",
            "source": {"connector": "message-source", "settings": {"base_url": "http://127.0.0.1:1"},
                       "rate_limit": [{"limit": 5, "per": "1s"}]},
            "processors": [{"type": "http", "url": "http://127.0.0.1:2/message", "workers": 4}],
            "sinks": [{"type": "http", "url": "http://127.0.0.1:3/message", "timeout": "2s"}],
        }))
        .expect("valid spec");
        assert_eq!(spec.processors[0].options.workers, 4);
        assert_eq!(spec.sinks[0].options.timeout, Duration::from_secs(2));
        assert_eq!(spec.source.rate_limit[0].limit, 5);
        assert_eq!(spec.queue_capacity, 1000);
        let again: PipelineSpec =
            serde_json::from_value(serde_json::to_value(&spec).expect("serialize")).expect("read");
        assert_eq!(again, spec);
    }

    #[test]
    fn unknown_fields_are_refused_in_shared_and_own_options() {
        let stage = |extra: Value| {
            let mut sink = json!({"type": "http", "url": "http://127.0.0.1:3/m"});
            sink.as_object_mut()
                .expect("object")
                .extend(extra.as_object().expect("object").clone());
            serde_json::from_value::<PipelineSpec>(json!({
                "name": "p", "source": {"connector": "noop"}, "sinks": [sink]
            }))
        };
        assert!(stage(json!({})).is_ok());
        let error = stage(json!({"wrokers": 2}))
            .expect_err("typo refused")
            .to_string();
        assert!(error.contains("wrokers"), "{error}");
        assert!(stage(json!({"workers": "many"})).is_err());
    }
}
