//! Global `tracing` subscriber that writes NDJSON to stdout and to `<data_dir>/logs/gleaner.log`.
//!
//! Invariant: each event becomes exactly one JSON object on one line, written with a single
//! append, so readers (see `log_tail`) only ever see whole lines or a not-yet-finished last line.
//!
//! Line shape: `timestamp` (RFC 3339, UTC), `level` (`ERROR`..`TRACE`), the event's own fields
//! flattened to the top level (`message`, ...), `target`, and — inside a span — `spans`: the
//! enclosing spans from root to leaf, each `{"name": ..., <span fields>}`. A `job_id` recorded
//! on a span (`info_span!("step", job_id = %id)`) therefore shows up as `spans[i].job_id`;
//! the log tail looks for job ids both there and at the top level.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use tracing::Subscriber;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use super::{Error, LogConfig};

/// Keeps the background log writers alive; dropping it flushes and stops them, so hold it
/// until the process exits.
#[must_use = "dropping the guard stops log output"]
#[derive(Debug)]
pub struct LogGuard {
    _writers: Vec<WorkerGuard>,
}

/// The log file under `data_dir`, shared by the writer and by `GET /v1/logs`.
pub fn log_file(data_dir: &Path) -> PathBuf {
    data_dir.join("logs").join("gleaner.log")
}

/// Installs the global NDJSON subscriber described by `config`.
///
/// The filter is `RUST_LOG` when it is set and not blank, else `config.level`. If a global
/// subscriber is already installed (a second call, or tests), the existing one is kept and a
/// guard for the unused writers is still returned, so calling this twice never fails.
pub fn init(config: &LogConfig, data_dir: &Path) -> Result<LogGuard, Error> {
    let filter = build_filter(config)?;
    let mut writers = Vec::with_capacity(2);

    let stdout_layer = if config.stdout {
        let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
        writers.push(guard);
        Some(json_layer(writer))
    } else {
        None
    };

    let file_layer = if config.file {
        let path = log_file(data_dir);
        let file = open_append(&path).map_err(|source| Error::LogFile { path, source })?;
        let (writer, guard) = tracing_appender::non_blocking(file);
        writers.push(guard);
        Some(json_layer(writer))
    } else {
        None
    };

    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(stdout_layer)
        .with(file_layer)
        .try_init();
    if installed.is_err() {
        tracing::debug!("global log subscriber already installed; keeping it");
    }
    Ok(LogGuard { _writers: writers })
}

/// Builds the level filter from `RUST_LOG` (when set and not blank) or `config.level`.
fn build_filter(config: &LogConfig) -> Result<EnvFilter, Error> {
    let directive = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(env) if !env.trim().is_empty() => env,
        _ => config.level.clone(),
    };
    EnvFilter::builder()
        .parse(&directive)
        .map_err(|source| Error::Filter { directive, source })
}

/// Opens `path` for appending, creating it and its directory. Append mode keeps every write at
/// the current end even if someone truncates the file.
fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// The NDJSON formatting layer shared by stdout and the file (see the module docs for the shape).
fn json_layer<S, W>(writer: W) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(true)
        .with_ansi(false)
        .with_writer(writer)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::observability::log_tail::{LogQuery, matches};

    /// An in-memory writer shared with the test.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn init_twice_does_not_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            stdout: false,
            ..LogConfig::default()
        };
        let first = init(&config, dir.path()).expect("first init");
        let second = init(&config, dir.path()).expect("second init");
        tracing::info!("logging initialised twice");
        drop(second);
        drop(first);
        assert!(log_file(dir.path()).exists());
    }

    #[test]
    fn bad_level_is_a_clear_error() {
        // Only meaningful when RUST_LOG does not override the configured level.
        if std::env::var(EnvFilter::DEFAULT_ENV).is_ok_and(|env| !env.trim().is_empty()) {
            return;
        }
        let config = LogConfig {
            level: "gleaner=loud".to_owned(),
            ..LogConfig::default()
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let err = init(&config, dir.path()).expect_err("invalid directive");
        assert!(err.to_string().contains("gleaner=loud"), "{err}");
    }

    #[test]
    fn lines_are_ndjson_with_span_fields() {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(json_layer(move || sink.clone()));

        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("step", job_id = %"job-7", attempt = 2);
            let _entered = span.enter();
            tracing::warn!(records = 3, "collected page");
        });

        let bytes = buffer.0.lock().expect("buffer lock").clone();
        let text = String::from_utf8(bytes).expect("utf-8");
        assert!(text.ends_with('\n'));
        assert_eq!(text.lines().count(), 1, "{text}");

        let line: serde_json::Value = serde_json::from_str(text.trim_end()).expect("json line");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "collected page");
        assert_eq!(line["records"], 3);
        assert!(line["target"].is_string());
        assert!(
            line["timestamp"]
                .as_str()
                .is_some_and(|ts| ts.ends_with('Z'))
        );
        assert_eq!(line["spans"][0]["name"], "step");
        assert_eq!(line["spans"][0]["job_id"], "job-7");

        let query = LogQuery {
            job: Some("job-7".to_owned()),
            level: Some(tracing::Level::WARN),
            ..LogQuery::default()
        };
        assert!(matches(&line, &query));
    }

    #[test]
    fn log_file_is_under_logs_dir() {
        assert_eq!(
            log_file(Path::new("/var/lib/gleaner")),
            PathBuf::from("/var/lib/gleaner/logs/gleaner.log")
        );
    }
}
