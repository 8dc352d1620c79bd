//! Connectors: sources of records. A connector declares a JSON Schema for its settings, can
//! `check` them against the upstream, and `collect`s one page at a time from a checkpoint.
//!
//! Invariant: a connector never writes to the store or sends anything downstream; the engine
//! persists each page's records together with the page's checkpoint.

pub mod csv_rows;
pub mod datahog;
pub mod date_range;
pub mod email_attachment;
pub mod form_login;
pub mod http;
pub mod json_table;
pub mod message_source;
pub mod metric;
mod noop;
pub mod reddit;
pub mod registry;
pub mod schema;
pub mod stackoverflow;
pub mod web_report;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::SharedClock;
use crate::net::{HttpClientFactory, Retryability, UpstreamError};
use crate::observability::Telemetry;

pub use noop::NoopConnector;
pub use registry::ConnectorRegistry;

/// One page of a collection: its records, the checkpoint to resume after it, and whether the
/// source has nothing more.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub records: Vec<Value>,
    /// Opaque resume state; `None` keeps the previous checkpoint.
    pub checkpoint: Option<Value>,
    pub done: bool,
}

impl Page {
    /// A collection finished in this one page, with nothing to resume from.
    pub fn only(records: Vec<Value>) -> Self {
        Self {
            records,
            checkpoint: None,
            done: true,
        }
    }
}

/// What a connector may use while it runs: the hardened HTTP client, the clock, and the
/// metrics it may report upstream quotas to.
#[derive(Clone)]
pub struct ConnectorContext {
    pub http: HttpClientFactory,
    pub clock: SharedClock,
    pub telemetry: Telemetry,
}

/// Why a connector call failed. Retryability comes from the variant, never from a string.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The upstream answered, but not with what the settings said to expect.
    #[error("unexpected response: {0}")]
    Response(String),
    /// The upstream said, in its own terms rather than an HTTP status, to call again later
    /// (a throttle, a backoff, an exhausted rate limit): retried after `retry_after`.
    #[error("upstream asked to retry later: {message}")]
    RetryLater {
        message: String,
        retry_after: Option<Duration>,
    },
}

impl Error {
    pub fn retryability(&self) -> Retryability {
        match self {
            Error::Upstream(error) => error.retryability(),
            Error::RetryLater { retry_after, .. } => Retryability::Retry {
                after: *retry_after,
            },
            Error::Settings(_) | Error::Response(_) => Retryability::Permanent,
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

/// A source of records. Implementations are stateless: everything a run needs is in the
/// settings and the checkpoint, so any worker can resume any run.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The name jobs use to pick this connector (`"http"`).
    fn name(&self) -> &'static str;

    /// One sentence for the catalog.
    fn description(&self) -> &'static str;

    /// JSON Schema of the settings; secret fields carry `"writeOnly": true`.
    fn settings_schema(&self) -> Value;

    /// Semantic checks beyond the schema (e.g. a jq filter that must compile).
    fn validate(&self, _settings: &Value) -> Result<(), Error> {
        Ok(())
    }

    /// The upstream these settings call, as `scheme://host:port`: the key of its circuit
    /// breaker. `None` for connectors that call nothing.
    fn upstream(&self, _settings: &Value) -> Option<String> {
        None
    }

    /// A short name for the source these settings select (a provider id), shown in job
    /// results; the connector name when `None`.
    fn label(&self, _settings: &Value) -> Option<String> {
        None
    }

    /// Tests the settings against the upstream (credentials, reachability) without collecting.
    async fn check(&self, ctx: &ConnectorContext, settings: &Value) -> Result<(), Error>;

    /// Fetches the page after `checkpoint` (`None`: the first page).
    async fn collect_page(
        &self,
        ctx: &ConnectorContext,
        settings: &Value,
        checkpoint: Option<&Value>,
    ) -> Result<Page, Error>;
}

/// A context for connector tests: loopback allowed, `clock`, fresh metrics.
#[cfg(test)]
pub(crate) fn test_context(clock: SharedClock) -> ConnectorContext {
    let config = crate::net::NetConfig {
        allow: vec!["127.0.0.1/32".parse().expect("loopback net")],
        ..crate::net::NetConfig::default()
    };
    ConnectorContext {
        http: HttpClientFactory::new(&config).expect("factory"),
        clock,
        telemetry: Telemetry::new(),
    }
}

/// The origin (`scheme://host:port`) of a URL, the unit circuit breakers protect.
pub fn origin_of(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    match url.origin() {
        origin @ url::Origin::Tuple(..) => Some(origin.ascii_serialization()),
        url::Origin::Opaque(_) => None,
    }
}

/// Shared handle to a connector.
pub type SharedConnector = Arc<dyn Connector>;

/// A connector's stored checkpoint read as its type `T` (`None`: the first page). One that does
/// not read is a settings error, so the step fails instead of starting over.
pub(crate) fn read_checkpoint<'a, T: Deserialize<'a>>(
    raw: Option<&'a Value>,
) -> Result<Option<T>, Error> {
    raw.map(|raw| {
        T::deserialize(raw).map_err(|error| Error::Settings(format!("invalid checkpoint: {error}")))
    })
    .transpose()
}

/// A connector's checkpoint as stored with its page.
pub(crate) fn checkpoint_value<T: Serialize>(checkpoint: &T) -> Result<Value, Error> {
    serde_json::to_value(checkpoint).map_err(|error| Error::Response(error.to_string()))
}

/// The JSON type of `value`, for messages about an unexpected response shape.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
