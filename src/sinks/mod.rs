//! Sinks: where a job's records go once its sources are done. Each delivery is its own step,
//! retried on its own schedule; a sink sees the whole job result at once.
//!
//! Invariant: a sink never reads the store; the engine hands it a `Delivery`. The `lookup` sink
//! alone writes to it, and only the lookup table it names.

pub mod callback;
pub mod databox;
mod file;
pub mod lookup;
mod registry;
pub mod sql;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::clock::{Millis, SharedClock};
use crate::engine::FixedSchedule;
use crate::job::{JobStatus, Receipt, StepState};
use crate::net::{AddressGuard, HttpClientFactory, Retryability, UpstreamError};

pub use callback::{CallbackConfig, CallbackSink};
pub use databox::{DataboxConfig, DataboxSink};
pub use file::{FileSink, StdoutSink};
pub use lookup::LookupSink;
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
    /// The source's name in the job (a provider id, or the connector name).
    pub name: String,
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
    /// Stable across the retries of this delivery (the `webhook-id` of a callback).
    pub delivery_id: String,
    /// The outcome of the sources (`succeeded`, `partially_succeeded` or `failed`).
    pub status: JobStatus,
    pub created_at: Millis,
    /// When the last source finished.
    pub collected_at: Millis,
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
    /// The receiver answered with a status that is not 2xx: retried on the sink's schedule,
    /// whatever the status (a receiver's 4xx is often a deploy in progress).
    #[error("receiver refused the delivery: {0}")]
    Refused(UpstreamError),
    /// The receiver answered `410 Gone`: the endpoint is disabled, nothing more is sent to it.
    #[error("receiver answered 410 Gone; the endpoint is disabled")]
    Gone(UpstreamError),
    /// Records the sink cannot send as they are (a Databox record without a numeric `value`):
    /// not retried, the same records would be refused again.
    #[error("records cannot be sent: {0}")]
    Records(String),
    /// The receiver answered 2xx without confirming the delivery (Databox's `status` word):
    /// not retried, since it took the request and said no; its answer is kept.
    #[error("receiver did not confirm the delivery: {reason}")]
    Unconfirmed {
        reason: String,
        http_status: u16,
        response: String,
    },
    /// One request of a delivery sent as several failed; the ones before it were accepted.
    /// Retryability and the answer are those of `error`.
    #[error("request {number} of {total} ({records} records) failed: {error}")]
    Part {
        number: usize,
        total: usize,
        records: usize,
        error: Box<Error>,
    },
}

impl Error {
    pub fn retryability(&self) -> Retryability {
        match self {
            Error::Upstream(error) => error.retryability(),
            Error::Refused(error) => match error {
                UpstreamError::Status { retry_after, .. } => Retryability::Retry {
                    after: *retry_after,
                },
                other => other.retryability(),
            },
            Error::Io(_) => Retryability::Retry { after: None },
            Error::Part { error, .. } => error.retryability(),
            Error::Settings(_) | Error::Gone(_) | Error::Records(_) | Error::Unconfirmed { .. } => {
                Retryability::Permanent
            }
        }
    }

    /// The upstream error underneath, if the failure came from the other side.
    pub fn upstream(&self) -> Option<&UpstreamError> {
        match self {
            Error::Upstream(error) | Error::Refused(error) | Error::Gone(error) => Some(error),
            Error::Part { error, .. } => error.upstream(),
            Error::Settings(_) | Error::Io(_) | Error::Records(_) | Error::Unconfirmed { .. } => {
                None
            }
        }
    }

    pub fn http_status(&self) -> Option<u16> {
        match self {
            Error::Unconfirmed { http_status, .. } => Some(*http_status),
            Error::Part { error, .. } => error.http_status(),
            other => other.upstream().and_then(UpstreamError::http_status),
        }
    }

    pub fn response_excerpt(&self) -> Option<&str> {
        match self {
            Error::Unconfirmed { response, .. } => Some(response),
            Error::Part { error, .. } => error.response_excerpt(),
            other => other.upstream().and_then(UpstreamError::response_excerpt),
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

    /// Fills in settings the job left out (a generated signing secret) when it is accepted.
    /// Returns a secret generated here, which the creating client is shown once.
    fn prepare(&self, _settings: &mut serde_json::Map<String, Value>) -> Option<String> {
        None
    }

    /// The remote endpoint deliveries go to: the key of its circuit breaker, and what a
    /// `410 Gone` disables. `None` for local sinks.
    fn endpoint(&self, _settings: &Value) -> Option<String> {
        None
    }

    /// A fixed retry schedule replacing the engine's exponential backoff.
    fn retry_schedule(&self) -> Option<FixedSchedule> {
        None
    }

    /// Delivers; `Ok` carries what the receiver answered, for the attempt log.
    async fn deliver(
        &self,
        ctx: &SinkContext,
        settings: &Value,
        delivery: &Delivery,
    ) -> Result<Receipt, Error>;
}

/// What validation at submission may consult.
#[derive(Clone, Debug)]
pub struct SinkValidation {
    pub files_root: PathBuf,
    /// The outgoing address policy, to refuse endpoints it would refuse at delivery.
    pub guard: AddressGuard,
}

/// Shared handle to a sink.
pub type SharedSink = Arc<dyn Sink>;
