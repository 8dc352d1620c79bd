//! Platforms and the etlas-collector seed's routes: the catalog lists every connector and
//! platform with its settings; `POST /execution/run` creates a job whose progress and datasets
//! `GET /execution/get` shows; rows land in a SQL table by upsert (MariaDB when
//! `GLEANER_TEST_MYSQL_URL` is set), twice without duplicates; every client mistake is a 4xx
//! in the seed's envelope; CORS answers the seed's front end.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::harness::{Answer, TestApp, assert_problem};
use crate::support::mock::Mock;

fn rows() -> Value {
    json!({"items": [
        {"day": "2026-11-01", "country": "UK", "searches": 10, "gross": 5.5},
        {"day": "2026-11-01", "country": "DE", "searches": 4, "gross": 1.25},
        {"day": "2026-11-02", "country": "UK", "searches": 7, "gross": 3.0},
    ]})
}

/// A platform over the `http` connector, its rows reshaped by jq and upserted into `table`.
fn platform(upstream: &Mock, table: &str) -> Value {
    json!({
        "name": "report-platform",
        "display_name": "Daily report",
        "description": "Daily rows of the report API",
        "connector": "http",
        "settings": {"url": upstream.url("/report"), "record_path": ".items[]"},
        "processors": [{"type": "jq", "filter": "{day, country: (.country | ascii_downcase), searches, gross}"}],
        "sinks": [{
            "type": "sql", "url": "sqlite://platform-rows.db", "table": table, "key": ["day", "country"],
            "create_table": true,
            "columns": [{"name": "day"}, {"name": "country"}, {"name": "searches", "type": "integer"},
                        {"name": "gross", "type": "real"}]
        }]
    })
}

async fn envelope(answer: &Answer, status: u16) -> Value {
    assert_eq!(answer.status.as_u16(), status, "{}", answer.text);
    let body = answer.json();
    let expected = if status < 400 { "Success" } else { "Failed" };
    assert_eq!(body["status"], expected, "{body}");
    body
}

async fn run_to_end(app: &TestApp, body: &Value) -> (String, Value) {
    let answer = app.post("/execution/run", body).await;
    let job_id = envelope(&answer, 200).await["message"]["job_id"]
        .as_str()
        .expect("job id")
        .to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let view = app.get(&format!("/execution/get?job_id={job_id}")).await;
        let message = envelope(&view, 200).await["message"].clone();
        if message["status"] == "finished" || message["status"] == "failed" {
            return (job_id, message);
        }
        assert!(std::time::Instant::now() < deadline, "{message}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_seed_execution_flow_reports_progress_datasets_and_upserts_once() {
    let upstream = Mock::start().await;
    upstream.set_json("/report", rows());
    let app = TestApp::start().await;
    let created = app
        .post("/v1/platforms", &platform(&upstream, "daily_rows"))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);

    let catalog = envelope(&app.get("/platforms/get").await, 200).await["message"].clone();
    let entry = &catalog["report-platform"];
    assert_eq!(entry["display_name"], "Daily report");
    assert_eq!(entry["settings"]["url"]["type"], "string/uri");
    assert_eq!(
        entry["settings"]["url"]["required"], false,
        "the platform provides it"
    );
    assert!(catalog["http"].is_object(), "connectors are listed too");
    let native = app.get("/v1/platforms/report-platform").await.json();
    assert!(native["schema"]["properties"]["url"]["default"].is_string());

    let mysql = std::env::var("GLEANER_TEST_MYSQL_URL").ok();
    if mysql.is_none() {
        eprintln!(
            "SKIPPED: the MariaDB storage of this test (set GLEANER_TEST_MYSQL_URL; .ci/run does)"
        );
    }
    let table = format!(
        "etlas_rows_{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    );
    let mut settings = json!({"max_pages": 5});
    if mysql.is_some() {
        settings["storage"] = json!({"type": "mysql", "hostname": "127.0.0.1", "port": 3306,
            "db": "test", "username": "root", "password": "", "table": table});
    }
    let run = json!({"_id": "abc", "platform_id": "report-platform", "settings": settings});
    let (job_id, done) = run_to_end(&app, &run).await;
    assert_eq!(done["status"], "finished", "{done}");
    assert_eq!(done["meta"]["pull"]["records"], 3, "progress: {done}");
    assert!(
        done["meta"].get("original").is_none(),
        "datasets only with full"
    );
    assert!(done["started_at"].is_string() && done["ended_at"].is_string());
    let full = envelope(
        &app.get(&format!("/execution/get?job_id={job_id}&full"))
            .await,
        200,
    )
    .await;
    let meta = &full["message"]["meta"];
    assert_eq!(meta["original"][0]["country"], "UK");
    assert_eq!(meta["processed"][0]["country"], "uk");
    let job = app.job(&job_id).await;
    assert_eq!(job["steps"][0]["progress"]["pull"]["pages"], 1, "{job}");

    run_to_end(&app, &run).await;
    match &mysql {
        Some(url) => {
            let pool = sqlx_mysql::MySqlPool::connect(url).await.expect("mysql");
            let count: (i64,) = sqlx_core::query_as::query_as(sqlx_core::sql_str::AssertSqlSafe(
                format!("SELECT COUNT(*) FROM {table}"),
            ))
            .fetch_one(&pool)
            .await
            .expect("count");
            assert_eq!(count.0, 3, "two runs, three rows: upserted");
            let _ = sqlx_core::query::query(sqlx_core::sql_str::AssertSqlSafe(format!(
                "DROP TABLE {table}"
            )))
            .execute(&pool)
            .await;
        }
        None => {
            let db = app.dir.path().join("files").join("platform-rows.db");
            let conn = rusqlite::Connection::open(&db).expect("sqlite sink");
            let count: i64 = conn
                .query_row("SELECT COUNT(*) FROM daily_rows", [], |row| row.get(0))
                .expect("count");
            assert_eq!(count, 3, "two runs, three rows: upserted");
        }
    }
}

#[tokio::test]
async fn client_mistakes_are_4xx_in_the_seed_envelope() {
    let upstream = Mock::start().await;
    let app = TestApp::start().await;
    assert_eq!(
        app.post("/v1/platforms", &platform(&upstream, "t"))
            .await
            .status,
        201
    );
    for (body, needle) in [
        (json!({"settings": {}}), "platform_id"),
        (json!({"platform_id": 7, "settings": {}}), "platform_id"),
        (
            json!({"platform_id": "privatePlatform1", "settings": {}}),
            "Missing or invalid platform_id",
        ),
        (json!({"platform_id": "report-platform"}), "settings"),
        (
            json!({"platform_id": "report-platform", "settings": []}),
            "settings",
        ),
        (
            json!({"platform_id": "report-platform", "settings": {"max_pages": "many"}}),
            "Missing parameters",
        ),
        (
            json!({"platform_id": "report-platform", "settings": {"storage": {"type": "mail"}}}),
            "storage.type",
        ),
        (
            json!({"platform_id": "report-platform", "settings": {"storage": {"type": "mysql"}}}),
            "storage.username",
        ),
    ] {
        let answer = app.post("/execution/run", &body).await;
        let failed = envelope(&answer, 400).await;
        assert!(
            failed["message"]
                .as_str()
                .unwrap_or_default()
                .contains(needle),
            "{body}: {failed}"
        );
    }
    let raw =
        crate::support::harness::post_raw(&app, "/execution/run", "application/json", "{").await;
    envelope(&raw, 400).await;
    let garbage_date = json!({"platform_id": "json-table", "settings": {
        "login": {"url": upstream.url("/login"), "username": "u", "password": "p"},
        "url": upstream.url("/table"), "columns": ["a"],
        "start_date": "the day after never", "end_date": "today"}});
    let failed = envelope(&app.post("/execution/run", &garbage_date).await, 400).await;
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(message.contains("start_date"), "{failed}");
    envelope(&app.get("/execution/get").await, 400).await;
    envelope(&app.get("/execution/get?job_id=nope").await, 400).await;
    let unknown = format!("/execution/get?job_id={}", uuid::Uuid::now_v7());
    envelope(&app.get(&unknown).await, 404).await;
    assert_eq!(app.get("/system/alive").await.text, "Alive");
    let alive = app.post("/system/alive", &json!({})).await;
    assert_eq!(envelope(&alive, 200).await["message"]["Store"], true);
    assert_problem(
        &app.post("/v1/platforms", &platform(&upstream, "t")).await,
        409,
    );
    let mut bad = platform(&upstream, "t");
    bad["name"] = json!("other");
    bad["connector"] = json!("nope");
    assert_problem(&app.post("/v1/platforms", &bad).await, 422);
}

#[tokio::test]
async fn cors_answers_the_configured_front_end() {
    let app = TestApp::builder()
        .config(|config| config.server.cors_allow_origins = vec!["http://localhost:3000".into()])
        .start()
        .await;
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/execution/run"))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    let other = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/execution/run"))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn execution_get_shows_progress_while_the_run_is_going() {
    let upstream = Mock::start().await;
    upstream.set_json("/report", rows());
    upstream.push_when(
        "/report",
        "page=2",
        crate::support::mock::Reply::json(200, json!({"items": []})).held(),
    );
    let app = TestApp::start().await;
    let mut spec = platform(&upstream, "paged_rows");
    spec["settings"]["pagination"] = json!({"type": "page_number", "size": 3});
    assert_eq!(app.post("/v1/platforms", &spec).await.status, 201);
    let run = json!({"platform_id": "report-platform", "settings": {}});
    let answer = app.post("/execution/run", &run).await;
    let job_id = envelope(&answer, 200).await["message"]["job_id"]
        .as_str()
        .expect("job id")
        .to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let during = loop {
        let view = app.get(&format!("/execution/get?job_id={job_id}")).await;
        let message = envelope(&view, 200).await["message"].clone();
        if message["meta"]["pull"]["pages"] == 1 {
            break message;
        }
        assert!(std::time::Instant::now() < deadline, "{message}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        during["status"], "started",
        "page 2 is still held: {during}"
    );
    assert_eq!(during["meta"]["pull"]["records"], 3);
    assert!(during["ended_at"].is_null());
    upstream.release_held();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let view = app.get(&format!("/execution/get?job_id={job_id}")).await;
        let message = envelope(&view, 200).await["message"].clone();
        if message["status"] == "finished" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{message}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_job_still_queued_answers_with_its_status_not_an_error() {
    let upstream = Mock::start().await;
    let app = TestApp::builder().without_engine().start().await;
    assert_eq!(
        app.post("/v1/platforms", &platform(&upstream, "t"))
            .await
            .status,
        201
    );
    let run = json!({"platform_id": "report-platform", "settings": {}});
    let answer = app.post("/execution/run", &run).await;
    let job_id = envelope(&answer, 200).await["message"]["job_id"]
        .as_str()
        .expect("job id")
        .to_owned();
    let view = app.get(&format!("/execution/get?job_id={job_id}")).await;
    let message = envelope(&view, 200).await["message"].clone();
    assert_eq!(message["status"], "queued");
    assert!(
        message["meta"].is_object() && message["started_at"].is_null(),
        "{message}"
    );
}
