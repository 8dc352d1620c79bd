//! Schedules on an injectable clock: one job per tick across restarts and across two scheduler
//! processes on one store, the overlap policies, and catch-up after downtime.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gleaner::clock::ManualClock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::harness::{TestApp, assert_problem};
use crate::support::{Mock, Reply};

/// 2026-01-01T00:00:30Z: half a minute before a `* * * * *` tick.
const START: i64 = 1_767_225_630_000;
const MINUTE: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(20);

async fn app(clock: &ManualClock, dir: Option<Arc<TempDir>>) -> TestApp {
    let mut builder = TestApp::builder().clock(clock.clone());
    if let Some(dir) = dir {
        builder = builder.data_dir(dir);
    }
    builder.start().await
}

fn noop_schedule(name: &str) -> Value {
    json!({
        "name": name,
        "cron": "* * * * *",
        "job": {"sources": [{"connector": "noop"}]},
    })
}

async fn create(app: &TestApp, spec: &Value) -> Value {
    let answer = app.post("/v1/schedules", spec).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    answer.json()
}

async fn schedule(app: &TestApp, name: &str) -> Value {
    let answer = app.get(&format!("/v1/schedules/{name}")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.json()
}

/// Waits until the schedule has created `count` jobs and they all finished (so the next tick
/// does not find a run still going, which `overlap = "skip"` would skip).
async fn wait_ticks(app: &TestApp, name: &str, count: usize) -> Value {
    let started = Instant::now();
    loop {
        let view = schedule(app, name).await;
        let all = jobs(app).await;
        if all.len() >= count && all.iter().all(|job| job["status"] == "succeeded") {
            return view;
        }
        assert!(
            started.elapsed() < WAIT,
            "{name}: {count} ticks not reached: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every job in the store.
async fn jobs(app: &TestApp) -> Vec<Value> {
    let answer = app.get("/v1/jobs?limit=500").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.json()["jobs"].as_array().expect("jobs").clone()
}

#[tokio::test]
async fn every_minute_for_an_hour_with_ten_restarts_makes_sixty_jobs() {
    let clock = ManualClock::new(START);
    let mut current = app(&clock, None).await;
    let created = create(&current, &noop_schedule("minutely")).await;
    assert_eq!(created["next_runs"][0], "2026-01-01T00:01:00Z", "{created}");
    assert_eq!(created["next_runs"].as_array().map(Vec::len), Some(5));
    for minute in 1..=60usize {
        clock.advance(MINUTE);
        if minute % 6 == 3 {
            // A restart while the tick is due: the new process fires it (it is on time).
            let dir = current.kill();
            current = app(&clock, Some(dir)).await;
        }
        wait_ticks(&current, "minutely", minute).await;
    }
    let all = jobs(&current).await;
    assert_eq!(all.len(), 60, "one job per tick");
    let view = schedule(&current, "minutely").await;
    let ticks: BTreeSet<&str> = view["ticks"]
        .as_array()
        .expect("ticks")
        .iter()
        .map(|tick| tick["outcome"].as_str().expect("outcome"))
        .collect();
    assert_eq!(ticks, BTreeSet::from(["created"]));
    assert_eq!(view["last_tick"], "2026-01-01T01:00:00Z");
    assert_eq!(view["next_runs"][0], "2026-01-01T01:01:00Z");
}

#[tokio::test]
async fn two_schedulers_on_one_store_make_one_job_per_tick() {
    let clock = ManualClock::new(START);
    let first = app(&clock, None).await;
    let second = app(&clock, Some(first.dir.clone())).await;
    create(&first, &noop_schedule("shared")).await;
    for minute in 1..=20usize {
        clock.advance(MINUTE);
        wait_ticks(&first, "shared", minute).await;
    }
    // Let the second scheduler finish whatever it was deciding.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(jobs(&second).await.len(), 20);
    assert_eq!(jobs(&first).await.len(), 20);
}

/// A minutely schedule `name` whose job calls a mock that holds its answer, past its first
/// tick: the first run is running (and stays so until the mock is released).
async fn first_run_held(name: &str, overlap: &str) -> (Mock, ManualClock, TestApp, String) {
    let mock = Mock::start().await;
    mock.set("/slow", Reply::json(200, json!([{"n": 1}])).held());
    let clock = ManualClock::new(START);
    let app = app(&clock, None).await;
    create(
        &app,
        &json!({
            "name": name,
            "cron": "* * * * *",
            "overlap": overlap,
            "job": {"sources": [{"connector": "http", "settings": {"url": mock.url("/slow")}}]},
        }),
    )
    .await;
    clock.advance(MINUTE);
    wait_for_tick_count(&app, name, 1).await;
    let first = schedule(&app, name).await["last_job_id"]
        .as_str()
        .expect("job")
        .to_owned();
    app.wait_for_job(&first, WAIT, "running", |job| job["status"] == "running")
        .await;
    (mock, clock, app, first)
}

#[tokio::test]
async fn skip_never_overlaps_a_run_that_outlasts_the_interval() {
    let (mock, clock, app, first) = first_run_held("slow", "skip").await;
    clock.advance(MINUTE);
    let view = wait_for_tick_count(&app, "slow", 2).await;
    assert_eq!(view["ticks"][0]["outcome"], "skipped_overlap", "{view:#}");
    assert_eq!(
        jobs(&app).await.len(),
        1,
        "no second run while the first runs"
    );

    mock.release_held();
    mock.set("/slow", Reply::json(200, json!([{"n": 1}])));
    app.wait_for_status(&first, &["succeeded"], WAIT).await;
    clock.advance(MINUTE);
    let view = wait_for_tick_count(&app, "slow", 3).await;
    assert_eq!(view["ticks"][0]["outcome"], "created", "{view:#}");
    assert_eq!(jobs(&app).await.len(), 2);
}

/// Waits until the schedule's tick history holds `count` entries (skipped ones included).
async fn wait_for_tick_count(app: &TestApp, name: &str, count: usize) -> Value {
    let started = Instant::now();
    loop {
        let view = schedule(app, name).await;
        if view["ticks"].as_array().map_or(0, Vec::len) >= count {
            return view;
        }
        assert!(started.elapsed() < WAIT, "{name}: {view:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn catch_up_after_downtime_follows_the_policy() {
    for (policy, expected) in [("one", 1usize), ("none", 0), ("all", 3)] {
        let clock = ManualClock::new(START);
        let first = app(&clock, None).await;
        let mut spec = noop_schedule(policy);
        spec["cron"] = json!("*/5 * * * *");
        spec["catch_up"] = json!(policy);
        spec["catch_up_max"] = json!(3);
        create(&first, &spec).await;
        let dir = first.kill();
        // Down over six ticks (00:05 … 00:30); the last one is 2.5 minutes late at restart.
        clock.advance(Duration::from_secs(32 * 60));
        let restarted = app(&clock, Some(dir)).await;
        let view = wait_for_tick_count(&restarted, policy, expected).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(jobs(&restarted).await.len(), expected, "{policy}: {view:#}");
        // Whatever was missed, the next tick runs normally.
        clock.advance(Duration::from_secs(3 * 60));
        wait_ticks(&restarted, policy, expected + 1).await;
        let view = schedule(&restarted, policy).await;
        assert_eq!(
            view["last_tick"], "2026-01-01T00:35:00Z",
            "{policy}: {view:#}"
        );
    }
}

#[tokio::test]
async fn schedules_are_validated_changed_paused_and_deleted() {
    let clock = ManualClock::new(START);
    let app = app(&clock, None).await;
    for (spec, needle) in [
        (
            json!({"name": "x", "cron": "61 * * * *", "job": {"sources": [{"connector": "noop"}]}}),
            "cron",
        ),
        (
            json!({"name": "x", "cron": "* * * * *", "timezone": "Mars/Base", "job": {"sources": [{"connector": "noop"}]}}),
            "time zone",
        ),
        (
            json!({"name": "x y", "cron": "* * * * *", "job": {"sources": [{"connector": "noop"}]}}),
            "name",
        ),
        (
            json!({"name": "x", "cron": "* * * * *", "job": {"sources": [{"connector": "nope"}]}}),
            "job",
        ),
        (
            json!({"name": "x", "cron": "* * * * *", "job": {"sources": []}}),
            "job",
        ),
        (
            json!({"name": "x", "cron": "* * * * *", "catch_up_max": 0, "job": {"sources": [{"connector": "noop"}]}}),
            "catch_up_max",
        ),
    ] {
        let answer = app.post("/v1/schedules", &spec).await;
        let problem = assert_problem(&answer, 422);
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(needle),
            "{problem}"
        );
    }
    let answer = app
        .post("/v1/schedules", &json!({"name": "x", "cron": "* * * * *", "job": {"sources": [{"connector": "noop"}]}, "every": 5}))
        .await;
    assert!(answer.status.is_client_error(), "{}", answer.text);

    create(&app, &noop_schedule("edit")).await;
    let duplicate = app.post("/v1/schedules", &noop_schedule("edit")).await;
    assert_problem(&duplicate, 409);

    // Hourly in Berlin, paused: no tick fires, no run times are shown.
    let patch = app
        .send(
            app.request(Method::PATCH, "/v1/schedules/edit")
                .json(&json!({
                    "cron": "0 * * * *", "timezone": "Europe/Berlin", "paused": true
                })),
        )
        .await;
    assert_eq!(patch.status, StatusCode::OK, "{}", patch.text);
    assert_eq!(patch.json()["next_runs"], json!([]));
    clock.advance(Duration::from_secs(2 * 3600));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(jobs(&app).await.is_empty());

    // Resumed: the next run is the next hour after now, not a past one.
    let patch = app
        .send(
            app.request(Method::PATCH, "/v1/schedules/edit")
                .json(&json!({"paused": false})),
        )
        .await;
    assert_eq!(patch.status, StatusCode::OK, "{}", patch.text);
    assert_eq!(patch.json()["next_runs"][0], "2026-01-01T03:00:00Z");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(jobs(&app).await.is_empty(), "no past tick re-run");

    let deleted = app
        .send(app.request(Method::DELETE, "/v1/schedules/edit"))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_problem(&app.get("/v1/schedules/edit").await, 404);
}

#[tokio::test]
async fn config_schedules_are_synced_at_start_and_read_only() {
    let clock = ManualClock::new(START);
    let spec: gleaner::schedule::ScheduleSpec =
        serde_json::from_value(noop_schedule("from-file")).expect("spec");
    let first = TestApp::builder()
        .clock(clock.clone())
        .config(|config| config.schedule = vec![spec.clone()])
        .start()
        .await;
    let view = schedule(&first, "from-file").await;
    assert_eq!(view["origin"], "config");
    let patch = first
        .send(
            first
                .request(Method::PATCH, "/v1/schedules/from-file")
                .json(&json!({"paused": true})),
        )
        .await;
    assert_problem(&patch, 409);
    clock.advance(MINUTE);
    wait_ticks(&first, "from-file", 1).await;

    // The same file again: the schedule and its history are kept.
    let dir = first.kill();
    let second = TestApp::builder()
        .clock(clock.clone())
        .data_dir(dir)
        .config(|config| config.schedule = vec![spec.clone()])
        .start()
        .await;
    let again = schedule(&second, "from-file").await;
    assert_eq!(again["id"], view["id"]);
    assert_eq!(again["last_tick"], "2026-01-01T00:01:00Z");

    // Removed from the file: removed from the store (its job stays).
    let dir = second.kill();
    let third = TestApp::builder()
        .clock(clock.clone())
        .data_dir(dir)
        .start()
        .await;
    assert_problem(&third.get("/v1/schedules/from-file").await, 404);
    assert_eq!(jobs(&third).await.len(), 1);
}

#[tokio::test]
async fn queue_starts_the_next_run_once_the_previous_one_finished() {
    let (mock, clock, app, first) = first_run_held("queued", "queue").await;
    clock.advance(MINUTE);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let view = schedule(&app, "queued").await;
    assert_eq!(
        view["ticks"].as_array().map(Vec::len),
        Some(1),
        "waiting: {view:#}"
    );
    assert_eq!(jobs(&app).await.len(), 1);

    mock.set("/slow", Reply::json(200, json!([{"n": 1}])));
    mock.release_held();
    app.wait_for_status(&first, &["succeeded"], WAIT).await;
    let view = wait_for_tick_count(&app, "queued", 2).await;
    assert_eq!(view["ticks"][0]["outcome"], "created", "{view:#}");
    assert_eq!(
        view["ticks"][0]["tick"],
        json!(START + 90_000),
        "the queued tick, late"
    );
    assert_eq!(jobs(&app).await.len(), 2);
}

#[tokio::test]
async fn a_schedule_runs_now_on_request_without_a_tick() {
    let clock = ManualClock::new(START);
    let app = app(&clock, None).await;
    let mut spec = noop_schedule("on-demand");
    spec["paused"] = json!(true);
    create(&app, &spec).await;

    let run = |key: Option<&'static str>| {
        let mut request = app.request(Method::POST, "/v1/schedules/on-demand/run");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        app.send(request)
    };
    let first = run(Some("k1")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    let id = first.json()["id"].as_str().expect("job id").to_owned();
    app.wait_for_status(&id, &["succeeded"], WAIT).await;
    let again = run(Some("k1")).await;
    assert_eq!(again.status, StatusCode::OK, "a replay: {}", again.text);
    assert_eq!(again.json()["id"], id.as_str());
    let other = run(None).await;
    assert_eq!(other.status, StatusCode::ACCEPTED, "{}", other.text);
    assert_ne!(other.json()["id"], id.as_str());

    // Not ticks: the paused schedule still has no next run, no last tick and no ticks.
    let view = schedule(&app, "on-demand").await;
    assert_eq!(view["next_runs"], json!([]), "{view:#}");
    assert_eq!(view["last_tick"], Value::Null, "{view:#}");
    assert_eq!(view["ticks"], json!([]), "{view:#}");
    assert_eq!(jobs(&app).await.len(), 2);
    assert_problem(&run_missing(&app).await, 404);
}

async fn run_missing(app: &TestApp) -> crate::support::harness::Answer {
    app.send(app.request(Method::POST, "/v1/schedules/nope/run"))
        .await
}

/// `gleaner schedules …` against a real `gleaner serve`, finding it and its token through the
/// data directory as an operator's shell would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedules_cli_lists_runs_pauses_and_resumes() {
    use crate::support::process::{GleanerProcess, client};

    let dir = tempfile::tempdir().expect("temp dir");
    let process = GleanerProcess::start(dir.path(), &[]).await;
    let created = client()
        .post(process.endpoint().url("/v1/schedules"))
        .bearer_auth(process.token())
        .json(
            &json!({"name": "nightly", "cron": "0 3 * * *", "paused": true,
                      "job": {"sources": [{"connector": "noop"}]}}),
        )
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), StatusCode::CREATED);
    let cli = |args: &[&str]| {
        let output = process.run_command(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stdout, stderr)
    };

    let (ok, listed, stderr) = cli(&["schedules", "list"]);
    assert!(ok, "{stderr}");
    assert!(listed.starts_with("nightly "), "{listed}");
    assert!(listed.trim_end().ends_with(" paused"), "{listed}");

    let (ok, ran, stderr) = cli(&["schedules", "run", "nightly"]);
    assert!(ok, "{stderr}");
    let job: Value = serde_json::from_str(&ran).expect("the job as JSON");
    assert!(job["id"].is_string(), "{ran}");

    let (ok, resumed, stderr) = cli(&["schedules", "resume", "nightly"]);
    assert!(ok, "{stderr}");
    let resumed: Value = serde_json::from_str(&resumed).expect("JSON");
    assert_eq!(resumed["paused"], false);
    assert_eq!(resumed["next_runs"].as_array().map(Vec::len), Some(5));
    let (ok, paused, stderr) = cli(&["schedules", "pause", "nightly"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&paused).expect("JSON")["paused"],
        true
    );

    let (ok, _, stderr) = cli(&["schedules", "show", "missing"]);
    assert!(!ok);
    assert!(stderr.contains("404"), "{stderr}");
    let (ok, _, stderr) = cli(&["schedules", "run", "../jobs"]);
    assert!(!ok);
    assert!(stderr.contains("not a schedule name"), "{stderr}");
}
