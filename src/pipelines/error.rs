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

impl StageError {
    /// A failure classified by the project's one retry rule, with what the upstream answered.
    fn classified(
        message: String,
        retryability: Retryability,
        http_status: Option<u16>,
        response: Option<&str>,
    ) -> Self {
        let (retryable, retry_after) = match retryability {
            Retryability::Retry { after } => (true, after),
            Retryability::Permanent => (false, None),
        };
        Self {
            message,
            retryable,
            retry_after,
            http_status,
            response: response.map(str::to_owned),
        }
    }

    /// A source connector's failure, classified the same way.
    pub fn from_connector(error: &crate::connectors::Error) -> Self {
        Self::classified(
            error.to_string(),
            error.retryability(),
            error.http_status(),
            error.response_excerpt(),
        )
    }
}

impl From<UpstreamError> for StageError {
    fn from(error: UpstreamError) -> Self {
        Self::classified(
            error.to_string(),
            error.retryability(),
            error.http_status(),
            error.response_excerpt(),
        )
    }
}
