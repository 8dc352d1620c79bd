//! Why one message (or one source page) failed at one stage.

use std::time::Duration;

use crate::net::{Retryability, UpstreamError};

/// A stage's failure, with what the retry decision and the dead letter need.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StageError {
    pub message: String,
    /// Whether another attempt may succeed (network, timeout, 408/425/429/5xx).
    pub retryable: bool,
    /// The upstream's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
    pub http_status: Option<u16>,
    /// The first bytes of the upstream's answer.
    pub response: Option<String>,
}

impl StageError {
    /// A failure no retry can fix (bad record, refused by the upstream with a 4xx).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            retry_after: None,
            http_status: None,
            response: None,
        }
    }

    /// A failure another attempt may not meet.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            ..Self::permanent(message)
        }
    }
}

impl From<UpstreamError> for StageError {
    fn from(error: UpstreamError) -> Self {
        let (retryable, retry_after) = match error.retryability() {
            Retryability::Retry { after } => (true, after),
            Retryability::Permanent => (false, None),
        };
        Self {
            message: error.to_string(),
            retryable,
            retry_after,
            http_status: error.http_status(),
            response: error.response_excerpt().map(str::to_owned),
        }
    }
}

impl StageError {
    /// A source connector's failure, classified the same way.
    pub fn from_connector(error: &crate::connectors::Error) -> Self {
        let (retryable, retry_after) = match error.retryability() {
            Retryability::Retry { after } => (true, after),
            Retryability::Permanent => (false, None),
        };
        Self {
            message: error.to_string(),
            retryable,
            retry_after,
            http_status: error.http_status(),
            response: error.response_excerpt().map(str::to_owned),
        }
    }
}
