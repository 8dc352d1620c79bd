//! The `lookup` sink: replaces a lookup table with the job's records, one entry per record
//! (`key` column → `value` column). This is how a job refreshes a table that `map` processors
//! of later jobs read (`{"type": "map", "column": "currency", "table": "currency"}`).
//!
//! Invariant: a table is replaced only by a job whose sources all succeeded and which collected
//! at least one entry, so a failed or empty collection never wipes a table. This is the one sink
//! that writes to Gleaner's own store, through `Store::replace_lookup_table` alone.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Delivery, Error, Sink, SinkContext, SinkValidation};
use crate::job::{JobStatus, Receipt};
use crate::processors::tabular::{check_table_name, text};
use crate::store::SharedStore;

/// Most entries one table may hold.
pub const MAX_ENTRIES: usize = 1_000_000;

/// Replaces a lookup table in the store.
pub struct LookupSink {
    store: SharedStore,
}

impl LookupSink {
    pub fn new(store: SharedStore) -> Self {
        Self { store }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupConfig {
    table: String,
    key: String,
    value: String,
    #[serde(default)]
    lowercase_keys: bool,
}

fn config(settings: &Value) -> Result<LookupConfig, Error> {
    let config: LookupConfig = serde_json::from_value(settings.clone())
        .map_err(|error| Error::Settings(error.to_string()))?;
    check_table_name(&config.table).map_err(Error::Settings)?;
    Ok(config)
}

/// The table's entries from the delivery's records, in order (later keys win).
fn entries(config: &LookupConfig, delivery: &Delivery) -> Result<Vec<(String, String)>, Error> {
    if delivery.status != JobStatus::Succeeded {
        return Err(Error::Records(format!(
            "the job's sources did not all succeed ({}); lookup table {:?} is kept as it was",
            delivery.status.as_str(),
            config.table
        )));
    }
    if delivery.records.is_empty() {
        return Err(Error::Records(format!(
            "the job collected no records; lookup table {:?} is kept as it was",
            config.table
        )));
    }
    if delivery.records.len() > MAX_ENTRIES {
        return Err(Error::Records(format!(
            "{} records, a lookup table holds at most {MAX_ENTRIES}",
            delivery.records.len()
        )));
    }
    let mut entries = Vec::with_capacity(delivery.records.len());
    for (position, (_, record)) in delivery.records.iter().enumerate() {
        let column_of = |column: &str| {
            record.get(column).and_then(text).ok_or_else(|| {
                Error::Records(format!(
                    "record {position} has no text or number in column {column:?}"
                ))
            })
        };
        let key = column_of(&config.key)?;
        let key = match config.lowercase_keys {
            true => key.to_lowercase(),
            false => key.into_owned(),
        };
        entries.push((key, column_of(&config.value)?.into_owned()));
    }
    Ok(entries)
}

#[async_trait]
impl Sink for LookupSink {
    fn kind(&self) -> &'static str {
        "lookup"
    }

    fn description(&self) -> &'static str {
        "Replaces a lookup table with the job's records (one `key` → `value` entry per record), for \
         `map` processors of later jobs. A job whose sources did not all succeed, or that collected \
         nothing, leaves the table as it was."
    }

    fn settings_schema(&self) -> Value {
        let column = json!({"type": "string", "minLength": 1});
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["table", "key", "value"],
            "properties": {
                "table": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,100}$",
                          "description": "The lookup table replaced, e.g. `currency`."},
                "key": {"description": "The column holding each entry's key.", "allOf": [column]},
                "value": {"description": "The column holding each entry's value.", "allOf": [column]},
                "lowercase_keys": {"type": "boolean", "default": false,
                                   "description": "Lowercase the keys."}
            }
        })
    }

    fn validate(&self, _ctx: &SinkValidation, settings: &Value) -> Result<(), Error> {
        config(settings).map(|_| ())
    }

    async fn deliver(
        &self,
        ctx: &SinkContext,
        settings: &Value,
        delivery: &Delivery,
    ) -> Result<Receipt, Error> {
        let config = config(settings)?;
        let entries = entries(&config, delivery)?;
        let count = entries.len();
        self.store
            .replace_lookup_table(&config.table, entries, ctx.clock.now())
            .await
            .map_err(|error| {
                Error::Io(format!("storing lookup table {:?}: {error}", config.table))
            })?;
        Ok(Receipt {
            http_status: None,
            response: Some(format!(
                "lookup table {:?} replaced with {count} entries",
                config.table
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(status: JobStatus, records: Vec<Value>) -> Delivery {
        Delivery {
            job_id: uuid::Uuid::nil(),
            delivery_id: "d".into(),
            status,
            created_at: 0,
            collected_at: 0,
            sources: Vec::new(),
            records: records.into_iter().map(|record| (1, record)).collect(),
        }
    }

    fn settings(lowercase_keys: bool) -> LookupConfig {
        config(&json!({"table": "currency", "key": "code", "value": "rate",
                       "lowercase_keys": lowercase_keys}))
        .expect("valid")
    }

    #[test]
    fn entries_come_from_key_and_value_columns() {
        let records = vec![
            json!({"code": "EUR", "rate": 0.9}),
            json!({"code": "GBP", "rate": "0.8"}),
            json!({"code": "EUR", "rate": 0.92}),
        ];
        let entries =
            entries(&settings(true), &delivery(JobStatus::Succeeded, records)).expect("entries");
        assert_eq!(
            entries,
            vec![
                ("eur".into(), "0.9".into()),
                ("gbp".into(), "0.8".into()),
                ("eur".into(), "0.92".into())
            ]
        );
    }

    #[test]
    fn failed_empty_or_incomplete_collections_keep_the_table() {
        let ok = vec![json!({"code": "EUR", "rate": 1})];
        let partial = delivery(JobStatus::PartiallySucceeded, ok.clone());
        assert!(matches!(
            entries(&settings(false), &partial),
            Err(Error::Records(_))
        ));
        let empty = delivery(JobStatus::Succeeded, Vec::new());
        assert!(matches!(
            entries(&settings(false), &empty),
            Err(Error::Records(_))
        ));
        let missing = delivery(JobStatus::Succeeded, vec![json!({"code": "EUR"})]);
        let error = entries(&settings(false), &missing).expect_err("no value");
        assert!(error.to_string().contains("record 0"), "{error}");
        assert!(error.to_string().contains("\"rate\""), "{error}");
    }

    #[test]
    fn settings_are_checked() {
        assert!(config(&json!({"table": "a b", "key": "k", "value": "v"})).is_err());
        assert!(config(&json!({"table": "t", "key": "k"})).is_err());
        assert!(config(&json!({"table": "t", "key": "k", "value": "v", "x": 1})).is_err());
    }
}
