//! The `file` and `stdout` sinks: each record as one NDJSON line.
//!
//! Invariant: a `file` sink only writes below the configured files root; the path is checked at
//! submission and again at delivery.

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::{Delivery, Error, Sink, SinkContext, SinkValidation};
use crate::job::Receipt;

/// Appends records as NDJSON to a file under the files root.
#[derive(Debug, Default)]
pub struct FileSink;

/// Writes records as NDJSON to the process's standard output.
#[derive(Debug, Default)]
pub struct StdoutSink;

/// Resolves a user-given relative path under `root`, refusing absolute paths and `..`.
fn resolve(root: &Path, relative: &str) -> Result<PathBuf, Error> {
    let path = Path::new(relative);
    let safe = !relative.is_empty()
        && path
            .components()
            .all(|component| matches!(component, Component::Normal(_)));
    if !safe {
        return Err(Error::Settings(format!(
            "path {relative:?} must be relative to the files root, without `..`"
        )));
    }
    Ok(root.join(path))
}

fn ndjson(delivery: &Delivery) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(delivery.records.len() * 64);
    for (_, record) in &delivery.records {
        serde_json::to_writer(&mut out, record).map_err(|error| Error::Io(error.to_string()))?;
        out.push(b'\n');
    }
    Ok(out)
}

fn path_setting(settings: &Value) -> &str {
    settings
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

#[async_trait]
impl Sink for FileSink {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn description(&self) -> &'static str {
        "Appends every record as one NDJSON line to a file below the configured files root."
    }

    fn settings_schema(&self) -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["path"],
            "properties": {
                "path": {"type": "string", "minLength": 1, "maxLength": 1024,
                         "description": "File path relative to the files root (`sinks.files_root`)."}
            }
        })
    }

    fn validate(&self, ctx: &SinkValidation, settings: &Value) -> Result<(), Error> {
        resolve(&ctx.files_root, path_setting(settings)).map(|_| ())
    }

    async fn deliver(
        &self,
        ctx: &SinkContext,
        settings: &Value,
        delivery: &Delivery,
    ) -> Result<Receipt, Error> {
        let path = resolve(&ctx.files_root, path_setting(settings))?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|error| Error::Io(format!("creating {}: {error}", parent.display())))?;
        }
        let body = ndjson(delivery)?;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(|error| Error::Io(format!("opening {}: {error}", path.display())))?;
        file.write_all(&body)
            .await
            .map_err(|error| Error::Io(format!("writing {}: {error}", path.display())))?;
        file.sync_data()
            .await
            .map_err(|error| Error::Io(format!("syncing {}: {error}", path.display())))?;
        Ok(Receipt::default())
    }
}

#[async_trait]
impl Sink for StdoutSink {
    fn kind(&self) -> &'static str {
        "stdout"
    }

    fn description(&self) -> &'static str {
        "Writes every record as one NDJSON line to the server's standard output."
    }

    fn settings_schema(&self) -> Value {
        json!({"type": "object", "additionalProperties": false, "properties": {}})
    }

    async fn deliver(
        &self,
        _ctx: &SinkContext,
        _settings: &Value,
        delivery: &Delivery,
    ) -> Result<Receipt, Error> {
        let body = ndjson(delivery)?;
        let mut stdout = tokio::io::stdout();
        stdout
            .write_all(&body)
            .await
            .map_err(|error| Error::Io(error.to_string()))?;
        stdout
            .flush()
            .await
            .map_err(|error| Error::Io(error.to_string()))?;
        Ok(Receipt::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths_escaping_the_root() {
        let root = Path::new("/data/files");
        assert!(resolve(root, "out/jobs.ndjson").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./x"] {
            assert!(resolve(root, bad).is_err(), "{bad} accepted");
        }
    }
}
