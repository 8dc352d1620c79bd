//! The `databox` sink end to end: jobs whose `http` sources answer metric records
//! (`{"metric", "value"}`) deliver them to the mock Databox through the push or the datasets
//! API, with Databox's failures retried or reported as the seed's contract needs.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::databox::{Answer, MockDatabox};
use crate::support::{Mock, TestApp};

const WAIT: Duration = Duration::from_secs(20);
const DATASET: &str = "so-totals";
const TAGS: [(&str, u64); 3] = [("rust", 271_828), ("go", 75_000), ("python", 2_200_000)];

/// The app, with both Databox APIs pointed at `databox`.
async fn start(databox: &MockDatabox) -> TestApp {
    TestApp::builder()
        .config(|config| {
            config.sinks.databox.base_url = databox.base_url();
            config.sinks.databox.dataset_base_url = databox.base_url();
        })
        .start()
        .await
}

/// One `http` source per tag, each answering the tag's question total as a metric record.
fn question_totals(upstream: &Mock) -> Vec<Value> {
    TAGS.iter()
        .map(|(tag, total)| {
            let path = format!("/questions/{tag}");
            upstream.set_json(
                &path,
                json!({"metric": metric_name(tag), "value": total, "tag": tag}),
            );
            json!({"connector": "http", "name": tag, "settings": {"url": upstream.url(&path)}})
        })
        .collect()
}

/// A job pushing the question totals of [`TAGS`] with the push token `push-token`.
fn push_spec(upstream: &Mock) -> Value {
    json!({
        "sources": question_totals(upstream),
        "sinks": [{"type": "databox", "token": "push-token"}]
    })
}

/// A job whose one source answers `count` metric records, sent to [`DATASET`] with the API key
/// `api-key`.
fn dataset_spec(upstream: &Mock, count: usize) -> Value {
    let records: Vec<Value> = (0..count)
        .map(|n| json!({"metric": format!("tag{n}"), "value": n * 10, "site": "stackoverflow"}))
        .collect();
    upstream.set_json("/totals", Value::Array(records));
    json!({
        "sources": [{"connector": "http", "settings": {"url": upstream.url("/totals")}}],
        "sinks": [{"type": "databox", "api": "dataset", "dataset": DATASET, "token": "api-key"}]
    })
}

/// Waits until the job's delivery failed for good; returns the step and its one attempt.
async fn failed_delivery(app: &TestApp, id: &str) -> (Value, Value) {
    let job = app
        .wait_for_job(id, WAIT, "a failed delivery", |job| {
            delivery_step(job)["state"] == "failed"
        })
        .await;
    let step = delivery_step(&job);
    let attempts = attempts_of(&job, &step);
    assert_eq!(attempts.len(), 1, "a final failure is not retried: {job:#}");
    assert_eq!(attempts[0]["outcome"], "failed", "{job:#}");
    (step, attempts[0].clone())
}

/// Asserts that an attempt or dead letter kept Databox's answer, containing `text`.
#[track_caller]
fn assert_kept(entry: &Value, text: &str) {
    assert!(
        entry["response"]
            .as_str()
            .is_some_and(|body| body.contains(text)),
        "{text:?} in {entry:#}"
    );
}

fn metric_name(tag: &str) -> String {
    format!("{}QuestionCount", tag[..1].to_uppercase() + &tag[1..])
}

/// The job's deliver step.
fn delivery_step(job: &Value) -> Value {
    job["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|step| step["kind"] == "deliver")
        .cloned()
        .unwrap_or_else(|| panic!("a deliver step in {job:#}"))
}

/// The attempt log entries of one step, in attempt order.
fn attempts_of(job: &Value, step: &Value) -> Vec<Value> {
    let mut attempts: Vec<Value> = job["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .filter(|attempt| attempt["step_id"] == step["id"])
        .cloned()
        .collect();
    attempts.sort_by_key(|attempt| attempt["attempt"].as_u64());
    attempts
}

/// When the last source finished, by the attempt log: the time every data point carries.
fn collected_at(job: &Value) -> i64 {
    let collect_steps: Vec<&Value> = job["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|step| step["kind"] == "collect")
        .map(|step| &step["id"])
        .collect();
    job["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .filter(|attempt| collect_steps.contains(&&attempt["step_id"]))
        .filter_map(|attempt| attempt["ended_at"].as_i64())
        .max()
        .expect("collect attempts")
}

fn millis(date: &Value) -> i64 {
    date.as_str()
        .and_then(|text| text.parse::<jiff::Timestamp>().ok())
        .unwrap_or_else(|| panic!("an RFC 3339 date: {date}"))
        .as_millisecond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn question_totals_reach_databox_in_the_push_wire_format() {
    let upstream = Mock::start().await;
    let databox = MockDatabox::start().await;
    let app = start(&databox).await;
    let id = app.create_job(&push_spec(&upstream)).await;
    let job = app.wait_for_status(&id, &["succeeded"], WAIT).await;

    let pushes = databox.pushes();
    assert_eq!(pushes.len(), 1, "one push for the whole job");
    let push = &pushes[0];
    assert_eq!(push.push_token().as_deref(), Some("push-token"));
    assert_eq!(
        push.header("accept"),
        Some("application/vnd.databox.v2+json")
    );
    assert_eq!(push.header("content-type"), Some("application/json"));
    assert!(
        push.header("user-agent")
            .is_some_and(|agent| agent.starts_with("gleaner/"))
    );
    let data = push.data();
    let date = data[0]["date"].clone();
    let mut expected: Vec<Value> = TAGS
        .iter()
        .map(|(tag, total)| {
            let mut point = serde_json::Map::new();
            point.insert(format!("${}", metric_name(tag)), json!(total));
            point.insert("date".into(), date.clone());
            Value::Object(point)
        })
        .collect();
    let mut sent = data.clone();
    let key = |point: &Value| point.to_string();
    expected.sort_by_key(key);
    sent.sort_by_key(key);
    assert_eq!(sent, expected, "one data point per tag, all with one date");
    assert_eq!(
        millis(&date),
        collected_at(&job),
        "the date is when collection ended"
    );

    let step = delivery_step(&job);
    assert_eq!(step["state"], "succeeded", "{job:#}");
    let attempts = attempts_of(&job, &step);
    assert_eq!(attempts.len(), 1, "{job:#}");
    assert_eq!(attempts[0]["http_status"], 200);
    assert!(
        attempts[0]["response"]
            .as_str()
            .is_some_and(|body| body.contains("OK")),
        "{job:#}"
    );
    assert_eq!(
        job["spec"]["sinks"][0]["token"], "********",
        "the token is never shown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_source_is_left_out_of_the_push() {
    let upstream = Mock::start().await;
    let databox = MockDatabox::start().await;
    let app = start(&databox).await;
    let mut sources = question_totals(&upstream);
    sources.push(json!({"connector": "http", "name": "gone",
                        "settings": {"url": upstream.url("/questions/unknown")}}));
    let id = app
        .create_job(&json!({
            "sources": sources,
            "sinks": [{"type": "databox", "token": "push-token"}]
        }))
        .await;
    app.wait_for_job(&id, WAIT, "the delivery", |job| {
        delivery_step(job)["state"] == "succeeded"
    })
    .await;
    let pushes = databox.pushes();
    assert_eq!(pushes.len(), 1);
    let names: BTreeSet<String> = pushes[0]
        .data()
        .iter()
        .flat_map(|point| point.as_object().expect("point").keys().cloned())
        .filter(|key| key != "date")
        .collect();
    let expected: BTreeSet<String> = TAGS
        .iter()
        .map(|(tag, _)| format!("${}", metric_name(tag)))
        .collect();
    assert_eq!(names, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dataset_api_sends_250_records_as_3_requests() {
    let upstream = Mock::start().await;
    let databox = MockDatabox::start().await;
    let app = start(&databox).await;
    let id = app.create_job(&dataset_spec(&upstream, 250)).await;
    app.wait_for_status(&id, &["succeeded"], WAIT).await;

    let ingestions = databox.ingestions(DATASET);
    assert_eq!(databox.requests().len(), 3, "nothing else was sent");
    let sizes: Vec<usize> = ingestions
        .iter()
        .map(|request| request.records().len())
        .collect();
    assert_eq!(sizes, [100, 100, 50]);
    let rows: Vec<Value> = ingestions.iter().flat_map(|r| r.records()).collect();
    let dates: BTreeSet<String> = rows.iter().map(|row| row["date"].to_string()).collect();
    assert_eq!(dates.len(), 1, "one date for every row: {dates:?}");
    for (n, row) in rows.iter().enumerate() {
        assert_eq!(row["metric"], format!("tag{n}"));
        assert_eq!(row["value"], n * 10);
        assert_eq!(row["site"], "stackoverflow");
    }
    for request in &ingestions {
        assert_eq!(request.header("x-api-key"), Some("api-key"));
        assert_eq!(request.header("authorization"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_databox_5xx_is_retried_until_it_succeeds() {
    let upstream = Mock::start().await;
    let databox = MockDatabox::start().await;
    databox.script_push(Answer::unavailable(503));
    databox.script_push(Answer::unavailable(500));
    databox.script_push(Answer::unavailable(429));
    let app = start(&databox).await;
    let id = app.create_job(&push_spec(&upstream)).await;
    let job = app.wait_for_status(&id, &["succeeded"], WAIT).await;

    let pushes = databox.pushes();
    let statuses: Vec<u16> = pushes.iter().map(|push| push.status).collect();
    assert_eq!(statuses, [503, 500, 429, 200]);
    assert!(
        pushes.windows(2).all(|pair| pair[0].body == pair[1].body),
        "every retry sends the same data points, date included"
    );
    let step = delivery_step(&job);
    assert_eq!(step["attempts"], 4, "{job:#}");
    let outcomes: Vec<(Value, Value)> = attempts_of(&job, &step)
        .iter()
        .map(|attempt| (attempt["outcome"].clone(), attempt["http_status"].clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (json!("retrying"), json!(503)),
            (json!("retrying"), json!(500)),
            (json!("retrying"), json!(429)),
            (json!("succeeded"), json!(200)),
        ],
        "{job:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_databox_4xx_fails_the_delivery_with_its_answer_kept() {
    let upstream = Mock::start().await;
    let databox = MockDatabox::start().await;
    databox.script_push(Answer::refused(
        400,
        "metric key $RustQuestionCount is invalid",
    ));
    let app = start(&databox).await;
    let id = app.create_job(&push_spec(&upstream)).await;
    let (step, attempt) = failed_delivery(&app, &id).await;

    assert_eq!(databox.pushes().len(), 1, "a 4xx is not retried");
    assert_eq!(attempt["error_kind"], "status");
    assert_eq!(attempt["http_status"], 400);
    assert_kept(&attempt, "$RustQuestionCount is invalid");

    let dead = app.dead_letters(&id).await;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["step_id"], step["id"]);
    assert_eq!(dead[0]["http_status"], 400);
    assert_kept(&dead[0], "$RustQuestionCount is invalid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_push_is_a_failure_not_a_success() {
    let upstream = Mock::start().await;
    let databox = MockDatabox::start().await;
    databox.script_push(Answer::not_ok());
    databox.script_push(Answer::unparsable());
    let app = start(&databox).await;
    let spec = push_spec(&upstream);
    for answered in ["\"ERROR\"", "<html>"] {
        let id = app.create_job(&spec).await;
        let (_, attempt) = failed_delivery(&app, &id).await;
        assert_eq!(attempt["error_kind"], "unconfirmed", "{attempt:#}");
        assert_eq!(attempt["http_status"], 200);
        assert_kept(&attempt, answered);
    }
    assert_eq!(databox.pushes().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dataset_batch_resends_the_same_rows_from_the_first_batch() {
    let upstream = Mock::start().await;
    let databox = MockDatabox::start().await;
    databox.script_dataset(Answer::json(200, json!({"status": "success"})));
    databox.script_dataset(Answer::unavailable(503));
    let app = start(&databox).await;
    let id = app.create_job(&dataset_spec(&upstream, 250)).await;
    let job = app.wait_for_status(&id, &["succeeded"], WAIT).await;

    let ingestions = databox.ingestions(DATASET);
    let answered: Vec<(usize, u16)> = ingestions
        .iter()
        .map(|request| (request.records().len(), request.status))
        .collect();
    assert_eq!(
        answered,
        [(100, 200), (100, 503), (100, 200), (100, 200), (50, 200)]
    );
    assert_eq!(
        ingestions[0].body, ingestions[2].body,
        "batch 1 again, unchanged"
    );
    assert_eq!(
        ingestions[1].body, ingestions[3].body,
        "batch 2 again, unchanged"
    );
    let step = delivery_step(&job);
    let attempts = attempts_of(&job, &step);
    assert_eq!(attempts.len(), 2, "{job:#}");
    assert!(
        attempts[0]["error"]
            .as_str()
            .is_some_and(|error| error.contains("request 2 of 3 (100 records)")),
        "{:#}",
        attempts[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_a_databox_token_is_refused() {
    let databox = MockDatabox::start().await;
    let app = start(&databox).await;
    let (status, body) = app
        .post_job(&json!({
            "sources": [{"connector": "noop"}],
            "sinks": [{"type": "databox"}]
        }))
        .await;
    assert_eq!(status.as_u16(), 422, "{body}");
    assert!(body.to_string().contains("token"), "{body}");
}
