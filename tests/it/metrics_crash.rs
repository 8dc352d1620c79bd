//! Acceptance 2 of metric ingest: a million events in batches of a thousand, each with a batch
//! id, sent while the binary is SIGKILLed twenty times; clients retry every batch until it is
//! acknowledged. Every aggregate must then equal an offline oracle exactly: nothing lost,
//! nothing counted twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::support::crash::{DataDir, get_json};
use crate::support::process::{Endpoint, GleanerProcess, client};

const BATCHES: usize = 1_000;
const PER_BATCH: usize = 1_000;
const KILLS: u32 = 20;
const SENDERS: usize = 4;
const SERIES: usize = 100;

/// The series of event `i` of batch `b`, its type and its (integer) value.
fn event(batch: usize, i: usize) -> (String, &'static str, i64) {
    let series = (batch * 7 + i) % SERIES;
    let kind = match series % 10 {
        0..=3 => "counter",
        4..=5 => "timer",
        6..=7 => "gauge",
        _ => "meter",
    };
    let value = ((batch * 31 + i * 17) % 1_000) as i64 - 500;
    (format!("crash.s{series:03}"), kind, value)
}

fn body(batch: usize) -> Value {
    let events: Vec<Value> = (0..PER_BATCH)
        .map(|i| {
            let (name, kind, value) = event(batch, i);
            json!({"name": name, "type": kind, "value": value})
        })
        .collect();
    json!({"batch_id": format!("crash-{batch:04}"), "events": events})
}

/// What each series must hold: count, sum, min, max.
#[derive(Default, Debug, Clone, Copy)]
struct Expected {
    count: u64,
    sum: i64,
    min: i64,
    max: i64,
}

fn oracle() -> BTreeMap<String, (&'static str, Expected)> {
    let mut all: BTreeMap<String, (&'static str, Expected)> = BTreeMap::new();
    for batch in 0..BATCHES {
        for i in 0..PER_BATCH {
            let (name, kind, value) = event(batch, i);
            let entry = all.entry(name).or_insert((
                kind,
                Expected {
                    min: i64::MAX,
                    max: i64::MIN,
                    ..Expected::default()
                },
            ));
            let expected = &mut entry.1;
            expected.count += 1;
            expected.sum += value;
            expected.min = expected.min.min(value);
            expected.max = expected.max.max(value);
        }
    }
    all
}

/// Sends batches from the shared queue until each is acknowledged (200, or a duplicate).
async fn sender(
    endpoint: Endpoint,
    token: String,
    next: Arc<AtomicUsize>,
    retries: Arc<AtomicUsize>,
) {
    let http = client();
    loop {
        let batch = next.fetch_add(1, Ordering::SeqCst);
        if batch >= BATCHES {
            return;
        }
        let payload = body(batch);
        loop {
            let answer = http
                .post(endpoint.url("/v1/metrics"))
                .bearer_auth(&token)
                .json(&payload)
                .send()
                .await;
            match answer {
                Ok(response) if response.status() == 200 => break,
                Ok(response) if response.status().is_client_error() && response.status() != 429 => {
                    panic!(
                        "batch {batch} refused: {}",
                        response.text().await.unwrap_or_default()
                    );
                }
                _ => {
                    retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_events_through_twenty_kills_match_the_oracle_exactly() {
    let data = DataDir::new("a_million_events_through_twenty_kills_match_the_oracle_exactly");
    let mut process =
        GleanerProcess::start(data.path(), &[("GLEANER_METRICS__SNAPSHOT_EVERY", "1s")]).await;
    let token = process.token().to_owned();
    let next = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            tokio::spawn(sender(
                process.endpoint(),
                token.clone(),
                next.clone(),
                retries.clone(),
            ))
        })
        .collect();
    let finished = Arc::new(AtomicBool::new(false));
    let watcher = {
        let finished = finished.clone();
        tokio::spawn(async move {
            for sender in senders {
                sender.await.expect("sender");
            }
            finished.store(true, Ordering::SeqCst);
        })
    };
    let mut rng = StdRng::seed_from_u64(0x6d65_7472);
    let started = Instant::now();
    let mut kills_while_sending = 0;
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..=300))).await;
        if !finished.load(Ordering::SeqCst) {
            kills_while_sending += 1;
        }
        process.restart().await;
    }
    tokio::time::timeout(Duration::from_secs(300), watcher)
        .await
        .expect("every batch acknowledged within 300 s")
        .expect("watcher");
    let elapsed = started.elapsed();
    process.assert_running();

    let expected = oracle();
    let http = client();
    let listed = get_json(
        &http,
        &process.endpoint(),
        &token,
        "/v1/metrics?prefix=crash.&limit=1000",
    )
    .await;
    let series = listed["series"].as_array().expect("series");
    assert_eq!(series.len(), expected.len(), "one series per name");
    let mut total = 0;
    for view in series {
        let name = view["name"].as_str().expect("name");
        let (kind, want) = expected[name];
        let got = &view["aggregate"];
        assert_eq!(view["kind"], kind, "{name}");
        assert_eq!(got["count"], want.count, "{name} count: {view}");
        total += want.count;
        match kind {
            "counter" => assert_eq!(got["value"], want.sum as f64, "{name} sum"),
            "timer" => {
                assert_eq!(got["sum"], want.sum as f64, "{name} sum");
                assert_eq!(got["min"], want.min as f64, "{name} min");
                assert_eq!(got["max"], want.max as f64, "{name} max");
            }
            "gauge" => {
                assert_eq!(got["min"], want.min as f64, "{name} min");
                assert_eq!(got["max"], want.max as f64, "{name} max");
            }
            _ => assert_eq!(got["sum"], want.sum as f64, "{name} sum"),
        }
    }
    assert_eq!(total, (BATCHES * PER_BATCH) as u64);
    eprintln!(
        "metrics crash: {} events in {elapsed:.1?}, {KILLS} kills ({kills_while_sending} while \
         sending), {} retried requests, every aggregate exact",
        BATCHES * PER_BATCH,
        retries.load(Ordering::Relaxed)
    );
    assert!(
        kills_while_sending >= KILLS / 2,
        "only {kills_while_sending} kills landed while batches were being sent"
    );
}
