//! Callback delivery throughput and latency, with a bare client → receiver baseline in the same
//! run.
//!
//! `cargo bench --bench callbacks` prints one table:
//!
//! 1. baseline: one reqwest client POSTing a signed body of the same size, with the same
//!    Standard Webhooks headers, to the same loopback receiver, from as many tasks as the
//!    engine runs steps at once;
//! 2. burn-down: N jobs (a `noop` source and a `callback` sink to the receiver) inserted with
//!    the engine stopped, then drained by the real engine: each delivery is signed, sent, and
//!    its outcome written to the attempt log in a fenced transaction;
//! 3. streaming: N jobs created by 64 tasks while the engine runs; deliveries/s and
//!    enqueue → first delivery attempt (the receiver's arrival time) under that load;
//! 4. latency: one job every 2 ms on an idle engine, enqueue → first delivery attempt.
//!
//! The receiver (axum, in this process) answers `204` and notes when each `webhook-id` first
//! arrived. `GLEANER_BENCH_QUICK=1` scales every N down 10×; `GLEANER_BENCH_CONCURRENCY` and
//! `GLEANER_BENCH_CLAIM_BATCH` override the engine's worker slots and claim size.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use gleaner::job::NewJob;
use gleaner::job::spec::SinkSpec;
use gleaner::sinks::callback::sign;
use gleaner::store::SharedStore;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[path = "common/mod.rs"]
mod common;

use common::{
    AppServer, Cpu, Table, cpu_micros_per, engine_config, finish, fmt_ms, fresh_job,
    jobs_with_status, noop_job_template, now_ms, percentiles, process_cpu, rate, verdict,
};

/// Tasks that create jobs in the streaming run.
const CREATORS: usize = 64;
/// How often the store is asked whether every job succeeded.
const POLL: Duration = Duration::from_millis(20);
/// Longest any one phase may take before the bench gives up.
const PHASE_LIMIT: Duration = Duration::from_secs(600);
/// The signing key of every callback (`[sinks.callback] secret`).
const SIGNING_KEY: &[u8] = b"gleaner callback bench signing key, 32+";
/// The target of issue 4.
const TARGET_PER_SECOND: f64 = 20_000.0;

fn secret() -> String {
    format!("whsec_{}", BASE64.encode(SIGNING_KEY))
}

fn fmt_rate(per_second: f64) -> String {
    format!("{per_second:>9.0} deliveries/s")
}

/// CPU per delivery since `since`, as a table note (the bare loop: no store).
fn cpu_note(since: Duration, count: usize) -> String {
    format!(
        "CPU/delivery {:.0} µs (whole process, receiver included)",
        cpu_micros_per(since, count)
    )
}

/// CPU per delivery of the engine since `since`, writer thread apart, as a table note.
fn engine_cpu_note(since: Cpu, count: usize) -> String {
    format!("{} (receiver included)", since.note(count, "delivery"))
}

// ---------------------------------------------------------------------------------------------
// The loopback receiver.

/// What the receiver saw: requests answered, body sizes, first arrival of each `webhook-id`.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    body_bytes: AtomicUsize,
    /// `webhook-id` → when it first arrived.
    first: Mutex<HashMap<String, Instant>>,
    /// One delivery kept whole, to check its signature with an independent verifier.
    sample: Mutex<Option<(HeaderMap, Bytes)>>,
}

impl Seen {
    fn requests(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }
}

/// The receiver on `127.0.0.1:0`; stops when dropped.
struct Receiver {
    url: String,
    seen: Arc<Seen>,
    stop: CancellationToken,
}

impl Receiver {
    async fn start() -> Self {
        let seen = Arc::new(Seen::default());
        let router = Router::new().fallback(receive).with_state(seen.clone());
        let stop = CancellationToken::new();
        let (addr, _) = common::serve(router, stop.clone()).await;
        Self {
            url: format!("http://{addr}/hook"),
            seen,
            stop,
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn receive(State(seen): State<Arc<Seen>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let arrived = Instant::now();
    if let Some(id) = headers.get("webhook-id").and_then(|id| id.to_str().ok()) {
        seen.first
            .lock()
            .expect("first lock")
            .entry(id.to_owned())
            .or_insert(arrived);
    }
    seen.body_bytes.fetch_add(body.len(), Ordering::Relaxed);
    {
        let mut sample = seen.sample.lock().expect("sample lock");
        if sample.is_none() {
            *sample = Some((headers, body));
        }
    }
    seen.requests.fetch_add(1, Ordering::Release);
    StatusCode::NO_CONTENT
}

// ---------------------------------------------------------------------------------------------
// 1. Baseline: a bare client → receiver loop.

/// POSTs `total` requests of `body_len` bytes from `tasks` concurrent tasks sharing one client;
/// returns the elapsed time and each request's latency.
async fn baseline(
    receiver: &Receiver,
    total: usize,
    tasks: usize,
    body_len: usize,
) -> (Duration, Vec<Duration>) {
    let client = common::http_client(tasks);
    let body = Bytes::from(vec![b'x'; body_len]);
    let key = BASE64
        .decode(secret().trim_start_matches("whsec_"))
        .expect("key");
    let timestamp = now_ms() / 1000;
    let id = "msg_baseline";
    let signature = sign(&key, id, timestamp, &body);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|_| {
            let (client, url, body, signature, next) = (
                client.clone(),
                receiver.url.clone(),
                body.clone(),
                signature.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let sent = Instant::now();
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("webhook-id", id)
                        .header("webhook-timestamp", timestamp.to_string())
                        .header("webhook-signature", &signature)
                        .body(body.clone())
                        .send()
                        .await
                        .expect("baseline POST");
                    assert_eq!(response.status(), reqwest::StatusCode::NO_CONTENT);
                    response.bytes().await.expect("baseline answer");
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    for worker in workers {
        latencies.extend(worker.await.expect("baseline task"));
    }
    (started.elapsed(), latencies)
}

// ---------------------------------------------------------------------------------------------
// The application under test.

/// The real application on a temp data directory, its engine started on demand; no HTTP API
/// (jobs are created through the store, as `POST /v1/jobs` does after validation).
struct Server {
    app: AppServer,
    /// A validated plan of the bench's job; each job is a copy with its own id and time.
    template: NewJob,
}

impl Server {
    async fn start(receiver_url: &str) -> Self {
        let app = AppServer::build(|config| {
            config.engine = engine_config();
            config.net.allow = vec!["127.0.0.1/32".parse().expect("loopback net")];
            config.sinks.callback.secret = Some(secret());
        })
        .await;
        let mut sink = Map::new();
        sink.insert("url".into(), Value::String(receiver_url.to_owned()));
        let template = noop_job_template(
            &app,
            vec![SinkSpec {
                kind: "callback".into(),
                settings: sink,
            }],
        );
        Self { app, template }
    }

    async fn start_engine(&mut self) {
        self.app.start_engine().await;
    }

    fn store(&self) -> &SharedStore {
        self.app.store()
    }

    /// A new job from the template: its own id, created now.
    fn job(&self) -> NewJob {
        fresh_job(&self.template)
    }

    async fn stop(self) {
        self.app.stop().await;
    }
}

/// The `webhook-id` of the callback of job `id` (its deliver step is at position 1).
fn webhook_id(id: Uuid) -> String {
    format!("msg_{}_1", id.simple())
}

/// Waits until the receiver answered `delivered` requests (more than that: a duplicate) and
/// then until the store shows `total` succeeded jobs (every delivery's outcome committed).
/// Returns (time to the last delivery received, time to all committed), both from `since`.
async fn wait_delivered(
    server: &Server,
    seen: &Seen,
    delivered: usize,
    total: u64,
    since: Instant,
) -> (Duration, Duration) {
    while seen.requests() < delivered {
        assert!(
            since.elapsed() < PHASE_LIMIT,
            "only {} of {delivered} deliveries after {PHASE_LIMIT:?}",
            seen.requests()
        );
        tokio::time::sleep(POLL).await;
    }
    let received = since.elapsed();
    loop {
        let (succeeded, failed) = jobs_with_status(server.store(), "succeeded").await;
        assert_eq!(failed, 0, "jobs failed during the bench");
        if succeeded >= total {
            return (received, since.elapsed());
        }
        assert!(since.elapsed() < PHASE_LIMIT, "jobs unfinished");
        tokio::time::sleep(POLL).await;
    }
}

/// Checks that a few jobs logged both attempts, the delivery with the receiver's 204, and that
/// a delivery's signature verifies with the `standardwebhooks` crate.
async fn check_attempt_log_and_signature(server: &Server, seen: &Seen, ids: &[Uuid]) {
    for id in ids.iter().step_by((ids.len() / 10).max(1)) {
        let detail = server
            .store()
            .get_job(*id)
            .await
            .expect("get job")
            .expect("job exists");
        let statuses: Vec<_> = detail
            .attempts
            .iter()
            .map(|attempt| (attempt.outcome.as_str(), attempt.http_status))
            .collect();
        assert_eq!(
            statuses,
            [("succeeded", None), ("succeeded", Some(204))],
            "attempt log of {id}"
        );
    }
    let (headers, body) = seen
        .sample
        .lock()
        .expect("sample lock")
        .clone()
        .expect("a delivery was seen");
    let webhook = standardwebhooks::Webhook::new(&secret()).expect("secret");
    webhook
        .verify(&body, &headers)
        .expect("the callback's signature verifies");
}

/// The size of the callbacks the engine sends (to give the baseline the same body).
async fn callback_body_len(receiver: &Receiver) -> usize {
    let mut server = Server::start(&receiver.url).await;
    server.start_engine().await;
    let before = receiver.seen.requests();
    let bytes_before = receiver.seen.body_bytes.load(Ordering::Acquire);
    server
        .store()
        .create_job(server.job())
        .await
        .expect("create job");
    wait_delivered(&server, &receiver.seen, before + 1, 1, Instant::now()).await;
    let len = receiver.seen.body_bytes.load(Ordering::Acquire) - bytes_before;
    *receiver.seen.sample.lock().expect("sample lock") = None;
    server.stop().await;
    len
}

// ---------------------------------------------------------------------------------------------
// 2. Burn-down, 3. streaming, 4. paced latency.

async fn burn_down(table: &mut Table, receiver: &Receiver, total: usize, baseline_rate: f64) {
    let mut server = Server::start(&receiver.url).await;
    let (created, inserted) =
        common::create_many(server.store(), &server.template, total, 512).await;
    let (queued, _) = jobs_with_status(server.store(), "queued").await;
    assert_eq!(queued as usize, total, "pre-insert lost jobs");
    let before = receiver.seen.requests();
    let cpu = Cpu::now();
    let started = Instant::now();
    server.start_engine().await;
    let (received, committed) = wait_delivered(
        &server,
        &receiver.seen,
        before + total,
        total as u64,
        started,
    )
    .await;
    let cpu = engine_cpu_note(cpu, total);
    let duplicates = receiver.seen.requests() - before - total;
    let ids: Vec<Uuid> = created.iter().map(|(id, _)| *id).collect();
    check_attempt_log_and_signature(&server, &receiver.seen, &ids).await;
    server.stop().await;

    let section = "2 burn-down (engine started on a full queue)";
    let drained = rate(total, committed);
    table.row(
        section,
        &format!("{total} callbacks, until every outcome committed"),
        fmt_rate(drained),
        format!(
            "{:.3}× baseline; target ≥ 20 000: {}; {:.2} s",
            drained / baseline_rate,
            verdict(drained >= TARGET_PER_SECOND),
            committed.as_secs_f64()
        ),
    );
    table.row(
        section,
        "until the last callback arrived",
        fmt_rate(rate(total, received)),
        format!("{duplicates} duplicates; {cpu}"),
    );
    table.row(
        section,
        "jobs pre-inserted (create_job, 512 tasks)",
        format!("{:>9.0} jobs/s", rate(total, inserted)),
        String::new(),
    );
}

/// Enqueue → first arrival at the receiver of each job's callback.
fn first_attempt_latencies(created: &[(Uuid, Instant)], seen: &Seen) -> Vec<Duration> {
    let first = seen.first.lock().expect("first lock");
    created
        .iter()
        .map(|(id, enqueued)| {
            let arrived = first
                .get(&webhook_id(*id))
                .unwrap_or_else(|| panic!("no callback for job {id}"));
            arrived.saturating_duration_since(*enqueued)
        })
        .collect()
}

async fn streaming(table: &mut Table, receiver: &Receiver, total: usize, baseline_rate: f64) {
    let mut server = Server::start(&receiver.url).await;
    server.start_engine().await;
    let before = receiver.seen.requests();
    let cpu = Cpu::now();
    let started = Instant::now();
    let (created, enqueued) =
        common::create_many(server.store(), &server.template, total, CREATORS).await;
    let (_, committed) = wait_delivered(
        &server,
        &receiver.seen,
        before + total,
        total as u64,
        started,
    )
    .await;
    let cpu = engine_cpu_note(cpu, total);
    let latencies = first_attempt_latencies(&created, &receiver.seen);
    server.stop().await;

    let section = "3 streaming (jobs created while the engine runs)";
    let delivered = rate(total, committed);
    table.row(
        section,
        &format!("{total} callbacks, {CREATORS} creating tasks"),
        fmt_rate(delivered),
        format!(
            "{:.3}× baseline; {:.2} s; all created after {:.2} s",
            delivered / baseline_rate,
            committed.as_secs_f64(),
            enqueued.as_secs_f64()
        ),
    );
    table.row(section, "CPU", String::new(), cpu);
    let p = percentiles(latencies);
    table.row(
        section,
        "enqueue → first delivery attempt p50",
        fmt_ms(p.p50),
        "create_job call → receiver arrival".into(),
    );
    table.row(
        section,
        "enqueue → first delivery attempt p99",
        fmt_ms(p.p99),
        format!("max {}", fmt_ms(p.max)),
    );
}

async fn paced(table: &mut Table, receiver: &Receiver, total: usize, gap: Duration) {
    let mut server = Server::start(&receiver.url).await;
    server.start_engine().await;
    let before = receiver.seen.requests();
    let started = Instant::now();
    let mut created = Vec::with_capacity(total);
    for _ in 0..total {
        let job = server.job();
        let id = job.id;
        let enqueued = Instant::now();
        server.store().create_job(job).await.expect("create job");
        created.push((id, enqueued));
        tokio::time::sleep(gap).await;
    }
    wait_delivered(
        &server,
        &receiver.seen,
        before + total,
        total as u64,
        started,
    )
    .await;
    let latencies = first_attempt_latencies(&created, &receiver.seen);
    // The same from the attempt log: the deliver step's first `started_at` (whole ms).
    let mut logged = Vec::with_capacity(total);
    for (id, _) in &created {
        let detail = server
            .store()
            .get_job(*id)
            .await
            .expect("get job")
            .expect("job exists");
        let deliver = detail.attempts.last().expect("a delivery attempt");
        logged.push(deliver.started_at - detail.job.created_at);
    }
    server.stop().await;

    let section = "4 latency (one job every 2 ms, idle engine)";
    let p = percentiles(latencies);
    let logged = percentiles(logged);
    table.row(
        section,
        &format!("enqueue → first delivery attempt p50 ({total} jobs)"),
        fmt_ms(p.p50),
        format!("attempt log: created_at → started_at p50 {} ms", logged.p50),
    );
    table.row(
        section,
        "enqueue → first delivery attempt p99",
        fmt_ms(p.p99),
        format!("max {}; attempt log p99 {} ms", fmt_ms(p.max), logged.p99),
    );
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let quick = common::quick();
    let scale = |n: usize| if quick { n / 10 } else { n };
    let cores = common::start("callback", quick);
    let engine = engine_config();
    let concurrency = engine.concurrency;
    println!(
        "engine: concurrency {}, claim_batch {}; store: WAL, synchronous=FULL; receiver: axum \
         on 127.0.0.1 answering 204, in this process",
        engine.concurrency, engine.claim_batch
    );

    let runtime = common::runtime();
    let mut table = Table::default();
    common::machine_row(&mut table, cores);
    runtime.block_on(async {
        let receiver = Receiver::start().await;
        let body_len = callback_body_len(&receiver).await;

        eprintln!("baseline…");
        let n = scale(50_000);
        let cpu = process_cpu();
        let (elapsed, latencies) = baseline(&receiver, n, concurrency, body_len).await;
        let cpu = cpu_note(cpu, n);
        let baseline_rate = rate(n, elapsed);
        let section = "1 baseline (bare reqwest → receiver)";
        table.row(
            section,
            &format!("{n} POSTs of {body_len} B, {concurrency} tasks"),
            fmt_rate(baseline_rate),
            format!("{:.2} s; {cpu}", elapsed.as_secs_f64()),
        );
        let p = percentiles(latencies);
        table.row(
            section,
            "request latency p50 / p99",
            fmt_ms(p.p50),
            format!("p99 {}, max {}", fmt_ms(p.p99), fmt_ms(p.max)),
        );

        eprintln!("burn-down…");
        burn_down(&mut table, &receiver, scale(20_000), baseline_rate).await;
        eprintln!("streaming…");
        streaming(&mut table, &receiver, scale(20_000), baseline_rate).await;
        eprintln!("paced latency…");
        paced(
            &mut table,
            &receiver,
            scale(1_000),
            Duration::from_millis(2),
        )
        .await;
    });

    finish(&table);
}
