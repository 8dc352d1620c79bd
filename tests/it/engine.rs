//! The step state machine and retry semantics end to end: jobs submitted over the API, run by
//! the real engine against the mock upstream.

use std::time::Duration;

use gleaner::clock::{Clock, ManualClock, SystemClock};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Mock, Reply, TestApp, eventually};

const WAIT: Duration = Duration::from_secs(10);

fn http_source(url: String) -> Value {
    json!({"connector": "http", "settings": {"url": url}})
}

fn steps(job: &Value) -> Vec<Value> {
    job["steps"].as_array().expect("steps").clone()
}

fn step_of(job: &Value, kind: &str, index: usize) -> Value {
    steps(job)
        .into_iter()
        .filter(|step| step["kind"] == kind)
        .nth(index)
        .unwrap_or_else(|| panic!("{kind} step {index} in {job:#}"))
}

/// The attempt outcomes of one step, in attempt order.
fn outcomes(job: &Value, step_id: &Value) -> Vec<String> {
    let mut attempts: Vec<&Value> = job["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .filter(|attempt| attempt["step_id"] == *step_id)
        .collect();
    attempts.sort_by_key(|attempt| attempt["attempt"].as_u64());
    attempts
        .iter()
        .map(|attempt| attempt["outcome"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn read_ndjson(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).expect("NDJSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sources_and_a_file_sink_deliver_every_record() {
    let mock = Mock::start().await;
    mock.set_json("/a", json!([{"src": "a", "n": 1}, {"src": "a", "n": 2}]));
    mock.set_json("/b", json!({"data": [{"src": "b", "n": 1}], "meta": {}}));
    let app = TestApp::start().await;

    let id = app
        .create_job(&json!({
            "sources": [
                {"connector": "http", "settings": {
                    "url": mock.url("/a"),
                    "headers": {"X-Api-Version": "2"},
                    "query": {"tag": "rust"},
                    "auth": {"type": "bearer", "token": "upstream-secret"}}},
                {"connector": "http", "settings": {"url": mock.url("/b"), "record_path": ".data[]"}}
            ],
            "sinks": [{"type": "file", "path": "out/result.ndjson"}]
        }))
        .await;
    let job = app.wait_for_status(&id, &["succeeded"], WAIT).await;

    assert_eq!(steps(&job).len(), 3, "{job:#}");
    for step in steps(&job) {
        assert_eq!(step["state"], "succeeded", "{step}");
        assert_eq!(step["attempts"], 1, "{step}");
    }
    assert_eq!(job["records_collected"], 3);
    assert!(job["finished_at"].is_string());
    // Secrets are redacted when the job is shown.
    let shown = job["spec"]["sources"][0]["settings"]["auth"]["token"].clone();
    assert_eq!(shown, "********", "{job:#}");
    assert!(!job.to_string().contains("upstream-secret"));

    let mut records = app.records(&id).await;
    records.sort_by_key(|record| record.to_string());
    let mut expected = vec![
        json!({"src": "a", "n": 1}),
        json!({"src": "a", "n": 2}),
        json!({"src": "b", "n": 1}),
    ];
    expected.sort_by_key(|record| record.to_string());
    assert_eq!(records, expected);

    let request = &mock.requests_to("/a")[0];
    assert_eq!(request.method, reqwest::Method::GET);
    assert_eq!(request.param("tag").as_deref(), Some("rust"));
    assert_eq!(request.headers["x-api-version"], "2");
    assert_eq!(request.headers["authorization"], "Bearer upstream-secret");
    assert_eq!(mock.count("/a"), 1);
    assert_eq!(mock.count("/b"), 1);

    let mut delivered = read_ndjson(&app.dir.path().join("files/out/result.ndjson"));
    delivered.sort_by_key(|record| record.to_string());
    assert_eq!(delivered, records, "the file sink wrote every record once");
}

/// The worker that ends a job's last source runs its first delivery at once (the handoff); the
/// second sink is queued for any worker. Both must deliver every record once, in one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_two_sinks_delivers_to_both_once() {
    let mock = Mock::start().await;
    mock.set_json("/a", json!([{"src": "a"}]));
    mock.set_json("/b", json!([{"src": "b"}, {"src": "b2"}]));
    let app = TestApp::start().await;

    let id = app
        .create_job(&json!({
            "sources": [http_source(mock.url("/a")), http_source(mock.url("/b"))],
            "sinks": [
                {"type": "file", "path": "out/first.ndjson"},
                {"type": "file", "path": "out/second.ndjson"}
            ]
        }))
        .await;
    let job = app.wait_for_status(&id, &["succeeded"], WAIT).await;

    assert_eq!(steps(&job).len(), 4, "{job:#}");
    for step in steps(&job) {
        assert_eq!(step["state"], "succeeded", "{step}");
        let id = &step["id"];
        assert_eq!(outcomes(&job, id), ["succeeded"], "{job:#}");
    }
    let mut records = app.records(&id).await;
    records.sort_by_key(|record| record.to_string());
    assert_eq!(records.len(), 3);
    for file in ["first", "second"] {
        let mut delivered = read_ndjson(&app.dir.path().join(format!("files/out/{file}.ndjson")));
        delivered.sort_by_key(|record| record.to_string());
        assert_eq!(delivered, records, "sink {file} wrote every record once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_statuses_are_retried_with_backoff_until_success() {
    let mock = Mock::start().await;
    mock.push("/flaky", Reply::status(503));
    mock.push("/flaky", Reply::status(503));
    mock.set_json("/flaky", json!([{"id": 1}]));
    let app = TestApp::start().await;

    let id = app
        .create_job(&json!({"sources": [http_source(mock.url("/flaky"))]}))
        .await;
    let job = app.wait_for_status(&id, &["succeeded"], WAIT).await;

    let step = step_of(&job, "collect", 0);
    assert_eq!(step["attempts"], 3, "{job:#}");
    assert_eq!(
        outcomes(&job, &step["id"]),
        ["retrying", "retrying", "succeeded"],
        "{job:#}"
    );
    let attempts = job["attempts"].as_array().expect("attempts");
    for attempt in attempts.iter().filter(|a| a["outcome"] == "retrying") {
        assert_eq!(attempt["http_status"], 503, "{attempt}");
        assert_eq!(attempt["error_kind"], "status", "{attempt}");
    }
    assert_eq!(mock.count("/flaky"), 3);
    assert_eq!(app.records(&id).await, vec![json!({"id": 1})]);
    assert!(app.dead_letters(&id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_as_the_least_delay() {
    let mock = Mock::start().await;
    mock.push("/limited", Reply::status(429).header("retry-after", "1"));
    mock.set_json("/limited", json!([{"id": 1}]));
    let app = TestApp::start().await;

    let id = app
        .create_job(&json!({"sources": [http_source(mock.url("/limited"))]}))
        .await;
    app.wait_for_status(&id, &["succeeded"], WAIT).await;

    let requests = mock.requests_to("/limited");
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "the retry waited for Retry-After (backoff alone is ≤ 50 ms): {gap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retryable_status_fails_after_one_attempt_with_a_dead_letter() {
    let mock = Mock::start().await;
    mock.set(
        "/missing",
        Reply::json(404, json!({"error": "no such thing"})),
    );
    let app = TestApp::start().await;

    let id = app
        .create_job(&json!({"sources": [http_source(mock.url("/missing"))]}))
        .await;
    let job = app.wait_for_status(&id, &["failed"], WAIT).await;

    let step = step_of(&job, "collect", 0);
    assert_eq!(step["state"], "failed", "{job:#}");
    assert_eq!(step["attempts"], 1, "{job:#}");
    assert_eq!(step["last_status"], 404, "{job:#}");
    assert_eq!(outcomes(&job, &step["id"]), ["failed"]);
    assert_eq!(mock.count("/missing"), 1, "a 404 is never retried");

    let dead = app.dead_letters(&id).await;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["http_status"], 404);
    assert_eq!(dead[0]["state"], "failed");
    assert_eq!(dead[0]["attempts"], 1);
    assert!(
        dead[0]["response"]
            .as_str()
            .is_some_and(|body| body.contains("no such thing")),
        "the response excerpt is kept: {}",
        dead[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_time_budget_makes_the_step_dead() {
    let mock = Mock::start().await;
    mock.set("/down", Reply::status(503));
    let app = TestApp::builder()
        .config(|config| {
            config.engine.backoff_base = Duration::from_millis(100);
            config.engine.backoff_cap = Duration::from_millis(200);
        })
        .start()
        .await;

    let id = app
        .create_job(&json!({"sources": [http_source(mock.url("/down"))],
                            "retry": {"budget_seconds": 1, "max_attempts": 1000}}))
        .await;
    let job = app.wait_for_status(&id, &["failed"], WAIT).await;

    let step = step_of(&job, "collect", 0);
    assert_eq!(step["state"], "dead", "{job:#}");
    assert!(step["attempts"].as_u64().unwrap_or(0) >= 2, "{job:#}");
    let dead = app.dead_letters(&id).await;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["state"], "dead");
    assert!(
        dead[0]["error"]
            .as_str()
            .is_some_and(|error| error.contains("budget")),
        "{}",
        dead[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_clock_past_the_default_budget_makes_the_step_dead() {
    let mock = Mock::start().await;
    mock.set("/down", Reply::status(503));
    let clock = ManualClock::new(SystemClock.now());
    let app = TestApp::builder()
        .clock(clock.clone())
        .config(|config| {
            // Retries are scheduled up to an hour out on the manual clock: nothing runs again
            // until the test moves time.
            config.engine.backoff_base = Duration::from_secs(3600);
            config.engine.backoff_cap = Duration::from_secs(3600);
        })
        .start()
        .await;

    let id = app
        .create_job(&json!({"sources": [http_source(mock.url("/down"))]}))
        .await;
    let job = app
        .wait_for_job(&id, WAIT, "first attempt retrying", |job| {
            step_of(job, "collect", 0)["state"] == "retrying"
        })
        .await;
    let step = step_of(&job, "collect", 0);
    assert_eq!(step["budget_remaining_seconds"], 24 * 3600, "{job:#}");
    let attempts_before = mock.count("/down");

    clock.advance(Duration::from_secs(25 * 3600));
    let job = app.wait_for_status(&id, &["failed"], WAIT).await;
    let step = step_of(&job, "collect", 0);
    assert_eq!(step["state"], "dead", "{job:#}");
    let dead = app.dead_letters(&id).await;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["state"], "dead");
    assert!(
        dead[0]["error"]
            .as_str()
            .is_some_and(|error| error.contains("budget")),
        "{}",
        dead[0]
    );
    assert_eq!(
        mock.count("/down"),
        attempts_before,
        "no request is sent once the budget is spent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attempt_limit_makes_the_step_dead() {
    let mock = Mock::start().await;
    mock.set("/down", Reply::status(500));
    let app = TestApp::start().await;

    let id = app
        .create_job(&json!({"sources": [http_source(mock.url("/down"))],
                            "retry": {"max_attempts": 2}}))
        .await;
    let job = app.wait_for_status(&id, &["failed"], WAIT).await;

    let step = step_of(&job, "collect", 0);
    assert_eq!(step["state"], "dead", "{job:#}");
    assert_eq!(step["attempts"], 2, "{job:#}");
    assert_eq!(outcomes(&job, &step["id"]), ["retrying", "dead"]);
    assert_eq!(mock.count("/down"), 2);
    let dead = app.dead_letters(&id).await;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["attempts"], 2);
    assert_eq!(dead[0]["http_status"], 500);
    assert!(
        dead[0]["error"]
            .as_str()
            .is_some_and(|error| error.contains("after 2 attempts")),
        "{}",
        dead[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_retrying_job_stops_all_upstream_requests() {
    let mock = Mock::start().await;
    mock.set("/down", Reply::status(503));
    let app = TestApp::builder()
        .config(|config| {
            config.engine.backoff_base = Duration::from_millis(100);
            config.engine.backoff_cap = Duration::from_millis(100);
        })
        .start()
        .await;

    let id = app
        .create_job(&json!({"sources": [http_source(mock.url("/down"))],
                            "sinks": [{"type": "file", "path": "cancelled.ndjson"}],
                            "retry": {"max_attempts": 1000}}))
        .await;
    eventually(WAIT, "the source is being retried", || {
        mock.count("/down") >= 2
    })
    .await;

    let cancel = app.post(&format!("/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(cancel.status, StatusCode::OK, "{}", cancel.text);
    let at_cancel = mock.count("/down");
    let view = cancel.json();
    assert_eq!(view["status"], "cancelled", "{view:#}");
    for step in steps(&view) {
        assert_eq!(step["state"], "cancelled", "{step}");
    }

    // A request already in flight when the cancel committed may still arrive; nothing after it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let settled = mock.count("/down");
    assert!(settled <= at_cancel + 1, "{settled} > {at_cancel} + 1");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(mock.count("/down"), settled, "no request after the cancel");

    let job = app.job(&id).await;
    assert_eq!(job["status"], "cancelled");
    assert!(
        !app.dir.path().join("files/cancelled.ndjson").exists(),
        "the sink of a cancelled job never ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_job_mid_request_stores_nothing_and_fetches_no_more_pages() {
    let mock = Mock::start().await;
    let records: Vec<Value> = (0..6).map(|n| json!({"n": n})).collect();
    mock.set_paged("/pages", records, 2);
    mock.push(
        "/pages",
        Reply::json(
            200,
            json!({"items": [{"n": 0}, {"n": 1}], "next_cursor": "1"}),
        )
        .delay(Duration::from_millis(800)),
    );
    let app = TestApp::start().await;

    let id = app
        .create_job(&json!({"sources": [{"connector": "http", "settings": {
            "url": mock.url("/pages"), "record_path": ".items[]",
            "pagination": {"type": "cursor", "cursor_path": ".next_cursor"}}}]}))
        .await;
    eventually(WAIT, "the first page is requested", || {
        mock.count("/pages") == 1
    })
    .await;
    let cancel = app.post(&format!("/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(cancel.status, StatusCode::OK, "{}", cancel.text);
    assert_eq!(cancel.json()["status"], "cancelled");

    // The slow page arrives after the cancel: its worker lost the step and stops.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(mock.count("/pages"), 1, "no page after the cancel");
    assert!(
        app.records(&id).await.is_empty(),
        "nothing stored after the cancel"
    );
    let job = app.job(&id).await;
    assert_eq!(job["status"], "cancelled");
    let step = step_of(&job, "collect", 0);
    assert_eq!(outcomes(&job, &step["id"]), ["cancelled"], "{job:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_dead_letters_reruns_the_step_and_redelivers() {
    let mock = Mock::start().await;
    mock.set("/flaky", Reply::status(503));
    let app = TestApp::start().await;

    let id = app
        .create_job(&json!({"sources": [http_source(mock.url("/flaky"))],
                            "sinks": [{"type": "file", "path": "replayed.ndjson"}],
                            "retry": {"max_attempts": 1}}))
        .await;
    let job = app.wait_for_status(&id, &["failed"], WAIT).await;
    assert_eq!(step_of(&job, "collect", 0)["state"], "dead", "{job:#}");
    let dead = app.dead_letters(&id).await;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert!(dead[0]["replayed_at"].is_null());

    mock.set_json("/flaky", json!([{"id": 7}]));
    let replay = app
        .post("/v1/dead-letters/replay", &json!({"job_id": id}))
        .await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.text);
    assert_eq!(replay.json()["replayed"], 1);

    let job = app.wait_for_status(&id, &["succeeded"], WAIT).await;
    let collect = step_of(&job, "collect", 0);
    assert_eq!(
        outcomes(&job, &collect["id"]),
        ["dead", "succeeded"],
        "{job:#}"
    );
    assert_eq!(app.records(&id).await, vec![json!({"id": 7})]);
    assert_eq!(
        read_ndjson(&app.dir.path().join("files/replayed.ndjson")),
        vec![json!({"id": 7})],
        "the sink delivered again after the replay"
    );

    let dead = app.dead_letters(&id).await;
    assert!(dead[0]["replayed_at"].is_number(), "{dead:#?}");
    let open = app
        .get(&format!("/v1/dead-letters?job_id={id}"))
        .await
        .json();
    assert!(open["dead_letters"].as_array().expect("list").is_empty());
    let again = app
        .post("/v1/dead-letters/replay", &json!({"job_id": id}))
        .await;
    assert_eq!(
        again.json()["replayed"],
        0,
        "a dead letter is replayed once"
    );

    let nothing = app.post("/v1/dead-letters/replay", &json!({})).await;
    assert_eq!(
        nothing.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        nothing.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_failed_job_reruns_only_its_failed_steps() {
    let mock = Mock::start().await;
    mock.set_json("/fine", json!([{"from": "fine"}]));
    mock.set("/broken", Reply::status(400));
    let app = TestApp::start().await;

    let id = app
        .create_job(&json!({"sources": [http_source(mock.url("/fine")),
                                        http_source(mock.url("/broken"))]}))
        .await;
    let job = app
        .wait_for_status(&id, &["partially_succeeded"], WAIT)
        .await;
    assert_eq!(step_of(&job, "collect", 1)["state"], "failed", "{job:#}");

    mock.set_json("/broken", json!([{"from": "fixed"}]));
    let retry = app.post(&format!("/v1/jobs/{id}/retry"), &json!({})).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.text);
    let view = retry.json();
    assert!(
        matches!(
            view["status"].as_str(),
            Some("queued" | "running" | "succeeded")
        ),
        "{view:#}"
    );

    let job = app.wait_for_status(&id, &["succeeded"], WAIT).await;
    assert_eq!(step_of(&job, "collect", 1)["attempts"], 2, "{job:#}");
    assert_eq!(
        mock.count("/fine"),
        1,
        "the succeeded source is not fetched again"
    );
    assert_eq!(mock.count("/broken"), 2);
    let mut records = app.records(&id).await;
    records.sort_by_key(|record| record.to_string());
    assert_eq!(
        records,
        vec![json!({"from": "fine"}), json!({"from": "fixed"})]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_pagination_resumes_from_the_checkpoint_after_a_failure() {
    let mock = Mock::start().await;
    let all: Vec<Value> = (0..10).map(|n| json!({"n": n})).collect();
    mock.set_paged("/pages", all.clone(), 2);
    mock.push_when("/pages", "cursor=2", Reply::status(503));
    let app = TestApp::start().await;

    let id = app
        .create_job(&json!({"sources": [{"connector": "http", "settings": {
            "url": mock.url("/pages"), "record_path": ".items[]",
            "pagination": {"type": "cursor", "cursor_path": ".next_cursor"}}}]}))
        .await;
    let job = app.wait_for_status(&id, &["succeeded"], WAIT).await;

    assert_eq!(
        app.records(&id).await,
        all,
        "every record exactly once, in order"
    );
    let step = step_of(&job, "collect", 0);
    assert_eq!(
        outcomes(&job, &step["id"]),
        ["retrying", "succeeded"],
        "{job:#}"
    );
    assert_eq!(step["records"], 10, "{job:#}");

    let cursors: Vec<Option<String>> = mock
        .requests_to("/pages")
        .iter()
        .map(|request| request.param("cursor"))
        .collect();
    let page = |n: &str| Some(n.to_owned());
    assert_eq!(
        cursors,
        vec![None, page("1"), page("2"), page("2"), page("3"), page("4")],
        "pages 1 and 2 are not fetched again after page 3 failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_link_and_page_number_pagination_collect_every_page_once() {
    let mock = Mock::start().await;
    let linked: Vec<Value> = (0..5).map(|n| json!({"linked": n})).collect();
    let numbered: Vec<Value> = (0..5).map(|n| json!({"numbered": n})).collect();
    mock.set_paged("/linked", linked.clone(), 2);
    mock.set_paged("/numbered", numbered.clone(), 2);
    let app = TestApp::start().await;

    let id = app
        .create_job(&json!({"sources": [
            {"connector": "http", "settings": {
                "url": mock.url("/linked"), "record_path": ".items[]",
                "pagination": {"type": "next_link", "next_path": ".next"}}},
            {"connector": "http", "settings": {
                "url": mock.url("/numbered"), "record_path": ".items[]",
                "pagination": {"type": "page_number"}}}
        ]}))
        .await;
    app.wait_for_status(&id, &["succeeded"], WAIT).await;

    let records = app.records(&id).await;
    let of = |key: &str| -> Vec<Value> {
        records
            .iter()
            .filter(|record| record.get(key).is_some())
            .cloned()
            .collect()
    };
    assert_eq!(of("linked"), linked);
    assert_eq!(of("numbered"), numbered);
    let pages = |path: &str| -> Vec<Option<String>> {
        mock.requests_to(path)
            .iter()
            .map(|request| request.param("page"))
            .collect()
    };
    let p = |n: &str| Some(n.to_owned());
    assert_eq!(pages("/linked"), vec![None, p("2"), p("3")]);
    // Page numbers run until an empty page.
    assert_eq!(pages("/numbered"), vec![p("1"), p("2"), p("3"), p("4")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jq_processors_drop_and_split_records() {
    let mock = Mock::start().await;
    mock.set_json(
        "/posts",
        json!([
            {"id": 1, "tags": ["a", "b"]},
            {"id": 2, "tags": []},
            {"id": 3, "tags": ["c"], "draft": true}
        ]),
    );
    let app = TestApp::start().await;

    let id = app
        .create_job(&json!({
            "sources": [http_source(mock.url("/posts"))],
            "processors": [
                {"type": "jq", "filter": "select(.draft != true)"},
                {"type": "jq", "filter": ".id as $id | .tags[] | {id: $id, tag: .}"}
            ]
        }))
        .await;
    app.wait_for_status(&id, &["succeeded"], WAIT).await;
    assert_eq!(
        app.records(&id).await,
        vec![json!({"id": 1, "tag": "a"}), json!({"id": 1, "tag": "b"})]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failed_source_makes_the_job_partially_succeeded_and_the_sink_still_runs() {
    let mock = Mock::start().await;
    mock.set_json("/ok", json!([{"id": 1}, {"id": 2}]));
    mock.set("/missing", Reply::status(404));
    let app = TestApp::start().await;

    let id = app
        .create_job(&json!({
            "sources": [http_source(mock.url("/ok")), http_source(mock.url("/missing"))],
            "sinks": [{"type": "file", "path": "partial.ndjson"}]
        }))
        .await;
    let job = app
        .wait_for_status(&id, &["partially_succeeded"], WAIT)
        .await;

    assert_eq!(step_of(&job, "collect", 0)["state"], "succeeded");
    assert_eq!(step_of(&job, "collect", 1)["state"], "failed");
    assert_eq!(step_of(&job, "deliver", 0)["state"], "succeeded", "{job:#}");
    assert_eq!(
        read_ndjson(&app.dir.path().join("files/partial.ndjson")),
        vec![json!({"id": 1}), json!({"id": 2})]
    );
    let dead = app.dead_letters(&id).await;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["http_status"], 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_left_running_by_a_dead_process_is_rescued_at_the_next_start() {
    let mock = Mock::start().await;
    mock.push(
        "/slow",
        Reply::json(200, json!([{"from": "the dead process"}])).held(),
    );
    mock.set_json("/slow", json!([{"from": "the successor"}]));

    let first = TestApp::start().await;
    let id = first
        .create_job(&json!({"sources": [http_source(mock.url("/slow"))]}))
        .await;
    eventually(WAIT, "the first process fetches", || {
        mock.count("/slow") == 1
    })
    .await;
    let job = first.job(&id).await;
    assert_eq!(step_of(&job, "collect", 0)["state"], "running", "{job:#}");
    let dir = first.kill();

    let second = TestApp::builder().data_dir(dir).start().await;
    let job = second.wait_for_status(&id, &["succeeded"], WAIT).await;
    let step = step_of(&job, "collect", 0);
    assert_eq!(
        outcomes(&job, &step["id"]),
        ["lease_expired", "succeeded"],
        "{job:#}"
    );
    assert_eq!(mock.count("/slow"), 2);
    assert_eq!(
        second.records(&id).await,
        vec![json!({"from": "the successor"})]
    );

    // The first process's worker gets its answer late; its lease is gone, so it writes nothing.
    mock.release_held();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        second.records(&id).await,
        vec![json!({"from": "the successor"})]
    );
    let job = second.job(&id).await;
    assert_eq!(job["status"], "succeeded");
    assert_eq!(
        outcomes(&job, &step["id"]),
        ["lease_expired", "succeeded"],
        "{job:#}"
    );
}
