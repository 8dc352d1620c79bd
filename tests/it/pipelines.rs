//! Pipelines end to end (the collection-engine seed): every message stored exactly once
//! through failing stages, bounded memory and backpressure when storage stalls, no deadlock at
//! any worker count, source rate limits and `Retry-After`, dead letters and their replay.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::harness::{TestApp, assert_problem};
use crate::support::pipeline_mocks::{
    MessageSourceMock, MessageSourceOptions, ProcessingMock, StorageMock,
};
use crate::support::pipeline_run::{
    Shape, assert_all_stored_once, assert_counters_add_up, drained, drop_table, seed_pipeline,
    sql_tables, wait_for,
};

async fn view(app: &TestApp, name: &str) -> Value {
    let answer = app.get(&format!("/v1/pipelines/{name}")).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.json()
}

async fn create(app: &TestApp, spec: &Value) -> Value {
    let answer = app.post("/v1/pipelines", spec).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    answer.json()
}

/// Acceptance 1: 10 000 messages over 200 pages, 20 % failures at the source, the processing
/// API and the storage API → every message stored exactly once in every SQL table, at least
/// once in the storage API, and the counters add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_stored_exactly_once_through_failing_stages() {
    let source = MessageSourceMock::start(MessageSourceOptions {
        pages: 200,
        page_size: 50,
        failure_rate: 0.2,
        seed: 11,
        ..MessageSourceOptions::default()
    })
    .await;
    let processing = ProcessingMock::start(0.2, 12).await;
    let storage = StorageMock::start(0.2, 13).await;
    let tables = sql_tables("exactly_once");
    let app = TestApp::start().await;
    let spec = seed_pipeline(
        "seed",
        &source,
        &processing,
        &storage,
        &tables,
        &Shape::default(),
    );
    let started = Instant::now();
    create(&app, &spec).await;
    let done = wait_for(
        Duration::from_secs(240),
        "10 000 messages stored",
        || view(&app, "seed"),
        |view| drained(view, 10_000),
    )
    .await;
    let elapsed = started.elapsed();
    let duplicates = assert_all_stored_once(&source, &storage, &tables, app.dir.path()).await;
    assert_counters_add_up(&done);
    let stages = done["stages"].as_array().expect("stages");
    assert_eq!(stages[0]["counters"]["entered"], 10_000, "{:#}", stages[0]);
    for stage in &stages[1..] {
        assert_eq!(
            stage["counters"]["dead"], 0,
            "nothing dead-lettered: {stage:#}"
        );
        assert_eq!(stage["counters"]["done"], 10_000, "{stage:#}");
    }
    let retried: u64 = stages[1..]
        .iter()
        .map(|stage| stage["counters"]["retried"].as_u64().unwrap_or(0))
        .sum();
    assert!(retried > 1_000, "20 % failures are retried: {retried}");
    assert_eq!(
        done["checkpoint"],
        json!({"cursor": null}),
        "the cursor went through"
    );
    let metrics = app.get("/metrics").await.text;
    for line in [
        "gleaner_pipeline_messages_total{pipeline=\"seed\",stage=\"storage\",outcome=\"done\"} 10000",
        "gleaner_pipeline_messages_total{pipeline=\"seed\",stage=\"processing\",outcome=\"dead\"} 0",
        "gleaner_pipeline_queue_depth{pipeline=\"seed\",stage=\"storage\"} 0",
    ] {
        assert!(metrics.contains(line), "missing {line} in /metrics");
    }
    eprintln!(
        "pipeline: 10000 messages in {elapsed:.1?}, {retried} retries, {} source requests, \
         storage duplicates {duplicates}, tables {:?}",
        source.requests(),
        tables.iter().map(|t| t.kind).collect::<Vec<_>>()
    );
    for table in &tables {
        drop_table(table).await;
    }
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// Acceptance 3: storage stops answering → the source stops fetching within one queue's
/// worth, memory stays bounded; it resumes when storage is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_storage_stops_the_source_within_a_queue_and_resumes() {
    let source = MessageSourceMock::start(MessageSourceOptions {
        pages: 100,
        page_size: 10,
        seed: 21,
        ..MessageSourceOptions::default()
    })
    .await;
    let processing = ProcessingMock::start(0.0, 22).await;
    let storage = StorageMock::start(0.0, 23).await;
    storage.stall(true);
    let app = TestApp::start().await;
    let shape = Shape {
        workers: 4,
        queue_capacity: 50,
        ..Shape::default()
    };
    let mut spec = seed_pipeline("stall", &source, &processing, &storage, &[], &shape);
    spec["sinks"][0]["timeout"] = json!("60s");
    let before = rss_kib();
    create(&app, &spec).await;
    // Fetching stops: the processing queue and the storage queue fill, then nothing moves.
    let mut last = usize::MAX;
    let settled = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pages = source.pages_served();
        if pages == last {
            break;
        }
        last = pages;
        assert!(
            settled.elapsed() < Duration::from_secs(30),
            "the source never stopped"
        );
    }
    let fetched = source.pages_served() * 10;
    let stalled_view = view(&app, "stall").await;
    let depth = |index: usize| stalled_view["stages"][index]["live"]["queue"]["depth"].as_u64();
    // Two queues of 50 and one page in hand at most.
    assert!(
        fetched <= 50 + 50 + 10,
        "fetched {fetched} messages with storage stalled; view {stalled_view:#}"
    );
    // The storage queue is full, or the rest of its room is reserved by the batch the
    // processing stage holds and cannot hand on whole (it takes several messages at once).
    let storage_depth = depth(2).expect("storage queue depth");
    let processing_in_flight = stalled_view["stages"][1]["live"]["in_flight"]
        .as_u64()
        .expect("processing in flight");
    assert!(
        storage_depth <= 50 && storage_depth + processing_in_flight >= 50,
        "the storage queue is not full nor reserved: {stalled_view:#}"
    );
    let during = rss_kib();
    storage.stall(false);
    let done = wait_for(
        Duration::from_secs(60),
        "1000 messages stored after the stall",
        || view(&app, "stall"),
        |view| drained(view, 1_000),
    )
    .await;
    assert_counters_add_up(&done);
    assert_eq!(storage.stored().len(), 1_000);
    eprintln!(
        "stall: fetched {fetched} messages while stalled (bound 110); RSS before {before} KiB, \
         stalled {during} KiB, after {} KiB",
        rss_kib()
    );
}

/// Acceptance 3: no deadlock with any worker count from 1 to 16, on tiny queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_worker_count_deadlocks() {
    let app = TestApp::start().await;
    for workers in [1u32, 2, 3, 5, 8, 16] {
        let source = MessageSourceMock::start(MessageSourceOptions {
            pages: 20,
            page_size: 10,
            failure_rate: 0.1,
            seed: 30 + u64::from(workers),
            ..MessageSourceOptions::default()
        })
        .await;
        let processing = ProcessingMock::start(0.1, 40).await;
        let storage = StorageMock::start(0.1, 50).await;
        let shape = Shape {
            workers,
            queue_capacity: 3,
            ..Shape::default()
        };
        let name = format!("workers-{workers}");
        create(
            &app,
            &seed_pipeline(&name, &source, &processing, &storage, &[], &shape),
        )
        .await;
        let done = wait_for(
            Duration::from_secs(60),
            &format!("{name} drained"),
            || view(&app, &name),
            |view| drained(view, 200),
        )
        .await;
        assert_counters_add_up(&done);
        assert_eq!(storage.stored().len(), 200, "{name}");
        let answer = app
            .send(app.request(reqwest::Method::DELETE, &format!("/v1/pipelines/{name}")))
            .await;
        assert_eq!(answer.status, 204);
    }
}

/// Acceptance 4: a source limit of 5 requests per second is never exceeded at the source, and
/// a 429's `Retry-After` is waited out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_rate_limit_and_retry_after_are_honoured() {
    let source = MessageSourceMock::start(MessageSourceOptions {
        pages: 20,
        page_size: 5,
        seed: 61,
        rate_limit_429: Some((7, 1)),
        ..MessageSourceOptions::default()
    })
    .await;
    let processing = ProcessingMock::start(0.0, 62).await;
    let storage = StorageMock::start(0.0, 63).await;
    let app = TestApp::start().await;
    let mut spec = seed_pipeline(
        "limited",
        &source,
        &processing,
        &storage,
        &[],
        &Shape::default(),
    );
    spec["source"]["rate_limit"] = json!([{"limit": 5, "per": "1s"}]);
    create(&app, &spec).await;
    wait_for(
        Duration::from_secs(60),
        "100 messages stored",
        || view(&app, "limited"),
        |view| drained(view, 100),
    )
    .await;
    let times = source.request_times();
    let paths = source.paths();
    assert!(
        times.len() >= 23,
        "20 pages and 3 refusals: {}",
        times.len()
    );
    for (index, start) in times.iter().enumerate() {
        let inside = times[index..]
            .iter()
            .take_while(|at| at.duration_since(*start) < Duration::from_secs(1))
            .count();
        assert!(
            inside <= 5,
            "{inside} requests within 1 s from request {index}"
        );
    }
    // Every 7th request was refused with `Retry-After: 1`: the next one waited a second.
    for refused in (7..times.len()).step_by(7) {
        if let Some(next) = times.get(refused) {
            let gap = next.duration_since(times[refused - 1]);
            assert!(
                gap >= Duration::from_millis(990),
                "request {} came {gap:?} after the 429 ({})",
                refused + 1,
                paths[refused - 1]
            );
        }
    }
    let limited = view(&app, "limited").await;
    assert!(
        limited["source"]["rate_limit"]["waits"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "the waits are shown: {limited:#}"
    );
}

/// Acceptance 5: messages that fail every attempt are dead-lettered with their stage, reason
/// and response, and replay successfully once the stage recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_messages_are_dead_lettered_and_replay_after_recovery() {
    let source = MessageSourceMock::start(MessageSourceOptions {
        pages: 4,
        page_size: 10,
        seed: 71,
        ..MessageSourceOptions::default()
    })
    .await;
    let processing = ProcessingMock::start(1.0, 72).await;
    let storage = StorageMock::start(0.0, 73).await;
    let app = TestApp::start().await;
    let shape = Shape {
        max_attempts: 3,
        ..Shape::default()
    };
    create(
        &app,
        &seed_pipeline("poison", &source, &processing, &storage, &[], &shape),
    )
    .await;
    let failed = wait_for(
        Duration::from_secs(60),
        "40 messages dead-lettered",
        || view(&app, "poison"),
        |view| view["stages"][1]["counters"]["dead"] == 40,
    )
    .await;
    assert_eq!(
        failed["stages"][1]["counters"]["retried"], 80,
        "3 attempts each"
    );
    assert_eq!(
        processing.received(),
        120,
        "3 attempts each, none immediate"
    );
    let letters = app.get("/v1/pipelines/poison/dead-letters").await.json();
    let letters = letters["dead_letters"].as_array().expect("list").clone();
    assert_eq!(letters.len(), 40);
    let first = &letters[0];
    assert_eq!(first["stage_name"], "processing");
    assert_eq!(first["attempts"], 3);
    assert_eq!(first["http_status"], 500);
    assert!(
        first["error"].as_str().expect("error").contains("500"),
        "{first}"
    );
    assert!(
        first["response"]
            .as_str()
            .expect("response")
            .contains("injected"),
        "{first}"
    );
    assert!(first["payload"]["message"].is_string(), "{first}");

    processing.set_failure_rate(0.0);
    let replayed = app
        .post("/v1/pipelines/poison/dead-letters/replay", &json!({}))
        .await;
    assert_eq!(replayed.status, 200, "{}", replayed.text);
    assert_eq!(replayed.json()["replayed"], 40);
    let done = wait_for(
        Duration::from_secs(60),
        "40 replayed messages stored",
        || view(&app, "poison"),
        |view| view["stages"][2]["counters"]["done"] == 40,
    )
    .await;
    assert_eq!(storage.stored().len(), 40);
    assert_counters_add_up(&done);
    let pending = app.get("/v1/pipelines/poison/dead-letters").await.json();
    assert_eq!(
        pending["dead_letters"],
        json!([]),
        "nothing pending after replay"
    );
}

/// Bad definitions are 4xx problems naming the fault; nothing is stored.
#[tokio::test]
async fn bad_definitions_are_refused_with_problems() {
    let app = TestApp::builder().without_engine().start().await;
    let base = json!({
        "name": "p",
        "source": {"connector": "message-source",
                   "settings": {"base_url": "http://127.0.0.1:9", "token": "t"}},
        "sinks": [{"type": "http", "url": "http://127.0.0.1:9/message"}],
    });
    assert_eq!(app.post("/v1/pipelines", &base).await.status, 201);
    for (change, status, needle) in [
        (json!({"name": "p"}), 409, "exists"),
        (json!({"name": "bad name!"}), 422, "name"),
        (json!({"source": {"connector": "nope"}}), 422, "nope"),
        (
            json!({"source": {"connector": "message-source", "settings": {}}}),
            422,
            "source",
        ),
        (json!({"sinks": []}), 422, "sinks"),
        (
            json!({"sinks": [{"type": "http", "url": "ftp://x/"}]}),
            422,
            "stage 1",
        ),
        (
            json!({"sinks": [{"type": "http", "url": "http://127.0.0.1:9/", "wrokers": 2}]}),
            422,
            "wrokers",
        ),
        (
            json!({"sinks": [{"type": "http", "url": "http://127.0.0.1:9/", "workers": 0}]}),
            422,
            "workers",
        ),
        (
            json!({"processors": [{"type": "jq", "filter": ".["}]}),
            422,
            "stage 1",
        ),
        (
            json!({"sinks": [{"type": "sql", "url": "sqlite://x.db", "table": "t; DROP TABLE x",
                            "key": ["id"], "columns": [{"name": "id"}]}]}),
            422,
            "table",
        ),
        (json!({"queue_capacity": 0}), 422, "queue_capacity"),
        (
            json!({"source": {"connector": "message-source",
                           "settings": {"base_url": "http://127.0.0.1:9", "token": "t"},
                           "rate_limit": [{"limit": 0, "per": "1s"}]}}),
            422,
            "limit",
        ),
    ] {
        let mut spec = base.clone();
        spec["name"] = json!("q");
        for (key, value) in change.as_object().expect("object") {
            spec[key] = value.clone();
        }
        let answer = app.post("/v1/pipelines", &spec).await;
        let problem = assert_problem(&answer, status);
        let detail = problem["detail"].as_str().unwrap_or_default().to_owned();
        assert!(detail.contains(needle), "{change}: {detail}");
    }
    let list = app.get("/v1/pipelines").await.json();
    assert_eq!(list["pipelines"].as_array().expect("list").len(), 1);
    assert_problem(&app.get("/v1/pipelines/missing").await, 404);
    let patched = app
        .send(
            app.request(reqwest::Method::PATCH, "/v1/pipelines/p")
                .json(&json!({"queue_capacity": 7, "source": {"settings": {"token": "u"}}})),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    let patched = patched.json();
    assert_eq!(patched["spec"]["queue_capacity"], 7);
    assert_ne!(
        patched["spec"]["source"]["settings"]["token"], "u",
        "secrets are redacted"
    );
    let paused = app.post("/v1/pipelines/p/pause", &json!({})).await;
    assert_eq!(paused.json()["state"], "paused");
}

/// A pipeline's processor stages take the row processors of jobs: `drop_rows`, `map` through a
/// lookup table put over the API, `rename`; a `map` whose table does not exist dead-letters
/// each message with a message naming the table, and a row stage missing its fields is a 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_processors_and_lookup_tables_shape_each_message() {
    let source = MessageSourceMock::start(MessageSourceOptions {
        pages: 3,
        page_size: 10,
        seed: 61,
        ..MessageSourceOptions::default()
    })
    .await;
    let storage = StorageMock::start(0.0, 62).await;
    let app = TestApp::start().await;
    let names: serde_json::Map<String, Value> = (0..6)
        .map(|n| (format!("author-{n}"), json!(format!("Writer {n}"))))
        .collect();
    let put = app
        .send(
            app.request(reqwest::Method::PUT, "/v1/lookups/authors")
                .json(&json!({"entries": names})),
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text);
    let pipeline = |name: &str, source: &MessageSourceMock, table: &str| {
        json!({
            "name": name,
            "source": {
                "connector": "message-source",
                "settings": {"base_url": source.url(), "token": source.token()},
                "idle_interval": "50ms",
            },
            "processors": [
                {"type": "drop_rows", "where": {"column": "author", "equals": "author-6"}},
                {"type": "map", "name": "authors", "column": "author", "table": table,
                 "into": "author_name"},
                {"type": "rename", "columns": {"title": "subject"}},
            ],
            "sinks": [{"type": "http", "name": "storage",
                       "url": format!("{}/message", storage.url())}],
            "retry": {"max_attempts": 2, "backoff": "10ms", "max_backoff": "10ms"},
        })
    };
    let messages = source.all_messages();
    let kept: Vec<&Value> = messages
        .iter()
        .filter(|message| message["author"] != "author-6")
        .collect();
    assert!(kept.len() < messages.len(), "some messages are dropped");
    create(&app, &pipeline("shaped", &source, "authors")).await;
    let done = wait_for(
        Duration::from_secs(60),
        "every kept message stored",
        || view(&app, "shaped"),
        |view| drained(view, kept.len() as u64),
    )
    .await;
    assert_eq!(
        done["stages"][1]["counters"]["entered"],
        messages.len(),
        "{done:#}"
    );
    let stored = storage.stored_messages();
    assert_eq!(
        stored.len(),
        kept.len(),
        "only the kept messages reach the sink"
    );
    for message in &kept {
        let id = message["id"].as_str().expect("id");
        let got = &stored[id];
        let author = message["author"].as_str().expect("author");
        let number = author.trim_start_matches("author-");
        assert_eq!(got["author_name"], format!("Writer {number}"), "{got:#}");
        assert_eq!(got["subject"], message["title"], "{got:#}");
        assert!(got.get("title").is_none(), "renamed, not copied: {got:#}");
    }

    // The same stages over a table nobody filled: each message is dead-lettered at `map`.
    let again = MessageSourceMock::start(MessageSourceOptions {
        pages: 3,
        page_size: 10,
        seed: 61,
        ..MessageSourceOptions::default()
    })
    .await;
    create(&app, &pipeline("unmapped", &again, "nobody")).await;
    let stuck = wait_for(
        Duration::from_secs(60),
        "every message dead-lettered at the map stage",
        || view(&app, "unmapped"),
        |view| view["stages"][2]["counters"]["dead"].as_u64() == Some(kept.len() as u64),
    )
    .await;
    assert_eq!(stuck["stages"][4]["counters"]["done"], 0, "{stuck:#}");
    let dead = app.get("/v1/pipelines/unmapped/dead-letters").await;
    assert_eq!(dead.status, 200, "{}", dead.text);
    assert!(
        dead.text.contains("nobody"),
        "the error names the table: {}",
        dead.text
    );

    let mut bad = pipeline("bad", &again, "authors");
    bad["processors"] = json!([{"type": "rename"}]);
    let refused = app.post("/v1/pipelines", &bad).await;
    assert_problem(&refused, 422);
}

/// `gleaner pipeline create | list | show | dead-letters | replay | pause | stop | start |
/// delete` against a real `gleaner serve`: a pipeline whose processor refuses everything
/// dead-letters its messages, the CLI prints them as NDJSON, and after the processor recovers
/// a replay stores them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_cli_creates_lists_replays_and_deletes() {
    use crate::support::process::GleanerProcess;

    let source = MessageSourceMock::start(MessageSourceOptions {
        pages: 2,
        page_size: 5,
        seed: 71,
        ..MessageSourceOptions::default()
    })
    .await;
    let processing = ProcessingMock::start(1.0, 72).await;
    let storage = StorageMock::start(0.0, 73).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let process = GleanerProcess::start(dir.path(), &[]).await;
    let mut spec = seed_pipeline(
        "cli",
        &source,
        &processing,
        &storage,
        &[],
        &Shape {
            max_attempts: 1,
            ..Shape::default()
        },
    );
    spec["retry"]["backoff"] = json!("10ms");
    let spec_file = dir.path().join("cli-pipeline.json");
    std::fs::write(&spec_file, spec.to_string()).expect("write spec");
    let cli = |args: &[&str]| {
        let output = process.run_command(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stdout, stderr)
    };
    let show = || {
        let (ok, shown, stderr) = cli(&["pipeline", "show", "cli"]);
        assert!(ok, "{stderr}");
        serde_json::from_str::<Value>(&shown).expect("the pipeline as JSON")
    };

    let (ok, created, stderr) = cli(&["pipeline", "create", spec_file.to_str().expect("path")]);
    assert!(ok, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&created).expect("JSON")["name"],
        "cli"
    );
    // The worker takes the pipeline's lease at its next pass, at once after the create.
    let listed_at = Instant::now();
    let listed = loop {
        let (ok, listed, stderr) = cli(&["pipeline", "list"]);
        assert!(ok, "{stderr}");
        if listed.contains(" runs in pipelines-") || listed_at.elapsed() > Duration::from_secs(10) {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(listed.starts_with("cli "), "{listed}");
    assert!(listed.contains(" running "), "{listed}");
    assert!(
        listed.contains(" runs in pipelines-"),
        "the lease holder: {listed}"
    );

    let dead = wait_for(
        Duration::from_secs(60),
        "every message dead-lettered at the processor",
        || async { show() },
        |view| view["stages"][1]["counters"]["dead"] == 10,
    )
    .await;
    assert_eq!(dead["stages"][2]["counters"]["done"], 0, "{dead:#}");
    let (ok, letters, stderr) = cli(&["pipeline", "dead-letters", "cli"]);
    assert!(ok, "{stderr}");
    let letters: Vec<Value> = letters
        .lines()
        .map(|line| serde_json::from_str(line).expect("one dead letter per line"))
        .collect();
    assert_eq!(letters.len(), 10, "{letters:#?}");
    assert!(
        letters
            .iter()
            .all(|letter| letter["stage_name"] == "processing")
    );

    processing.set_failure_rate(0.0);
    let (ok, replayed, stderr) = cli(&["pipeline", "replay", "cli"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&replayed).expect("JSON")["replayed"],
        10
    );
    wait_for(
        Duration::from_secs(60),
        "every replayed message stored",
        || async { show() },
        |view| view["stages"][2]["counters"]["done"] == 10,
    )
    .await;
    assert_eq!(storage.stored().len(), 10);
    let (ok, pending, stderr) = cli(&["pipeline", "dead-letters", "cli"]);
    assert!(ok, "{stderr}");
    assert_eq!(pending.trim(), "", "replayed letters are no longer pending");
    let (ok, every, _) = cli(&["pipeline", "dead-letters", "cli", "--all"]);
    assert!(ok);
    assert_eq!(every.lines().count(), 10);

    for (action, state) in [
        ("pause", "paused"),
        ("stop", "stopped"),
        ("start", "running"),
    ] {
        let (ok, answer, stderr) = cli(&["pipeline", action, "cli"]);
        assert!(ok, "{action}: {stderr}");
        assert_eq!(
            serde_json::from_str::<Value>(&answer).expect("JSON")["state"],
            state,
            "{answer}"
        );
    }
    let (ok, _, stderr) = cli(&["pipeline", "delete", "cli"]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = cli(&["pipeline", "show", "cli"]);
    assert!(!ok);
    assert!(stderr.contains("404"), "{stderr}");
    let (ok, _, stderr) = cli(&["pipeline", "start", "../jobs"]);
    assert!(!ok);
    assert!(stderr.contains("not a pipeline name"), "{stderr}");
}
