//! What each processor and sink stage does with its messages.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Mutex;

use super::StageError;
use super::http::{post_record, send_record};
use super::spec::{HttpCall, ProcessorKind, SinkKind};
use crate::net::HttpClientFactory;
use crate::processors::jq::JqFilter;
use crate::processors::{Lookups, ProcessorChain, tabular};
use crate::sinks::sql::{SqlSink, SqlSinkSpec};
use crate::store::Store;

/// Status an `http` processor must get by default.
const PROCESSOR_STATUS: u16 = 200;
/// Status an `http` sink must get by default (the seed's storage API answers 201).
const SINK_STATUS: u16 = 201;

/// How long a row stage uses the lookup tables it read before reading them again.
const LOOKUP_REFRESH: Duration = Duration::from_secs(10);

/// A compiled stage.
pub enum Handler {
    Jq(JqFilter),
    Rows(RowStage),
    HttpProcessor(HttpCall),
    HttpSink(HttpCall),
    Sql(SqlTarget),
}

/// A row processor of jobs (`rename`, `map`, …) applied to each record, with the lookup
/// tables it reads, read again every [`LOOKUP_REFRESH`] so a replaced table takes effect.
pub struct RowStage {
    chain: ProcessorChain,
    /// The lookup tables the step reads (none for most row steps).
    tables: Vec<String>,
    lookups: Mutex<Option<(Instant, Arc<Lookups>)>>,
}

impl RowStage {
    /// The tables the step reads, as of at most [`LOOKUP_REFRESH`] ago; a missing one fails
    /// the record for good (its dead letter replays once the table exists).
    async fn lookups(&self, store: &dyn Store) -> Result<Arc<Lookups>, StageError> {
        let mut cached = self.lookups.lock().await;
        if let Some((read_at, lookups)) = cached.as_ref()
            && read_at.elapsed() < LOOKUP_REFRESH
        {
            return Ok(Arc::clone(lookups));
        }
        let mut lookups = Lookups::new();
        for name in self.tables.iter().cloned() {
            let table = store
                .lookup_table(&name)
                .await
                .map_err(|error| StageError::transient(format!("lookup table {name}: {error}")))?
                .ok_or_else(|| StageError::permanent(tabular::missing_table(&name)))?;
            lookups.insert(name, table.entries);
        }
        self.chain.lower_tables(&mut lookups);
        let lookups = Arc::new(lookups);
        *cached = Some((Instant::now(), Arc::clone(&lookups)));
        Ok(lookups)
    }

    async fn process(&self, store: &dyn Store, record: &Value) -> Result<Vec<Value>, StageError> {
        let lookups = if self.tables.is_empty() {
            Arc::default()
        } else {
            self.lookups(store).await?
        };
        self.chain
            .apply(vec![record.clone()], &lookups)
            .map_err(|error| StageError::permanent(error.to_string()))
    }
}

/// A SQL sink, connected on first use and again after a connection is lost.
pub struct SqlTarget {
    spec: SqlSinkSpec,
    data_dir: PathBuf,
    sink: Mutex<Option<Arc<SqlSink>>>,
}

impl Handler {
    pub fn processor(kind: &ProcessorKind) -> Result<Self, String> {
        Ok(match kind {
            ProcessorKind::Jq { filter } => Handler::Jq(JqFilter::compile(filter)?),
            ProcessorKind::Http(call) => {
                super::http::validate_call(call)?;
                Handler::HttpProcessor(call.clone())
            }
            row => {
                let spec = row.row_processor().expect("a row processor");
                let chain = ProcessorChain::compile(std::slice::from_ref(&spec))
                    .map_err(|error| error.to_string())?;
                Handler::Rows(RowStage {
                    tables: chain.tables(),
                    chain,
                    lookups: Mutex::new(None),
                })
            }
        })
    }

    pub fn sink(kind: &SinkKind, data_dir: PathBuf) -> Result<Self, String> {
        Ok(match kind {
            SinkKind::Http(call) => {
                super::http::validate_call(call)?;
                Handler::HttpSink(call.clone())
            }
            SinkKind::Sql(spec) => {
                spec.validate().map_err(|error| error.to_string())?;
                Handler::Sql(SqlTarget {
                    spec: spec.clone(),
                    data_dir,
                    sink: Mutex::new(None),
                })
            }
        })
    }

    /// The upstream URL this stage calls, for per-upstream limits.
    pub fn url(&self) -> Option<&str> {
        match self {
            Handler::HttpProcessor(call) | Handler::HttpSink(call) => Some(&call.url),
            Handler::Jq(_) | Handler::Rows(_) | Handler::Sql(_) => None,
        }
    }

    /// Messages one call may carry (`None`: one call per message).
    pub fn batch(&self) -> Option<usize> {
        match self {
            Handler::Sql(target) => Some(target.spec.batch_size.clamp(1, 1000) as usize),
            _ => None,
        }
    }

    /// A processor's outputs for one record.
    pub async fn process(
        &self,
        http: &HttpClientFactory,
        store: &dyn Store,
        record: &Value,
        timeout: Duration,
    ) -> Result<Vec<Value>, StageError> {
        match self {
            Handler::Jq(filter) => filter
                .run_async(record.clone())
                .await
                .map_err(StageError::permanent),
            Handler::Rows(rows) => rows.process(store, record).await,
            Handler::HttpProcessor(call) => {
                post_record(http, call, record, PROCESSOR_STATUS, timeout)
                    .await
                    .map(|output| vec![output])
            }
            Handler::HttpSink(_) | Handler::Sql(_) => {
                Err(StageError::permanent("a sink is not a processor"))
            }
        }
    }

    /// Stores records (all or none).
    pub async fn store(
        &self,
        http: &HttpClientFactory,
        records: &[Value],
        timeout: Duration,
    ) -> Result<(), StageError> {
        match self {
            Handler::HttpSink(call) => {
                // The body of a storage API's answer is not read: only its status counts.
                for record in records {
                    send_record(http, call, record, SINK_STATUS, timeout).await?;
                }
                Ok(())
            }
            Handler::Sql(target) => target.upsert(records).await,
            Handler::Jq(_) | Handler::Rows(_) | Handler::HttpProcessor(_) => {
                Err(StageError::permanent("a processor is not a sink"))
            }
        }
    }
}

impl SqlTarget {
    async fn upsert(&self, records: &[Value]) -> Result<(), StageError> {
        let sink = {
            let mut slot = self.sink.lock().await;
            match slot.as_ref() {
                Some(sink) => sink.clone(),
                None => {
                    let sink = Arc::new(
                        SqlSink::connect(&self.spec, &self.data_dir)
                            .await
                            .map_err(sql_error)?,
                    );
                    *slot = Some(sink.clone());
                    sink
                }
            }
        };
        match sink.upsert(records).await {
            Ok(_) => Ok(()),
            Err(error) => {
                let error = sql_error(error);
                if error.retryable {
                    // The connection may be gone: the next batch connects afresh.
                    *self.sink.lock().await = None;
                }
                Err(error)
            }
        }
    }
}

fn sql_error(error: crate::sinks::sql::Error) -> StageError {
    if error.retryable() {
        StageError::transient(error.to_string())
    } else {
        StageError::permanent(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::pipelines::spec::ProcessorKind;
    use crate::store::sqlite::SqliteStore;

    fn map_through(table: &str) -> Handler {
        let kind: ProcessorKind = serde_json::from_value(json!({
            "type": "map", "column": "code", "table": table, "into": "name"
        }))
        .expect("a map stage");
        Handler::processor(&kind).expect("compiles")
    }

    async fn mapped(handler: &Handler, store: &SqliteStore) -> Result<Vec<Value>, StageError> {
        let http = HttpClientFactory::new(&Default::default()).expect("client");
        handler
            .process(&http, store, &json!({"code": "DE"}), Duration::from_secs(1))
            .await
    }

    #[tokio::test]
    async fn a_row_stage_reads_its_table_again_after_the_refresh_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("s.db"), 1).expect("store");
        let handler = map_through("countries");
        let missing = mapped(&handler, &store).await.expect_err("no table yet");
        assert!(
            !missing.retryable,
            "a missing table is not retried: {missing:?}"
        );
        assert!(missing.message.contains("countries"), "{missing:?}");

        let put = |name: &'static str| {
            store.replace_lookup_table("countries", vec![("DE".into(), name.into())], 0)
        };
        put("Germany").await.expect("put");
        assert_eq!(
            mapped(&handler, &store).await.expect("mapped")[0]["name"],
            "Germany"
        );
        put("Deutschland").await.expect("replace");
        assert_eq!(
            mapped(&handler, &store).await.expect("mapped")[0]["name"],
            "Germany",
            "read at most once per interval"
        );
        let Handler::Rows(rows) = &handler else {
            panic!("a row stage")
        };
        if let Some((read_at, _)) = rows.lookups.lock().await.as_mut() {
            *read_at -= LOOKUP_REFRESH;
        }
        assert_eq!(
            mapped(&handler, &store).await.expect("mapped")[0]["name"],
            "Deutschland"
        );
    }

    #[tokio::test]
    async fn a_lowercase_map_matches_through_the_table_lowered_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("s.db"), 1).expect("store");
        let kind: ProcessorKind = serde_json::from_value(json!({
            "type": "map", "column": "code", "table": "countries", "into": "name",
            "lowercase": true
        }))
        .expect("a map stage");
        let handler = Handler::processor(&kind).expect("compiles");
        store
            .replace_lookup_table("countries", vec![("De".into(), "Germany".into())], 0)
            .await
            .expect("put");
        assert_eq!(
            mapped(&handler, &store).await.expect("mapped")[0]["name"],
            "germany"
        );
        let Handler::Rows(rows) = &handler else {
            panic!("a row stage")
        };
        let cached = rows.lookups.lock().await;
        let (_, lookups) = cached.as_ref().expect("read");
        assert_eq!(
            lookups.len(),
            2,
            "the table and its lowered copy: {lookups:?}"
        );
    }
}
