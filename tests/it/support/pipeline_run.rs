//! Shared pieces of the pipeline tests: the seed's pipeline as Gleaner runs it (message source
//! → processing API → storage API, plus SQL tables), the SQL databases the run writes to, and
//! reading a pipeline's counters.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx_core::sql_str::AssertSqlSafe;

use super::pipeline_mocks::{MessageSourceMock, ProcessingMock, StorageMock};

/// Knobs of a test pipeline.
#[derive(Debug, Clone)]
pub struct Shape {
    pub workers: u32,
    pub queue_capacity: u32,
    pub max_attempts: u32,
    pub backoff: &'static str,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            workers: 8,
            queue_capacity: 500,
            max_attempts: 15,
            backoff: "5ms",
        }
    }
}

/// A SQL table the pipeline upserts into.
#[derive(Debug, Clone)]
pub struct SqlTable {
    /// `sqlite`, `postgres` or `mysql`.
    pub kind: &'static str,
    pub url: String,
    pub table: String,
}

/// The tables a run writes: always a SQLite file; PostgreSQL and MariaDB when their URLs are
/// set (`GLEANER_TEST_POSTGRES_URL`, `GLEANER_TEST_MYSQL_URL`, set by `.ci/run`), else a loud
/// note that they were skipped.
pub fn sql_tables(test: &str) -> Vec<SqlTable> {
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let table = format!("gl_{test}_{}", &suffix[suffix.len() - 10..]);
    let mut tables = vec![SqlTable {
        kind: "sqlite",
        url: "sqlite://pipeline-sink.db".into(),
        table: table.clone(),
    }];
    for (kind, variable) in [
        ("postgres", "GLEANER_TEST_POSTGRES_URL"),
        ("mysql", "GLEANER_TEST_MYSQL_URL"),
    ] {
        match std::env::var(variable) {
            Ok(url) if !url.is_empty() => tables.push(SqlTable {
                kind,
                url,
                table: table.clone(),
            }),
            _ => eprintln!(
                "SKIPPED: the {kind} sink of {test} (set {variable} to run it; .ci/run does)"
            ),
        }
    }
    tables
}

/// The `sql` sink stage writing every message field into `table`.
pub fn sql_sink(table: &SqlTable) -> Value {
    json!({
        "type": "sql",
        "name": format!("{}-table", table.kind),
        "url": table.url,
        "table": table.table,
        "key": ["id"],
        "create_table": true,
        "batch_size": 100,
        "workers": 2,
        "columns": [
            {"name": "id"},
            {"name": "source"},
            {"name": "title"},
            {"name": "creation_date", "type": "timestamp"},
            {"name": "message"},
            {"name": "tags", "type": "json"},
            {"name": "author"},
            {"name": "processing_date", "type": "timestamp"},
        ],
    })
}

/// The seed's pipeline: source → processing → storage, and the SQL tables.
pub fn seed_pipeline(
    name: &str,
    source: &MessageSourceMock,
    processing: &ProcessingMock,
    storage: &StorageMock,
    tables: &[SqlTable],
    shape: &Shape,
) -> Value {
    let mut sinks = vec![json!({
        "type": "http",
        "name": "storage",
        "url": format!("{}/message", storage.url()),
        "workers": shape.workers,
        "timeout": "5s",
    })];
    sinks.extend(tables.iter().map(sql_sink));
    json!({
        "name": name,
        "source": {
            "connector": "message-source",
            "settings": {"base_url": source.url(), "token": source.token()},
            "idle_interval": "50ms",
            "max_backoff": "100ms",
        },
        "processors": [{
            "type": "http",
            "name": "processing",
            "url": format!("{}/message", processing.url()),
            "workers": shape.workers,
            "timeout": "5s",
        }],
        "sinks": sinks,
        "queue_capacity": shape.queue_capacity,
        "retry": {"max_attempts": shape.max_attempts, "backoff": shape.backoff, "max_backoff": "100ms"},
    })
}

/// Whether every sink has stored (or dead-lettered) `total` messages.
pub fn drained(view: &Value, total: u64) -> bool {
    let Some(stages) = view["stages"].as_array() else {
        return false;
    };
    let sinks = stages.iter().skip(2);
    stages.len() > 2
        && sinks.into_iter().all(|stage| {
            let counters = &stage["counters"];
            counters["done"].as_u64().unwrap_or(0) + counters["dead"].as_u64().unwrap_or(0) >= total
        })
}

/// Asserts `entered = done + dead` (nothing left queued) at every stage after the source.
pub fn assert_counters_add_up(view: &Value) {
    for stage in view["stages"].as_array().expect("stages").iter().skip(1) {
        let c = &stage["counters"];
        let (entered, done, dead) = (
            c["entered"].as_u64().unwrap_or(0),
            c["done"].as_u64().unwrap_or(0),
            c["dead"].as_u64().unwrap_or(0),
        );
        assert_eq!(
            entered,
            done + dead,
            "stage {} counters do not add up: {c}",
            stage["name"]
        );
    }
}

/// Rows and distinct ids in a table.
pub async fn table_rows(table: &SqlTable, data_dir: &Path) -> (u64, u64) {
    let count = format!("SELECT COUNT(*), COUNT(DISTINCT id) FROM {}", table.table);
    match table.kind {
        "sqlite" => {
            let conn = rusqlite::Connection::open(data_dir.join("pipeline-sink.db"))
                .expect("open sqlite sink");
            conn.query_row(&count, [], |row| Ok((row.get(0)?, row.get(1)?)))
                .expect("count sqlite rows")
        }
        "postgres" => {
            let pool = sqlx_postgres::PgPool::connect(&table.url)
                .await
                .expect("postgres");
            let (all, distinct): (i64, i64) = sqlx_core::query_as::query_as(AssertSqlSafe(count))
                .fetch_one(&pool)
                .await
                .expect("count");
            (all as u64, distinct as u64)
        }
        _ => {
            let pool = sqlx_mysql::MySqlPool::connect(&table.url)
                .await
                .expect("mysql");
            let (all, distinct): (i64, i64) = sqlx_core::query_as::query_as(AssertSqlSafe(count))
                .fetch_one(&pool)
                .await
                .expect("count");
            (all as u64, distinct as u64)
        }
    }
}

/// Drops a server table after its test (SQLite files go with the data directory).
pub async fn drop_table(table: &SqlTable) {
    let drop = format!("DROP TABLE IF EXISTS {}", table.table);
    match table.kind {
        "postgres" => {
            if let Ok(pool) = sqlx_postgres::PgPool::connect(&table.url).await {
                let _ = sqlx_core::query::query(AssertSqlSafe(drop))
                    .execute(&pool)
                    .await;
            }
        }
        "mysql" => {
            if let Ok(pool) = sqlx_mysql::MySqlPool::connect(&table.url).await {
                let _ = sqlx_core::query::query(AssertSqlSafe(drop))
                    .execute(&pool)
                    .await;
            }
        }
        _ => {}
    }
}

/// Asserts the storage mock and every table hold exactly the source's messages; returns the
/// storage mock's duplicate count (it is at-least-once by nature).
pub async fn assert_all_stored_once(
    source: &MessageSourceMock,
    storage: &StorageMock,
    tables: &[SqlTable],
    data_dir: &Path,
) -> usize {
    let expected: HashSet<String> = source
        .all_messages()
        .iter()
        .map(|message| message["id"].as_str().expect("id").to_owned())
        .collect();
    let stored = storage.stored_messages();
    let stored_ids: HashSet<String> = stored.keys().cloned().collect();
    assert_eq!(
        stored_ids.len(),
        expected.len(),
        "storage mock holds {} of {} messages",
        stored_ids.len(),
        expected.len()
    );
    assert_eq!(stored_ids, expected, "storage mock holds other ids");
    for original in source.all_messages().iter().take(50) {
        let id = original["id"].as_str().expect("id");
        let kept = &stored[id];
        assert_eq!(
            kept["message"], original["message"],
            "the message field is kept"
        );
        assert!(kept["processing_date"].is_string(), "processed: {kept}");
    }
    for table in tables {
        let (rows, distinct) = table_rows(table, data_dir).await;
        assert_eq!(
            (rows, distinct),
            (expected.len() as u64, expected.len() as u64),
            "{} table {}",
            table.kind,
            table.table
        );
    }
    storage.duplicates()
}

/// Polls `view` until `done` holds or `timeout` passes; returns the last view.
pub async fn wait_for<F, Fut>(
    timeout: Duration,
    what: &str,
    mut view: F,
    done: impl Fn(&Value) -> bool,
) -> Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let current = view().await;
        if done(&current) {
            return current;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last view: {current:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
