//! The sink's errors, and the one place that decides which database failures are worth a retry.

use sqlx_core::error::DatabaseError;

/// Why a spec, a connection or an upsert failed. [`Error::retryable`] classifies it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The spec itself is wrong (bad identifier, unknown scheme, key outside `columns`).
    #[error("invalid sql sink: {0}")]
    Spec(String),
    /// A record cannot be written as it is; nothing of the upsert was written.
    #[error("record {index}, column `{column}`: {message}")]
    Record {
        index: usize,
        column: String,
        message: String,
    },
    /// The database could not be reached or used right now (connect, I/O, pool timeout,
    /// shutdown, too many connections).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A conflict with concurrent work (deadlock, serialization failure, lock timeout,
    /// SQLite busy); the transaction was rolled back.
    #[error("transient database conflict: {0}")]
    Conflict(String),
    /// The database refused the statement (constraint, type mismatch, unknown table or
    /// column): the same records would be refused again.
    #[error("database refused the statement: {0}")]
    Refused(String),
}

impl Error {
    /// Whether the same upsert may succeed later.
    pub fn retryable(&self) -> bool {
        match self {
            Error::Unavailable(_) | Error::Conflict(_) => true,
            Error::Spec(_) | Error::Record { .. } | Error::Refused(_) => false,
        }
    }
}

/// The two kinds of failure a retry can outlast.
#[derive(Debug, Clone, Copy)]
enum Transient {
    Conflict,
    Unavailable,
}

impl Transient {
    fn error(self, what: &str, detail: &str) -> Error {
        let message = format!("{what}: {detail}");
        match self {
            Transient::Conflict => Error::Conflict(message),
            Transient::Unavailable => Error::Unavailable(message),
        }
    }
}

/// SQLSTATE classes and codes that mean "try again": connection exceptions (08), serialization
/// failure and deadlock (40001, 40P01), lock not available (55P03), insufficient resources (53)
/// and operator intervention such as a shutting-down server (57P01–57P03).
fn transient_sqlstate(code: &str) -> Option<(Transient, &'static str)> {
    match code {
        "40001" => Some((Transient::Conflict, "serialization failure")),
        "40P01" => Some((Transient::Conflict, "deadlock detected")),
        "55P03" => Some((Transient::Conflict, "lock not available")),
        "57P01" | "57P02" | "57P03" => Some((Transient::Unavailable, "server shutting down")),
        _ if code.starts_with("08") => Some((Transient::Unavailable, "connection exception")),
        _ if code.starts_with("53") => Some((Transient::Unavailable, "insufficient resources")),
        _ => None,
    }
}

/// MySQL/MariaDB error numbers worth a retry: lock wait timeout (1205), deadlock (1213), too
/// many connections (1040), server shutdown (1053), query interrupted (1317).
fn transient_mysql_number(number: u16) -> Option<(Transient, &'static str)> {
    match number {
        1205 => Some((Transient::Conflict, "lock wait timeout")),
        1213 => Some((Transient::Conflict, "deadlock")),
        1040 => Some((Transient::Unavailable, "too many connections")),
        1053 | 1317 => Some((Transient::Unavailable, "server shutting down")),
        _ => None,
    }
}

fn classify_database_error(error: &dyn DatabaseError) -> Error {
    let code = error.code();
    let mysql_number = error
        .try_downcast_ref::<sqlx_mysql::MySqlDatabaseError>()
        .map(sqlx_mysql::MySqlDatabaseError::number);
    let transient = mysql_number
        .and_then(transient_mysql_number)
        .or_else(|| code.as_deref().and_then(transient_sqlstate));
    if let Some((kind, what)) = transient {
        return kind.error(what, error.message());
    }
    let code = code
        .map(|code| format!(" (SQLSTATE {code})"))
        .unwrap_or_default();
    Error::Refused(format!("{}{code}", error.message()))
}

impl From<sqlx_core::Error> for Error {
    fn from(error: sqlx_core::Error) -> Self {
        use sqlx_core::Error as Sqlx;
        match error {
            Sqlx::Database(database) => classify_database_error(database.as_ref()),
            Sqlx::Io(_) | Sqlx::Tls(_) | Sqlx::Protocol(_) | Sqlx::WorkerCrashed => {
                Error::Unavailable(error.to_string())
            }
            Sqlx::PoolTimedOut => {
                Error::Unavailable("timed out waiting for a database connection".to_owned())
            }
            Sqlx::PoolClosed => Error::Unavailable("the connection pool is closed".to_owned()),
            Sqlx::Configuration(_) => Error::Spec(error.to_string()),
            other => Error::Refused(other.to_string()),
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        let code = match &error {
            rusqlite::Error::SqliteFailure(failure, _) => Some(failure.code),
            _ => None,
        };
        match code {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                Error::Conflict(error.to_string())
            }
            Some(
                ErrorCode::CannotOpen
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::OutOfMemory
                | ErrorCode::FileLockingProtocolFailed,
            ) => Error::Unavailable(error.to_string()),
            _ => Error::Refused(error.to_string()),
        }
    }
}
