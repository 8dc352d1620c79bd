//! What each processor and sink stage does with its messages.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Mutex;

use super::StageError;
use super::http::{post_record, send_record};
use super::spec::{HttpCall, ProcessorKind, SinkKind};
use crate::net::HttpClientFactory;
use crate::processors::jq::JqFilter;
use crate::sinks::sql::{SqlSink, SqlSinkSpec};

/// Status an `http` processor must get by default.
const PROCESSOR_STATUS: u16 = 200;
/// Status an `http` sink must get by default (the seed's storage API answers 201).
const SINK_STATUS: u16 = 201;

/// A compiled stage.
pub enum Handler {
    Jq(JqFilter),
    HttpProcessor(HttpCall),
    HttpSink(HttpCall),
    Sql(SqlTarget),
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
            Handler::Jq(_) | Handler::Sql(_) => None,
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
        record: &Value,
        timeout: Duration,
    ) -> Result<Vec<Value>, StageError> {
        match self {
            Handler::Jq(filter) => filter
                .run_async(record.clone())
                .await
                .map_err(StageError::permanent),
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
            Handler::Jq(_) | Handler::HttpProcessor(_) => {
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
