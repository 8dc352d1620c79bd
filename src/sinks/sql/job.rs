//! The `sql` job sink: a job's records upserted through [`SqlSink`], with one open connection
//! (pool) kept per destination so deliveries do not reconnect.
//!
//! Invariants: a job's SQLite file lies below the files root (no absolute path, no `..`); a
//! server's address passes the outgoing address guard, like every HTTP call.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Component, Path};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::spec::{Dialect, MAX_BATCH_SIZE, MAX_COLUMNS, MAX_IDENTIFIER_LEN};
use super::{Error, SqlSink, SqlSinkSpec};
use crate::job::Receipt;
use crate::net::{AddressGuard, UpstreamError};
use crate::sinks::{self, Delivery, Sink, SinkContext, SinkValidation};

/// Open sinks kept at once; the least recently used is closed beyond it.
const MAX_OPEN_SINKS: usize = 32;

/// URL options a job may set: none of them changes which host or file is used.
const ALLOWED_URL_OPTIONS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "application_name",
    "charset",
    "collation",
    "timezone",
    "user",
    "password",
    "dbname",
    "port",
];

/// Upserts a job's records into a SQLite, PostgreSQL or MySQL/MariaDB table.
#[derive(Debug, Default)]
pub struct SqlJobSink {
    open: Mutex<HashMap<String, OpenSink>>,
}

#[derive(Debug)]
struct OpenSink {
    sink: Arc<SqlSink>,
    last_used: Instant,
}

impl SqlJobSink {
    pub fn new() -> Self {
        Self::default()
    }

    /// The open sink for `spec` under `data_dir`, connecting on first use.
    async fn sink_for(&self, spec: &SqlSinkSpec, data_dir: &Path) -> Result<Arc<SqlSink>, Error> {
        let key = cache_key(spec, data_dir);
        if let Some(open) = self.lock().get_mut(&key) {
            open.last_used = Instant::now();
            return Ok(Arc::clone(&open.sink));
        }
        // Connecting outside the lock: two first deliveries may both connect; one pool wins.
        let sink = Arc::new(SqlSink::connect(spec, data_dir).await?);
        let mut open = self.lock();
        if open.len() >= MAX_OPEN_SINKS
            && let Some(oldest) = open
                .iter()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(key, _)| key.clone())
        {
            open.remove(&oldest);
        }
        let entry = open.entry(key).or_insert(OpenSink {
            sink,
            last_used: Instant::now(),
        });
        Ok(Arc::clone(&entry.sink))
    }

    /// Forgets the open sink of `spec`, so the next delivery reconnects.
    fn forget(&self, spec: &SqlSinkSpec, data_dir: &Path) {
        self.lock().remove(&cache_key(spec, data_dir));
    }

    #[cfg(test)]
    pub(super) fn open_sinks(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, OpenSink>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn cache_key(spec: &SqlSinkSpec, data_dir: &Path) -> String {
    let spec_text = serde_json::to_string(spec).unwrap_or_default();
    format!("{}\n{spec_text}", data_dir.display())
}

/// The job's settings as a spec, with every check that needs no network.
fn spec_from(settings: &Value, guard: &AddressGuard) -> Result<SqlSinkSpec, sinks::Error> {
    let spec: SqlSinkSpec = serde_json::from_value(settings.clone())
        .map_err(|error| sinks::Error::Settings(error.to_string()))?;
    spec.validate().map_err(into_sinks_error)?;
    match spec.dialect().map_err(into_sinks_error)? {
        Dialect::Sqlite => check_sqlite_path(&spec)?,
        Dialect::Postgres | Dialect::MySql => {
            let (host, _) = server_address(&spec)?;
            if let Ok(ip) = host.parse::<IpAddr>() {
                guard.check_ip(ip)?;
            }
        }
    }
    Ok(spec)
}

/// A job's SQLite file must be relative to the files root, without `..`.
fn check_sqlite_path(spec: &SqlSinkSpec) -> Result<(), sinks::Error> {
    let path = spec.sqlite_path().unwrap_or_default();
    let relative = !path.is_empty()
        && Path::new(path)
            .components()
            .all(|component| matches!(component, Component::Normal(_)));
    if relative {
        return Ok(());
    }
    Err(sinks::Error::Settings(format!(
        "url: the sqlite file {path:?} must be a path relative to the files root, without `..`"
    )))
}

/// The host and port a server URL names, refusing options that would move the connection.
fn server_address(spec: &SqlSinkSpec) -> Result<(String, u16), sinks::Error> {
    let invalid = |reason: String| sinks::Error::Settings(format!("url: {reason}"));
    let url = url::Url::parse(&spec.url).map_err(|error| {
        invalid(format!(
            "`{}` is not a valid url: {error}",
            spec.redacted_url()
        ))
    })?;
    for (name, _) in url.query_pairs() {
        if !ALLOWED_URL_OPTIONS.contains(&name.as_ref()) {
            return Err(invalid(format!(
                "option `{name}` is not allowed (allowed: {})",
                ALLOWED_URL_OPTIONS.join(", ")
            )));
        }
    }
    let host = match url.host() {
        Some(url::Host::Domain(domain)) if !domain.is_empty() => domain.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err(invalid("the url must name the database host".to_owned())),
    };
    let default_port = match spec.dialect() {
        Ok(Dialect::Postgres) => 5432,
        _ => 3306,
    };
    Ok((host, url.port().unwrap_or(default_port)))
}

/// Resolves a server's host and checks every address against the guard. sqlx resolves the
/// name again when it connects, so a name that changes its answer in between is not caught.
async fn check_server_address(
    spec: &SqlSinkSpec,
    guard: &AddressGuard,
) -> Result<(), sinks::Error> {
    let (host, port) = server_address(spec)?;
    let addresses = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|error| {
            sinks::Error::Upstream(UpstreamError::Transport {
                message: format!("resolving {host}: {error}"),
                timeout: false,
            })
        })?;
    for address in addresses {
        guard.check_ip(address.ip())?;
    }
    Ok(())
}

/// Spec mistakes are settings errors; retryable failures a transport error (retried); the
/// rest the records' fault (not retried).
fn into_sinks_error(error: Error) -> sinks::Error {
    match error {
        Error::Spec(message) => sinks::Error::Settings(message),
        retryable if retryable.retryable() => sinks::Error::Upstream(UpstreamError::Transport {
            message: format!("sql sink: {retryable}"),
            timeout: false,
        }),
        permanent => sinks::Error::Records(permanent.to_string()),
    }
}

#[async_trait]
impl Sink for SqlJobSink {
    fn kind(&self) -> &'static str {
        "sql"
    }

    fn description(&self) -> &'static str {
        "Upserts every record into a SQLite, PostgreSQL or MySQL/MariaDB table on its key \
         columns, in one transaction per delivery, so delivering again never stores a record \
         twice. SQLite files lie below the files root; server addresses pass the outgoing \
         address guard."
    }

    fn settings_schema(&self) -> Value {
        let identifier = format!("^[A-Za-z_][A-Za-z0-9_]{{0,{}}}$", MAX_IDENTIFIER_LEN - 1);
        let table = format!(
            "^[A-Za-z_][A-Za-z0-9_]{{0,{max}}}([.][A-Za-z_][A-Za-z0-9_]{{0,{max}}})?$",
            max = MAX_IDENTIFIER_LEN - 1
        );
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["url", "table", "key", "columns"],
            "properties": {
                "url": {"type": "string", "minLength": 1, "maxLength": 2048, "writeOnly": true,
                        "pattern": "^(?i)(sqlite|postgres|postgresql|mysql|mariadb):",
                        "description": "sqlite://relative/file.db (below the files root), postgres://…, mysql://… or mariadb://…"},
                "table": {"type": "string", "pattern": table,
                          "description": "Table name, optionally schema.table."},
                "key": {"type": "array", "minItems": 1, "maxItems": MAX_COLUMNS,
                        "items": {"type": "string", "pattern": identifier},
                        "description": "The table's unique key columns, each among `columns`."},
                "columns": {"type": "array", "minItems": 1, "maxItems": MAX_COLUMNS,
                            "items": {
                                "type": "object",
                                "additionalProperties": false,
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string", "pattern": identifier},
                                    "field": {"type": "string", "minLength": 1, "maxLength": 1024,
                                              "description": "Top-level key, or a JSON pointer starting with `/`; default the column name."},
                                    "type": {"enum": ["text", "integer", "real", "boolean", "json", "timestamp"]}
                                }
                            }},
                "create_table": {"type": "boolean", "default": false},
                "batch_size": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH_SIZE, "default": 100}
            }
        })
    }

    fn validate(&self, ctx: &SinkValidation, settings: &Value) -> Result<(), sinks::Error> {
        spec_from(settings, &ctx.guard).map(|_| ())
    }

    async fn deliver(
        &self,
        ctx: &SinkContext,
        settings: &Value,
        delivery: &Delivery,
    ) -> Result<Receipt, sinks::Error> {
        let guard = ctx.http.guard();
        let spec = spec_from(settings, guard)?;
        if spec.dialect().map_err(into_sinks_error)? != Dialect::Sqlite {
            check_server_address(&spec, guard).await?;
        }
        let sink = self
            .sink_for(&spec, &ctx.files_root)
            .await
            .map_err(into_sinks_error)?;
        let records = delivery.records.iter().map(|(_, record)| record);
        let written = match sink.upsert_records(records).await {
            Ok(written) => written,
            Err(error) => {
                if matches!(error, Error::Unavailable(_)) {
                    self.forget(&spec, &ctx.files_root);
                }
                return Err(into_sinks_error(error));
            }
        };
        Ok(Receipt {
            http_status: None,
            response: Some(format!("upserted {written} rows into {}", spec.table)),
        })
    }
}
