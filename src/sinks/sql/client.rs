//! [`SqlSink`]: a connection to one table and the upsert of records into it. PostgreSQL and
//! MySQL/MariaDB go through small sqlx pools; SQLite through one rusqlite connection used on
//! the blocking pool, never on an async worker.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sqlx_core::connection::{ConnectOptions, Connection};
use sqlx_core::pool::{Pool, PoolOptions};
use sqlx_core::sql_str::AssertSqlSafe;
use sqlx_core::types::Json;
use sqlx_mysql::{MySql, MySqlConnectOptions, MySqlPool};
use sqlx_postgres::{PgConnectOptions, PgPool, Postgres};

use super::row::{Cell, Row, rows_from};
use super::spec::Dialect;
use super::{Error, SqlSinkSpec, statement};

/// Connections per PostgreSQL or MySQL sink: deliveries are few and each is one transaction.
const MAX_CONNECTIONS: u32 = 4;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(15);
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// An open destination table: upserts records on the spec's key columns.
pub struct SqlSink {
    spec: SqlSinkSpec,
    dialect: Dialect,
    database: Database,
}

enum Database {
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    Postgres(PgPool),
    MySql(MySqlPool),
}

impl std::fmt::Debug for SqlSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlSink")
            .field("url", &self.spec.redacted_url())
            .field("table", &self.spec.table)
            .finish_non_exhaustive()
    }
}

impl SqlSink {
    /// Validates `spec`, connects, and creates the table if the spec asks for it. A relative
    /// SQLite path is resolved under `data_dir`.
    pub async fn connect(spec: &SqlSinkSpec, data_dir: &Path) -> Result<SqlSink, Error> {
        spec.validate()?;
        let dialect = spec.dialect()?;
        let database = match dialect {
            Dialect::Sqlite => {
                let path = sqlite_file(spec, data_dir)?;
                let create = spec
                    .create_table
                    .then(|| statement::create_table(spec, dialect));
                let connection = blocking(move || open_sqlite(&path, create.as_deref())).await?;
                Database::Sqlite(Arc::new(Mutex::new(connection)))
            }
            Dialect::Postgres => {
                let options = PgConnectOptions::from_str(&spec.url)?.disable_statement_logging();
                let create = spec
                    .create_table
                    .then(|| statement::create_table(spec, dialect));
                Database::Postgres(open_pool::<Postgres>(options, create).await?)
            }
            Dialect::MySql => {
                let options = MySqlConnectOptions::from_str(&mysql_url(&spec.url))?
                    .disable_statement_logging();
                let create = spec
                    .create_table
                    .then(|| statement::create_table(spec, dialect));
                Database::MySql(open_pool::<MySql>(options, create).await?)
            }
        };
        Ok(SqlSink {
            spec: spec.clone(),
            dialect,
            database,
        })
    }

    pub fn spec(&self) -> &SqlSinkSpec {
        &self.spec
    }

    /// Upserts `records` in one transaction, `batch_size` rows per statement, and returns how
    /// many rows were written (records sharing a key count once: the last one wins).
    pub async fn upsert(&self, records: &[Value]) -> Result<u64, Error> {
        self.upsert_records(records).await
    }

    /// [`SqlSink::upsert`] over borrowed records, so a caller need not collect them first.
    pub async fn upsert_records<'a>(
        &self,
        records: impl IntoIterator<Item = &'a Value>,
    ) -> Result<u64, Error> {
        let rows = rows_from(&self.spec, records)?;
        let written = rows.len() as u64;
        if rows.is_empty() {
            return Ok(0);
        }
        let per_statement = statement::rows_per_statement(&self.spec, self.dialect);
        match &self.database {
            Database::Sqlite(connection) => {
                let connection = Arc::clone(connection);
                let spec = self.spec.clone();
                blocking(move || upsert_sqlite(&connection, &spec, rows, per_statement)).await?;
            }
            Database::Postgres(pool) => {
                let mut transaction = pool.begin().await?;
                for chunk in chunks(rows, per_statement) {
                    let sql = statement::upsert(&self.spec, self.dialect, chunk.len());
                    let mut query = sqlx_core::query::query::<Postgres>(AssertSqlSafe(sql));
                    for cell in chunk.into_iter().flatten() {
                        query = match cell {
                            Cell::Text(text) | Cell::Timestamp(text) => query.bind(text),
                            Cell::Integer(integer) => query.bind(integer),
                            Cell::Real(real) => query.bind(real),
                            Cell::Boolean(flag) => query.bind(flag),
                            Cell::Json(json) => query.bind(json.map(Json)),
                        };
                    }
                    query.execute(&mut *transaction).await?;
                }
                transaction.commit().await?;
            }
            Database::MySql(pool) => {
                let mut transaction = pool.begin().await?;
                for chunk in chunks(rows, per_statement) {
                    let sql = statement::upsert(&self.spec, self.dialect, chunk.len());
                    let mut query = sqlx_core::query::query::<MySql>(AssertSqlSafe(sql));
                    for cell in chunk.into_iter().flatten() {
                        query = match cell {
                            Cell::Text(text) | Cell::Timestamp(text) => query.bind(text),
                            Cell::Integer(integer) => query.bind(integer),
                            Cell::Real(real) => query.bind(real),
                            Cell::Boolean(flag) => query.bind(flag),
                            // As text: MariaDB has no JSON parameter type; a JSON column
                            // validates the text on both servers.
                            Cell::Json(json) => query.bind(json.map(|json| json.to_string())),
                        };
                    }
                    query.execute(&mut *transaction).await?;
                }
                transaction.commit().await?;
            }
        }
        Ok(written)
    }

    /// Closes the pool's connections (SQLite's closes when the sink is dropped).
    pub async fn close(&self) {
        match &self.database {
            Database::Sqlite(_) => {}
            Database::Postgres(pool) => pool.close().await,
            Database::MySql(pool) => pool.close().await,
        }
    }
}

/// Connects once (so a wrong address or password fails now, without the pool's retries),
/// creates the table on that connection if asked, then opens the pool lazily.
async fn open_pool<DB>(
    options: <DB::Connection as Connection>::Options,
    create_table: Option<String>,
) -> Result<Pool<DB>, Error>
where
    DB: sqlx_core::database::Database,
    DB::Arguments: sqlx_core::arguments::IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: sqlx_core::executor::Executor<'c, Database = DB>,
{
    let mut connection = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
        .await
        .map_err(|_| {
            Error::Unavailable(format!(
                "no connection within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })??;
    if let Some(sql) = create_table {
        sqlx_core::query::query::<DB>(AssertSqlSafe(sql))
            .execute(&mut connection)
            .await?;
    }
    connection.close().await?;
    Ok(PoolOptions::<DB>::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .idle_timeout(IDLE_TIMEOUT)
        .connect_lazy_with(options))
}

/// sqlx knows MariaDB URLs as `mysql://`.
fn mysql_url(url: &str) -> String {
    match url.get(.."mariadb:".len()) {
        Some(scheme) if scheme.eq_ignore_ascii_case("mariadb:") => {
            format!("mysql:{}", &url["mariadb:".len()..])
        }
        _ => url.to_owned(),
    }
}

/// Splits `rows` into owned chunks of at most `size`, so cells move into the statement.
fn chunks(rows: Vec<Row>, size: usize) -> Vec<Vec<Row>> {
    debug_assert!(size > 0);
    let mut chunks = Vec::with_capacity(rows.len().div_ceil(size));
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        chunks.push(rows.by_ref().take(size).collect());
    }
    chunks
}

/// The SQLite file of `spec`: absolute as written, relative under `data_dir`.
pub fn sqlite_file(spec: &SqlSinkSpec, data_dir: &Path) -> Result<PathBuf, Error> {
    let path = spec.sqlite_path().unwrap_or_default();
    if path.is_empty() {
        return Err(Error::Spec(
            "a sqlite url must name a file, as in sqlite://records.db".to_owned(),
        ));
    }
    let path = Path::new(path);
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        data_dir.join(path)
    })
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| Error::Unavailable(format!("sqlite task failed: {error}")))?
}

pub(super) fn open_sqlite(
    path: &Path,
    create_table: Option<&str>,
) -> Result<rusqlite::Connection, Error> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|error| {
            Error::Unavailable(format!("creating {}: {error}", parent.display()))
        })?;
    }
    let connection = rusqlite::Connection::open(path)?;
    connection.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
    let _mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    // FULL: the deliver step is marked succeeded once this commit returns, and the records are
    // not sent again; with NORMAL a power loss could undo a commit the job already counted.
    connection.execute_batch("PRAGMA synchronous = FULL")?;
    if let Some(sql) = create_table {
        connection.execute_batch(sql)?;
    }
    Ok(connection)
}

fn upsert_sqlite(
    connection: &Mutex<rusqlite::Connection>,
    spec: &SqlSinkSpec,
    rows: Vec<Row>,
    per_statement: usize,
) -> Result<(), Error> {
    // A panic while holding the lock leaves no half-done transaction (it rolls back on drop).
    let mut connection = connection
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // IMMEDIATE: take the write lock up front so `busy_timeout` applies (see CRATES.md).
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for chunk in chunks(rows, per_statement) {
        let sql = statement::upsert(spec, Dialect::Sqlite, chunk.len());
        let mut prepared = transaction.prepare_cached(&sql)?;
        let values = chunk.into_iter().flatten().map(sqlite_value);
        prepared.execute(rusqlite::params_from_iter(values))?;
    }
    transaction.commit()?;
    Ok(())
}

fn sqlite_value(cell: Cell) -> rusqlite::types::Value {
    use rusqlite::types::Value as Sqlite;
    let value = match cell {
        Cell::Text(text) | Cell::Timestamp(text) => text.map(Sqlite::Text),
        Cell::Integer(integer) => integer.map(Sqlite::Integer),
        Cell::Real(real) => real.map(Sqlite::Real),
        Cell::Boolean(flag) => flag.map(|flag| Sqlite::Integer(i64::from(flag))),
        Cell::Json(json) => json.map(|json| Sqlite::Text(json.to_string())),
    };
    value.unwrap_or(Sqlite::Null)
}
