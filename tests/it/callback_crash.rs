//! The callback crash test (issue 4, acceptance 4): the real binary is SIGKILLed again and
//! again while clients submit datahog jobs on `POST /webhook` and workers collect two flaky
//! providers and deliver signed callbacks to a flaky receiver. No acknowledged job may be lost,
//! no callback may ever leave with missing data, every signature must verify, and a callback
//! re-sent because a kill cut it off after the receiver answered (a duplicate success of one
//! `webhook-id`) may happen for at most 1 % of the jobs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::support::crash::{
    Acknowledged, DataDir, get_json, post_until_acknowledged, unfinished, wait_until_settled,
};
use crate::support::process::{Endpoint, GleanerProcess, client};
use crate::support::providers::{GAS, INTERNET, MockProviders, ProvidersConfig};
use crate::support::receiver::{CallbackReceiver, Delivery, ReceiverConfig};

/// Acceptance figures: this many jobs of `["gas", "internet"]`, and kills (at least 10).
const JOBS: usize = 200;
const KILLS: u32 = 12;
/// Jobs with a duplicated successful callback may be at most this share of all jobs.
const MAX_DUPLICATE_SHARE: f64 = 0.01;
/// Concurrent submitting clients.
const CREATORS: usize = 4;
/// Job `i` is not submitted before `i × PACE` after the start: submissions, collections and
/// deliveries go on at a steady 10 jobs/s through all the kills (instead of all finishing
/// before the second one). A kill duplicates the callbacks answered 2xx but not yet recorded
/// as delivered (a window of a few ms each), so the expected number of duplicates grows with
/// the delivery rate at the kills: about 0.07 per kill at 25 deliveries/s on a 2-core machine.
const PACE: Duration = Duration::from_millis(100);
/// Every provider call takes this long, so each kill also cuts several collections short.
const PROVIDER_LATENCY: Duration = Duration::from_millis(150);
/// The receiver answers this share of callbacks with a 500, so deliveries are retried too.
const RECEIVER_FAILURE_RATE: f64 = 0.1;
/// Bounds of the phases.
const CREATION_TIMEOUT: Duration = Duration::from_secs(45);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The signing key of every callback (`[sinks.callback] secret`).
const SIGNING_KEY: &[u8] = b"gleaner callback crash test signing key!";

/// Provider pace as in the seed, with short retries; callbacks retried quickly and more often
/// than the default 8 times, because a kill mid-delivery also uses up an attempt.
fn process_env(providers: &MockProviders, secret: &str) -> Vec<(String, String)> {
    [
        ("GLEANER_ENGINE__CONCURRENCY", "16"),
        ("GLEANER_ENGINE__CLAIM_BATCH", "32"),
        ("GLEANER_DATAHOG__BASE_URL", providers.base_url().as_str()),
        ("GLEANER_SINKS__CALLBACK__SECRET", secret),
        (
            "GLEANER_SINKS__CALLBACK__SCHEDULE",
            r#"["0s","50ms","100ms","200ms","400ms","800ms","1s","1s","1s","1s","1s","1s"]"#,
        ),
        ("GLEANER_SINKS__CALLBACK__TIMEOUT", "5s"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect()
}

/// The seed of the mocks and the killer; `CALLBACK_CRASH_SEED` replays a run (not a
/// `GLEANER_*` name: the child process would refuse it as an unknown setting).
fn seed() -> u64 {
    std::env::var("CALLBACK_CRASH_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(0x6361_6c6c_6261_636b)
}

/// Each job has its own callback path, so every delivery names the logical job it is for.
fn hook_path(index: usize) -> String {
    format!("/hooks/{index:04}")
}

/// Every job id the server lists.
async fn list_all_ids(http: &reqwest::Client, endpoint: &Endpoint, token: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/jobs?limit=500&cursor={cursor}"),
            None => "/v1/jobs?limit=500".to_owned(),
        };
        let page = get_json(http, endpoint, token, &path).await;
        for job in page["jobs"].as_array().expect("jobs array") {
            ids.push(job["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
}

/// Checks one acknowledged job through the API: it succeeded, each provider was collected
/// with its two bills, and its one delivery step succeeded. Returns the attempts of its steps.
async fn check_job(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    token: &str,
    index: usize,
    id: &str,
) -> u64 {
    let job = get_json(http, endpoint, token, &format!("/v1/jobs/{id}")).await;
    assert_eq!(job["id"], id, "job {index}: wrong job answered");
    assert_eq!(job["status"], "succeeded", "job {index} ({id}): {job:#}");
    let steps = job["steps"].as_array().expect("steps");
    let shape: Vec<(&str, &str, &str)> = steps
        .iter()
        .map(|step| {
            (
                step["kind"].as_str().unwrap_or_default(),
                step["name"].as_str().unwrap_or_default(),
                step["state"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("collect", "datahog-provider", "succeeded"),
            ("collect", "datahog-provider", "succeeded"),
            ("deliver", "callback", "succeeded"),
        ],
        "job {index}: {job:#}"
    );
    for step in &steps[..2] {
        assert_eq!(step["records"], 2, "job {index}: {job:#}");
    }
    // Attempt numbers never repeat, even across kills.
    let mut seen = HashSet::new();
    for attempt in job["attempts"].as_array().expect("attempt log") {
        let pair = format!("{}/{}", attempt["step_id"], attempt["attempt"]);
        assert!(
            seen.insert(pair),
            "job {index}: attempt logged twice: {job:#}"
        );
    }
    steps
        .iter()
        .map(|step| step["attempts"].as_u64().expect("attempts"))
        .sum()
}

/// Checks one recorded delivery, answered or not: it is for the job of its path, signed
/// correctly, and carries both providers' outcome with their exact bills.
fn check_delivery(
    delivery: &Delivery,
    ids: &HashMap<usize, String>,
    expected: &BTreeMap<&str, Value>,
) -> usize {
    let index: usize = delivery
        .path
        .strip_prefix("/hooks/")
        .and_then(|index| index.parse().ok())
        .unwrap_or_else(|| panic!("delivery to an unexpected path {}", delivery.path));
    let id = ids
        .get(&index)
        .unwrap_or_else(|| panic!("a callback for job {index}, which was never acknowledged"));
    assert_eq!(delivery.method, "POST");
    assert!(
        delivery.signature_ok(),
        "job {index}: signature not verified: {:?}",
        delivery.signature
    );
    let simple = uuid::Uuid::parse_str(id).expect("job id").simple();
    assert_eq!(
        delivery.webhook_id(),
        Some(format!("msg_{simple}_2").as_str()),
        "job {index}: webhook-id"
    );
    let body = delivery.json();
    let data = &body["data"];
    assert_eq!(body["type"], "job.succeeded", "job {index}: {body:#}");
    assert_eq!(data["id"], id.as_str(), "job {index}: {body:#}");
    assert_eq!(data["status"], "succeeded", "job {index}: {body:#}");
    let sources = data["sources"].as_array().expect("sources");
    let mut got = BTreeMap::new();
    for source in sources {
        assert_eq!(source["status"], "succeeded", "job {index}: {body:#}");
        assert_eq!(source["connector"], "datahog-provider", "job {index}");
        assert_eq!(source["records"], 2, "job {index}: {body:#}");
        let name = source["name"].as_str().expect("source name");
        let previous = got.insert(name, source["data"].clone());
        assert!(previous.is_none(), "job {index}: {name} twice: {body:#}");
    }
    assert_eq!(&got, expected, "job {index}: missing or wrong data");
    index
}

#[tokio::test(flavor = "multi_thread")]
async fn callback_crash_test_sigkill_loses_no_job_and_no_callback_data() {
    let started = Instant::now();
    let seed = seed();
    let secret = format!("whsec_{}", BASE64.encode(SIGNING_KEY));
    let providers = MockProviders::start(ProvidersConfig {
        latency: PROVIDER_LATENCY,
        ..ProvidersConfig::seed_like(seed)
    })
    .await;
    let receiver = Arc::new(
        CallbackReceiver::start(ReceiverConfig {
            seed: seed ^ 0x7265_6365_6976_6572,
            failure_rate: RECEIVER_FAILURE_RATE,
            ..ReceiverConfig::default()
        })
        .await,
    );
    receiver.set_secret(&secret);
    let env = process_env(&providers, &secret);
    let env: Vec<(&str, &str)> = env
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    let dir = DataDir::new("callback crash test");
    let mut process = GleanerProcess::start(&dir.path().join("data"), &env).await;
    let endpoint = process.endpoint();
    let token = process.token().to_owned();
    let http = client();

    // Submitting clients: take the next logical job, wait for its slot, POST until acknowledged.
    let acknowledged = Arc::new(Acknowledged::default());
    let next_job = Arc::new(AtomicUsize::new(0));
    let mut creators = Vec::new();
    let origin = tokio::time::Instant::now();
    for _ in 0..CREATORS {
        let (http, endpoint, token) = (http.clone(), endpoint.clone(), token.clone());
        let (receiver, acknowledged) = (receiver.clone(), acknowledged.clone());
        let next_job = next_job.clone();
        creators.push(tokio::spawn(async move {
            loop {
                let index = next_job.fetch_add(1, Ordering::Relaxed);
                if index >= JOBS {
                    break;
                }
                tokio::time::sleep_until(origin + PACE * index as u32).await;
                let body = json!({
                    "provider": ["gas", "internet"],
                    "callbackUrl": receiver.url(&hook_path(index)),
                });
                let answer = post_until_acknowledged(
                    &http,
                    &endpoint,
                    &token,
                    "/webhook",
                    &format!("callback-crash-{index}"),
                    &body,
                    &acknowledged,
                )
                .await;
                assert_eq!(
                    answer["processing"],
                    json!(["gas", "internet"]),
                    "job {index}: {answer}"
                );
                let id = answer["id"].as_str().expect("id").to_owned();
                let previous = acknowledged.ids.lock().await.insert(index, id);
                assert!(previous.is_none(), "job {index} acknowledged twice");
            }
        }));
    }

    // The killer: KILLS SIGKILLs, one at a random moment of each of KILLS equal slices of the
    // submission span, so they fall while jobs are submitted, collected and delivered; the
    // process restarts on the same data directory each time.
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6b69_6c6c);
    let slice = PACE * JOBS as u32 / KILLS;
    let mut deliveries_at_kill = Vec::new();
    let mut unfinished_at_kill = Vec::new();
    let mut restart_time = Duration::ZERO;
    for kill in 0..KILLS {
        let within = slice.mul_f64(rng.random_range(0.1..0.9));
        let at = origin + slice * kill + within;
        let soonest = tokio::time::Instant::now() + Duration::from_millis(50);
        tokio::time::sleep_until(at.max(soonest)).await;
        unfinished_at_kill.push(unfinished(&http, &endpoint, &token).await.unwrap_or(0));
        process.assert_running();
        process.kill_9();
        deliveries_at_kill.push(receiver.deliveries().len());
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
                panic!("submission did not finish within {CREATION_TIMEOUT:?} of the start")
            })
            .expect("creator task");
    }
    let creation_finished_after = started.elapsed();

    // Every acknowledged job reaches a terminal status, without further kills.
    wait_until_settled(
        &mut process,
        &http,
        &token,
        last_restart,
        SETTLE_TIMEOUT,
        Duration::from_millis(100),
    )
    .await;
    let settled_after = started.elapsed();

    // No job lost, none stored twice, none that nobody acknowledged.
    let ids = acknowledged.ids.lock().await.clone();
    assert_eq!(ids.len(), JOBS, "every logical job was acknowledged");
    let mut listed = list_all_ids(&http, &endpoint, &token).await;
    listed.sort();
    let mut acknowledged_ids: Vec<String> = ids.values().cloned().collect();
    acknowledged_ids.sort();
    assert_eq!(
        listed, acknowledged_ids,
        "the server lists exactly the acknowledged jobs"
    );
    let attempts: Vec<u64> = futures::stream::iter(ids.iter())
        .map(|(index, id)| {
            let (http, endpoint, token) = (&http, &endpoint, &token);
            async move { check_job(http, endpoint, token, *index, id).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let attempts: u64 = attempts.iter().sum();

    // Every delivery the receiver saw, answered or not, carried both providers' exact bills
    // and a valid signature; every job got at least one successful callback.
    let expected: BTreeMap<&str, Value> = BTreeMap::from([
        ("gas", serde_json::from_str(GAS).expect("gas bills")),
        (
            "internet",
            serde_json::from_str(INTERNET).expect("internet bills"),
        ),
    ]);
    let deliveries = receiver.deliveries();
    let mut successes_by_job: BTreeMap<usize, usize> = BTreeMap::new();
    for delivery in &deliveries {
        let index = check_delivery(delivery, &ids, &expected);
        let successes = successes_by_job.entry(index).or_default();
        if delivery.is_success() {
            *successes += 1;
        }
    }
    let without: Vec<usize> = (0..JOBS)
        .filter(|index| successes_by_job.get(index).is_none_or(|count| *count == 0))
        .collect();
    assert!(
        without.is_empty(),
        "{} jobs never got a successful callback: {without:?}",
        without.len()
    );
    let failed_answers = deliveries
        .iter()
        .filter(|delivery| !delivery.is_success())
        .count();
    // One webhook-id per job, so jobs with a duplicate are the duplicated webhook-ids.
    let duplicated = receiver.duplicated_ids();
    let duplicate_successes = receiver.duplicate_successes();
    let allowed = (JOBS as f64 * MAX_DUPLICATE_SHARE).floor() as usize;

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

    let calls = providers.total();
    println!(
        "callback crash test: seed={seed} jobs={JOBS} kills={KILLS} starts={} unfinished jobs at \
         each kill={unfinished_at_kill:?} deliveries recorded at each kill={deliveries_at_kill:?}; \
         submissions: created={} replayed={} unanswered={}; provider calls={} (failed {}, \
         succeeded {}); step attempts={attempts}; callback deliveries={} (answered 2xx {}, \
         refused or cut {failed_answers}); jobs with a duplicate successful callback={} \
         (allowed {allowed}), duplicate successes={duplicate_successes}; restarts took {:.1?} \
         in total; submission done after {:.1?}, all terminal after {:.1?}, elapsed {:.1?}",
        process.starts(),
        acknowledged.created.load(Ordering::Relaxed),
        acknowledged.replayed.load(Ordering::Relaxed),
        acknowledged.unanswered.load(Ordering::Relaxed),
        calls.calls,
        calls.failures,
        calls.successes,
        deliveries.len(),
        deliveries.len() - failed_answers,
        duplicated.len(),
        restart_time,
        creation_finished_after,
        settled_after,
        started.elapsed(),
    );
    assert!(
        duplicated.len() <= allowed,
        "{} jobs got a duplicate successful callback (at most {allowed} allowed): {duplicated:?}",
        duplicated.len()
    );
    drop(process);
}
