//! Pipeline throughput (source → jq → SQLite `sql` sink), with a bare fetch-and-upsert loop as
//! baseline in the same run.
//!
//! `cargo bench --bench pipeline` prints one table:
//!
//! 1. baseline: one loop that GETs every page of the mock source with reqwest, maps each message
//!    to the same row the jq filter makes, and upserts the page's rows with rusqlite in one
//!    transaction (`INSERT … ON CONFLICT(id) DO UPDATE`) on a temp-file database with WAL and
//!    `synchronous=FULL`;
//! 2. the real application in this process, its API on `127.0.0.1`: a pipeline created with
//!    `POST /v1/pipelines` reads the same pages through the `message-source` connector, runs
//!    the jq filter and upserts into a SQLite `sql` sink; timed from the POST until the sink
//!    stage's `done` counter reaches N. Once per worker count (`workers` of the jq and sink
//!    stages).
//!
//! The mock source (axum, in this process) serves pre-serialised pages, so it costs little.
//!
//! Overrides: `GLEANER_BENCH_MESSAGES` (default 20 000), `GLEANER_BENCH_PAGE_SIZE` (100),
//! `GLEANER_BENCH_WORKERS` (worker counts to run, default `2,4`), `GLEANER_BENCH_BATCH` (the
//! sink's `batch_size`, 500), `GLEANER_BENCH_QUEUE` (`queue_capacity`, 5000);
//! `GLEANER_BENCH_QUICK=1` scales N down 10×.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rusqlite::{Connection, params};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

#[path = "common/mod.rs"]
mod common;

use common::{AppServer as Server, Table, cpu_micros_per, env_usize, finish, process_cpu, rate};

/// The `X-Auth-Token` the mock source expects.
const SOURCE_TOKEN: &str = "t";
/// The jq stage's filter; the baseline computes the same row in Rust.
const FILTER: &str = "{id, title, message, author, n: (.title | length)}";
/// How often the pipeline's view is asked whether the sink is done.
const POLL: Duration = Duration::from_millis(20);
/// Longest one run may take before the bench gives up.
const RUN_LIMIT: Duration = Duration::from_secs(120);

fn fmt_rate(per_second: f64) -> String {
    format!("{per_second:>8.0} msgs/s")
}

/// The run's shape.
#[derive(Clone, Copy)]
struct Params {
    messages: usize,
    page_size: usize,
    batch_size: usize,
    queue_capacity: usize,
}

impl Params {
    fn pages(&self) -> usize {
        self.messages.div_ceil(self.page_size)
    }
}

/// CPU per message since `since`, as a table note.
fn cpu_note(since: Duration, messages: usize) -> String {
    format!(
        "CPU/msg {:.0} µs (whole process, mock source included)",
        cpu_micros_per(since, messages)
    )
}

// ---------------------------------------------------------------------------------------------
// The mock message source.

/// One message in the seed's shape.
fn message(index: usize, page: usize) -> Value {
    json!({
        "id": format!("msg-{index:08}"),
        "source": "MessagingSystem",
        "title": format!("Message title {index}"),
        "creation_date": format!("2030-08-24T17:{:02}:{:02}.228009", (index / 60) % 60, index % 60),
        "message": format!("test message {index} (page {page})"),
        "tags": ["bench", format!("page-{page}")],
        "author": format!("author-{}", index % 7),
    })
}

/// Every page's answer, serialised once.
fn serialised_pages(params: Params) -> Arc<Vec<Bytes>> {
    let pages = params.pages();
    let bodies = (0..pages)
        .map(|page| {
            let first = page * params.page_size;
            let last = (first + params.page_size).min(params.messages);
            let results: Vec<Value> = (first..last).map(|index| message(index, page)).collect();
            let cursor = (page + 1 < pages).then_some(page + 1);
            Bytes::from(
                serde_json::to_vec(&json!({"results": results, "cursor": cursor}))
                    .expect("page json"),
            )
        })
        .collect();
    Arc::new(bodies)
}

struct SourceState {
    pages: Arc<Vec<Bytes>>,
    /// Set once the last page has been answered; `/messages` is empty from then on.
    last_served: AtomicBool,
    pages_served: AtomicUsize,
}

/// `GET /messages` and `GET /messages/{cursor}` on `127.0.0.1:0`; stops when dropped.
struct Source {
    state: Arc<SourceState>,
    base: String,
    stop: CancellationToken,
}

impl Source {
    async fn start(pages: Arc<Vec<Bytes>>) -> Self {
        let state = Arc::new(SourceState {
            pages,
            last_served: AtomicBool::new(false),
            pages_served: AtomicUsize::new(0),
        });
        let router = Router::new()
            .route("/messages", get(first_page))
            .route("/messages/{cursor}", get(page_at))
            .with_state(state.clone());
        let stop = CancellationToken::new();
        let (addr, _) = common::serve(router, stop.clone()).await;
        Self {
            state,
            base: format!("http://{addr}"),
            stop,
        }
    }

    fn pages_served(&self) -> usize {
        self.state.pages_served.load(Ordering::Relaxed)
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn first_page(State(state): State<Arc<SourceState>>, headers: HeaderMap) -> Response {
    answer(&state, &headers, None)
}

async fn page_at(
    State(state): State<Arc<SourceState>>,
    Path(cursor): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer(&state, &headers, Some(cursor))
}

fn answer(state: &SourceState, headers: &HeaderMap, cursor: Option<String>) -> Response {
    const EMPTY: &str = r#"{"results":[],"cursor":null}"#;
    let json = [(header::CONTENT_TYPE, "application/json")];
    if headers.get("x-auth-token").map(|v| v.as_bytes()) != Some(SOURCE_TOKEN.as_bytes()) {
        return (StatusCode::UNAUTHORIZED, json, r#"{"error":"bad token"}"#).into_response();
    }
    let pages = &state.pages;
    let page = match cursor.map(|cursor| cursor.parse::<usize>()) {
        None if state.last_served.load(Ordering::SeqCst) || pages.is_empty() => {
            return (json, EMPTY).into_response();
        }
        None => 0,
        Some(Ok(page)) if page < pages.len() => page,
        Some(_) => {
            return (StatusCode::NOT_FOUND, json, r#"{"error":"no such cursor"}"#).into_response();
        }
    };
    if page + 1 == pages.len() {
        state.last_served.store(true, Ordering::SeqCst);
    }
    state.pages_served.fetch_add(1, Ordering::Relaxed);
    (json, pages[page].clone()).into_response()
}

// ---------------------------------------------------------------------------------------------
// 1. Baseline: reqwest GET + rusqlite upsert.

fn open_baseline_db(path: &std::path::Path) -> Connection {
    let conn = Connection::open(path).expect("open baseline db");
    let _mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .expect("wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous");
    conn.execute_batch(
        "CREATE TABLE messages (id TEXT PRIMARY KEY, title TEXT, message TEXT, author TEXT,
                                n INTEGER)",
    )
    .expect("baseline schema");
    conn
}

/// The jq filter's row, in Rust.
fn row(message: &Value) -> (&str, &str, &str, &str, i64) {
    let text = |field: &str| message[field].as_str().expect("a text field");
    let title = text("title");
    (
        text("id"),
        title,
        text("message"),
        text("author"),
        title.chars().count() as i64,
    )
}

/// Reads every page and upserts its rows, one transaction per page. Returns the elapsed time
/// and the rows stored.
async fn baseline(source: &Source) -> (Duration, usize) {
    let dir = TempDir::new().expect("temp dir");
    let mut conn = open_baseline_db(&dir.path().join("baseline.db"));
    let client = common::http_client(1);
    let started = Instant::now();
    let mut url = format!("{}/messages", source.base);
    loop {
        let body = client
            .get(&url)
            .header("x-auth-token", SOURCE_TOKEN)
            .header("accept", "application/json")
            .send()
            .await
            .expect("GET page")
            .error_for_status()
            .expect("page status")
            .bytes()
            .await
            .expect("page body");
        let page: Value = serde_json::from_slice(&body).expect("page json");
        let results = page["results"].as_array().expect("results");
        tokio::task::block_in_place(|| {
            let tx = conn.transaction().expect("begin");
            {
                let mut upsert = tx
                    .prepare_cached(
                        "INSERT INTO messages (id, title, message, author, n)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT(id) DO UPDATE SET title = excluded.title,
                             message = excluded.message, author = excluded.author,
                             n = excluded.n",
                    )
                    .expect("prepare upsert");
                for message in results {
                    let (id, title, text, author, n) = row(message);
                    upsert
                        .execute(params![id, title, text, author, n])
                        .expect("upsert");
                }
            }
            tx.commit().expect("commit");
        });
        match page["cursor"].as_i64() {
            Some(cursor) => url = format!("{}/messages/{cursor}", source.base),
            None => break,
        }
    }
    let elapsed = started.elapsed();
    let stored: i64 = conn
        .query_row("SELECT COUNT(*) FROM messages", [], |row| row.get(0))
        .expect("count");
    (elapsed, stored as usize)
}

// ---------------------------------------------------------------------------------------------
// 2. Gleaner's pipeline.

/// The real application on a temp data directory that may fetch from loopback, its engine
/// running and its API on `127.0.0.1:0`.
async fn start_server() -> Server {
    let mut server = Server::build(|config| {
        config.net.allow = vec!["127.0.0.1/32".parse().expect("network")];
    })
    .await;
    server.start_engine().await;
    server.serve_http().await;
    server
}

fn pipeline_spec(source: &Source, params: Params, workers: u32) -> Value {
    json!({
        "name": "bench",
        "source": {
            "connector": "message-source",
            "settings": {"base_url": source.base, "token": SOURCE_TOKEN},
            "idle_interval": "50ms"
        },
        "processors": [{"type": "jq", "filter": FILTER, "workers": workers}],
        "sinks": [{
            "type": "sql", "url": "sqlite://bench-sink.db", "table": "messages", "key": ["id"],
            "create_table": true, "batch_size": params.batch_size, "workers": workers,
            "columns": [{"name": "id"}, {"name": "title"}, {"name": "message"},
                        {"name": "author"}, {"name": "n", "type": "integer"}]
        }],
        "queue_capacity": params.queue_capacity
    })
}

/// What one pipeline run measured.
struct PipelineRun {
    elapsed: Duration,
    cpu: String,
    stored: usize,
    pages: usize,
    polls: u32,
}

async fn pipeline(pages: Arc<Vec<Bytes>>, params: Params, workers: u32) -> PipelineRun {
    let source = Source::start(pages).await;
    let server = start_server().await;
    let client = common::http_client(1);
    let spec = pipeline_spec(&source, params, workers);
    let view_url = format!("{}/v1/pipelines/bench", server.base);
    let total = params.messages as u64;

    let cpu = process_cpu();
    let started = Instant::now();
    let created = client
        .post(format!("{}/v1/pipelines", server.base))
        .bearer_auth(&server.token)
        .json(&spec)
        .send()
        .await
        .expect("POST /v1/pipelines");
    let status = created.status();
    let text = created.text().await.unwrap_or_default();
    assert_eq!(
        status,
        reqwest::StatusCode::CREATED,
        "POST /v1/pipelines: {text}"
    );
    let mut polls = 0;
    let elapsed = loop {
        let view: Value = client
            .get(&view_url)
            .bearer_auth(&server.token)
            .send()
            .await
            .expect("GET pipeline")
            .json()
            .await
            .expect("pipeline json");
        polls += 1;
        let done = view["stages"][2]["counters"]["done"].as_u64().unwrap_or(0);
        if done >= total {
            break started.elapsed();
        }
        let dead: u64 = view["stages"]
            .as_array()
            .map(|stages| {
                stages
                    .iter()
                    .filter_map(|stage| stage["counters"]["dead"].as_u64())
                    .sum()
            })
            .unwrap_or(0);
        assert!(
            dead == 0 && started.elapsed() < RUN_LIMIT,
            "pipeline not drained ({done} of {total} stored, {dead} dead after {:.1?}): {view:#}",
            started.elapsed()
        );
        tokio::time::sleep(POLL).await;
    };
    let cpu = cpu_note(cpu, params.messages);

    let sink_db = server.dir.path().join("bench-sink.db");
    let stored: i64 = tokio::task::block_in_place(|| {
        let conn =
            Connection::open_with_flags(&sink_db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .expect("open sink db");
        conn.busy_timeout(Duration::from_secs(5)).expect("busy");
        conn.query_row("SELECT COUNT(*) FROM messages", [], |row| row.get(0))
            .expect("count sink rows")
    });
    let pages = source.pages_served();
    server.stop().await;
    PipelineRun {
        elapsed,
        cpu,
        stored: stored as usize,
        pages,
        polls,
    }
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let quick = common::quick();
    let messages = env_usize("GLEANER_BENCH_MESSAGES", 20_000);
    let params = Params {
        messages: if quick {
            (messages / 10).max(1)
        } else {
            messages
        },
        page_size: env_usize("GLEANER_BENCH_PAGE_SIZE", 100),
        batch_size: env_usize("GLEANER_BENCH_BATCH", 500),
        queue_capacity: env_usize("GLEANER_BENCH_QUEUE", 5000),
    };
    let worker_counts: Vec<u32> = std::env::var("GLEANER_BENCH_WORKERS")
        .unwrap_or_else(|_| "2,4".into())
        .split(',')
        .map(|count| count.trim().parse::<u32>().expect("a worker count"))
        .collect();
    let cores = common::start("pipeline", quick);
    println!(
        "run: {} messages in {} pages of {}; source: axum mock on 127.0.0.1 (pre-serialised \
         pages), in this process",
        params.messages,
        params.pages(),
        params.page_size
    );
    println!(
        "pipeline: message-source → jq `{FILTER}` → sql sink (SQLite, table `messages`, key id, \
         batch_size {}), queue_capacity {}, workers {:?}; store: WAL, synchronous=FULL",
        params.batch_size, params.queue_capacity, worker_counts
    );
    println!(
        "baseline: reqwest GET page → serde_json → rusqlite upsert, one transaction per page, \
         WAL, synchronous=FULL, one task"
    );

    let pages = serialised_pages(params);
    let runtime = common::runtime();
    let mut table = Table::default();
    common::machine_row(&mut table, cores);
    runtime.block_on(async {
        eprintln!("baseline…");
        let source = Source::start(pages.clone()).await;
        let cpu = process_cpu();
        let (elapsed, stored) = baseline(&source).await;
        let cpu = cpu_note(cpu, params.messages);
        assert_eq!(stored, params.messages, "baseline lost rows");
        drop(source);
        let baseline_rate = rate(params.messages, elapsed);
        let section = "1 baseline (reqwest GET + rusqlite upsert)";
        table.row(
            section,
            &format!(
                "{} msgs, {} pages of {}, 1 tx per page",
                params.messages,
                params.pages(),
                params.page_size
            ),
            fmt_rate(baseline_rate),
            format!("{:.2} s", elapsed.as_secs_f64()),
        );
        table.row(section, "CPU", String::new(), cpu);

        for workers in worker_counts {
            eprintln!("pipeline, {workers} workers…");
            let run = pipeline(pages.clone(), params, workers).await;
            assert_eq!(run.stored, params.messages, "the sink lost rows");
            let pipeline_rate = rate(params.messages, run.elapsed);
            let section = format!("2 gleaner pipeline, workers {workers}");
            table.row(
                &section,
                &format!(
                    "{} msgs: POST → sink done = N (jq, sql: {workers} workers)",
                    params.messages
                ),
                fmt_rate(pipeline_rate),
                format!(
                    "{:.2} s; {} source pages fetched",
                    run.elapsed.as_secs_f64(),
                    run.pages
                ),
            );
            table.row(
                &section,
                "ratio gleaner / baseline",
                format!("{:.2}", pipeline_rate / baseline_rate),
                format!("{} rows in the sink", run.stored),
            );
            table.row(
                &section,
                "CPU",
                String::new(),
                format!(
                    "{}; {} polls every {} ms",
                    run.cpu,
                    run.polls,
                    POLL.as_millis()
                ),
            );
        }
    });

    finish(&table);
}
