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
    let mut spec = seed_pipeline(
        "crash",
        &source,
        &processing,
        &storage,
        &tables,
        &Shape::default(),
    );
    // Twenty pages a second at most: the run lasts long enough for every kill to land in it.
    spec["source"]["rate_limit"] = serde_json::json!([{"limit": 20, "per": "1s"}]);
    let created = http
        .post(process.endpoint().url("/v1/pipelines"))
        .bearer_auth(&token)
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
