//! Acceptance 2 of pipelines: the real binary is SIGKILLed ten times while it moves 10 000
//! messages through failing stages; afterwards every message is in every SQL table exactly
//! once, the storage API has each at least once (its duplicates are reported), the source
//! resumed from its stored cursor (no page fetched again beyond one per kill) and the counters
//! add up.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::crash::{DataDir, get_json};
use crate::support::pipeline_mocks::{
    MessageSourceMock, MessageSourceOptions, ProcessingMock, StorageMock,
};
use crate::support::pipeline_run::{
    Shape, assert_all_stored_once, assert_counters_add_up, drained, drop_table, seed_pipeline,
    sql_tables,
};
use crate::support::process::{GleanerProcess, client};

const KILLS: u32 = 10;
const MESSAGES: u64 = 10_000;

/// Creates the pipeline `spec` on `process`, its source held to `pages_per_second`.
async fn create_paced(
    http: &reqwest::Client,
    process: &GleanerProcess,
    token: &str,
    mut spec: serde_json::Value,
    pages_per_second: u32,
) {
    spec["source"]["rate_limit"] = serde_json::json!([{"limit": pages_per_second, "per": "1s"}]);
    let created = http
        .post(process.endpoint().url("/v1/pipelines"))
        .bearer_auth(token)
        .json(&spec)
        .send()
        .await
        .expect("create pipeline");
    assert_eq!(
        created.status(),
        201,
        "{}",
        created.text().await.unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_pipeline_run_loses_and_doubles_nothing() {
    let source = MessageSourceMock::start(MessageSourceOptions {
        pages: 200,
        page_size: 50,
        failure_rate: 0.2,
        seed: 81,
        ..MessageSourceOptions::default()
    })
    .await;
    let processing = ProcessingMock::start(0.2, 82).await;
    let storage = StorageMock::start(0.2, 83).await;
    let tables = sql_tables("crash");
    let data = DataDir::new("kill_9_during_a_pipeline_run_loses_and_doubles_nothing");
    let mut process = GleanerProcess::start(data.path(), &[]).await;
    let http = client();
    let token = process.token().to_owned();
    let spec = seed_pipeline(
        "crash",
        &source,
        &processing,
        &storage,
        &tables,
        &Shape::default(),
    );
    // Twenty pages a second at most: the run lasts long enough for every kill to land in it.
    create_paced(&http, &process, &token, spec, 20).await;

    let mut rng = StdRng::seed_from_u64(84);
    let mut kills_during_run = 0;
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..=900))).await;
        let view = get_json(&http, &process.endpoint(), &token, "/v1/pipelines/crash").await;
        if !drained(&view, MESSAGES) {
            kills_during_run += 1;
        }
        process.restart().await;
    }
    let last_restart = Instant::now();
    let endpoint = process.endpoint();
    let done = loop {
        process.assert_running();
        let view = get_json(&http, &endpoint, &token, "/v1/pipelines/crash").await;
        if drained(&view, MESSAGES) {
            break view;
        }
        assert!(
            last_restart.elapsed() < Duration::from_secs(180),
            "not drained 180 s after the last kill: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        kills_during_run >= KILLS - 1,
        "only {kills_during_run} kills landed during the run"
    );
    let duplicates = assert_all_stored_once(&source, &storage, &tables, data.path()).await;
    assert_counters_add_up(&done);
    for stage in done["stages"].as_array().expect("stages").iter().skip(1) {
        assert_eq!(stage["counters"]["dead"], 0, "{stage:#}");
    }
    let pages = source.pages_served();
    assert!(
        pages <= 200 + KILLS as usize,
        "{pages} pages served for 200: the cursor was not resumed"
    );
    eprintln!(
        "pipeline crash: {KILLS} kills ({kills_during_run} during the run), {pages} pages \
         served for 200, storage API duplicates {duplicates} of {MESSAGES}, SQL tables {:?} \
         exact",
        tables.iter().map(|t| t.kind).collect::<Vec<_>>()
    );
    for table in &tables {
        drop_table(table).await;
    }
}

/// Two worker processes on one data directory: the pipeline runs in exactly one of them (the
/// holder of its lease); SIGKILL that one and the other takes it over once the lease expires
/// (2 s here), resuming from the stored cursor, so every message is stored and no page is
/// fetched twice but the one in flight at the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_runs_in_one_process_and_another_takes_it_over_when_it_dies() {
    const PAGES: usize = 60;
    const PAGE_SIZE: usize = 20;
    let source = MessageSourceMock::start(MessageSourceOptions {
        pages: PAGES,
        page_size: PAGE_SIZE,
        seed: 91,
        ..MessageSourceOptions::default()
    })
    .await;
    let processing = ProcessingMock::start(0.0, 92).await;
    let storage = StorageMock::start(0.0, 93).await;
    let tables = sql_tables("takeover");
    let data =
        DataDir::new("a_pipeline_runs_in_one_process_and_another_takes_it_over_when_it_dies");
    let mut first = GleanerProcess::start(data.path(), &[]).await;
    let mut second = GleanerProcess::start(data.path(), &[]).await;
    let http = client();
    let token = first.token().to_owned();
    let spec = seed_pipeline(
        "takeover",
        &source,
        &processing,
        &storage,
        &tables,
        &Shape::default(),
    );
    // Ten pages a second: the run lasts about six seconds, long enough to kill its runner.
    create_paced(&http, &first, &token, spec, 10).await;

    // Which process runs it: `active` is true only where its stages run.
    let active = |view: &serde_json::Value| view["active"].as_bool() == Some(true);
    let started = Instant::now();
    let mut runner = None;
    let mut both = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let a = get_json(&http, &first.endpoint(), &token, "/v1/pipelines/takeover").await;
        let b = get_json(&http, &second.endpoint(), &token, "/v1/pipelines/takeover").await;
        if active(&a) && active(&b) {
            both += 1;
        }
        runner = match (active(&a), active(&b)) {
            (true, false) => Some(0),
            (false, true) => Some(1),
            _ => runner,
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(both, 0, "the pipeline ran in both processes at once");
    let runner = runner.expect("neither process runs the pipeline");
    let served_before_kill = source.pages_served();
    assert!(
        served_before_kill < PAGES,
        "the run ended before the kill ({served_before_kill} pages)"
    );
    let view = get_json(&http, &first.endpoint(), &token, "/v1/pipelines/takeover").await;
    let owner = view["runner"]["owner"].clone();
    assert!(owner.is_string(), "the lease holder is shown: {view:#}");
    let (dead, survivor) = if runner == 0 {
        (&mut first, &mut second)
    } else {
        (&mut second, &mut first)
    };
    dead.kill_9();

    let killed_at = Instant::now();
    let done = loop {
        survivor.assert_running();
        let view = get_json(
            &http,
            &survivor.endpoint(),
            &token,
            "/v1/pipelines/takeover",
        )
        .await;
        if drained(&view, (PAGES * PAGE_SIZE) as u64) {
            break view;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "not drained 60 s after its runner was killed: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done["active"], true, "{done:#}");
    assert_ne!(
        done["runner"]["owner"], owner,
        "the survivor holds the lease: {done:#}"
    );
    assert_all_stored_once(&source, &storage, &tables, data.path()).await;
    assert_counters_add_up(&done);
    let pages = source.pages_served();
    assert!(
        pages <= PAGES + 1,
        "{pages} pages served for {PAGES}: both processes collected, or the cursor was lost"
    );
    for table in &tables {
        drop_table(table).await;
    }
}
