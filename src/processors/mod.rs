//! Record processors: declarative steps applied to every collected record before it is stored.
//!
//! Invariant: a chain maps each record to zero or more records, step by step, keeping their
//! order; user code (jq) only ever runs on the capped, time-bounded jq pool.

pub mod jq;
mod pool;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use self::jq::JqFilter;

/// Most processors one chain may hold.
pub const MAX_PROCESSORS: usize = 32;

/// Most records one [`ProcessorChain::apply`] may produce, whatever the fan-out of its steps.
pub const MAX_CHAIN_OUTPUTS: usize = 1_000_000;

/// One processor as written in a job: `{"type": "jq", "filter": ".items[]"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProcessorSpec {
    /// Runs a jq filter on each record; every output becomes a record (none drops it).
    Jq { filter: String },
}

impl ProcessorSpec {
    /// The `type` tag, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            ProcessorSpec::Jq { .. } => "jq",
        }
    }
}

/// Why a chain could not be built or applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("cannot compile processors: {0}")]
    Compile(String),
    #[error("processing failed: {0}")]
    Run(String),
}

/// A compiled step.
#[derive(Debug, Clone)]
enum Processor {
    Jq(JqFilter),
}

impl Processor {
    fn kind(&self) -> &'static str {
        match self {
            Processor::Jq(_) => "jq",
        }
    }

    /// Maps one record to its outputs (blocking; jq runs on its pool).
    fn apply(&self, record: &Value) -> Result<Vec<Value>, String> {
        match self {
            Processor::Jq(filter) => filter.run(record),
        }
    }
}

/// Compiled processors, applied in order; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ProcessorChain {
    processors: Vec<Processor>,
}

impl ProcessorChain {
    /// Compiles every spec; the error names the first failing processor by index.
    pub fn compile(specs: &[ProcessorSpec]) -> Result<Self, Error> {
        if specs.len() > MAX_PROCESSORS {
            return Err(Error::Compile(format!(
                "{} processors given, at most {MAX_PROCESSORS} are allowed",
                specs.len()
            )));
        }
        let processors = specs
            .iter()
            .enumerate()
            .map(|(index, spec)| match spec {
                ProcessorSpec::Jq { filter } => JqFilter::compile(filter)
                    .map(Processor::Jq)
                    .map_err(|error| {
                        Error::Compile(format!("processor {index} ({}): {error}", spec.kind()))
                    }),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { processors })
    }

    /// Whether the chain leaves records as they are.
    pub fn is_empty(&self) -> bool {
        self.processors.is_empty()
    }

    /// Runs every processor over every record, in order. Blocks the calling thread while jq
    /// runs; async callers use [`Self::apply_async`].
    pub fn apply(&self, records: Vec<Value>) -> Result<Vec<Value>, Error> {
        let mut records = records;
        for (index, processor) in self.processors.iter().enumerate() {
            let mut outputs = Vec::with_capacity(records.len());
            for (position, record) in records.iter().enumerate() {
                let produced = processor.apply(record).map_err(|error| {
                    Error::Run(format!(
                        "processor {index} ({}) on record {position}: {error}",
                        processor.kind()
                    ))
                })?;
                if outputs.len() + produced.len() > MAX_CHAIN_OUTPUTS {
                    return Err(Error::Run(format!(
                        "processor {index} ({}) produced more than {MAX_CHAIN_OUTPUTS} records",
                        processor.kind()
                    )));
                }
                outputs.extend(produced);
            }
            records = outputs;
        }
        Ok(records)
    }

    /// [`Self::apply`] on a blocking-pool thread, so no async runtime worker waits on jq.
    pub async fn apply_async(&self, records: Vec<Value>) -> Result<Vec<Value>, Error> {
        if self.is_empty() {
            return Ok(records);
        }
        let chain = self.clone();
        tokio::task::spawn_blocking(move || chain.apply(records))
            .await
            .unwrap_or_else(|error| Err(Error::Run(format!("processor task failed: {error}"))))
    }
}

/// JSON Schema of a job's `processors` array, for API docs and validation.
pub fn processors_schema() -> Value {
    json!({
        "type": "array",
        "description": "Applied in order to every collected record before it is stored; each processor maps a record to zero or more records.",
        "maxItems": MAX_PROCESSORS,
        "items": {
            "oneOf": [
                {
                    "type": "object",
                    "title": "jq",
                    "description": "Runs a jq filter on each record; every output becomes a record, no output drops it. At most 100000 outputs per record and 2 s per run.",
                    "additionalProperties": false,
                    "required": ["type", "filter"],
                    "properties": {
                        "type": {"const": "jq"},
                        "filter": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": jq::MAX_FILTER_BYTES,
                            "description": "jq program (jaq dialect), e.g. `select(.active) | {id, name}`.",
                            "examples": [".items[]", "select(.score > 1)", "{id, title: .name}"]
                        }
                    }
                }
            ]
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::connectors::schema::SettingsSchema;

    fn jq(filter: &str) -> ProcessorSpec {
        ProcessorSpec::Jq {
            filter: filter.into(),
        }
    }

    #[test]
    fn specs_round_trip_and_reject_unknown_fields() {
        let spec: ProcessorSpec =
            serde_json::from_value(json!({"type": "jq", "filter": "."})).expect("valid");
        assert_eq!(spec, jq("."));
        assert_eq!(
            serde_json::to_value(&spec).ok(),
            Some(json!({"type": "jq", "filter": "."}))
        );
        assert!(
            serde_json::from_value::<ProcessorSpec>(json!({"type": "jq", "filter": ".", "x": 1}))
                .is_err()
        );
        assert!(
            serde_json::from_value::<ProcessorSpec>(json!({"type": "sql", "query": "."})).is_err()
        );
    }

    #[test]
    fn chain_applies_processors_in_order_and_keeps_record_order() {
        let chain = ProcessorChain::compile(&[jq(".items[]"), jq("select(.x > 1)"), jq("{a: .x}")])
            .expect("valid");
        assert!(!chain.is_empty());
        let records = vec![
            json!({"items": [{"x": 1}, {"x": 2}]}),
            json!({"items": [{"x": 3}]}),
        ];
        assert_eq!(
            chain.apply(records),
            Ok(vec![json!({"a": 2}), json!({"a": 3})])
        );
    }

    #[test]
    fn empty_chain_is_identity() {
        let chain = ProcessorChain::compile(&[]).expect("valid");
        assert!(chain.is_empty());
        assert_eq!(chain.apply(vec![json!(1)]), Ok(vec![json!(1)]));
    }

    #[test]
    fn errors_name_the_processor_and_record() {
        let error = ProcessorChain::compile(&[jq("."), jq("nope")]).expect_err("undefined filter");
        assert!(
            matches!(&error, Error::Compile(m) if m.starts_with("processor 1 (jq): ")),
            "{error}"
        );
        let chain = ProcessorChain::compile(&[jq(".a + 1")]).expect("valid");
        let error = chain
            .apply(vec![json!({"a": 1}), json!({"a": "x"})])
            .expect_err("type error");
        assert!(
            matches!(&error, Error::Run(m) if m.starts_with("processor 0 (jq) on record 1: jq error")),
            "{error}"
        );
        let too_many = vec![jq("."); MAX_PROCESSORS + 1];
        assert!(ProcessorChain::compile(&too_many).is_err());
    }

    #[tokio::test]
    async fn apply_async_matches_apply() {
        let chain = ProcessorChain::compile(&[jq(".[]")]).expect("valid");
        assert_eq!(
            chain.apply_async(vec![json!([1, 2])]).await,
            Ok(vec![json!(1), json!(2)])
        );
    }

    #[test]
    fn schema_accepts_specs_and_rejects_unknown_fields() {
        let schema = SettingsSchema::compile(processors_schema()).expect("valid schema");
        assert!(
            schema
                .validate(&json!([{"type": "jq", "filter": ".items[]"}]))
                .is_ok()
        );
        assert!(
            schema
                .validate(&json!([{"type": "jq", "filter": ".", "extra": 1}]))
                .is_err()
        );
        assert!(schema.validate(&json!([{"type": "other"}])).is_err());
    }
}
