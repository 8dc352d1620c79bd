//! The sql sink: spec validation and redaction, the SQL text, record conversion, SQLite upserts
//! in a temporary folder, the job sink, and one suite run against PostgreSQL and MariaDB/MySQL
//! when `GLEANER_TEST_POSTGRES_URL` / `GLEANER_TEST_MYSQL_URL` name a test database.

use std::sync::Arc;

use serde_json::{Value, json};
use sqlx_core::sql_str::AssertSqlSafe;

use super::row::{Cell, rows_from};
use super::spec::Dialect;
use super::*;
use crate::clock::SystemClock;
use crate::config::SinksConfig;
use crate::job::JobStatus;
use crate::net::{AddressGuard, HttpClientFactory, NetConfig, Retryability};
use crate::sinks::{Delivery, Sink, SinkContext, SinkRegistry, SinkValidation};

fn column(name: &str, column_type: ColumnType) -> SqlColumn {
    SqlColumn {
        name: name.to_owned(),
        field: None,
        column_type,
    }
}

/// `id` integer key, `name` text, `score` real, `active` boolean, `payload` json, `seen_at`
/// timestamp, `author` text from the pointer `/author/name`.
fn spec(url: &str, table: &str) -> SqlSinkSpec {
    SqlSinkSpec {
        url: url.to_owned(),
        table: table.to_owned(),
        key: vec!["id".to_owned()],
        columns: vec![
            column("id", ColumnType::Integer),
            column("name", ColumnType::Text),
            column("score", ColumnType::Real),
            column("active", ColumnType::Boolean),
            column("payload", ColumnType::Json),
            column("seen_at", ColumnType::Timestamp),
            SqlColumn {
                name: "author".to_owned(),
                field: Some("/author/name".to_owned()),
                column_type: ColumnType::Text,
            },
        ],
        create_table: true,
        batch_size: 100,
    }
}

fn record(id: i64, version: &str) -> Value {
    json!({
        "id": id,
        "name": format!("item {id} {version}"),
        "score": id as f64 / 4.0,
        "active": id % 2 == 0,
        "payload": {"tag": version, "n": id},
        "seen_at": "2024-05-06T07:08:09Z",
        "author": {"name": format!("author {version}")},
        "ignored": true
    })
}

fn records(count: i64, version: &str) -> Vec<Value> {
    (1..=count).map(|id| record(id, version)).collect()
}

fn spec_error(spec: &SqlSinkSpec) -> String {
    match spec.validate() {
        Err(Error::Spec(message)) => message,
        other => panic!("expected a spec error, got {other:?}"),
    }
}

// ---- validation and redaction ----

#[test]
fn a_valid_spec_passes_and_a_schema_qualified_table_is_accepted() {
    let mut spec = spec("postgres://u:p@db/x", "records");
    spec.validate().expect("valid");
    spec.table = "analytics.records_2024".to_owned();
    spec.validate().expect("schema.table");
    for url in [
        "sqlite://a.db",
        "postgresql://h/d",
        "mysql://h/d",
        "mariadb://h/d",
    ] {
        spec.url = url.to_owned();
        spec.validate().expect(url);
    }
}

#[test]
fn identifiers_that_could_break_out_of_quotes_are_refused() {
    let bad_tables = [
        "users; DROP TABLE x",
        "users\"",
        "us\"ers",
        "us`ers",
        "users'",
        "users--",
        "1users",
        "",
        "a.b.c",
        ".users",
        "users.",
        "schéma.users",
        "user s",
    ];
    for table in bad_tables {
        let spec = spec("sqlite://a.db", table);
        assert!(spec.validate().is_err(), "table {table:?} was accepted");
    }
    let message = spec_error(&spec("sqlite://a.db", "users; DROP TABLE x"));
    assert!(message.contains("table name") && message.contains("users; DROP TABLE x"));
    let long = "a".repeat(64);
    assert!(spec_error(&spec("sqlite://a.db", &long)).contains("1 to 63 characters"));
    spec("sqlite://a.db", &"a".repeat(63))
        .validate()
        .expect("63 characters");

    let mut quoted_column = spec("sqlite://a.db", "t");
    quoted_column
        .columns
        .push(column("x\" TEXT); --", ColumnType::Text));
    assert!(spec_error(&quoted_column).contains("column name"));
    let mut backtick_column = spec("sqlite://a.db", "t");
    backtick_column
        .columns
        .push(column("x`y", ColumnType::Text));
    assert!(backtick_column.validate().is_err());
}

#[test]
fn spec_errors_say_what_is_wrong() {
    let base = spec("sqlite://a.db", "t");

    let mut scheme = base.clone();
    scheme.url = "oracle://u:secret@h/d".to_owned();
    let message = spec_error(&scheme);
    assert!(message.contains("must start with sqlite:"), "{message}");
    assert!(!message.contains("secret"), "{message}");

    let mut no_key = base.clone();
    no_key.key.clear();
    assert!(spec_error(&no_key).contains("`key` must name at least one column"));

    let mut stray_key = base.clone();
    stray_key.key = vec!["id".to_owned(), "missing".to_owned()];
    assert!(spec_error(&stray_key).contains("key column `missing` is not among `columns`"));

    let mut json_key = base.clone();
    json_key.key = vec!["payload".to_owned()];
    assert!(spec_error(&json_key).contains("key column `payload` has type json"));

    let mut duplicate = base.clone();
    duplicate.columns.push(column("name", ColumnType::Text));
    assert!(spec_error(&duplicate).contains("column `name` is declared twice"));

    for batch_size in [0, 1001] {
        let mut batch = base.clone();
        batch.batch_size = batch_size;
        assert!(spec_error(&batch).contains("`batch_size` must be between 1 and 1000"));
    }

    let mut no_columns = base.clone();
    no_columns.columns.clear();
    assert!(spec_error(&no_columns).contains("`columns` must list 1 to 200 columns, not 0"));

    let mut too_many = base.clone();
    too_many.columns = (0..201)
        .map(|n| column(&format!("c{n}"), ColumnType::Text))
        .collect();
    too_many.key = vec!["c0".to_owned()];
    assert!(spec_error(&too_many).contains("not 201"));
}

#[test]
fn redacted_url_hides_the_password() {
    let redacted = |url: &str| spec(url, "t").redacted_url();
    assert_eq!(
        redacted("postgres://gleaner:s3cr%40t@db.internal:5432/app?sslmode=require"),
        "postgres://gleaner:***@db.internal:5432/app?sslmode=require"
    );
    assert_eq!(
        redacted("mysql://root:pw@127.0.0.1/test"),
        "mysql://root:***@127.0.0.1/test"
    );
    assert_eq!(
        redacted("postgres://db/app?user=u&password=hunter2"),
        "postgres://db/app?user=u&password=***"
    );
    assert_eq!(redacted("postgres://u@db/app"), "postgres://u@db/app");
    assert_eq!(
        redacted("sqlite://data/records.db"),
        "sqlite://data/records.db"
    );
    assert!(!format!("{:?}", redact_url("mysql://a:b@c@h/d")).contains(":b@"));
}

// ---- SQL text ----

#[test]
fn statements_quote_identifiers_and_bind_every_value() {
    let mut spec = spec("sqlite://a.db", "main.t");
    spec.columns.truncate(2);
    assert_eq!(
        statement::upsert(&spec, Dialect::Sqlite, 2),
        "INSERT INTO \"main\".\"t\" (\"id\", \"name\") VALUES (?, ?), (?, ?) \
         ON CONFLICT (\"id\") DO UPDATE SET \"name\" = excluded.\"name\""
    );
    assert_eq!(
        statement::upsert(&spec, Dialect::Postgres, 2),
        "INSERT INTO \"main\".\"t\" (\"id\", \"name\") VALUES ($1, $2), ($3, $4) \
         ON CONFLICT (\"id\") DO UPDATE SET \"name\" = excluded.\"name\""
    );
    assert_eq!(
        statement::upsert(&spec, Dialect::MySql, 1),
        "INSERT INTO `main`.`t` (`id`, `name`) VALUES (?, ?) \
         ON DUPLICATE KEY UPDATE `name` = VALUES(`name`)"
    );
    assert_eq!(
        statement::create_table(&spec, Dialect::MySql),
        "CREATE TABLE IF NOT EXISTS `main`.`t` (`id` BIGINT NOT NULL, `name` TEXT, PRIMARY KEY (`id`))"
    );
    // Quoting stays safe even for a name validation would refuse.
    assert_eq!(
        statement::quote_identifier(Dialect::Postgres, "a\"b"),
        "\"a\"\"b\""
    );
    assert_eq!(statement::quote_identifier(Dialect::MySql, "a`b"), "`a``b`");

    spec.columns.truncate(1);
    assert!(statement::upsert(&spec, Dialect::Postgres, 1).ends_with("DO NOTHING"));
    assert!(statement::upsert(&spec, Dialect::MySql, 1).ends_with("`id` = `id`"));
}

#[test]
fn rows_per_statement_stays_under_the_parameter_limit() {
    let mut wide = spec("sqlite://a.db", "t");
    wide.columns = (0..200)
        .map(|n| column(&format!("c{n}"), ColumnType::Text))
        .collect();
    wide.key = vec!["c0".to_owned()];
    wide.batch_size = 1000;
    assert_eq!(statement::rows_per_statement(&wide, Dialect::Sqlite), 163);
    assert_eq!(statement::rows_per_statement(&wide, Dialect::Postgres), 327);
    wide.batch_size = 10;
    assert_eq!(statement::rows_per_statement(&wide, Dialect::MySql), 10);
}

// ---- records to rows ----

#[test]
fn values_are_converted_per_column_type() {
    let spec = spec("sqlite://a.db", "t");
    let record = json!({
        "id": "42", "name": 7, "score": "1.5", "active": "TRUE",
        "payload": [1, {"a": null}], "seen_at": "2024-01-01T00:00:00+02:00",
        "author": {"name": "ada"}
    });
    let rows = rows_from(&spec, [&record]).expect("converts");
    assert_eq!(
        rows,
        vec![vec![
            Cell::Integer(Some(42)),
            Cell::Text(Some("7".to_owned())),
            Cell::Real(Some(1.5)),
            Cell::Boolean(Some(true)),
            Cell::Json(Some(json!([1, {"a": null}]))),
            Cell::Timestamp(Some("2024-01-01T00:00:00+02:00".to_owned())),
            Cell::Text(Some("ada".to_owned())),
        ]]
    );
    let sparse = json!({"id": 1.0, "name": null, "author": "not an object"});
    let rows = rows_from(&spec, [&sparse]).expect("missing fields are null");
    assert_eq!(rows[0][0], Cell::Integer(Some(1)));
    assert_eq!(rows[0][1], Cell::Text(None));
    assert_eq!(rows[0][6], Cell::Text(None));
}

#[test]
fn a_bad_record_names_its_index_and_column() {
    let spec = spec("sqlite://a.db", "t");
    let records = [json!({"id": 1}), json!({"id": 2, "score": "high"})];
    match rows_from(&spec, &records) {
        Err(Error::Record { index, column, .. }) => {
            assert_eq!((index, column.as_str()), (1, "score"))
        }
        other => panic!("expected a record error, got {other:?}"),
    }
    let records = [
        json!({"id": 1}),
        json!({"id": 2}),
        json!({"name": "no key"}),
    ];
    let error = rows_from(&spec, &records).expect_err("missing key");
    assert!(!error.retryable());
    assert_eq!(
        error.to_string(),
        "record 2, column `id`: key column has no value (field `id` is missing or null)"
    );
    let fractional = [json!({"id": 1.5})];
    assert!(rows_from(&spec, &fractional).is_err());
}

#[test]
fn duplicate_keys_keep_the_last_record() {
    let spec = spec("sqlite://a.db", "t");
    let records = [
        record(1, "a"),
        record(2, "a"),
        json!({"id": "1", "name": "last"}),
    ];
    let rows = rows_from(&spec, &records).expect("converts");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][1], Cell::Text(Some("last".to_owned())));
}

// ---- SQLite ----

#[test]
fn a_sqlite_target_commits_durably() {
    let dir = tempfile::tempdir().expect("temp dir");
    let connection = client::open_sqlite(&dir.path().join("t.db"), None).expect("open");
    let synchronous: i64 = connection
        .query_row("PRAGMA synchronous", [], |row| row.get(0))
        .expect("pragma");
    assert_eq!(synchronous, 2, "synchronous=FULL");
}

fn sqlite_rows(path: &std::path::Path, table: &str) -> Vec<(i64, String, bool, String)> {
    let connection = rusqlite::Connection::open(path).expect("open");
    let sql = format!("SELECT id, name, active, payload FROM \"{table}\" ORDER BY id");
    let mut statement = connection.prepare(&sql).expect("prepare");
    statement
        .query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[tokio::test]
async fn sqlite_upsert_updates_rows_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = spec("sqlite://nested/records.db", "records");
    let sink = SqlSink::connect(&spec, dir.path()).await.expect("connect");
    let path = dir.path().join("nested/records.db");

    assert_eq!(sink.upsert(&records(3, "v1")).await.expect("insert"), 3);
    assert_eq!(sink.upsert(&records(3, "v2")).await.expect("upsert"), 3);

    let rows = sqlite_rows(&path, "records");
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1].0, 2);
    assert_eq!(rows[1].1, "item 2 v2");
    assert!(rows[1].2);
    let payload: Value = serde_json::from_str(&rows[1].3).expect("json text");
    assert_eq!(payload, json!({"tag": "v2", "n": 2}));
    assert_eq!(sink.upsert(&[]).await.expect("nothing"), 0);
}

#[tokio::test]
async fn sqlite_duplicate_keys_in_one_batch_keep_the_last() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = spec("sqlite://records.db", "records");
    spec.batch_size = 2;
    let sink = SqlSink::connect(&spec, dir.path()).await.expect("connect");
    let batch = [
        record(1, "a"),
        record(1, "b"),
        record(2, "a"),
        record(1, "c"),
    ];
    assert_eq!(sink.upsert(&batch).await.expect("upsert"), 2);
    let rows = sqlite_rows(&dir.path().join("records.db"), "records");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].1, "item 1 c");
}

#[tokio::test]
async fn sqlite_many_batches_are_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = spec("sqlite://records.db", "records");
    spec.batch_size = 100;
    let sink = SqlSink::connect(&spec, dir.path()).await.expect("connect");
    assert_eq!(sink.upsert(&records(250, "a")).await.expect("first"), 250);
    assert_eq!(sink.upsert(&records(250, "b")).await.expect("again"), 250);
    let rows = sqlite_rows(&dir.path().join("records.db"), "records");
    assert_eq!(rows.len(), 250);
    assert!(rows.iter().all(|row| row.1.ends_with(" b")));
}

#[tokio::test]
async fn sqlite_refusals_are_permanent_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("records.db");
    let connection = rusqlite::Connection::open(&path).expect("open");
    connection
        .execute_batch("CREATE TABLE records (id INTEGER PRIMARY KEY, name TEXT)")
        .expect("create");
    drop(connection);
    let mut spec = spec("sqlite://records.db", "records");
    spec.create_table = false;
    let sink = SqlSink::connect(&spec, dir.path()).await.expect("connect");
    let error = sink
        .upsert(&records(2, "a"))
        .await
        .expect_err("unknown columns");
    assert!(matches!(error, Error::Refused(_)), "{error:?}");
    assert!(!error.retryable());

    spec.columns.truncate(2);
    let sink = SqlSink::connect(&spec, dir.path()).await.expect("connect");
    let error = sink
        .upsert(&[record(1, "a"), json!({"name": "keyless"})])
        .await
        .expect_err("missing key");
    assert!(matches!(error, Error::Record { index: 1, .. }), "{error:?}");
    assert!(sqlite_rows_count(&path) == 0, "a failed upsert wrote rows");
}

fn sqlite_rows_count(path: &std::path::Path) -> i64 {
    let connection = rusqlite::Connection::open(path).expect("open");
    connection
        .query_row("SELECT count(*) FROM records", [], |row| row.get(0))
        .expect("count")
}

#[tokio::test]
async fn an_unreachable_server_is_retryable() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let spec = spec("postgres://postgres@127.0.0.1:1/test", "t");
    let error = SqlSink::connect(&spec, std::path::Path::new("."))
        .await
        .expect_err("refused");
    assert!(error.retryable(), "{error:?}");
}

// ---- the job sink ----

fn validation() -> SinkValidation {
    SinkValidation {
        files_root: std::env::temp_dir(),
        guard: AddressGuard::default(),
    }
}

#[test]
fn job_settings_are_checked_at_submission() {
    let registry = SinkRegistry::builtin(&SinksConfig::default());
    let settings = |spec: &SqlSinkSpec| serde_json::to_value(spec).expect("json");
    let good = spec("sqlite://jobs/records.db", "records");
    registry
        .validate(&validation(), "sql", &settings(&good))
        .expect("valid");

    let refused = [
        spec("sqlite://jobs/records.db", "users; DROP TABLE x"),
        spec("sqlite:///etc/records.db", "records"),
        spec("sqlite://../records.db", "records"),
        spec("postgres://u@10.0.0.5/db", "records"),
        spec("postgres://u@db.example/db?host=10.0.0.5", "records"),
        {
            let mut stray_key = good.clone();
            stray_key.key = vec!["nope".to_owned()];
            stray_key
        },
    ];
    for spec in refused {
        let outcome = registry.validate(&validation(), "sql", &settings(&spec));
        assert!(outcome.is_err(), "accepted {spec:?}");
    }
    let outcome = registry.validate(
        &validation(),
        "sql",
        &json!({"url": "sqlite://a.db", "table": "t", "key": ["id"],
                "columns": [{"name": "id"}, {"name": "id"}]}),
    );
    let message = format!("{:?}", outcome.expect_err("duplicate"));
    assert!(
        message.contains("column `id` is declared twice"),
        "{message}"
    );
}

#[tokio::test]
async fn job_sink_delivers_every_record_and_reuses_its_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let context = SinkContext {
        http: HttpClientFactory::new(&NetConfig::default()).expect("client"),
        clock: Arc::new(SystemClock),
        files_root: dir.path().to_path_buf(),
    };
    let delivery = |version: &str| Delivery {
        job_id: uuid::Uuid::nil(),
        delivery_id: "msg_1".into(),
        status: JobStatus::Succeeded,
        created_at: 0,
        collected_at: 0,
        sources: Vec::new(),
        records: records(5, version)
            .into_iter()
            .enumerate()
            .map(|(n, record)| (n as i64 % 2, record))
            .collect(),
    };
    let sink = SqlJobSink::new();
    let settings = serde_json::to_value(spec("sqlite://out/records.db", "records")).expect("json");
    let receipt = sink
        .deliver(&context, &settings, &delivery("a"))
        .await
        .expect("delivered");
    assert_eq!(
        receipt.response.as_deref(),
        Some("upserted 5 rows into records")
    );
    sink.deliver(&context, &settings, &delivery("b"))
        .await
        .expect("delivered again");
    assert_eq!(sink.open_sinks(), 1);
    let rows = sqlite_rows(&dir.path().join("out/records.db"), "records");
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|row| row.1.ends_with(" b")));

    let mut bad = delivery("c");
    bad.records.push((0, json!({"name": "keyless"})));
    let error = sink
        .deliver(&context, &settings, &bad)
        .await
        .expect_err("keyless record");
    assert_eq!(error.retryability(), Retryability::Permanent);
    assert!(
        error.to_string().contains("record 5, column `id`"),
        "{error}"
    );
}

// ---- PostgreSQL and MySQL/MariaDB ----

fn server_url(variable: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!(
                "SKIPPED: sql sink server test; set {variable} (e.g. postgres://postgres@127.0.0.1:5432/test \
                 or mysql://root@127.0.0.1:3306/test) to run it"
            );
            None
        }
    }
}

fn unique_table() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("gleaner_sink_test_{}", &id[id.len() - 16..])
}

/// A second connection to the test server, to read back what the sink wrote.
enum TestDatabase {
    Postgres(sqlx_postgres::PgPool),
    MySql(sqlx_mysql::MySqlPool),
}

impl TestDatabase {
    async fn connect(url: &str) -> Self {
        if url.starts_with("postgres") {
            let pool = sqlx_postgres::PgPool::connect(url)
                .await
                .expect("test pool");
            return TestDatabase::Postgres(pool);
        }
        let url = match url.strip_prefix("mariadb:") {
            Some(rest) => format!("mysql:{rest}"),
            None => url.to_owned(),
        };
        TestDatabase::MySql(
            sqlx_mysql::MySqlPool::connect(&url)
                .await
                .expect("test pool"),
        )
    }

    async fn count(&self, table: &str) -> i64 {
        let sql = |quote: char| format!("SELECT count(*) FROM {quote}{table}{quote}");
        match self {
            TestDatabase::Postgres(pool) => {
                sqlx_core::query_scalar::query_scalar(AssertSqlSafe(sql('"')))
                    .fetch_one(pool)
                    .await
            }
            TestDatabase::MySql(pool) => {
                sqlx_core::query_scalar::query_scalar(AssertSqlSafe(sql('`')))
                    .fetch_one(pool)
                    .await
            }
        }
        .expect("count")
    }

    /// `name`, `active` as 0/1 and the payload's `tag` of row `id`.
    async fn row(&self, table: &str, id: i64) -> (String, i64, String) {
        match self {
            TestDatabase::Postgres(pool) => {
                let sql = format!(
                    "SELECT name, CAST(active AS integer)::bigint, payload->>'tag' \
                     FROM \"{table}\" WHERE id = {id}"
                );
                sqlx_core::query_as::query_as(AssertSqlSafe(sql))
                    .fetch_one(pool)
                    .await
            }
            TestDatabase::MySql(pool) => {
                let sql = format!(
                    "SELECT name, CAST(active AS SIGNED), \
                     CAST(JSON_UNQUOTE(JSON_EXTRACT(payload, '$.tag')) AS CHAR) \
                     FROM `{table}` WHERE id = {id}"
                );
                sqlx_core::query_as::query_as(AssertSqlSafe(sql))
                    .fetch_one(pool)
                    .await
            }
        }
        .expect("row")
    }

    async fn drop_table(&self, table: &str) {
        match self {
            TestDatabase::Postgres(pool) => {
                let sql = format!("DROP TABLE IF EXISTS \"{table}\"");
                sqlx_core::query::query(AssertSqlSafe(sql))
                    .execute(pool)
                    .await
                    .map(drop)
            }
            TestDatabase::MySql(pool) => {
                let sql = format!("DROP TABLE IF EXISTS `{table}`");
                sqlx_core::query::query(AssertSqlSafe(sql))
                    .execute(pool)
                    .await
                    .map(drop)
            }
        }
        .expect("drop test table");
    }
}

/// Upserts 250 records twice in batches of 100, then duplicates in one batch, and checks the
/// table each time; the table is dropped whatever happens.
async fn server_suite(url: &str) {
    let table = unique_table();
    let spec = spec(url, &table);
    let sink = SqlSink::connect(&spec, std::path::Path::new("."))
        .await
        .expect("connect");
    let database = TestDatabase::connect(url).await;

    let checks = async {
        assert_eq!(sink.upsert(&records(250, "v1")).await.expect("insert"), 250);
        assert_eq!(database.count(&table).await, 250);
        assert_eq!(sink.upsert(&records(250, "v2")).await.expect("upsert"), 250);
        assert_eq!(database.count(&table).await, 250);
        let expected = |id: i64, active: i64| (format!("item {id} v2"), active, "v2".to_owned());
        assert_eq!(database.row(&table, 8).await, expected(8, 1));
        assert_eq!(database.row(&table, 7).await, expected(7, 0));

        let duplicates = [record(1, "a"), record(2, "a"), record(1, "last")];
        assert_eq!(sink.upsert(&duplicates).await.expect("duplicates"), 2);
        assert_eq!(database.row(&table, 1).await.0, "item 1 last");
        assert_eq!(database.count(&table).await, 250);

        let error = sink
            .upsert(&[record(3, "x"), json!({"name": "keyless"})])
            .await
            .expect_err("keyless");
        assert!(matches!(error, Error::Record { index: 1, .. }), "{error:?}");
    };
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(checks)).await;
    database.drop_table(&table).await;
    sink.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn postgres_upserts_are_idempotent() {
    let Some(url) = server_url("GLEANER_TEST_POSTGRES_URL") else {
        return;
    };
    server_suite(&url).await;
}

#[tokio::test]
async fn postgres_refuses_a_bad_timestamp_permanently() {
    let Some(url) = server_url("GLEANER_TEST_POSTGRES_URL") else {
        return;
    };
    let table = unique_table();
    let sink = SqlSink::connect(&spec(&url, &table), std::path::Path::new("."))
        .await
        .expect("connect");
    let outcome = sink
        .upsert(&[json!({"id": 1, "seen_at": "not a time"})])
        .await;
    TestDatabase::connect(&url).await.drop_table(&table).await;
    let error = outcome.expect_err("bad timestamp");
    assert!(matches!(error, Error::Refused(_)), "{error:?}");
    assert!(!error.retryable());
}

#[tokio::test]
async fn mysql_upserts_are_idempotent() {
    let Some(url) = server_url("GLEANER_TEST_MYSQL_URL") else {
        return;
    };
    server_suite(&url).await;
}
