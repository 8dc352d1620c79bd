//! Record processors: declarative steps applied to every collected page of records before it
//! is stored. `jq` and the row steps of `tabular` see one record at a time; `group_by` sees the
//! whole page.
//!
//! Invariant: a chain maps a page of records to a page of records, step by step, keeping their
//! order; user code (jq) only ever runs on the capped, time-bounded jq pool.

pub mod jq;
mod pool;
pub mod tabular;

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use self::jq::JqFilter;
use self::tabular::{
    DropRowsSpec, ExtractSpec, GroupBy, GroupBySpec, MapSpec, MultiplySpec, RenameSpec, RowStep,
    SetSpec,
};

/// Lookup tables by name (key → value), loaded from the store before a chain runs.
pub type Lookups = HashMap<String, HashMap<String, String>>;

/// Most processors one chain may hold.
pub const MAX_PROCESSORS: usize = 32;

/// Most records one [`ProcessorChain::apply`] may produce, whatever the fan-out of its steps.
pub const MAX_CHAIN_OUTPUTS: usize = 1_000_000;

/// One processor as written in a job: `{"type": "jq", "filter": ".items[]"}`. The tabular ones
/// are documented on their spec types in [`tabular`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProcessorSpec {
    /// Runs a jq filter on each record; every output becomes a record (none drops it).
    Jq {
        filter: String,
    },
    Rename(RenameSpec),
    Set(SetSpec),
    Multiply(MultiplySpec),
    Map(MapSpec),
    Extract(ExtractSpec),
    DropRows(DropRowsSpec),
    GroupBy(GroupBySpec),
}

impl ProcessorSpec {
    /// The `type` tag, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            ProcessorSpec::Jq { .. } => "jq",
            ProcessorSpec::Rename(_) => "rename",
            ProcessorSpec::Set(_) => "set",
            ProcessorSpec::Multiply(_) => "multiply",
            ProcessorSpec::Map(_) => "map",
            ProcessorSpec::Extract(_) => "extract",
            ProcessorSpec::DropRows(_) => "drop_rows",
            ProcessorSpec::GroupBy(_) => "group_by",
        }
    }

    fn compile(&self) -> Result<Processor, String> {
        match self {
            ProcessorSpec::Jq { filter } => JqFilter::compile(filter)
                .map(Processor::Jq)
                .map_err(|error| error.to_string()),
            ProcessorSpec::Rename(spec) => RowStep::compile_rename(spec).map(Processor::Row),
            ProcessorSpec::Set(spec) => RowStep::compile_set(spec).map(Processor::Row),
            ProcessorSpec::Multiply(spec) => RowStep::compile_multiply(spec).map(Processor::Row),
            ProcessorSpec::Map(spec) => RowStep::compile_map(spec).map(Processor::Row),
            ProcessorSpec::Extract(spec) => RowStep::compile_extract(spec).map(Processor::Row),
            ProcessorSpec::DropRows(spec) => RowStep::compile_drop_rows(spec).map(Processor::Row),
            ProcessorSpec::GroupBy(spec) => GroupBy::compile(spec).map(Processor::Page),
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
    /// One record to zero or more (blocking; jq runs on its pool).
    Jq(JqFilter),
    /// One row to zero or one.
    Row(RowStep),
    /// The whole page at once.
    Page(GroupBy),
}

impl Processor {
    fn kind(&self) -> &'static str {
        match self {
            Processor::Jq(_) => "jq",
            Processor::Row(step) => step.kind(),
            Processor::Page(_) => "group_by",
        }
    }

    /// Maps a page of records to its outputs; the error names the failing record's position.
    fn apply(&self, records: Vec<Value>, lookups: &Lookups) -> Result<Vec<Value>, Failed> {
        match self {
            Processor::Jq(filter) => {
                let mut outputs = Vec::with_capacity(records.len());
                for (position, record) in records.iter().enumerate() {
                    let produced = filter
                        .run(record)
                        .map_err(|e| Failed::Record(position, e))?;
                    if outputs.len() + produced.len() > MAX_CHAIN_OUTPUTS {
                        return Err(Failed::TooMany);
                    }
                    outputs.extend(produced);
                }
                Ok(outputs)
            }
            Processor::Row(step) => {
                let lookup = step.resolve(lookups).map_err(Failed::Page)?;
                let mut outputs = Vec::with_capacity(records.len());
                for (position, record) in records.into_iter().enumerate() {
                    let kept = step
                        .apply(record, &lookup)
                        .map_err(|error| Failed::Record(position, error))?;
                    outputs.extend(kept);
                }
                Ok(outputs)
            }
            Processor::Page(group_by) => group_by
                .apply(records)
                .map_err(|(position, error)| Failed::Record(position, error)),
        }
    }
}

/// How one processor failed on a page.
enum Failed {
    Record(usize, String),
    Page(String),
    TooMany,
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
            .map(|(index, spec)| {
                spec.compile().map_err(|error| {
                    Error::Compile(format!("processor {index} ({}): {error}", spec.kind()))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { processors })
    }

    /// Whether the chain leaves records as they are.
    pub fn is_empty(&self) -> bool {
        self.processors.is_empty()
    }

    /// The lookup tables the chain reads, sorted and without repeats; the caller loads them
    /// into the [`Lookups`] it passes to [`Self::apply`].
    pub fn tables(&self) -> Vec<String> {
        let mut tables: Vec<String> = self
            .processors
            .iter()
            .filter_map(|processor| match processor {
                Processor::Row(step) => step.table().map(str::to_owned),
                Processor::Jq(_) | Processor::Page(_) => None,
            })
            .collect();
        tables.sort();
        tables.dedup();
        tables
    }

    /// Adds to `lookups` the lowercased copies the chain's `lowercase` maps match against,
    /// which [`Self::apply`] otherwise makes on every call: for a caller that applies the chain
    /// many times with the same tables (a pipeline stage, record by record).
    pub fn lower_tables(&self, lookups: &mut Lookups) {
        for processor in &self.processors {
            if let Processor::Row(step) = processor
                && let Some(name) = step.lowercase_table()
                && let Some(entries) = lookups.get(name)
            {
                let lowered = tabular::lowered(entries);
                lookups.insert(tabular::lowered_key(name), lowered);
            }
        }
    }

    /// Runs every processor over the page, in order. Blocks the calling thread while jq runs;
    /// async callers use [`Self::apply_async`]. A table of [`Self::tables`] missing from
    /// `lookups` fails the step that reads it.
    pub fn apply(&self, records: Vec<Value>, lookups: &Lookups) -> Result<Vec<Value>, Error> {
        let mut records = records;
        for (index, processor) in self.processors.iter().enumerate() {
            let kind = processor.kind();
            records = processor
                .apply(records, lookups)
                .map_err(|failed| match failed {
                    Failed::Record(position, error) => Error::Run(format!(
                        "processor {index} ({kind}) on record {position}: {error}"
                    )),
                    Failed::Page(error) => {
                        Error::Run(format!("processor {index} ({kind}): {error}"))
                    }
                    Failed::TooMany => Error::Run(format!(
                        "processor {index} ({kind}) produced more than {MAX_CHAIN_OUTPUTS} records"
                    )),
                })?;
        }
        Ok(records)
    }

    /// [`Self::apply`] on a blocking-pool thread, so no async runtime worker waits on jq.
    pub async fn apply_async(
        &self,
        records: Vec<Value>,
        lookups: Arc<Lookups>,
    ) -> Result<Vec<Value>, Error> {
        if self.is_empty() {
            return Ok(records);
        }
        let chain = self.clone();
        tokio::task::spawn_blocking(move || chain.apply(records, &lookups))
            .await
            .unwrap_or_else(|error| Err(Error::Run(format!("processor task failed: {error}"))))
    }
}

/// JSON Schema of a job's `processors` array, for API docs and validation.
pub fn processors_schema() -> Value {
    json!({
        "type": "array",
        "description": "Applied in order to every collected page of records before it is stored; each processor maps a record to zero or more records, except `group_by`, which groups the rows of a page.",
        "maxItems": MAX_PROCESSORS,
        "items": {
            "oneOf": std::iter::once(jq_schema()).chain(tabular::schemas()).collect::<Vec<_>>()
        }
    })
}

fn jq_schema() -> Value {
    json!(
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
    )
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
            chain.apply(records, &Lookups::new()),
            Ok(vec![json!({"a": 2}), json!({"a": 3})])
        );
    }

    #[test]
    fn empty_chain_is_identity() {
        let chain = ProcessorChain::compile(&[]).expect("valid");
        assert!(chain.is_empty());
        assert_eq!(
            chain.apply(vec![json!(1)], &Lookups::new()),
            Ok(vec![json!(1)])
        );
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
            .apply(vec![json!({"a": 1}), json!({"a": "x"})], &Lookups::new())
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
            chain.apply_async(vec![json!([1, 2])], Arc::default()).await,
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
