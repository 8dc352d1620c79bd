//! Sinks: where a job's records go once its sources are done. Each delivery is its own step,
//! retried on its own schedule; a sink sees the whole job result at once.
//!
//! Invariant: a sink never reads or writes the store; the engine hands it a `Delivery`.

mod file;
mod registry;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::clock::{Millis, SharedClock};
use crate::job::{JobStatus, StepState};
use crate::net::{HttpClientFactory, Retryability, UpstreamError};

pub use file::{FileSink, StdoutSink};
pub use registry::SinkRegistry;

/// What a sink may use while it runs.
#[derive(Clone)]
pub struct SinkContext {
    pub http: HttpClientFactory,
    pub clock: SharedClock,
    /// The folder `file` sinks write under; paths outside it are refused.
    pub files_root: PathBuf,
}

/// The outcome of one source of a job, as a sink reports it.
#[derive(Debug, Clone, Serialize)]
pub struct SourceOutcome {
    pub step_id: i64,
    pub connector: String,
    pub state: StepState,
    pub attempts: u32,
    pub records: u64,
    pub error: Option<String>,
}

/// Everything a sink delivers: the job's outcome so far and every record it collected.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub job_id: Uuid,
    /// The outcome of the sources (`succeeded`, `partially_succeeded` or `failed`).
    pub status: JobStatus,
    pub created_at: Millis,
    pub sources: Vec<SourceOutcome>,
    /// Records by source step id, in collection order.
    pub records: Vec<(i64, Value)>,
}

/// Why a delivery failed. Retryability comes from the variant.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// Local I/O (disk full, permissions): retried, the condition may clear.
    #[error("i/o error: {0}")]
    Io(String),
}

impl Error {
    pub fn retryability(&self) -> Retryability {
        match self {
            Error::Upstream(error) => error.retryability(),
            Error::Io(_) => Retryability::Retry { after: None },
            Error::Settings(_) => Retryability::Permanent,
        }
    }

    pub fn http_status(&self) -> Option<u16> {
        match self {
            Error::Upstream(error) => error.http_status(),
            _ => None,
        }
    }

    pub fn response_excerpt(&self) -> Option<&str> {
        match self {
            Error::Upstream(error) => error.response_excerpt(),
            _ => None,
        }
    }
}

/// A destination for a job's records.
#[async_trait]
pub trait Sink: Send + Sync {
    /// The `type` jobs use to pick this sink.
    fn kind(&self) -> &'static str;

    fn description(&self) -> &'static str;

    /// JSON Schema of the settings (the sink object without its `type`).
    fn settings_schema(&self) -> Value;

    /// Semantic checks beyond the schema.
    fn validate(&self, _ctx: &SinkValidation, _settings: &Value) -> Result<(), Error> {
        Ok(())
    }

    async fn deliver(
        &self,
        ctx: &SinkContext,
        settings: &Value,
        delivery: &Delivery,
    ) -> Result<(), Error>;
}

/// What validation at submission may consult.
#[derive(Clone, Debug)]
pub struct SinkValidation {
    pub files_root: PathBuf,
}

/// Shared handle to a sink.
pub type SharedSink = Arc<dyn Sink>;
