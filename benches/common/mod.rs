//! What the benches share: the application under test and the servers beside it, the HTTP
//! client, the job template, CPU and commit timings, environment overrides, and what they print
//! with (rates, durations, percentiles and the result table).
//!
//! Included by each bench as `#[path = "common/mod.rs"] mod common;` (benches are separate
//! crates); each uses only part of it.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::serve::IncomingStream;
use gleaner::clock::{Clock, SystemClock};
use gleaner::config::Config;
use gleaner::connectors::ConnectorRegistry;
use gleaner::job::NewJob;
use gleaner::job::spec::{Catalog, JobSpec, SinkSpec, SourceSpec};
use gleaner::server::{App, Parts};
use gleaner::sinks::{SinkRegistry, SinkValidation};
use gleaner::store::SharedStore;
use serde_json::json;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::Service;
use uuid::Uuid;

pub fn now_ms() -> i64 {
    SystemClock.now()
}

// ---------------------------------------------------------------------------------------------
// The run: environment, start and end.

/// Whether `GLEANER_BENCH_QUICK=1` asks for a smoke run.
pub fn quick() -> bool {
    std::env::var("GLEANER_BENCH_QUICK").is_ok_and(|value| value == "1")
}

/// A count from the environment variable `name` (at least 1), or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|value| value.trim().parse::<usize>().expect("a positive number"))
        .unwrap_or(default)
        .max(1)
}

/// Whether `section` runs: all of them unless `GLEANER_BENCH_ONLY` lists some.
pub fn selected(section: &str) -> bool {
    std::env::var("GLEANER_BENCH_ONLY")
        .map(|only| only.split(',').any(|name| name.trim() == section))
        .unwrap_or(true)
}

/// What every bench does first: installs the TLS provider and prints the header line naming
/// the machine's cores, its load and whether the run is quick. Returns the number of cores.
pub fn start(bench: &str, quick: bool) -> usize {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "gleaner {bench} bench: {cores} cores, load average {} (1, 5, 15 min){}",
        load_average(),
        if quick { ", QUICK (N ÷ 10)" } else { "" }
    );
    cores
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// What every bench does last: the table, then the load average.
pub fn finish(table: &Table) {
    println!();
    table.print();
    println!("load average at the end: {}", load_average());
}

/// The engine's default settings, with `GLEANER_BENCH_CONCURRENCY` and
/// `GLEANER_BENCH_CLAIM_BATCH` overriding its worker slots and claim size (for tuning runs).
pub fn engine_config() -> gleaner::engine::EngineConfig {
    let read = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|value| value.parse::<usize>().expect("a positive number"))
    };
    let mut config = gleaner::engine::EngineConfig::default();
    if let Some(concurrency) = read("GLEANER_BENCH_CONCURRENCY") {
        config.concurrency = concurrency.max(1);
    }
    if let Some(batch) = read("GLEANER_BENCH_CLAIM_BATCH") {
        config.claim_batch = batch.max(1);
    }
    config
}

// ---------------------------------------------------------------------------------------------
// Machine figures.

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// CPU time (user + system) of the whole process so far.
pub fn process_cpu() -> Duration {
    // utime and stime, in clock ticks of 1/100 s, are fields 14 and 15 of /proc/self/stat
    // (counted after the parenthesised command name, which may contain spaces).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|field| field.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Process CPU per operation since `since` (a [`process_cpu`] reading), in µs.
pub fn cpu_micros_per(since: Duration, operations: usize) -> f64 {
    let spent = process_cpu().saturating_sub(since);
    spent.as_secs_f64() * 1e6 / operations as f64
}

/// CPU time used so far: by the store's writer threads (the writer and its checkpointer), and
/// by the whole process.
///
/// Rates are wall-clock and move with the machine's load (other builds share its cores); CPU
/// time per operation does not, so the tables show both.
#[derive(Clone, Copy)]
pub struct Cpu {
    writer: Duration,
    process: Duration,
}

impl Cpu {
    pub fn now() -> Self {
        // The writer thread is named `gleaner-sqlite-writer`; `comm` keeps 15 bytes of it.
        let mut writer = Duration::ZERO;
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let path = task.path();
                let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
                if comm.trim_end() != "gleaner-sqlite-" {
                    continue;
                }
                let nanos = std::fs::read_to_string(path.join("schedstat"))
                    .ok()
                    .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
                    .unwrap_or(0);
                writer += Duration::from_nanos(nanos);
            }
        }
        Self {
            writer,
            process: process_cpu(),
        }
    }

    /// CPU per operation since `self`: (writer threads, whole process), in µs.
    pub fn per_op(self, operations: usize) -> (f64, f64) {
        let now = Self::now();
        let micros = |duration: Duration| duration.as_secs_f64() * 1e6 / operations.max(1) as f64;
        let writer = now.writer.saturating_sub(self.writer);
        let process = now.process.saturating_sub(self.process).max(writer);
        (micros(writer), micros(process))
    }

    /// The same, as a table note: "CPU/`what`: …".
    pub fn note(self, operations: usize, what: &str) -> String {
        let (writer, process) = self.per_op(operations);
        format!("CPU/{what}: writer thread {writer:.0} µs, whole process {process:.0} µs")
    }
}

/// The time of one small `synchronous=FULL` commit on the temp directory's disk.
pub fn commit_latency() -> Percentiles {
    let dir = TempDir::new().expect("temp dir");
    let conn = rusqlite::Connection::open(dir.path().join("fsync.db")).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous");
    conn.execute_batch("CREATE TABLE t (x INTEGER)")
        .expect("table");
    let sample = (0..1000)
        .map(|n| {
            let started = Instant::now();
            conn.execute("INSERT INTO t VALUES (?1)", [n])
                .expect("insert");
            started.elapsed()
        })
        .collect();
    percentiles(sample)
}

// ---------------------------------------------------------------------------------------------
// Servers and clients.

/// The machine row every bench starts with: the latency of one small durable commit, the floor
/// under any acknowledged write, next to the cores and the load.
pub fn machine_row(table: &mut Table, cores: usize) {
    let commit = commit_latency();
    table.row(
        "0 machine",
        "one small synchronous=FULL commit, p50 (1000 commits)",
        fmt_ms(commit.p50),
        format!(
            "p99 {}, max {}; {cores} cores, load {}",
            fmt_ms(commit.p99),
            fmt_ms(commit.max),
            load_average()
        ),
    );
}

/// Serves `service` on `127.0.0.1:0` until `stop` is cancelled; returns its address and task.
pub async fn serve<M, S>(service: M, stop: CancellationToken) -> (SocketAddr, JoinHandle<()>)
where
    M: for<'a> Service<IncomingStream<'a, TcpListener>, Error = Infallible, Response = S>
        + Send
        + 'static,
    for<'a> <M as Service<IncomingStream<'a, TcpListener>>>::Future: Send,
    S: Service<axum::extract::Request, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let serving = tokio::spawn(async move {
        let _ = axum::serve(listener, service)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    (addr, serving)
}

/// A keep-alive client for up to `connections` concurrent requests to one host.
pub fn http_client(connections: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// The real application on a temp data directory; its engine, metrics and HTTP API are
/// started on demand and stopped together.
pub struct AppServer {
    pub app: App,
    pub config: Config,
    /// `http://127.0.0.1:<port>` once [`AppServer::serve_http`] ran, empty before.
    pub base: String,
    /// The admin token once [`AppServer::serve_http`] ran, empty before.
    pub token: String,
    pub shutdown: CancellationToken,
    serving: Option<JoinHandle<()>>,
    /// The engine and the metrics tasks, as started.
    tasks: Vec<JoinHandle<()>>,
    /// Last, so that it is removed after the application closed its files.
    pub dir: TempDir,
}

impl AppServer {
    /// Builds the application on a new temp data directory, with `configure` applied to the
    /// default configuration.
    pub async fn build(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = TempDir::new().expect("temp dir");
        let mut config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        configure(&mut config);
        let app = App::build(&config, Parts::default())
            .await
            .expect("build app");
        Self {
            app,
            config,
            base: String::new(),
            token: String::new(),
            shutdown: CancellationToken::new(),
            serving: None,
            tasks: Vec::new(),
            dir,
        }
    }

    pub async fn start_engine(&mut self) {
        let engine = self
            .app
            .start_engine(&self.shutdown)
            .await
            .expect("start engine");
        self.tasks.push(engine);
    }

    pub async fn start_metrics(&mut self) {
        let metrics = self
            .app
            .start_metrics(&self.shutdown)
            .await
            .expect("start metrics");
        self.tasks.push(metrics);
    }

    /// Serves the API (`app.service()`) on `127.0.0.1:0` and reads the admin token.
    pub async fn serve_http(&mut self) {
        let (addr, serving) = serve(self.app.service(), self.shutdown.clone()).await;
        self.base = format!("http://{addr}");
        self.serving = Some(serving);
        self.token = std::fs::read_to_string(self.config.data_dir.join("admin-token"))
            .expect("admin token")
            .trim()
            .to_owned();
    }

    pub fn store(&self) -> &SharedStore {
        &self.app.store
    }

    /// Cancels everything and waits for the API, then for the engine and metrics tasks.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(serving) = self.serving.take() {
            let _ = serving.await;
        }
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Jobs created through the store, as `POST /v1/jobs` does after validation.

/// A validated plan of a job with one `noop` source and `sinks`, under the server's
/// configuration and secrets key; each bench job is a copy of it (see [`fresh_job`]).
pub fn noop_job_template(server: &AppServer, sinks: Vec<SinkSpec>) -> NewJob {
    let config = &server.config;
    let connectors = ConnectorRegistry::builtin(config);
    let sink_registry = SinkRegistry::builtin(&config.sinks);
    let timezone = jiff::tz::TimeZone::UTC;
    let catalog = Catalog {
        connectors: &connectors,
        sinks: &sink_registry,
        sink_validation: &SinkValidation {
            files_root: config.files_root(),
            guard: gleaner::net::AddressGuard::new(config.net.allow.clone()),
        },
        timezone: &timezone,
        sealer: &server.app.engine.sealer,
        dates_at: None,
    };
    let spec = JobSpec {
        sources: vec![SourceSpec {
            connector: "noop".into(),
            name: None,
            settings: json!({}),
        }],
        processors: Vec::new(),
        sinks,
        retry: None,
        resolved_dates: Vec::new(),
    };
    spec.plan(&catalog, config.engine.step_defaults(), now_ms(), None)
        .expect("the bench's job plans")
}

/// A copy of `template` with its own id, created now.
pub fn fresh_job(template: &NewJob) -> NewJob {
    let mut job = template.clone();
    job.id = Uuid::now_v7();
    job.created_at = now_ms();
    job
}

/// Creates `total` copies of `template` through `store.create_job` from `tasks` tasks (so group
/// commit batches them); returns each job's id with the instant just before its `create_job`
/// call, and the elapsed time.
pub async fn create_many(
    store: &SharedStore,
    template: &NewJob,
    total: usize,
    tasks: usize,
) -> (Vec<(Uuid, Instant)>, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|_| {
            let (store, next, template) = (store.clone(), next.clone(), template.clone());
            tokio::spawn(async move {
                let mut created = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let job = fresh_job(&template);
                    let id = job.id;
                    let enqueued = Instant::now();
                    store.create_job(job).await.expect("create job");
                    created.push((id, enqueued));
                }
                created
            })
        })
        .collect();
    let mut created = Vec::with_capacity(total);
    for worker in workers {
        created.extend(worker.await.expect("creating task"));
    }
    (created, started.elapsed())
}

/// Jobs per status, from the store's snapshot: (with `status`, failed or dead or cancelled).
pub async fn jobs_with_status(store: &SharedStore, status: &str) -> (u64, u64) {
    let snapshot = store.snapshot(now_ms()).await.expect("snapshot");
    let count = |wanted: &[&str]| {
        snapshot
            .jobs_by_status
            .iter()
            .filter(|(status, _)| wanted.contains(&status.as_str()))
            .map(|(_, count)| count)
            .sum::<u64>()
    };
    (count(&[status]), count(&["failed", "dead", "cancelled"]))
}

// ---------------------------------------------------------------------------------------------
// Figures and the table.

pub fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

pub fn fmt_ms(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1000.0)
}

pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

pub struct Percentiles<T = Duration> {
    pub p50: T,
    pub p99: T,
    pub max: T,
}

/// Nearest-rank percentiles of a sample (of durations, or of whole milliseconds).
pub fn percentiles<T: Ord + Copy>(mut sample: Vec<T>) -> Percentiles<T> {
    assert!(!sample.is_empty(), "empty latency sample");
    sample.sort_unstable();
    let at =
        |q: f64| sample[((sample.len() as f64 * q).ceil() as usize).clamp(1, sample.len()) - 1];
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
    }
}

/// The printed table: section, measure, value, note.
#[derive(Default)]
pub struct Table {
    rows: Vec<[String; 4]>,
}

impl Table {
    pub fn row(&mut self, section: &str, measure: &str, value: String, note: String) {
        eprintln!("  {section} | {measure}: {value} {note}");
        self.rows
            .push([section.into(), measure.into(), value, note]);
    }

    pub fn print(&self) {
        let widths: Vec<usize> = (0..4)
            .map(|column| {
                self.rows
                    .iter()
                    .map(|row| row[column].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let rule: String = widths
            .iter()
            .map(|width| "-".repeat(width + 2))
            .collect::<Vec<_>>()
            .join("+");
        println!("{rule}");
        let mut last_section = "";
        for row in &self.rows {
            if !last_section.is_empty() && row[0] != last_section {
                println!("{rule}");
            }
            last_section = &row[0];
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(column, (cell, width))| {
                    let pad = width - cell.chars().count();
                    if column == 2 {
                        format!(" {}{} ", " ".repeat(pad), cell)
                    } else {
                        format!(" {}{} ", cell, " ".repeat(pad))
                    }
                })
                .collect();
            println!("{}", cells.join("|"));
        }
        println!("{rule}");
    }
}
