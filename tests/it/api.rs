//! The HTTP API as a client sees it: problem+json errors, authentication, idempotency, the
//! catalog and its check, OpenAPI and docs, metrics and logs.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::harness::{assert_problem, detail, job_count, post_raw};
use crate::support::{Mock, Reply, TestApp};

const WAIT: Duration = Duration::from_secs(10);

fn noop_job(records: u64) -> Value {
    json!({"sources": [{"connector": "noop", "settings": {"records": records}}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_empty_and_non_json_bodies_are_refused() {
    let app = TestApp::start().await;

    let malformed = post_raw(&app, "/v1/jobs", "application/json", r#"{"sources": ["#).await;
    let problem = assert_problem(&malformed, 400);
    assert!(detail(&problem).contains("malformed JSON"), "{problem}");

    let empty = post_raw(&app, "/v1/jobs", "application/json", "").await;
    let problem = assert_problem(&empty, 400);
    assert!(detail(&problem).contains("empty"), "{problem}");

    let text = post_raw(&app, "/v1/jobs", "text/plain", noop_job(1).to_string()).await;
    let problem = assert_problem(&text, 415);
    assert!(detail(&problem).contains("application/json"), "{problem}");

    let missing = app
        .send(
            app.request(Method::POST, "/v1/jobs")
                .body(noop_job(1).to_string()),
        )
        .await;
    assert_problem(&missing, 415);

    assert_eq!(
        job_count(&app).await,
        0,
        "nothing stored for refused bodies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_the_wrong_shape_are_422() {
    let app = TestApp::start().await;

    let wrong_types = app
        .post("/v1/jobs", &json!({"sources": "everything"}))
        .await;
    let problem = assert_problem(&wrong_types, 422);
    assert!(detail(&problem).contains("expected shape"), "{problem}");

    let wrong_retry = app
        .post(
            "/v1/jobs",
            &json!({"sources": [{"connector": "noop"}], "retry": {"max_attempts": "many"}}),
        )
        .await;
    assert_problem(&wrong_retry, 422);

    let unknown_field = app
        .post(
            "/v1/jobs",
            &json!({"sources": [{"connector": "noop"}], "priority": 1}),
        )
        .await;
    let problem = assert_problem(&unknown_field, 422);
    assert!(detail(&problem).contains("unknown field"), "{problem}");
    assert!(detail(&problem).contains("priority"), "{problem}");

    let no_sources = app.post("/v1/jobs", &json!({"sources": []})).await;
    assert_problem(&no_sources, 422);

    assert_eq!(job_count(&app).await, 0, "nothing stored for invalid specs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_components_and_invalid_settings_are_422() {
    let app = TestApp::start().await;

    let unknown_connector = app
        .post(
            "/v1/jobs",
            &json!({"sources": [{"connector": "carrier-pigeon", "settings": {}}]}),
        )
        .await;
    let problem = assert_problem(&unknown_connector, 422);
    assert!(detail(&problem).contains("carrier-pigeon"), "{problem}");
    assert!(detail(&problem).contains("sources[0]"), "{problem}");

    let no_url = app
        .post(
            "/v1/jobs",
            &json!({"sources": [{"connector": "http", "settings": {"headers": {}}}]}),
        )
        .await;
    let problem = assert_problem(&no_url, 422);
    assert!(detail(&problem).contains("url"), "{problem}");

    let unknown_key = app
        .post(
            "/v1/jobs",
            &json!({"sources": [{"connector": "http",
                                  "settings": {"url": "https://api.example.com/", "verb": "POST"}}]}),
        )
        .await;
    let problem = assert_problem(&unknown_key, 422);
    assert!(detail(&problem).contains("verb"), "{problem}");

    let bad_pagination = app
        .post(
            "/v1/jobs",
            &json!({"sources": [{"connector": "http",
                                  "settings": {"url": "https://api.example.com/",
                                               "pagination": {"type": "cursor"}}}]}),
        )
        .await;
    assert_problem(&bad_pagination, 422);

    let bad_processor = app
        .post(
            "/v1/jobs",
            &json!({"sources": [{"connector": "noop"}],
                    "processors": [{"type": "jq", "filter": ".[[["}]}),
        )
        .await;
    assert_problem(&bad_processor, 422);

    let unknown_sink = app
        .post(
            "/v1/jobs",
            &json!({"sources": [{"connector": "noop"}], "sinks": [{"type": "carrier-pigeon"}]}),
        )
        .await;
    let problem = assert_problem(&unknown_sink, 422);
    assert!(detail(&problem).contains("carrier-pigeon"), "{problem}");
    assert!(detail(&problem).contains("sinks[0]"), "{problem}");

    for path in ["../x", "a/../../x", "/etc/passwd", ""] {
        let escaping = app
            .post(
                "/v1/jobs",
                &json!({"sources": [{"connector": "noop"}],
                        "sinks": [{"type": "file", "path": path}]}),
            )
            .await;
        let problem = assert_problem(&escaping, 422);
        assert!(detail(&problem).contains("sinks[0]"), "{path}: {problem}");
    }

    let bad_budget = app
        .post(
            "/v1/jobs",
            &json!({"sources": [{"connector": "noop"}], "retry": {"max_attempts": 0}}),
        )
        .await;
    assert_problem(&bad_budget, 422);

    assert_eq!(job_count(&app).await, 0, "nothing stored for invalid specs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_413() {
    let app = TestApp::builder()
        .config(|config| config.server.body_limit = 1024)
        .start()
        .await;
    let padding = "x".repeat(4096);
    let big = json!({"sources": [{"connector": "noop", "settings": {}}], "padding": padding});
    let answer = app.post("/v1/jobs", &big).await;
    let problem = assert_problem(&answer, 413);
    assert!(detail(&problem).contains("body_limit"), "{problem}");

    let small = app.post("/v1/jobs", &noop_job(1)).await;
    assert_eq!(small.status, StatusCode::ACCEPTED, "{}", small.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_nested_too_deep_is_400() {
    let app = TestApp::start().await;
    let deep = format!(
        r#"{{"sources": [{{"connector": "noop", "settings": {{"x": {}1{}}}}}]}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    let answer = post_raw(&app, "/v1/jobs", "application/json", deep).await;
    let problem = assert_problem(&answer, 400);
    assert!(detail(&problem).contains("deeper than 64"), "{problem}");

    // Brackets inside strings are not structure.
    let in_string = json!({"sources": [{"connector": "noop", "settings": {}}],
                           "processors": [{"type": "jq", "filter": format!(". as $x | \"{}\"", "[".repeat(100))}]});
    let answer = app.post("/v1/jobs", &in_string).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_parameters_are_400() {
    let app = TestApp::start().await;
    for query in [
        "?status=bogus",
        "?limit=0",
        "?limit=501",
        "?limit=ten",
        "?cursor=not-a-uuid",
        "?colour=blue",
    ] {
        let answer = app.get(&format!("/v1/jobs{query}")).await;
        let problem = assert_problem(&answer, 400);
        if query == "?status=bogus" {
            assert!(detail(&problem).contains("bogus"), "{problem}");
            assert!(detail(&problem).contains("succeeded"), "{problem}");
        }
    }
    let dead = app.get("/v1/dead-letters?limit=0").await;
    assert_problem(&dead, 400);
    let since = app.get("/v1/dead-letters?since=yesterday").await;
    assert_problem(&since, 400);

    let ok = app.get("/v1/jobs?status=succeeded&limit=500").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_resources_routes_and_methods_are_problems() {
    let app = TestApp::start().await;
    let unknown = uuid::Uuid::now_v7();
    for path in [
        format!("/v1/jobs/{unknown}"),
        format!("/v1/jobs/{unknown}/records"),
        "/v1/jobs/not-a-uuid".to_owned(),
        "/v1/jobs/12345/records".to_owned(),
        "/v1/connectors/carrier-pigeon".to_owned(),
        "/v1/nothing-here".to_owned(),
        "/definitely/not/a/route".to_owned(),
    ] {
        let answer = app.get(&path).await;
        assert_problem(&answer, 404);
    }
    let cancel = app
        .post(&format!("/v1/jobs/{unknown}/cancel"), &json!({}))
        .await;
    assert_problem(&cancel, 404);
    let retry = app
        .post(&format!("/v1/jobs/{unknown}/retry"), &json!({}))
        .await;
    assert_problem(&retry, 404);
    let check = app
        .post("/v1/connectors/carrier-pigeon/check", &json!({}))
        .await;
    assert_problem(&check, 404);

    let delete = app.send(app.request(Method::DELETE, "/v1/jobs")).await;
    assert_problem(&delete, 405);
    let put = app
        .send(app.request(Method::PUT, "/v1/connectors").json(&json!({})))
        .await;
    assert_problem(&put, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_finished_job_and_retrying_a_clean_job_conflict() {
    let app = TestApp::start().await;
    let id = app.create_job(&noop_job(2)).await;
    let job = app.wait_for_status(&id, &["succeeded"], WAIT).await;
    assert_eq!(job["records_collected"], 2, "{job:#}");

    let cancel = app.post(&format!("/v1/jobs/{id}/cancel"), &json!({})).await;
    let problem = assert_problem(&cancel, 409);
    assert!(detail(&problem).contains("succeeded"), "{problem}");

    let retry = app.post(&format!("/v1/jobs/{id}/retry"), &json!({})).await;
    let problem = assert_problem(&retry, 409);
    assert!(detail(&problem).contains("retry"), "{problem}");

    let job = app.job(&id).await;
    assert_eq!(job["status"], "succeeded", "conflicts changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_except_for_probes_and_docs() {
    let app = TestApp::start().await;
    let client = &app.client;

    for path in [
        "/v1/jobs",
        "/v1/connectors",
        "/metrics",
        "/v1/logs",
        "/nowhere",
    ] {
        let none = app.send(client.get(app.url(path))).await;
        let problem = assert_problem(&none, 401);
        assert!(
            none.header("www-authenticate")
                .is_some_and(|value| value.starts_with("Bearer")),
            "{path}: WWW-Authenticate in {:?}",
            none.headers
        );
        assert!(detail(&problem).contains("Bearer"), "{problem}");

        let bad = app
            .send(
                client
                    .get(app.url(path))
                    .bearer_auth("glt_not-a-real-token"),
            )
            .await;
        assert_problem(&bad, 401);
        assert!(bad.header("www-authenticate").is_some());

        let basic = app
            .send(client.get(app.url(path)).basic_auth("admin", Some("pw")))
            .await;
        assert_problem(&basic, 401);
    }

    let create = app
        .send(client.post(app.url("/v1/jobs")).json(&noop_job(1)))
        .await;
    assert_problem(&create, 401);
    assert_eq!(
        job_count(&app).await,
        0,
        "unauthenticated create stored nothing"
    );

    let health = app.send(client.get(app.url("/healthz"))).await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text);
    assert_eq!(health.json()["status"], "ok");
    let ready = app.send(client.get(app.url("/readyz"))).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(ready.json()["status"], "ready");

    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK, "{}", metrics.text);
    assert!(metrics.text.contains("gleaner_jobs"), "{}", metrics.text);
    assert!(
        metrics.text.contains("gleaner_queue_depth"),
        "{}",
        metrics.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_replays_the_same_job_and_refuses_another_body() {
    let app = TestApp::start().await;
    let post = |body: Value, key: &'static str| {
        let request = app
            .request(Method::POST, "/v1/jobs")
            .header("idempotency-key", key)
            .json(&body);
        app.send(request)
    };

    let first = post(noop_job(1), "order-42").await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    assert!(first.header("idempotent-replayed").is_none());
    let id = first.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(
        first.header("location"),
        Some(format!("/v1/jobs/{id}").as_str())
    );

    let again = post(noop_job(1), "order-42").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json()["id"], id.as_str());

    // The same document with keys in another order is the same request.
    let reordered = post(
        json!({"sources": [{"settings": {"records": 1}, "connector": "noop"}]}),
        "order-42",
    )
    .await;
    assert_eq!(reordered.status, StatusCode::OK, "{}", reordered.text);
    assert_eq!(reordered.json()["id"], id.as_str());

    let other = post(noop_job(2), "order-42").await;
    let problem = assert_problem(&other, 409);
    assert!(
        detail(&problem).to_lowercase().contains("idempotency"),
        "{problem}"
    );

    let empty_key = app
        .send(
            app.request(Method::POST, "/v1/jobs")
                .header("idempotency-key", "")
                .json(&noop_job(1)),
        )
        .await;
    assert_problem(&empty_key, 400);

    let list = app.get("/v1/jobs").await.json();
    let jobs = list["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 1, "only one job stored: {list:#}");
    assert_eq!(jobs[0]["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stores_all_its_jobs_or_none_and_replays_by_idempotency_key() {
    let app = TestApp::start().await;
    let batch = |jobs: Vec<Value>| json!({ "jobs": jobs });
    let post = |body: Value, key: Option<&'static str>| {
        let mut request = app.request(Method::POST, "/v1/jobs/batch").json(&body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        app.send(request)
    };

    // One bad job refuses the batch, named by its index; nothing is stored.
    let bad = post(
        batch(vec![
            noop_job(1),
            noop_job(2),
            json!({"sources": [{"connector": "nope"}]}),
        ]),
        None,
    )
    .await;
    let problem = assert_problem(&bad, 422);
    assert!(detail(&problem).starts_with("jobs[2]: "), "{problem}");
    let empty = post(batch(Vec::new()), None).await;
    assert_problem(&empty, 422);
    let too_many = post(batch(vec![noop_job(1); 1001]), None).await;
    assert!(detail(&assert_problem(&too_many, 422)).contains("1–1000"));
    let unknown_field = post(json!({"jobs": [noop_job(1)], "priority": 1}), None).await;
    assert!(
        unknown_field.status.is_client_error(),
        "{}",
        unknown_field.text
    );
    let not_a_list = post(json!({"jobs": noop_job(1)}), None).await;
    assert!(not_a_list.status.is_client_error(), "{}", not_a_list.text);
    assert_eq!(job_count(&app).await, 0, "refused batches stored nothing");

    // A good batch: 202 once stored, the jobs in request order, each run by the engine.
    let jobs = vec![noop_job(1), noop_job(2), noop_job(3)];
    let first = post(batch(jobs.clone()), Some("nightly-7")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    let ids: Vec<String> = first.json()["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|job| job["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    for (id, records) in ids.iter().zip(1..) {
        app.wait_for_status(id, &["succeeded"], Duration::from_secs(10))
            .await;
        assert_eq!(app.records(id).await.len(), records);
    }

    // The same key and body: the same jobs, nothing new; another body: 409.
    let again = post(batch(jobs.clone()), Some("nightly-7")).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let replayed: Vec<String> = again.json()["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|job| job["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(replayed, ids);
    let other = post(batch(vec![noop_job(1)]), Some("nightly-7")).await;
    assert_problem(&other, 409);
    // A single job under the same key is another request, not a slice of the batch.
    let single = app
        .send(
            app.request(Method::POST, "/v1/jobs")
                .header("idempotency-key", "nightly-7")
                .json(&noop_job(1)),
        )
        .await;
    assert_eq!(single.status, StatusCode::ACCEPTED, "{}", single.text);
    assert_eq!(job_count(&app).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_and_docs_page_are_served() {
    let app = TestApp::start().await;
    let openapi = app.send(app.client.get(app.url("/openapi.json"))).await;
    assert_eq!(openapi.status, StatusCode::OK, "{}", openapi.text);
    let document = openapi.json();
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|version| version.starts_with("3.1.")),
        "{}",
        document["openapi"]
    );
    let paths = document["paths"].as_object().expect("paths");
    for path in [
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/cancel",
        "/v1/jobs/{id}/retry",
        "/v1/connectors",
        "/v1/dead-letters/replay",
        "/healthz",
    ] {
        assert!(paths.contains_key(path), "{path} documented");
    }
    assert!(paths["/v1/jobs"].get("post").is_some());

    let docs = app.send(app.client.get(app.url("/docs/"))).await;
    assert_eq!(docs.status, StatusCode::OK, "{}", docs.text);
    assert!(
        docs.header("content-type")
            .is_some_and(|value| value.starts_with("text/html")),
        "{:?}",
        docs.headers
    );
    assert!(docs.text.to_lowercase().contains("<html"), "{}", docs.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_catalog_lists_schemas_and_checks_settings() {
    let mock = Mock::start().await;
    mock.set_json("/items", json!([{"id": 1}]));
    mock.set("/broken", Reply::status(500));
    mock.set("/gone", Reply::status(404));
    let app = TestApp::start().await;

    let list = app.get("/v1/connectors").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let connectors = list.json();
    let names: Vec<&str> = connectors
        .as_array()
        .expect("connectors")
        .iter()
        .filter_map(|entry| entry["name"].as_str())
        .collect();
    assert!(
        names.contains(&"http") && names.contains(&"noop"),
        "{names:?}"
    );
    for entry in connectors.as_array().expect("connectors") {
        assert_eq!(entry["settings_schema"]["type"], "object", "{entry}");
    }

    let http = app.get("/v1/connectors/http").await;
    assert_eq!(http.status, StatusCode::OK, "{}", http.text);
    let http = http.json();
    assert_eq!(http["name"], "http");
    assert_eq!(http["settings_schema"]["required"], json!(["url"]));
    assert_eq!(
        http["settings_schema"]["properties"]["auth"]["properties"]["token"]["writeOnly"],
        true
    );

    let sinks = app.get("/v1/sinks").await;
    assert_eq!(sinks.status, StatusCode::OK, "{}", sinks.text);
    assert!(sinks.text.contains("\"file\""), "{}", sinks.text);

    let ok = app
        .post(
            "/v1/connectors/http/check",
            &json!({"url": mock.url("/items")}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.json()["ok"], true, "{}", ok.text);
    assert_eq!(mock.count("/items"), 1, "check reached the upstream once");

    let broken = app
        .post(
            "/v1/connectors/http/check",
            &json!({"url": mock.url("/broken")}),
        )
        .await;
    assert_eq!(broken.status, StatusCode::OK, "{}", broken.text);
    let broken = broken.json();
    assert_eq!(broken["ok"], false, "{broken}");
    assert_eq!(broken["retryable"], true, "{broken}");
    assert_eq!(broken["http_status"], 500, "{broken}");
    assert!(
        broken["error"].as_str().is_some_and(|e| e.contains("500")),
        "{broken}"
    );

    let gone = app
        .post(
            "/v1/connectors/http/check",
            &json!({"url": mock.url("/gone")}),
        )
        .await
        .json();
    assert_eq!(gone["ok"], false, "{gone}");
    assert_eq!(gone["retryable"], false, "{gone}");
    assert_eq!(gone["http_status"], 404, "{gone}");

    let invalid = app
        .post(
            "/v1/connectors/http/check",
            &json!({"uri": mock.url("/items")}),
        )
        .await;
    assert_problem(&invalid, 422);
    let noop = app.post("/v1/connectors/noop/check", &json!({})).await;
    assert_eq!(noop.json()["ok"], true, "{}", noop.text);
}

/// The log file only exists when the global subscriber writes to this app's data directory,
/// which can be arranged once per test process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_served_as_ndjson_filtered_by_job() {
    let app = TestApp::start().await;

    let bad_level = app.get("/v1/logs?level=loud").await;
    let problem = assert_problem(&bad_level, 400);
    assert!(detail(&problem).contains("level"), "{problem}");
    assert_problem(&app.get("/v1/logs?since=last-week").await, 400);
    assert_problem(&app.get("/v1/logs?limit=0").await, 400);
    assert_problem(&app.get("/v1/logs?follow=perhaps").await, 400);

    let empty = app.get("/v1/logs?limit=5").await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.text);
    assert_eq!(empty.header("content-type"), Some("application/x-ndjson"));

    let installed_here = !tracing::dispatcher::has_been_set();
    if installed_here {
        let config = gleaner::observability::LogConfig {
            level: "info".into(),
            file: true,
            stdout: false,
        };
        let guard =
            gleaner::observability::logging::init(&config, app.dir.path()).expect("init logging");
        // The subscriber is global and outlives this test; so must its writer.
        std::mem::forget(guard);
    }
    if !installed_here || !tracing::dispatcher::has_been_set() {
        eprintln!("a global log subscriber was installed elsewhere; log content not checked");
        return;
    }

    // A job whose only source fails for good logs a warning inside its step span.
    let mock = Mock::start().await;
    mock.set("/missing", Reply::status(404));
    let failing = app
        .create_job(&json!({"sources": [{"connector": "http",
                                          "settings": {"url": mock.url("/missing")}}]}))
        .await;
    let other = app.create_job(&noop_job(1)).await;
    app.wait_for_status(&failing, &["failed"], WAIT).await;
    app.wait_for_status(&other, &["succeeded"], WAIT).await;

    let started = std::time::Instant::now();
    let lines = loop {
        let answer = app.get(&format!("/v1/logs?job={failing}&level=warn")).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(answer.header("content-type"), Some("application/x-ndjson"));
        let lines: Vec<Value> = answer
            .text
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect();
        if !lines.is_empty() {
            break lines;
        }
        assert!(
            started.elapsed() < WAIT,
            "a warning about job {failing} is logged; the log holds: {}",
            std::fs::read_to_string(app.dir.path().join("logs/gleaner.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for line in &lines {
        assert!(line.to_string().contains(&failing), "{line}");
        assert!(!line.to_string().contains(&other), "{line}");
        assert!(
            matches!(line["level"].as_str(), Some("WARN" | "ERROR")),
            "{line}"
        );
    }
}

/// `gleaner jobs create` and `gleaner jobs records` against a real `gleaner serve`: a spec from
/// a file becomes a job, and its records come back as NDJSON across pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_cli_creates_a_job_and_prints_its_records() {
    use crate::support::process::GleanerProcess;

    let mock = Mock::start().await;
    let rows: Vec<Value> = (0..25).map(|n| json!({"n": n})).collect();
    mock.set_json("/rows", Value::Array(rows.clone()));
    let dir = tempfile::tempdir().expect("temp dir");
    let process = GleanerProcess::start(&dir.path().join("data"), &[]).await;
    let spec = dir.path().join("job.json");
    std::fs::write(
        &spec,
        json!({"sources": [{"connector": "http", "settings": {"url": mock.url("/rows")}}]})
            .to_string(),
    )
    .expect("write spec");
    let cli = |args: &[&str]| {
        let output = process.run_command(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stdout, stderr)
    };

    let (ok, created, stderr) = cli(&["jobs", "create", spec.to_str().expect("utf-8 path")]);
    assert!(ok, "{stderr}");
    let job: Value = serde_json::from_str(&created).expect("the job as JSON");
    let id = job["id"].as_str().expect("id").to_owned();
    let started = std::time::Instant::now();
    loop {
        let (ok, shown, stderr) = cli(&["jobs", "show", &id]);
        assert!(ok, "{stderr}");
        let shown: Value = serde_json::from_str(&shown).expect("JSON");
        if shown["status"] == "succeeded" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{shown:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, records, stderr) = cli(&["jobs", "records", &id, "--page-size", "10"]);
    assert!(ok, "{stderr}");
    let printed: Vec<Value> = records
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON record per line"))
        .collect();
    assert_eq!(printed, rows);

    let missing = dir.path().join("missing.json");
    let (ok, _, stderr) = cli(&["jobs", "create", missing.to_str().expect("utf-8 path")]);
    assert!(!ok && stderr.contains("missing.json"), "{stderr}");
    std::fs::write(&spec, r#"{"sources": []}"#).expect("write spec");
    let (ok, _, stderr) = cli(&["jobs", "create", spec.to_str().expect("utf-8 path")]);
    assert!(!ok && stderr.contains("422"), "{stderr}");
}
