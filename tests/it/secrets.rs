//! Credentials at rest (issue 8, acceptance 4): one canary secret is put in every credential
//! field the API takes — connector auth of jobs, schedules and platforms, SQL sink URLs, a
//! pipeline's source token and HTTP header — and must show in no API response, no log line and
//! no byte of the store, while the upstreams still receive it in clear.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::mock::{Mock, Reply};
use crate::support::pipeline_mocks::{MessageSourceMock, MessageSourceOptions};
use crate::support::process::{GleanerProcess, client};

const WAIT: Duration = Duration::from_secs(60);

/// Talks to the process and keeps every response body it received.
struct Session {
    process: GleanerProcess,
    client: reqwest::Client,
    seen: Vec<String>,
}

impl Session {
    async fn call(&mut self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, self.process.endpoint().url(path))
            .bearer_auth(self.process.token());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.expect("response body");
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        self.seen.push(format!("{path} → {status}: {text}"));
        (status, value)
    }

    async fn get(&mut self, path: &str) -> Value {
        let (status, body) = self.call(Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn expect(&mut self, method: Method, path: &str, body: &Value, want: u16) -> Value {
        let (status, answer) = self.call(method.clone(), path, Some(body)).await;
        assert_eq!(status, want, "{method} {path}: {answer}");
        answer
    }
}

/// Waits until `done` holds, polling every 50 ms.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < WAIT, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sql_sink(url: &str) -> Value {
    json!({"type": "sql", "url": url, "table": "records", "key": ["id"],
           "columns": [{"name": "id", "type": "text"}]})
}

/// Every file below `dir`, with its bytes.
fn files_below(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_below(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            files.push((path.display().to_string(), bytes));
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn a_canary_secret_shows_in_no_response_log_or_store_byte_yet_reaches_upstreams() {
    let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let upstream = Mock::start().await;
    for path in ["/bearer", "/basic", "/header", "/scheduled", "/platform"] {
        upstream.set(path, Reply::json(200, json!([{"id": "1"}, {"id": "2"}])));
    }
    upstream.set("/hook", Reply::json(200, json!({})));
    upstream.set("/store", Reply::json(201, json!({})));
    let source = MessageSourceMock::start(MessageSourceOptions {
        pages: 1,
        page_size: 3,
        token: canary.clone(),
        ..MessageSourceOptions::default()
    })
    .await;
    let process = GleanerProcess::start(
        &data_dir,
        &[
            ("GLEANER_LOG__LEVEL", "debug"),
            ("GLEANER_LOG__STDOUT", "true"),
        ],
    )
    .await;
    let mut session = Session {
        process,
        client: client(),
        seen: Vec::new(),
    };
    // Nothing listens on port 1: the SQL sinks fail to connect, after reading their URL.
    let database = format!("mysql://root:{canary}@127.0.0.1:1/gleaner");
    let bearer = |path: &str| {
        json!({"connector": "http", "settings": {"url": upstream.url(path),
               "auth": {"type": "bearer", "token": canary}}})
    };

    // A job with every kind of connector auth and secret sink settings.
    let job = json!({
        "sources": [
            bearer("/bearer"),
            {"connector": "http", "settings": {"url": upstream.url("/basic"),
             "auth": {"type": "basic", "username": "reader", "password": canary}}},
            {"connector": "http", "settings": {"url": upstream.url("/header"),
             "auth": {"type": "header", "name": "X-Api-Key", "value": canary}}},
        ],
        "sinks": [{"type": "callback", "url": upstream.url("/hook")}, sql_sink(&database)],
        "retry": {"max_attempts": 2},
    });
    let created = session.expect(Method::POST, "/v1/jobs", &job, 202).await;
    let job_id = created["id"].as_str().expect("job id").to_owned();
    // The generated signing secret is shown once, at creation, and stored sealed too.
    let signing_secret = created["signing_secrets"][0]["secret"]
        .as_str()
        .expect("a generated signing secret")
        .to_owned();

    // A schedule firing every second with the same auth.
    let schedule = json!({"name": "canary-schedule", "cron": "* * * * * *",
                          "job": {"sources": [bearer("/scheduled")], "retry": {"max_attempts": 1}}});
    session
        .expect(Method::POST, "/v1/schedules", &schedule, 201)
        .await;

    // A pipeline with a source token, a secret header and a SQL stage.
    let pipeline = json!({
        "name": "canary-pipeline",
        "source": {"connector": "message-source",
                   "settings": {"base_url": source.url(), "token": canary}},
        "sinks": [
            {"type": "http", "url": upstream.url("/store"), "headers": {"X-Token": canary}},
            sql_sink(&database),
        ],
        "retry": {"max_attempts": 1, "backoff": "10ms"},
    });
    session
        .expect(Method::POST, "/v1/pipelines", &pipeline, 201)
        .await;

    // A platform whose default settings and sink hold the secret, run once.
    let platform = json!({
        "name": "canary-platform", "connector": "http",
        "settings": {"url": upstream.url("/platform"), "auth": {"type": "bearer", "token": canary}},
        "sinks": [sql_sink(&database)],
        "retry": {"max_attempts": 1},
    });
    session
        .expect(Method::POST, "/v1/platforms", &platform, 201)
        .await;
    let run = session
        .expect(
            Method::POST,
            "/v1/platforms/canary-platform/run",
            &json!({"settings": {}}),
            202,
        )
        .await;
    let platform_job = run["id"].as_str().expect("platform job id").to_owned();

    // Every upstream got the clear secret: the stored, sealed values opened at use.
    until("every upstream called", || {
        [
            "/bearer",
            "/basic",
            "/header",
            "/scheduled",
            "/platform",
            "/hook",
        ]
        .iter()
        .all(|path| upstream.count(path) > 0)
            && upstream.count("/store") >= 3
    })
    .await;
    let header = |path: &str, name: &str| {
        let request = upstream.requests_to(path).remove(0);
        let value = request.headers.get(name).expect(name);
        value.to_str().expect("text").to_owned()
    };
    for path in ["/bearer", "/scheduled", "/platform"] {
        assert_eq!(header(path, "authorization"), format!("Bearer {canary}"));
    }
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("reader:{canary}"));
    assert_eq!(header("/basic", "authorization"), format!("Basic {basic}"));
    assert_eq!(header("/header", "x-api-key"), canary);
    assert_eq!(header("/store", "x-token"), canary);
    assert!(source.requests() > 0, "the message source was read");

    // The jobs end: the SQL sinks fail to connect, the rest succeeded.
    for id in [&job_id, &platform_job] {
        let started = Instant::now();
        loop {
            let view = session.get(&format!("/v1/jobs/{id}")).await;
            let status = view["status"].as_str().unwrap_or_default().to_owned();
            if !["queued", "running"].contains(&status.as_str()) {
                break;
            }
            assert!(started.elapsed() < WAIT, "job {id} did not end: {view:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let view = session.get(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(
        view["spec"]["sources"][0]["settings"]["auth"]["token"],
        "********"
    );
    assert_eq!(view["spec"]["sinks"][1]["url"], "********");

    // A sealed schedule template is planned again after a change; a sealed pipeline is patched.
    session
        .expect(
            Method::PATCH,
            "/v1/schedules/canary-schedule",
            &json!({"paused": true}),
            200,
        )
        .await;
    session
        .expect(
            Method::PATCH,
            "/v1/pipelines/canary-pipeline",
            &json!({"queue_capacity": 500}),
            200,
        )
        .await;
    let dead_letters = "/v1/pipelines/canary-pipeline/dead-letters";
    let started = Instant::now();
    while session.get(dead_letters).await["dead_letters"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(
            started.elapsed() < WAIT,
            "no dead letter from the SQL stage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every view a client can read.
    let jobs = session.get("/v1/jobs?limit=100").await;
    let ids: Vec<String> = jobs["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|job| job["id"].as_str().map(str::to_owned))
        .collect();
    for id in &ids {
        session.get(&format!("/v1/jobs/{id}")).await;
    }
    for path in [
        "/v1/schedules",
        "/v1/schedules/canary-schedule",
        "/v1/pipelines",
        "/v1/pipelines/canary-pipeline",
        "/v1/platforms",
        "/v1/platforms/canary-platform",
        "/v1/logs?level=trace&limit=100000",
    ] {
        session.get(path).await;
    }

    for seen in &session.seen {
        assert!(!seen.contains(&canary), "the canary in a response: {seen}");
    }
    let created_view = session
        .seen
        .iter()
        .position(|seen| seen.contains(&signing_secret))
        .expect("the signing secret is shown at creation");
    assert_eq!(
        session
            .seen
            .iter()
            .filter(|seen| seen.contains(&signing_secret))
            .count(),
        1,
        "the signing secret is shown once only (response {created_view})"
    );

    // Nothing in clear on disk: the store and its WAL, the logs, the process output.
    let files = files_below(&data_dir);
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    for wanted in [
        "gleaner.db",
        "gleaner.db-wal",
        "process-output.log",
        "secret.key",
    ] {
        assert!(
            names.iter().any(|name| name.ends_with(wanted)),
            "{wanted} among {names:?}"
        );
    }
    assert!(
        names.iter().any(|name| name.contains("/logs/")),
        "log files among {names:?}"
    );
    let mut sealed = false;
    for (name, bytes) in &files {
        assert!(!contains(bytes, &canary), "the canary in {name}");
        assert!(
            !contains(bytes, &signing_secret),
            "the signing secret in {name}"
        );
        sealed |= contains(bytes, "sealed:v1:");
    }
    assert!(sealed, "sealed values are in the store");
    let log_lines: usize = files
        .iter()
        .filter(|(name, _)| name.contains("/logs/"))
        .map(|(_, bytes)| bytes.iter().filter(|&&byte| byte == b'\n').count())
        .sum();
    assert!(log_lines > 10, "the logs were written ({log_lines} lines)");
}
