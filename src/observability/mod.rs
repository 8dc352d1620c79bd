//! Observability: structured NDJSON logs, the log tail behind `GET /v1/logs`, and gleaner's own
//! Prometheus metrics.
//!
//! Invariant: every log line is one complete JSON object terminated by `\n`, so the tail can
//! filter line by line and never emits a half-written record.

pub mod log_tail;
pub mod logging;
pub mod telemetry;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use log_tail::{LogQuery, RawLogQuery};
pub use logging::LogGuard;
pub use telemetry::{CONTENT_TYPE, PipelineStageSample, StoreSnapshot, Telemetry};

/// Logging settings (the `[log]` config section).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `EnvFilter` directive such as `info` or `gleaner=debug,tower_http=warn`.
    /// A non-empty `RUST_LOG` environment variable overrides it.
    pub level: String,
    /// Also write the log to `<data_dir>/logs/gleaner.log`, which backs `GET /v1/logs`.
    pub file: bool,
    /// Write the log to stdout (for container log collectors and interactive runs).
    pub stdout: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            file: true,
            stdout: true,
        }
    }
}

/// Errors of the observability module: bad log settings, log file I/O, bad log queries.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The level directive (from config or `RUST_LOG`) is not a valid `EnvFilter` directive.
    #[error("invalid log filter {directive:?}: {source}")]
    Filter {
        /// The directive as given.
        directive: String,
        /// Why `EnvFilter` rejected it.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// The log directory or file could not be created or opened.
    #[error("cannot open log file {path}: {source}")]
    LogFile {
        /// The path that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A `GET /v1/logs` query parameter has an invalid value.
    #[error("invalid log query parameter `{param}`: {reason}")]
    Query {
        /// The offending parameter name.
        param: &'static str,
        /// What was wrong with it, including the accepted values.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_config_defaults_and_rejects_unknown_fields() {
        let config: LogConfig = serde_json::from_str("{}").expect("empty config");
        assert_eq!(config.level, "info");
        assert!(config.file && config.stdout);

        let partial: LogConfig =
            serde_json::from_str(r#"{"level":"debug","stdout":false}"#).expect("partial config");
        assert_eq!(partial.level, "debug");
        assert!(partial.file && !partial.stdout);

        assert!(serde_json::from_str::<LogConfig>(r#"{"levle":"debug"}"#).is_err());
    }
}
