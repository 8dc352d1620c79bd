//! The crash test: the real binary is SIGKILLed again and again while clients create jobs and
//! workers collect them from a flaky source; no acknowledged job may be lost, duplicated or
//! collected twice, and the store must pass its integrity check afterwards.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::support::crash::{
    Acknowledged, DataDir, get_json, post_until_acknowledged, unfinished, wait_until_settled,
};
use crate::support::flaky_source::{FlakyConfig, FlakySource};
use crate::support::process::{Endpoint, GleanerProcess, client};

/// Acceptance figures: at least this many jobs and kills.
const JOBS: usize = 2_000;
const MIN_KILLS: u32 = 10;
/// Kills that happen after every job was acknowledged, while the workers are busy.
const MIN_KILLS_AFTER_CREATION: u32 = 10;
/// A cap on kills, so the test's time stays bounded on a slow machine.
const MAX_KILLS: u32 = 120;
/// Concurrent creating clients.
const CREATORS: usize = 8;
/// Random pause between two kills (after the restarted process answered `/healthz`).
const KILL_DELAY_MS: std::ops::RangeInclusive<u64> = 100..=800;
/// Bounds of the phases.
const CREATION_TIMEOUT: Duration = Duration::from_secs(300);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);
/// Fewer steps in flight than the default 256: a kill then throws away less work, and the API
/// keeps its share of the two cores while workers compile jq filters.
const ENGINE_ENV: &[(&str, &str)] = &[
    ("GLEANER_ENGINE__CONCURRENCY", "16"),
    ("GLEANER_ENGINE__CLAIM_BATCH", "32"),
];

fn seed() -> u64 {
    std::env::var("CRASH_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(0x6c65_616e_6572)
}

fn job_key(index: usize) -> String {
    format!("job-{index:05}")
}

fn job_spec(source: &FlakySource, key: &str) -> Value {
    json!({
        "sources": [{
            "connector": "http",
            "settings": {
                "url": source.url(key),
                "record_path": ".items[]",
                "pagination": {"type": "cursor", "cursor_path": ".next", "param": "cursor"},
            },
        }],
    })
}

/// Every job the server lists, newest first.
async fn list_all_jobs(http: &reqwest::Client, endpoint: &Endpoint, token: &str) -> Vec<Value> {
    let mut jobs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/jobs?limit=500&cursor={cursor}"),
            None => "/v1/jobs?limit=500".to_owned(),
        };
        let page = get_json(http, endpoint, token, &path).await;
        jobs.extend(page["jobs"].as_array().expect("jobs array").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return jobs,
        }
    }
}

/// What one job's check found.
struct JobCheck {
    attempts: u64,
}

/// Checks one acknowledged job: it exists, succeeded, and holds exactly its expected records,
/// each source page stored once.
async fn check_job(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    token: &str,
    source: &FlakySource,
    key: &str,
    id: &str,
) -> JobCheck {
    let job = get_json(http, endpoint, token, &format!("/v1/jobs/{id}")).await;
    assert_eq!(job["id"], id, "{key}: wrong job answered");
    assert_eq!(
        job["status"], "succeeded",
        "{key} ({id}) did not succeed: {job:#}"
    );
    let config = source.config();
    let steps = job["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 1, "{key}: one collect step expected: {job:#}");
    let step = &steps[0];
    assert_eq!(step["state"], "succeeded", "{key}: {job:#}");
    assert_eq!(step["pages"], config.pages, "{key}: pages: {job:#}");
    assert_eq!(
        step["records"],
        config.pages * config.per_page,
        "{key}: records: {job:#}"
    );
    let mut attempts = 0;
    for step in steps {
        attempts += step["attempts"].as_u64().expect("attempts");
    }
    // Attempt numbers never repeat, even across kills.
    let log = job["attempts"].as_array().expect("attempt log");
    let mut seen = HashSet::new();
    for attempt in log {
        let pair = format!("{}/{}", attempt["step_id"], attempt["attempt"]);
        assert!(seen.insert(pair), "{key}: attempt logged twice: {job:#}");
    }

    let records = get_json(
        http,
        endpoint,
        token,
        &format!("/v1/jobs/{id}/records?limit=1000"),
    )
    .await;
    assert!(records["next_cursor"].is_null(), "{key}: {records:#}");
    let records = records["records"].as_array().expect("records");
    let expected = source.expected(key);
    assert_eq!(
        records.len(),
        expected.len(),
        "{key} ({id}): wrong record count: {records:#?}"
    );
    let mut by_source_page: HashMap<u64, u64> = HashMap::new();
    let mut stored_pages = HashSet::new();
    let mut seen = HashSet::new();
    for record in records {
        let data = &record["data"];
        assert!(expected.contains(data), "{key}: unexpected record {record}");
        assert!(seen.insert(data.to_string()), "{key}: duplicate {record}");
        let source_page = data["page"].as_u64().expect("source page");
        let stored_page = record["page"].as_u64().expect("stored page");
        // Every record of one source page was stored with one page write, and no two source
        // pages share a stored page.
        let first = *by_source_page.entry(source_page).or_insert(stored_page);
        assert_eq!(first, stored_page, "{key}: page split: {records:#?}");
        stored_pages.insert(stored_page);
    }
    assert_eq!(
        stored_pages.len(),
        by_source_page.len(),
        "{key}: pages merged: {records:#?}"
    );
    JobCheck { attempts }
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_test_sigkill_loses_no_acknowledged_job() {
    let started = Instant::now();
    let seed = seed();
    let source = Arc::new(
        FlakySource::start(FlakyConfig {
            seed,
            ..FlakyConfig::default()
        })
        .await,
    );
    let dir = DataDir::new("crash test");
    let mut process = GleanerProcess::start(&dir.path().join("data"), ENGINE_ENV).await;
    let endpoint = process.endpoint();
    let token = process.token().to_owned();
    let http = client();

    // Creating clients: take the next logical job, POST it until acknowledged.
    let acknowledged = Arc::new(Acknowledged::default());
    let next_job = Arc::new(AtomicUsize::new(0));
    let creation_done = Arc::new(AtomicBool::new(false));
    let creators_left = Arc::new(AtomicUsize::new(CREATORS));
    let mut creators = Vec::new();
    for _ in 0..CREATORS {
        let (http, endpoint, token) = (http.clone(), endpoint.clone(), token.clone());
        let (source, acknowledged) = (source.clone(), acknowledged.clone());
        let (next_job, creation_done, left) = (
            next_job.clone(),
            creation_done.clone(),
            creators_left.clone(),
        );
        creators.push(tokio::spawn(async move {
            loop {
                let index = next_job.fetch_add(1, Ordering::Relaxed);
                if index >= JOBS {
                    break;
                }
                let key = job_key(index);
                let spec = job_spec(&source, &key);
                let answer = post_until_acknowledged(
                    &http,
                    &endpoint,
                    &token,
                    "/v1/jobs",
                    &format!("crash-{key}"),
                    &spec,
                    &acknowledged,
                )
                .await;
                let id = answer["id"].as_str().expect("id").to_owned();
                let previous = acknowledged.ids.lock().await.insert(index, id);
                assert!(previous.is_none(), "{key} acknowledged twice");
            }
            if left.fetch_sub(1, Ordering::AcqRel) == 1 {
                creation_done.store(true, Ordering::Release);
            }
        }));
    }

    // The killer: SIGKILL at random moments, restart on the same data directory each time.
    // Kills go on while jobs are being created (lost answers, idempotent retries) and then
    // while they run (pages in flight), up to a cap that bounds the test's time.
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6b69_6c6c);
    let mut kills = 0u32;
    let mut kills_after_creation = 0u32;
    let mut acknowledged_at_kill = Vec::new();
    let mut restart_time = Duration::ZERO;
    let mut creation_finished_after = None;
    while kills < MAX_KILLS {
        let created = creation_done.load(Ordering::Acquire);
        if created && creation_finished_after.is_none() {
            creation_finished_after = Some(started.elapsed());
        }
        if kills >= MIN_KILLS && kills_after_creation >= MIN_KILLS_AFTER_CREATION {
            break;
        }
        if created && kills >= MIN_KILLS && unfinished(&http, &endpoint, &token).await == Some(0) {
            // Nothing left to interrupt.
            break;
        }
        let delay = Duration::from_millis(rng.random_range(KILL_DELAY_MS));
        tokio::time::sleep(delay).await;
        process.assert_running();
        process.kill_9();
        kills += 1;
        if created {
            kills_after_creation += 1;
        }
        acknowledged_at_kill.push(acknowledged.ids.lock().await.len());
        let restarting = Instant::now();
        process.restart().await;
        restart_time += restarting.elapsed();
    }
    let last_restart = Instant::now();
    for creator in creators {
        let left = CREATION_TIMEOUT.saturating_sub(started.elapsed());
        tokio::time::timeout(left, creator)
            .await
            .unwrap_or_else(|_| {
                panic!("creation did not finish within {CREATION_TIMEOUT:?} of the start")
            })
            .expect("creator task");
    }
    let creation_finished_after = creation_finished_after.unwrap_or_else(|| started.elapsed());

    // Every acknowledged job reaches a terminal status, without further kills.
    wait_until_settled(
        &mut process,
        &http,
        &token,
        last_restart,
        SETTLE_TIMEOUT,
        Duration::from_millis(250),
    )
    .await;
    let settled_after = started.elapsed();

    let ids = acknowledged.ids.lock().await.clone();
    assert_eq!(ids.len(), JOBS, "every logical job was acknowledged");

    // No idempotency key produced two jobs, and no job appeared that nobody acknowledged.
    let listed = list_all_jobs(&http, &endpoint, &token).await;
    let mut by_url: HashMap<String, Vec<String>> = HashMap::new();
    for job in &listed {
        let url = job["spec"]["sources"][0]["settings"]["url"]
            .as_str()
            .expect("source url")
            .to_owned();
        let id = job["id"].as_str().expect("id").to_owned();
        by_url.entry(url).or_default().push(id);
    }
    let duplicated: Vec<_> = by_url.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        duplicated.is_empty(),
        "{} logical jobs were stored more than once: {:?}",
        duplicated.len(),
        duplicated.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(
        listed.len(),
        JOBS,
        "the server lists exactly the jobs created"
    );
    for (index, id) in &ids {
        let url = source.url(&job_key(*index));
        assert_eq!(
            by_url.get(&url).map(Vec::as_slice),
            Some(std::slice::from_ref(id)),
            "{url}: the listed job is not the acknowledged one"
        );
    }

    // Each acknowledged job exists, succeeded, and holds exactly its records.
    let checks: Vec<JobCheck> = futures::stream::iter(ids.iter())
        .map(|(index, id)| {
            let (http, endpoint, token, source) = (&http, &endpoint, &token, &source);
            async move { check_job(http, endpoint, token, source, &job_key(*index), id).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert_eq!(checks.len(), JOBS, "every acknowledged job was checked");
    let attempts: u64 = checks.iter().map(|check| check.attempts).sum();

    // The store is consistent after one more hard kill.
    process.kill_9();
    let output = process.run_command(&["check-store"]);
    assert!(
        output.status.success(),
        "check-store failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let stats = source.stats();
    println!(
        "crash test: seed={seed} jobs={JOBS} kills={kills} (after creation: {kills_after_creation}) starts={} \
         acknowledged at each kill={acknowledged_at_kill:?} created={} replayed={} unanswered={} \
         step attempts={attempts} source calls={} failures={} pages served={} \
         restarts took {:.1?} in total; creation done after {:.1?}, all terminal after {:.1?}, \
         elapsed {:.1?}",
        process.starts(),
        acknowledged.created.load(Ordering::Relaxed),
        acknowledged.replayed.load(Ordering::Relaxed),
        acknowledged.unanswered.load(Ordering::Relaxed),
        stats.calls.load(Ordering::Relaxed),
        stats.failures.load(Ordering::Relaxed),
        stats.pages_served.load(Ordering::Relaxed),
        restart_time,
        creation_finished_after,
        settled_after,
        started.elapsed(),
    );
    assert_eq!(
        stats.bad_requests.load(Ordering::Relaxed),
        0,
        "the connector asked for a page past the last one"
    );
    drop(process);
}
