//! Engine throughput and latency, with a bare SQLite baseline in the same run.
//!
//! `cargo bench --bench engine` prints one table:
//!
//! 1. baseline: bare rusqlite (WAL, `synchronous=FULL`), per batch of B jobs one insert, one
//!    claim and one complete transaction;
//! 2. end to end over HTTP: the real router and engine, N no-op jobs POSTed by 64 clients one
//!    per request, then by 8 clients in `POST /v1/jobs/batch` requests of 100, each timed until
//!    every job succeeded (the first run also gives the 64-connection enqueue figures);
//! 3. enqueue latency at 1 connection (sequential), with the engine draining the jobs and with
//!    it stopped, and at 64 connections;
//! 4. pickup latency: job `created_at` to its first attempt's `started_at`;
//! 5. burn-down: jobs pre-inserted with the engine stopped, then drained, at two table sizes.
//!
//! `GLEANER_BENCH_QUICK=1` scales every N down 10× for a smoke run; `GLEANER_BENCH_ONLY` runs
//! only some of `e2e,enqueue,pickup,burn` (the baseline always runs, the ratios need it);
//! `GLEANER_BENCH_CONCURRENCY` and `GLEANER_BENCH_CLAIM_BATCH` override the engine's worker
//! slots and claim size (for tuning runs).
//!
//! Wall-clock rates on a shared 2-core machine swing by 2× between runs. To compare two
//! versions of the store, count instructions instead: run the built bench under
//! `valgrind --tool=callgrind` with `GLEANER_BENCH_QUICK=1 GLEANER_BENCH_ONLY=burn` and compare
//! the inclusive counts of `steps::claim`, `steps::finish` and `writer::run` per job
//! (`callgrind_annotate --inclusive=yes`); those repeat to within a few percent.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use serde_json::{Value, json};
use tempfile::TempDir;

#[path = "common/mod.rs"]
mod common;

use common::{
    AppServer as Server, Cpu, Table, create_many, engine_config, finish, fmt_ms, http_client,
    jobs_with_status, noop_job_template, now_ms, percentiles, rate, selected, verdict,
};

/// Client tasks (and keep-alive connections) of the concurrent runs.
const CLIENTS: usize = 64;
/// Client tasks of the batched end-to-end run, and the jobs in each of their requests.
const BATCH_CLIENTS: usize = 8;
const BATCH_JOBS: usize = 100;
/// How often the store is asked whether every job succeeded.
const POLL: Duration = Duration::from_millis(50);
/// Longest any one phase may take before the bench gives up.
const PHASE_LIMIT: Duration = Duration::from_secs(600);

fn fmt_rate(per_second: f64) -> String {
    format!("{per_second:>9.0} jobs/s")
}

// ---------------------------------------------------------------------------------------------
// 1. Baseline: bare rusqlite.

/// Inserts, claims and completes `total` jobs in batches of `batch`: three transactions per
/// batch, each committed with an fsync. Returns the elapsed time.
fn baseline(total: usize, batch: usize) -> Duration {
    let dir = TempDir::new().expect("temp dir");
    let conn = Connection::open(dir.path().join("baseline.db")).expect("open baseline db");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous");
    conn.pragma_update(None, "temp_store", "MEMORY")
        .expect("temp_store");
    conn.pragma_update(None, "cache_size", -32_000)
        .expect("cache_size");
    conn.execute_batch(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, run_at INTEGER NOT NULL,
                            started_at INTEGER, finished_at INTEGER, payload TEXT NOT NULL);
         CREATE INDEX jobs_due ON jobs (run_at) WHERE state = 'queued';
         CREATE TABLE attempts (id INTEGER PRIMARY KEY, job_id TEXT NOT NULL,
                                started_at INTEGER NOT NULL, ended_at INTEGER NOT NULL,
                                outcome TEXT NOT NULL);
         CREATE INDEX attempts_job ON attempts (job_id);",
    )
    .expect("baseline schema");
    let payload = json!({"connector": "noop", "settings": {}, "processors": []}).to_string();
    let started = Instant::now();
    let mut done = 0;
    while done < total {
        let size = batch.min(total - done);
        let now = now_ms();

        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        {
            let mut insert = conn
                .prepare_cached(
                    "INSERT INTO jobs (id, state, run_at, payload) VALUES (?1, 'queued', ?2, ?3)",
                )
                .expect("prepare insert");
            for _ in 0..size {
                insert
                    .execute(params![uuid::Uuid::now_v7().to_string(), now, payload])
                    .expect("insert");
            }
        }
        conn.execute_batch("COMMIT").expect("commit insert");

        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        let claimed: Vec<String> = {
            let mut claim = conn
                .prepare_cached(
                    "UPDATE jobs SET state = 'running', started_at = ?1
                     WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' AND run_at <= ?1
                                  ORDER BY run_at LIMIT ?2)
                     RETURNING id",
                )
                .expect("prepare claim");
            claim
                .query_map(params![now_ms(), size as i64], |row| row.get(0))
                .expect("claim")
                .collect::<rusqlite::Result<_>>()
                .expect("claimed rows")
        };
        conn.execute_batch("COMMIT").expect("commit claim");
        assert_eq!(claimed.len(), size, "baseline claimed a partial batch");

        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        {
            let end = now_ms();
            let mut complete = conn
                .prepare_cached(
                    "UPDATE jobs SET state = 'succeeded', finished_at = ?2 WHERE id = ?1 AND state = 'running'",
                )
                .expect("prepare complete");
            let mut attempt = conn
                .prepare_cached(
                    "INSERT INTO attempts (job_id, started_at, ended_at, outcome)
                     VALUES (?1, ?2, ?3, 'succeeded')",
                )
                .expect("prepare attempt");
            for id in &claimed {
                assert_eq!(complete.execute(params![id, end]).expect("complete"), 1);
                attempt.execute(params![id, now, end]).expect("attempt");
            }
        }
        conn.execute_batch("COMMIT").expect("commit complete");
        done += size;
    }
    let elapsed = started.elapsed();
    let succeeded: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'",
            [],
            |row| row.get(0),
        )
        .expect("count");
    assert_eq!(succeeded as usize, total, "baseline lost jobs");
    elapsed
}

// ---------------------------------------------------------------------------------------------
// The application under test.

/// The real application on a temp data directory (the engine from [`engine_config`]), its
/// engine and HTTP API started if asked for.
async fn start(engine: bool, http: bool) -> Server {
    let mut server = Server::build(|config| config.engine = engine_config()).await;
    if engine {
        server.start_engine().await;
    }
    if http {
        server.serve_http().await;
    }
    server
}

fn client() -> reqwest::Client {
    http_client(CLIENTS)
}

fn noop_body() -> String {
    json!({"sources": [{"connector": "noop"}]}).to_string()
}

/// POSTs one job (or, to `/v1/jobs/batch`, a batch) and returns the request's latency.
async fn post_job(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &str,
) -> (uuid::Uuid, Duration) {
    let started = Instant::now();
    let response = client
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("POST /v1/jobs");
    let status = response.status();
    let bytes = response.bytes().await.expect("response body");
    let latency = started.elapsed();
    assert_eq!(
        status,
        reqwest::StatusCode::ACCEPTED,
        "POST {url}: {}",
        String::from_utf8_lossy(&bytes)
    );
    let view: Value = serde_json::from_slice(&bytes).expect("job json");
    let first = view.get("jobs").map_or(&view, |jobs| &jobs[0]);
    let id = first["id"]
        .as_str()
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
        .expect("job id");
    (id, latency)
}

/// How the jobs of an end-to-end run are sent.
#[derive(Clone, Copy)]
struct Sending {
    clients: usize,
    /// Jobs per request: 1 posts to `/v1/jobs`, more to `/v1/jobs/batch`.
    per_request: usize,
}

/// POSTs `total` jobs from concurrent tasks sharing one client; returns every request's
/// latency and the time until the last 202.
async fn post_many(server: &Server, total: usize, sending: Sending) -> (Vec<Duration>, Duration) {
    let client = client();
    let (url, body) = if sending.per_request == 1 {
        (format!("{}/v1/jobs", server.base), noop_body())
    } else {
        let job: Value = serde_json::from_str(&noop_body()).expect("job");
        let batch = json!({ "jobs": vec![job; sending.per_request] });
        (format!("{}/v1/jobs/batch", server.base), batch.to_string())
    };
    let requests = total.div_ceil(sending.per_request);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..sending.clients)
        .map(|_| {
            let (client, url, token, body, next) = (
                client.clone(),
                url.clone(),
                server.token.clone(),
                body.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    latencies.push(post_job(&client, &url, &token, &body).await.1);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests);
    for task in tasks {
        latencies.extend(task.await.expect("client task"));
    }
    (latencies, started.elapsed())
}

/// How waiting for the drain went.
struct Drained {
    /// From `since` until the poll that saw every job succeeded.
    elapsed: Duration,
    /// Mean time of one cheap poll (the cost of watching).
    poll: Duration,
    /// Time of one full `store.snapshot` at the end (what `/metrics` pays).
    snapshot: Duration,
}

/// Polls every [`POLL`] until `total` jobs succeeded.
///
/// `store.snapshot` counts every job and step (a scan: ~60 ms at 50 000 jobs on this class of
/// machine), so polling it every 50 ms would steal a core from the engine being measured.
/// Each poll instead asks the store's database, on its own read-only connection, whether any
/// job is still queued or running (one probe of the `jobs_status` index), and only then
/// confirms with `store.snapshot` that `total` jobs succeeded.
async fn wait_succeeded(server: &Server, total: usize, since: Instant) -> Drained {
    let path = server.config.store_path();
    let probe = tokio::task::spawn_blocking(move || {
        let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open probe connection");
        conn.busy_timeout(Duration::from_secs(5)).expect("busy");
        conn
    })
    .await
    .expect("probe");
    let probe = Arc::new(std::sync::Mutex::new(probe));
    let (mut polls, mut spent) = (0u32, Duration::ZERO);
    loop {
        let asked = Instant::now();
        let probe_conn = probe.clone();
        let pending: bool = tokio::task::spawn_blocking(move || {
            probe_conn
                .lock()
                .expect("probe lock")
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM jobs WHERE status IN ('queued', 'running'))",
                    [],
                    |row| row.get(0),
                )
                .expect("probe query")
        })
        .await
        .expect("probe task");
        spent += asked.elapsed();
        polls += 1;
        if !pending {
            let seen = since.elapsed();
            let asked = Instant::now();
            let (succeeded, failed) = jobs_with_status(server.store(), "succeeded").await;
            let snapshot = asked.elapsed();
            assert_eq!(failed, 0, "jobs failed during the bench");
            if succeeded as usize >= total {
                return Drained {
                    elapsed: seen,
                    poll: spent / polls,
                    snapshot,
                };
            }
        }
        assert!(
            since.elapsed() < PHASE_LIMIT,
            "jobs still unfinished after {PHASE_LIMIT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 2 + 3. End to end over HTTP, enqueue latency.

/// One end-to-end run's figures.
struct EndToEnd {
    latencies: Vec<Duration>,
    enqueued: Duration,
    drained: Drained,
    cpu: String,
}

/// Starts a server with its engine, sends `total` no-op jobs and waits until all succeeded.
async fn end_to_end_run(total: usize, sending: Sending) -> EndToEnd {
    let server = start(true, true).await;
    let cpu = Cpu::now();
    let started = Instant::now();
    let (latencies, enqueued) = post_many(&server, total, sending).await;
    let drained = wait_succeeded(&server, total, started).await;
    let cpu = cpu.note(total, "job");
    server.stop().await;
    EndToEnd {
        latencies,
        enqueued,
        drained,
        cpu,
    }
}

async fn end_to_end(table: &mut Table, total: usize, baseline_rate: f64) {
    let section = "2 end to end (HTTP)";
    let single = Sending {
        clients: CLIENTS,
        per_request: 1,
    };
    let batched = Sending {
        clients: BATCH_CLIENTS,
        per_request: BATCH_JOBS,
    };
    let mut runs = Vec::new();
    for (sending, how) in [
        (single, format!("{CLIENTS} clients, POST /v1/jobs")),
        (
            batched,
            format!("{BATCH_CLIENTS} clients, POST /v1/jobs/batch of {BATCH_JOBS}"),
        ),
    ] {
        eprintln!("end to end, {how}…");
        let run = end_to_end_run(total, sending).await;
        let e2e = rate(total, run.drained.elapsed);
        table.row(
            section,
            &format!("{total} jobs, {how} → all succeeded"),
            fmt_rate(e2e),
            format!(
                "{:.2}× baseline; {:.2} s; target ≥ 20 000: {}",
                e2e / baseline_rate,
                run.drained.elapsed.as_secs_f64(),
                verdict(e2e >= 20_000.0)
            ),
        );
        table.row(
            section,
            "  CPU per job (HTTP client included)",
            String::new(),
            run.cpu.clone(),
        );
        runs.push(run);
    }
    let run = runs.swap_remove(0);
    let (latencies, enqueued, drained) = (run.latencies, run.enqueued, run.drained);
    table.row(
        section,
        "completion poll (index probe) / one store.snapshot",
        fmt_ms(drained.poll),
        format!(
            "every {} ms / {}",
            POLL.as_millis(),
            fmt_ms(drained.snapshot)
        ),
    );
    let section = "3 enqueue (engine running)";
    table.row(
        section,
        &format!("throughput, {CLIENTS} connections (same run as 2)"),
        fmt_rate(rate(total, enqueued)),
        format!("{:.2} s until the last 202", enqueued.as_secs_f64()),
    );
    let p = percentiles(latencies);
    table.row(
        section,
        &format!("latency p50, {CLIENTS} connections"),
        fmt_ms(p.p50),
        String::new(),
    );
    table.row(
        section,
        &format!("latency p99, {CLIENTS} connections"),
        fmt_ms(p.p99),
        format!("max {}", fmt_ms(p.max)),
    );
}

/// Sequential enqueues at one connection, with the engine draining each job as it comes
/// (`engine`: its claims and finishes share the writer with the enqueues) or stopped (the API
/// and the commit alone).
async fn enqueue_sequential(table: &mut Table, total: usize, engine: bool) {
    let server = start(engine, true).await;
    let client = client();
    let url = format!("{}/v1/jobs", server.base);
    let body = noop_body();
    // Warm the connection and the token cache.
    post_job(&client, &url, &server.token, &body).await;
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(total);
    for _ in 0..total {
        latencies.push(post_job(&client, &url, &server.token, &body).await.1);
    }
    let elapsed = started.elapsed();
    let breakdown = if engine {
        let breakdown = latency_breakdown(&server, &client, total).await;
        wait_succeeded(&server, 2 * total + 1, Instant::now()).await;
        breakdown
    } else {
        Vec::new()
    };
    server.stop().await;

    let section = if engine {
        "3 enqueue (engine running)"
    } else {
        "3 enqueue (engine stopped)"
    };
    let p = percentiles(latencies);
    table.row(
        section,
        &format!("latency p50, 1 connection ({total} sequential)"),
        fmt_ms(p.p50),
        format!("{} sequential", fmt_rate(rate(total, elapsed))),
    );
    table.row(
        section,
        "latency p99, 1 connection",
        fmt_ms(p.p99),
        format!(
            "target ≤ 0.5 ms: {}; max {}",
            verdict(p.p99 <= Duration::from_micros(500)),
            fmt_ms(p.max)
        ),
    );
    for (what, sample) in breakdown {
        let p = percentiles(sample);
        table.row(
            section,
            what,
            fmt_ms(p.p50),
            format!("p99 {}; max {}", fmt_ms(p.p99), fmt_ms(p.max)),
        );
    }
}

/// Where one sequential enqueue's time goes: the same job created through the store in
/// process (no HTTP: the writer's queue, commit and reply), an authenticated HTTP round trip
/// that reads the job (`GET /v1/jobs/{id}`), and one that touches nothing (`GET /healthz`).
async fn latency_breakdown(
    server: &Server,
    client: &reqwest::Client,
    total: usize,
) -> Vec<(&'static str, Vec<Duration>)> {
    let template = common::noop_job_template(server, Vec::new());
    let mut store = Vec::with_capacity(total);
    let mut last = None;
    for _ in 0..total {
        let job = common::fresh_job(&template);
        last = Some(job.id);
        let started = Instant::now();
        server.store().create_job(job).await.expect("create job");
        store.push(started.elapsed());
    }
    let job_url = format!("{}/v1/jobs/{}", server.base, last.expect("a job"));
    let http = timed_gets(client, &job_url, Some(&server.token), total).await;
    let bare = timed_gets(client, &format!("{}/healthz", server.base), None, total).await;
    vec![
        ("  of which: store.create_job in process, p50", store),
        ("  of which: HTTP GET /v1/jobs/{id} (a read), p50", http),
        ("  of which: HTTP GET /healthz (no store), p50", bare),
    ]
}

/// The latencies of `total` sequential GETs of `url` (with `token` as bearer, if given), each
/// until its whole body arrived.
async fn timed_gets(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    total: usize,
) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(total);
    for _ in 0..total {
        let started = Instant::now();
        let mut request = client.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("GET");
        assert!(
            response.status().is_success(),
            "GET {url}: {}",
            response.status()
        );
        response.bytes().await.expect("body");
        latencies.push(started.elapsed());
    }
    latencies
}

// ---------------------------------------------------------------------------------------------
// 4. Pickup latency.

async fn pickup(table: &mut Table, total: usize, gap: Duration) {
    let server = start(true, true).await;
    let client = client();
    let url = format!("{}/v1/jobs", server.base);
    let body = noop_body();
    post_job(&client, &url, &server.token, &body).await;
    let mut ids = Vec::with_capacity(total);
    for _ in 0..total {
        ids.push(post_job(&client, &url, &server.token, &body).await.0);
        tokio::time::sleep(gap).await;
    }
    wait_succeeded(&server, total + 1, Instant::now()).await;
    let mut sample = Vec::with_capacity(total);
    for id in ids {
        let detail = server
            .store()
            .get_job(id)
            .await
            .expect("get job")
            .expect("job exists");
        let first = detail.attempts.first().expect("an attempt");
        sample.push(first.started_at - detail.job.created_at);
    }
    server.stop().await;

    let within = sample.iter().filter(|&&ms| ms <= 1).count();
    let p = percentiles(sample);
    let section = "4 pickup (created_at → started_at)";
    table.row(
        section,
        &format!("p50 over {total} jobs, one every {} ms", gap.as_millis()),
        format!("{} ms", p.p50),
        format!(
            "target ≤ 1 ms: {}; store times are whole ms",
            verdict(p.p50 <= 1)
        ),
    );
    table.row(
        section,
        "p99",
        format!("{} ms", p.p99),
        format!(
            "max {} ms; {:.1}% ≤ 1 ms",
            p.max,
            100.0 * within as f64 / total as f64
        ),
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Burn-down.

/// Inserts `total` no-op jobs through `store.create_job` from many tasks, so group commit
/// batches them; returns the elapsed time.
async fn pre_insert(server: &Server, total: usize) -> Duration {
    // One validated plan; each job is a copy with its own id and creation time.
    let template = noop_job_template(server, Vec::new());
    let (_, elapsed) = create_many(server.store(), &template, total, 512).await;
    elapsed
}

/// Pre-inserts `total` jobs with the engine stopped, starts it and times the drain.
/// A burn-down's figures.
struct BurnDown {
    drain: f64,
    insert: f64,
    drained: Drained,
    cpu: String,
}

async fn burn_down(total: usize) -> BurnDown {
    let mut server = start(false, false).await;
    let inserted = pre_insert(&server, total).await;
    let (queued, _) = jobs_with_status(server.store(), "queued").await;
    assert_eq!(queued as usize, total, "pre-insert lost jobs");
    let cpu = Cpu::now();
    let started = Instant::now();
    server.start_engine().await;
    let drained = wait_succeeded(&server, total, started).await;
    let cpu = cpu.note(total, "job");
    server.stop().await;
    BurnDown {
        drain: rate(total, drained.elapsed),
        insert: rate(total, inserted),
        drained,
        cpu,
    }
}

async fn burn_downs(table: &mut Table, small: usize, large: usize, baseline_rate: f64) {
    let section = "5 burn-down (engine started on a full queue)";
    let mut rates = Vec::new();
    for total in [small, large] {
        eprintln!("burn-down of {total} jobs…");
        let BurnDown {
            drain,
            insert,
            drained,
            cpu,
        } = burn_down(total).await;
        table.row(
            section,
            &format!("{total} jobs drained"),
            fmt_rate(drain),
            format!(
                "{:.2}× baseline; target ≥ 50 000: {}",
                drain / baseline_rate,
                verdict(drain >= 50_000.0)
            ),
        );
        table.row(
            section,
            &format!("{total} jobs drained: CPU"),
            String::new(),
            cpu,
        );
        table.row(
            section,
            &format!("{total} jobs pre-inserted (create_job, 512 tasks)"),
            fmt_rate(insert),
            format!(
                "poll {} / store.snapshot {}",
                fmt_ms(drained.poll),
                fmt_ms(drained.snapshot)
            ),
        );
        rates.push(drain);
    }
    table.row(
        section,
        &format!("flatness: rate at {large} / rate at {small}"),
        format!("{:.2}", rates[1] / rates[0]),
        "1.00 = flat as the table grows".into(),
    );
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let quick = common::quick();
    let scale = |n: usize| if quick { n / 10 } else { n };
    let cores = common::start("engine", quick);
    let engine = engine_config();
    let batch = engine.claim_batch;
    println!(
        "engine: concurrency {}, claim_batch {}; store: WAL, synchronous=FULL",
        engine.concurrency, engine.claim_batch
    );

    let mut table = Table::default();
    common::machine_row(&mut table, cores);

    let n = scale(50_000);
    eprintln!("baseline…");
    let cpu = Cpu::now();
    let elapsed = baseline(n, batch);
    let (_, baseline_cpu) = cpu.per_op(n);
    let baseline_rate = rate(n, elapsed);
    table.row(
        "1 baseline (bare rusqlite)",
        &format!("{n} jobs, B = {batch}: insert, claim, complete tx"),
        fmt_rate(baseline_rate),
        format!(
            "{:.2} s, {} commits; CPU/job {baseline_cpu:.0} µs (one thread)",
            elapsed.as_secs_f64(),
            3 * n.div_ceil(batch)
        ),
    );

    let runtime = common::runtime();
    runtime.block_on(async {
        if selected("e2e") {
            eprintln!("end to end…");
            end_to_end(&mut table, scale(20_000), baseline_rate).await;
        }
        if selected("enqueue") {
            eprintln!("sequential enqueue…");
            enqueue_sequential(&mut table, scale(5_000), true).await;
            enqueue_sequential(&mut table, scale(5_000), false).await;
        }
        if selected("pickup") {
            eprintln!("pickup…");
            pickup(&mut table, scale(1_000), Duration::from_millis(2)).await;
        }
        if selected("burn") {
            burn_downs(&mut table, scale(50_000), scale(500_000), baseline_rate).await;
        }
    });

    finish(&table);
}
