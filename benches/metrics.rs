//! Metric ingest throughput and memory, with a bare axum JSON echo server as baseline in the
//! same run.
//!
//! `cargo bench --bench metrics` prints one table:
//!
//! 0. RSS (`VmRSS` of this process, which hosts the server and the clients): at process start,
//!    with the application built and serving but idle, after 100 000 distinct counter series
//!    were ingested (batches of 1000), and after one snapshot of them (peak `VmHWM` too);
//! 1. single-event ingest: `POST /v1/metrics` with one counter event from 32, then 256
//!    keep-alive connections for a fixed time, each against a bare axum route that deserialises
//!    the same body into a struct and answers `{"ok":true}`, measured the same way right before.
//!    At 32 connections the rate is bound by latency (each answer waits for a group commit's
//!    fsync, the echo for nothing); at 256 both saturate the cores, so the ratio is one of CPU
//!    per request;
//! 2. batched ingest: `{"batch_id", "events": [1000 events over 100 series of the four types]}`
//!    from 8 connections (bodies pre-serialised but for the unique batch id), then the same
//!    events as NDJSON with a `Batch-Id` header;
//! 3. StatsD: a fixed number of datagrams of 20 `bench.sd:1|c` lines blasted from one UDP
//!    socket, timed until the counter `bench.sd` reaches the lines sent or stops growing.
//!
//! Everything runs in this process on `127.0.0.1`; on a small machine the clients take CPU from
//! the server, the same for the baseline as for the application.
//!
//! Overrides: `GLEANER_BENCH_SECONDS` (each timed HTTP run, default 3), `GLEANER_BENCH_CLIENTS`
//! (single-event connection counts, comma-separated, `32,256`), `GLEANER_BENCH_BATCH_CLIENTS`
//! (8), `GLEANER_BENCH_SERIES` (100 000), `GLEANER_BENCH_DATAGRAMS` (50 000),
//! `GLEANER_BENCH_ONLY` (some of `rss,single,batch,ndjson,statsd`); `GLEANER_BENCH_QUICK=1`
//! scales N and times down 10×.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[path = "common/mod.rs"]
mod common;

use common::{
    AppServer, Table, cpu_micros_per, env_usize, finish, fmt_ms, http_client, percentiles,
    process_cpu, rate, selected, verdict,
};

/// Events in one batch of section 2 and 0.
const BATCH_EVENTS: usize = 1000;
/// Series the events of one batch of section 2 spread over.
const BATCH_SERIES: usize = 100;
/// StatsD lines per datagram.
const LINES_PER_DATAGRAM: usize = 20;
/// How often the StatsD counter is read while it grows.
const POLL: Duration = Duration::from_millis(20);
/// The counter is deemed settled when it did not grow for this long after the last send.
const SETTLE: Duration = Duration::from_secs(1);

const SINGLE_EVENT: &str = r#"{"name":"bench.hits","type":"counter","value":1}"#;

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`), in bytes.
fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

fn rss() -> u64 {
    status_bytes("VmRSS")
}

/// Process CPU per operation since `since`, as a note.
fn cpu_note(since: Duration, operations: usize, what: &str) -> String {
    format!(
        "CPU/{what} {:.1} µs (clients included)",
        cpu_micros_per(since, operations.max(1))
    )
}

// ---------------------------------------------------------------------------------------------
// The application under test, and the baseline.

/// The application on a temp data directory with its metrics (StatsD on `127.0.0.1:0`) and
/// its API on `127.0.0.1:0`.
async fn start_server() -> AppServer {
    let mut server = AppServer::build(|config| {
        config.server.min_free_disk = 0;
        config.metrics.statsd_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    server.start_metrics().await;
    server.serve_http().await;
    server
}

fn ingest_url(server: &AppServer) -> String {
    format!("{}/v1/metrics", server.base)
}

/// The body the echo route deserialises: the single event's shape.
#[derive(Deserialize)]
#[allow(dead_code)]
struct SmallEvent {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    value: f64,
}

/// A bare axum server with one route that deserialises a small JSON body and answers
/// `{"ok":true}`; returns its URL.
async fn echo_server(shutdown: &CancellationToken) -> (String, JoinHandle<()>) {
    async fn echo(Json(_event): Json<SmallEvent>) -> Json<Value> {
        Json(json!({"ok": true}))
    }
    let router = axum::Router::new().route("/echo", post(echo));
    let (addr, serving) = common::serve(router, shutdown.clone()).await;
    (format!("http://{addr}/echo"), serving)
}

/// One POST; panics on anything but 200.
async fn post_body(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    content_type: &str,
    batch_id: Option<&str>,
    body: Bytes,
) {
    let mut request = client
        .post(url)
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body);
    if let Some(id) = batch_id {
        request = request.header("batch-id", id);
    }
    let response = request.send().await.expect("POST");
    let status = response.status();
    let bytes = response.bytes().await.expect("response body");
    assert_eq!(
        status,
        reqwest::StatusCode::OK,
        "POST {url}: {}",
        String::from_utf8_lossy(&bytes)
    );
}

/// What a timed run measured.
struct Run {
    requests: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    cpu: Duration,
}

/// POSTs `warm` (batch id and body) once so that the routes and the token cache are warm, then
/// the bodies `make(n)` makes from `connections` tasks until `duration` has passed.
async fn post_for<F>(
    url: &str,
    token: &str,
    content_type: &'static str,
    connections: usize,
    duration: Duration,
    warm: (Option<&str>, Bytes),
    make: F,
) -> Run
where
    F: Fn(usize) -> (Option<String>, Bytes) + Send + Sync + 'static,
{
    let (batch_id, body) = warm;
    post_body(&http_client(1), url, token, content_type, batch_id, body).await;
    let client = http_client(connections);
    let make = Arc::new(make);
    let next = Arc::new(AtomicUsize::new(0));
    let cpu = process_cpu();
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (client, url, token, make, next) = (
                client.clone(),
                url.to_owned(),
                token.to_owned(),
                make.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let (batch_id, body) = make(next.fetch_add(1, Ordering::Relaxed));
                    let sent = Instant::now();
                    post_body(
                        &client,
                        &url,
                        &token,
                        content_type,
                        batch_id.as_deref(),
                        body,
                    )
                    .await;
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client task"));
    }
    Run {
        requests: latencies.len(),
        elapsed: started.elapsed(),
        latencies,
        cpu,
    }
}

// ---------------------------------------------------------------------------------------------
// 0. RSS with many series.

/// A batch of `BATCH_EVENTS` counter events, each its own series `bench.rss.<n>`.
fn distinct_counters(batch: usize) -> Bytes {
    let events: Vec<Value> = (0..BATCH_EVENTS)
        .map(|n| {
            json!({
                "name": format!("bench.rss.{}", batch * BATCH_EVENTS + n),
                "type": "counter",
                "value": 1,
            })
        })
        .collect();
    Bytes::from(json!({"batch_id": format!("rss-{batch}"), "events": events}).to_string())
}

async fn memory(table: &mut Table, at_start: u64, series: usize, connections: usize) {
    let section = "0 memory (VmRSS, server + clients)";
    table.row(section, "at process start", mib(at_start), String::new());
    let server = start_server().await;
    // Let the server settle, then one request so the routes and the token cache are warm.
    post_body(
        &http_client(1),
        &ingest_url(&server),
        &server.token,
        "application/json",
        None,
        Bytes::from_static(SINGLE_EVENT.as_bytes()),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = rss();
    table.row(
        section,
        "idle: app built, serving, 1 series",
        mib(idle),
        format!("DESIGN ≤ 30 MiB idle: {}", verdict(idle <= 30 << 20)),
    );

    let batches = series.div_ceil(BATCH_EVENTS);
    let client = http_client(connections);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (client, url, token, next) = (
                client.clone(),
                ingest_url(&server),
                server.token.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let batch = next.fetch_add(1, Ordering::Relaxed);
                    if batch >= batches {
                        break;
                    }
                    let body = distinct_counters(batch);
                    post_body(&client, &url, &token, "application/json", None, body).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("rss client");
    }
    let ingested = started.elapsed();
    let total = batches * BATCH_EVENTS;
    let known = server.app.metrics.registry().len();
    assert_eq!(known, total + 1, "series in the registry");
    let loaded = rss();
    table.row(
        section,
        &format!("after {total} distinct counter series"),
        mib(loaded),
        format!(
            "+{} over idle ({:.0} B/series); DESIGN ≤ 200 MiB under load: {}; ingested in {:.2} s",
            mib(loaded.saturating_sub(idle)),
            loaded.saturating_sub(idle) as f64 / total as f64,
            verdict(loaded <= 200 << 20),
            ingested.as_secs_f64()
        ),
    );
    let asked = Instant::now();
    let taken = server.app.metrics.snapshot().await.expect("snapshot");
    let snapshot = asked.elapsed();
    let after = rss();
    let peak = status_bytes("VmHWM");
    table.row(
        section,
        "after one snapshot of them",
        mib(after),
        format!(
            "snapshot of {} series ({}) took {}, ingest paused {}; peak VmHWM {}: {}",
            taken.series,
            mib(taken.bytes as u64),
            fmt_ms(snapshot),
            fmt_ms(taken.ingest_paused),
            mib(peak),
            verdict(peak <= 200 << 20)
        ),
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 1. Single-event ingest against the echo baseline.

async fn single(table: &mut Table, connections: usize, duration: Duration) {
    let section = "1 single-event ingest (HTTP)";
    let stop = CancellationToken::new();
    let (echo_url, echo) = echo_server(&stop).await;
    let body = Bytes::from_static(SINGLE_EVENT.as_bytes());
    let make = {
        let body = body.clone();
        move |_| (None, body.clone())
    };
    let baseline = post_for(
        &echo_url,
        "unused",
        "application/json",
        connections,
        duration,
        (None, body.clone()),
        make,
    )
    .await;
    stop.cancel();
    let _ = echo.await;
    let baseline_rate = rate(baseline.requests, baseline.elapsed);
    let baseline_cpu = cpu_note(baseline.cpu, baseline.requests, "req");
    let baseline_p = percentiles(baseline.latencies);
    table.row(
        section,
        &format!("baseline: bare axum JSON echo, {connections} connections"),
        format!("{baseline_rate:>9.0} req/s"),
        format!(
            "p50 {} p99 {}; {baseline_cpu}",
            fmt_ms(baseline_p.p50),
            fmt_ms(baseline_p.p99)
        ),
    );

    let server = start_server().await;
    let make = {
        let body = body.clone();
        move |_| (None, body.clone())
    };
    let run = post_for(
        &ingest_url(&server),
        &server.token,
        "application/json",
        connections,
        duration,
        (None, body),
        make,
    )
    .await;
    let ingest_rate = rate(run.requests, run.elapsed);
    let cpu = cpu_note(run.cpu, run.requests, "req");
    let count = series_value(&server, "bench.hits").await;
    assert_eq!(
        count as usize,
        run.requests + 1,
        "bench.hits does not hold every acknowledged event"
    );
    server.stop().await;
    let p = percentiles(run.latencies);
    let ratio = ingest_rate / baseline_rate;
    table.row(
        section,
        &format!("POST /v1/metrics, 1 counter event, {connections} connections"),
        format!("{ingest_rate:>9.0} req/s"),
        format!(
            "{:.0} % of baseline, target ≥ 80 %: {}",
            ratio * 100.0,
            verdict(ratio >= 0.8)
        ),
    );
    table.row(
        section,
        "  latency / CPU",
        String::new(),
        format!(
            "p50 {} p99 {} max {}; {cpu}",
            fmt_ms(p.p50),
            fmt_ms(p.p99),
            fmt_ms(p.max)
        ),
    );
}

/// `GET /v1/metrics/{series}`: the series' view, `None` if it is unknown.
async fn series_view(server: &AppServer, series: &str) -> Option<Value> {
    let response = http_client(1)
        .get(format!("{}/v1/metrics/{series}", server.base))
        .bearer_auth(&server.token)
        .send()
        .await
        .expect("GET series");
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return None;
    }
    assert!(
        response.status().is_success(),
        "GET {series}: {}",
        response.status()
    );
    Some(response.json().await.expect("series json"))
}

/// `GET /v1/metrics/{series}` → `aggregate.value` (0 for an unknown series).
async fn series_value(server: &AppServer, series: &str) -> f64 {
    series_view(server, series).await.map_or(0.0, |view| {
        view["aggregate"]["value"]
            .as_f64()
            .expect("aggregate.value")
    })
}

// ---------------------------------------------------------------------------------------------
// 2. Batched ingest.

/// The events of one batch as JSON texts: `BATCH_EVENTS` over `BATCH_SERIES` series, a quarter
/// each of counters, gauges, meters and timers, tagged.
fn batch_events() -> Vec<String> {
    const TYPES: [&str; 4] = ["counter", "gauge", "meter", "timer"];
    (0..BATCH_EVENTS)
        .map(|n| {
            let series = n % BATCH_SERIES;
            let kind = TYPES[series % TYPES.len()];
            json!({
                "name": format!("bench.batch.{kind}.{series}"),
                "type": kind,
                "value": (n % 97) as f64 * 1.5,
                "tags": {"host": format!("h{}", series % 10), "region": "eu"},
            })
            .to_string()
        })
        .collect()
}

async fn batched(table: &mut Table, connections: usize, duration: Duration, ndjson: bool) {
    let section = "2 batched ingest (HTTP)";
    let events = batch_events();
    let server = start_server().await;
    let url = ingest_url(&server);
    type Make = Box<dyn Fn(usize) -> (Option<String>, Bytes) + Send + Sync>;
    let (content_type, warm, make): (_, _, Make) = if ndjson {
        let body = Bytes::from(events.join("\n") + "\n");
        let warm = (Some("nd-warm"), body.clone());
        let make = move |n: usize| (Some(format!("nd-{n}")), body.clone());
        ("application/x-ndjson", warm, Box::new(make))
    } else {
        // `{"batch_id":"` + id + `","events":[…]}`: only the id is written per request.
        let tail = Bytes::from(format!("\",\"events\":[{}]}}", events.join(",")));
        let body = move |id: &str| {
            let mut body = Vec::with_capacity(tail.len() + 64);
            body.extend_from_slice(b"{\"batch_id\":\"");
            body.extend_from_slice(id.as_bytes());
            body.extend_from_slice(&tail);
            Bytes::from(body)
        };
        let warm = (None, body("json-warm"));
        let make = move |n: usize| (None, body(&format!("json-{n}")));
        ("application/json", warm, Box::new(make))
    };
    let run = post_for(
        &url,
        &server.token,
        content_type,
        connections,
        duration,
        warm,
        make,
    )
    .await;
    let cpu = cpu_note(run.cpu, run.requests * BATCH_EVENTS, "event");
    // Counter series 0 gets BATCH_EVENTS / BATCH_SERIES events of (0, 100, 200, …) % 97 × 1.5
    // per batch; its count must match every acknowledged batch.
    let count = series_view(&server, "bench.batch.counter.0{host=h0,region=eu}")
        .await
        .expect("the counter series exists")["aggregate"]["count"]
        .as_u64()
        .expect("aggregate.count");
    assert_eq!(
        count as usize,
        (run.requests + 1) * (BATCH_EVENTS / BATCH_SERIES),
        "a counter series does not hold every acknowledged batch"
    );
    server.stop().await;
    let events_rate = rate(run.requests * BATCH_EVENTS, run.elapsed);
    let p = percentiles(run.latencies);
    let shape = if ndjson {
        "NDJSON + Batch-Id header"
    } else {
        "JSON {batch_id, events}"
    };
    table.row(
        section,
        &format!("{shape}, {BATCH_EVENTS} events/{BATCH_SERIES} series, {connections} connections"),
        format!("{events_rate:>9.0} events/s"),
        format!(
            "target ≥ 1 000 000: {}; {:.0} batches/s",
            verdict(events_rate >= 1_000_000.0),
            rate(run.requests, run.elapsed)
        ),
    );
    table.row(
        section,
        "  latency per batch / CPU",
        String::new(),
        format!("p50 {} p99 {}; {cpu}", fmt_ms(p.p50), fmt_ms(p.p99)),
    );
}

// ---------------------------------------------------------------------------------------------
// 3. StatsD.

async fn statsd(table: &mut Table, datagrams: usize) {
    let section = "3 StatsD (UDP)";
    let server = start_server().await;
    let (addr, stats): (SocketAddr, _) = server.app.metrics.statsd().expect("statsd running");
    let datagram: String = "bench.sd:1|c\n".repeat(LINES_PER_DATAGRAM);
    let sent_lines = datagrams * LINES_PER_DATAGRAM;
    let cpu = process_cpu();
    let started = Instant::now();
    let sender = std::thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind sender");
        for _ in 0..datagrams {
            socket.send_to(datagram.as_bytes(), addr).expect("send");
        }
        started.elapsed()
    });
    let mut last = 0.0;
    let mut grew_at = started;
    loop {
        tokio::time::sleep(POLL).await;
        let value = server
            .app
            .metrics
            .registry()
            .get(
                &gleaner::metrics::SeriesKey::parse("bench.sd").unwrap(),
                server.app.metrics.now(),
            )
            .map_or(0.0, |view| view.aggregate.count() as f64);
        if value > last {
            last = value;
            grew_at = Instant::now();
        }
        let sent = sender.is_finished();
        if value as usize >= sent_lines || (sent && grew_at.elapsed() >= SETTLE) {
            break;
        }
    }
    let send_time = sender.join().expect("sender");
    let settled = grew_at.duration_since(started);
    let cpu = cpu_note(cpu, last as usize, "line");
    let by_http = series_value(&server, "bench.sd").await;
    let accepted = last as usize;
    table.row(
        section,
        &format!("{datagrams} datagrams × {LINES_PER_DATAGRAM} lines, one socket, blasted"),
        format!("{:>9.0} lines/s", rate(accepted, settled)),
        format!(
            "accepted {accepted} of {sent_lines} ({:.1} %) in {:.2} s; GET value {by_http}; {cpu}",
            100.0 * accepted as f64 / sent_lines as f64,
            settled.as_secs_f64()
        ),
    );
    table.row(
        section,
        "  sent / lost",
        format!("{:>9.0} lines/s", rate(sent_lines, send_time)),
        format!(
            "received_lines {}, dropped_lines {} (ingest queue full), kernel_drops {} datagrams \
             (rmem_max {})",
            stats.received_lines(),
            stats.dropped_lines(),
            stats
                .kernel_drops()
                .map_or("unknown".into(), |drops| drops.to_string()),
            std::fs::read_to_string("/proc/sys/net/core/rmem_max")
                .map_or("unknown".into(), |text| text.trim().to_owned()),
        ),
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------

/// The comma-separated connection counts in `name`, else `default`.
fn connection_counts(name: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(name) {
        Ok(list) => list
            .split(',')
            .map(|count| {
                count
                    .trim()
                    .parse::<usize>()
                    .expect("connection counts: positive numbers separated by commas")
                    .max(1)
            })
            .collect(),
        Err(_) => default.to_vec(),
    }
}

fn main() {
    let at_start = rss();
    let quick = common::quick();
    let scale = |n: usize| if quick { (n / 10).max(1) } else { n };
    let seconds = std::env::var("GLEANER_BENCH_SECONDS")
        .ok()
        .map(|value| value.trim().parse::<f64>().expect("seconds"))
        .unwrap_or(3.0);
    let duration = Duration::from_secs_f64(if quick { seconds / 10.0 } else { seconds });
    let clients = connection_counts("GLEANER_BENCH_CLIENTS", &[32, 256]);
    let batch_clients = env_usize("GLEANER_BENCH_BATCH_CLIENTS", 8);
    let series = scale(env_usize("GLEANER_BENCH_SERIES", 100_000));
    let datagrams = scale(env_usize("GLEANER_BENCH_DATAGRAMS", 50_000));
    let cores = common::start("metrics", quick);
    println!(
        "server and clients in this process (reqwest, keep-alive); store: WAL, synchronous=FULL; \
         each timed HTTP run {:.1} s",
        duration.as_secs_f64()
    );

    let runtime = common::runtime();
    let mut table = Table::default();
    common::machine_row(&mut table, cores);
    runtime.block_on(async {
        if selected("rss") {
            eprintln!("memory with {series} series…");
            memory(&mut table, at_start, series, batch_clients).await;
        }
        if selected("single") {
            for &connections in &clients {
                eprintln!("single-event ingest, {connections} connections…");
                single(&mut table, connections, duration).await;
            }
        }
        if selected("batch") {
            eprintln!("batched ingest…");
            batched(&mut table, batch_clients, duration, false).await;
        }
        if selected("ndjson") {
            eprintln!("NDJSON ingest…");
            batched(&mut table, batch_clients, duration, true).await;
        }
        if selected("statsd") {
            eprintln!("StatsD…");
            statsd(&mut table, datagrams).await;
        }
    });

    finish(&table);
}
