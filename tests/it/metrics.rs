//! Metric ingest and aggregation end to end (the metrics-ingestion-service seed): exact
//! counters under concurrency, the documented figures of each type, per-second meter rates
//! and decaying EWMAs on an injected clock, batches counted once, every malformed input a 4xx
//! with nothing stored, the seed's routes, live updates, Prometheus exposition and StatsD.

use std::time::Duration;

use gleaner::clock::ManualClock;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::harness::{TestApp, assert_problem, post_raw};

async fn series(app: &TestApp, id: &str) -> Value {
    let path = format!("/v1/metrics/{}", urlencode(id));
    let answer = app.get(&path).await;
    assert_eq!(answer.status, 200, "{id}: {}", answer.text);
    answer.json()
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn send(app: &TestApp, body: Value) -> Value {
    let answer = app.post("/v1/metrics", &body).await;
    assert_eq!(answer.status, 200, "{body}: {}", answer.text);
    answer.json()
}

async fn series_count(app: &TestApp) -> usize {
    app.get("/v1/metrics").await.json()["series"]
        .as_array()
        .expect("series")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_increments_make_two_hundred() {
    let app = TestApp::start().await;
    let sends = (0..200).map(|_| {
        let request = app
            .request(Method::POST, "/v1/metrics")
            .json(&json!({"name": "hits", "type": "counter", "value": 1}));
        app.send(request)
    });
    for answer in futures::future::join_all(sends).await {
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    let hits = series(&app, "hits").await;
    assert_eq!(hits["aggregate"]["value"], 200.0);
    assert_eq!(hits["aggregate"]["count"], 200);
}

#[tokio::test]
async fn counters_and_timers_have_the_documented_figures() {
    let app = TestApp::start().await;
    for value in [5, 3, 10] {
        send(
            &app,
            json!({"name": "c", "type": "counter", "value": value}),
        )
        .await;
    }
    assert_eq!(series(&app, "c").await["aggregate"]["value"], 18.0);
    send(
        &app,
        json!([
            {"name": "t", "type": "timer", "value": 100},
            {"name": "t", "type": "timer", "value": 50},
            {"name": "t", "type": "timer", "value": 300},
        ]),
    )
    .await;
    let timer = series(&app, "t").await["aggregate"].clone();
    assert_eq!(
        (
            &timer["min"],
            &timer["max"],
            &timer["mean"],
            &timer["sum"],
            &timer["count"]
        ),
        (
            &json!(50.0),
            &json!(300.0),
            &json!(150.0),
            &json!(450.0),
            &json!(3)
        )
    );
    let p50 = timer["p50"].as_f64().expect("p50");
    assert!((p50 - 100.0).abs() <= 1.0, "median within 1 %: {p50}");
    send(
        &app,
        json!({"name": "g", "type": "gauge", "value": 7, "tags": {"room": "a"}}),
    )
    .await;
    send(
        &app,
        json!({"name": "g", "type": "gauge", "value": 3, "tags": {"room": "a"}}),
    )
    .await;
    let gauge = series(&app, "g{room=a}").await["aggregate"].clone();
    assert_eq!(
        (&gauge["value"], &gauge["min"], &gauge["max"]),
        (&json!(3.0), &json!(3.0), &json!(7.0))
    );
}

#[tokio::test]
async fn a_meter_rate_is_per_second_and_its_ewma_decays_while_idle() {
    let clock = ManualClock::new(1_800_000_000_000);
    let app = TestApp::builder().clock(clock.clone()).start().await;
    for step in 0..4 {
        if step > 0 {
            clock.advance(Duration::from_millis(250));
        }
        send(&app, json!({"name": "m", "type": "meter", "value": 1})).await;
    }
    let meter = series(&app, "m").await["aggregate"].clone();
    let rate = meter["mean_rate"].as_f64().expect("mean rate");
    assert!(
        (rate - 4.0 / 0.75).abs() < 1e-9,
        "4 events / 0.75 s: {rate}"
    );
    clock.advance(Duration::from_millis(4_250));
    let ticked = series(&app, "m").await["aggregate"]["m1_rate"]
        .as_f64()
        .expect("m1");
    assert!(ticked > 0.0, "the first 5 s tick sets the 1-minute rate");
    clock.advance(Duration::from_secs(600));
    let idle = series(&app, "m").await["aggregate"]["m1_rate"]
        .as_f64()
        .expect("m1");
    assert!(
        idle < ticked * 0.01,
        "decays toward 0 while idle: {ticked} → {idle}"
    );
}

#[tokio::test]
async fn a_retried_batch_is_counted_once_and_ndjson_works() {
    let app = TestApp::start().await;
    let batch = json!({"batch_id": "b-1", "events": [
        {"name": "orders", "type": "counter", "value": 2},
        {"name": "orders", "type": "counter", "value": 3},
    ]});
    assert_eq!(send(&app, batch.clone()).await["accepted"], 2);
    let again = send(&app, batch).await;
    assert_eq!(
        (&again["accepted"], &again["duplicate"]),
        (&json!(0), &json!(true))
    );
    let ndjson = "{\"name\":\"orders\",\"type\":\"counter\",\"value\":5}\n\
                  {\"name\":\"orders\",\"type\":\"counter\",\"value\":-1}\n";
    let answer = app
        .send(
            app.request(Method::POST, "/v1/metrics")
                .header("content-type", "application/x-ndjson")
                .header("batch-id", "b-2")
                .body(ndjson),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(series(&app, "orders").await["aggregate"]["value"], 9.0);
}

#[tokio::test]
async fn malformed_events_are_refused_and_nothing_is_stored() {
    let app = TestApp::start().await;
    send(
        &app,
        json!({"name": "typed", "type": "counter", "value": 1}),
    )
    .await;
    let many_tags: serde_json::Map<String, Value> =
        (0..10_000).map(|i| (format!("k{i}"), json!("v"))).collect();
    for (body, status, needle) in [
        (json!({"type": "counter", "value": 1}), 422, "name"),
        (
            json!({"name": "x", "type": "counter", "value": "5"}),
            422,
            "value",
        ),
        (
            json!({"name": "x", "type": "counter", "value": 1e308 * 10.0}),
            422,
            "value",
        ),
        (json!({"name": "x", "type": "sum", "value": 1}), 422, "type"),
        (
            json!({"name": "typed", "type": "timer", "value": 1}),
            409,
            "counter",
        ),
        (
            json!({"name": "x", "type": "counter", "value": 1, "tags": many_tags}),
            422,
            "tags",
        ),
        (
            json!({"name": "bad name!", "type": "counter", "value": 1}),
            422,
            "name",
        ),
        (
            json!([{"name": "ok", "type": "counter", "value": 1}, {"name": "x", "type": "gauge"}]),
            422,
            "events[1]",
        ),
        (json!([]), 422, "no events"),
    ] {
        let answer = app.post("/v1/metrics", &body).await;
        let problem = assert_problem(&answer, status);
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(needle), "{body}: {detail}");
    }
    for (raw, status) in [
        (
            "{\"name\": \"x\", \"type\": \"counter\", \"value\": NaN}",
            400,
        ),
        (
            "{\"name\": \"x\", \"type\": \"counter\", \"value\": Infinity}",
            400,
        ),
        (
            "{\"name\": \"x\", \"type\": \"counter\", \"value\": 1e400}",
            400,
        ),
        ("{\"name\": ", 400),
    ] {
        let answer = post_raw(&app, "/v1/metrics", "application/json", raw).await;
        assert_problem(&answer, status);
    }
    let huge = format!(
        "{{\"name\": \"{}\", \"type\": \"counter\", \"value\": 1}}",
        "n".repeat(1 << 20)
    );
    let answer = post_raw(&app, "/v1/metrics", "application/json", &huge).await;
    assert!(
        answer.status.is_client_error(),
        "1 MB name: {}",
        answer.status
    );
    assert_eq!(
        series_count(&app).await,
        1,
        "only the first, valid event is stored"
    );
    assert_eq!(series(&app, "typed").await["aggregate"]["value"], 1.0);
}

#[tokio::test]
async fn the_seed_routes_keep_their_contract_without_its_bugs() {
    let app = TestApp::start().await;
    for value in [5, 3, 10] {
        let answer = app
            .post(
                "/ingest/metrics",
                &json!({"level": "app", "name": "c", "type": "COUNTER", "value": value}),
            )
            .await;
        assert_eq!(
            (answer.status.as_u16(), answer.text.as_str()),
            (200, "Record c UPDATED")
        );
    }
    for value in [100, 50, 300] {
        let answer = app
            .post("/ingest/metrics/", &json!({"level": "app", "name": "server.get.timer", "type": "TIMER", "value": value}))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    let counter = app.get("/data/metrics/app.c").await.json();
    assert_eq!(
        (&counter["value"], &counter["type"], &counter["level"]),
        (&json!(18.0), &json!("COUNTER"), &json!("app"))
    );
    let timer = app.get("/data/metrics/app.server.get.timer").await.json();
    for (field, value) in [
        ("min", 50.0),
        ("max", 300.0),
        ("mean", 150.0),
        ("sum", 450.0),
    ] {
        assert_eq!(timer[field], value, "{field}: {timer}");
    }
    assert_eq!(timer["count"], 3);
    assert!(
        timer["startTime"].is_i64() && timer["updateTime"].is_i64(),
        "{timer}"
    );
    let all = app.get("/data/metrics").await.json();
    assert_eq!(all.as_array().expect("array").len(), 2);
    let gauge = app
        .post(
            "/data/metrics",
            &json!({"level": "app", "name": "temp", "type": "GAUGE", "value": 21.5}),
        )
        .await;
    assert_eq!(gauge.text, "Record temp UPDATED");
    for (body, needle) in [
        (
            json!({"level": "app", "type": "COUNTER", "value": 1}),
            "name",
        ),
        (
            json!({"level": "app", "name": "c", "type": "COUNTER", "value": "5"}),
            "value",
        ),
        (
            json!({"level": "app", "name": "c", "type": "HISTO", "value": 1}),
            "type",
        ),
        (
            json!({"level": "a.b", "name": "c", "type": "COUNTER", "value": 1}),
            "level",
        ),
    ] {
        let problem = assert_problem(&app.post("/ingest/metrics", &body).await, 400);
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(needle),
            "{body}"
        );
    }
    let mismatch = app
        .post(
            "/ingest/metrics",
            &json!({"level": "app", "name": "c", "type": "TIMER", "value": 1}),
        )
        .await;
    assert_problem(&mismatch, 409);
    assert_problem(&app.get("/data/metrics/app.unknown").await, 404);
    let deleted = app
        .send(app.request(Method::DELETE, "/data/metrics/app.c"))
        .await;
    assert_eq!(
        (deleted.status.as_u16(), deleted.text.as_str()),
        (200, "Record app.c DELETED")
    );
    assert_problem(
        &app.send(app.request(Method::DELETE, "/data/metrics/app.c"))
            .await,
        404,
    );
    let ping = app.get("/health/ping").await;
    assert_eq!((ping.status.as_u16(), ping.text.as_str()), (200, "pong"));
}

#[tokio::test]
async fn series_are_listed_streamed_exposed_and_survive_a_restart() {
    let app = TestApp::start().await;
    let mut stream = app
        .client
        .get(app.url("/v1/metrics/stream?series=live"))
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    send(
        &app,
        json!({"name": "live", "type": "counter", "value": 4, "tags": {}}),
    )
    .await;
    send(
        &app,
        json!({"name": "other", "type": "gauge", "value": 1, "tags": {"host": "a"}}),
    )
    .await;
    let mut seen = String::new();
    while !seen.contains("event: update") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
            .await
            .expect("an update within 5 s")
            .expect("chunk")
            .expect("open stream");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("\"key\":\"live\""), "{seen}");
    let listed = app.get("/v1/metrics?type=gauge&tag=host:a").await.json();
    assert_eq!(listed["series"][0]["key"], "other{host=a}");
    let metrics = app.get("/metrics").await.text;
    assert!(
        metrics.contains("user_counter_total{series=\"live\"} 4\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("user_gauge{series=\"other\",tag_host=\"a\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.trim_end().ends_with("# EOF"));

    let deleted = app
        .send(app.request(Method::DELETE, "/v1/metrics/other%7Bhost%3Da%7D"))
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let dir = app.kill();
    let again = TestApp::builder().data_dir(dir).start().await;
    assert_eq!(series(&again, "live").await["aggregate"]["value"], 4.0);
    assert_problem(&again.get("/v1/metrics/other%7Bhost%3Da%7D").await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statsd_lines_over_udp_are_counted_exactly() {
    let app = TestApp::builder()
        .config(|config| config.metrics.statsd_listen = Some("127.0.0.1:0".parse().expect("addr")))
        .start()
        .await;
    let target = app.statsd_addr().expect("statsd runs");
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    const LINES: usize = 100_000;
    const PER_DATAGRAM: usize = 20;
    let datagram =
        "sd.hits:1|c\n".repeat(PER_DATAGRAM - 2) + "sd.latency:12|ms|#route:home\nbroken line\n";
    for sent in 0..LINES / PER_DATAGRAM {
        socket
            .send_to(datagram.as_bytes(), target)
            .await
            .expect("send");
        if sent % 100 == 99 {
            // A moderate rate: about 100 000 lines a second.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let datagrams = LINES / PER_DATAGRAM;
    let expected_hits = (datagrams * (PER_DATAGRAM - 2)) as f64;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let hits = app.get("/v1/metrics/sd.hits").await;
        if hits.status == 200 && hits.json()["aggregate"]["value"] == expected_hits {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "hits: {}", hits.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let latency = series(&app, "sd.latency{route=home}").await;
    assert_eq!(latency["aggregate"]["count"], datagrams);
    let metrics = app.get("/metrics").await.text;
    for line in [
        format!("gleaner_statsd_lines_total{{outcome=\"received\"}} {LINES}"),
        format!("gleaner_statsd_lines_total{{outcome=\"invalid\"}} {datagrams}"),
        "gleaner_statsd_lines_total{outcome=\"dropped\"} 0".to_owned(),
        "gleaner_statsd_kernel_drops_total 0".to_owned(),
    ] {
        assert!(metrics.contains(&line), "missing {line} in /metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gleaner_metrics_send_posts_an_event() {
    let app = TestApp::start().await;
    let run = |args: Vec<String>| {
        std::process::Command::new(crate::support::process::binary())
            .args(args)
            .output()
            .expect("run gleaner")
    };
    let target = |mut args: Vec<String>| {
        args.extend([
            "--url".into(),
            app.base.clone(),
            "--token".into(),
            app.token.clone(),
        ]);
        args
    };
    let sent = tokio::task::block_in_place(|| {
        run(target(
            [
                "metrics",
                "send",
                "cli.latency",
                "12.5",
                "--type",
                "timer",
                "--tag",
                "route=home",
            ]
            .map(String::from)
            .to_vec(),
        ))
    });
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(String::from_utf8_lossy(&sent.stdout).contains("\"accepted\": 1"));
    let shown = tokio::task::block_in_place(|| {
        run(target(
            ["metrics", "show", "cli.latency{route=home}"]
                .map(String::from)
                .to_vec(),
        ))
    });
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let view: Value = serde_json::from_slice(&shown.stdout).expect("json");
    assert_eq!(view["aggregate"]["max"], 12.5);
    let refused = tokio::task::block_in_place(|| {
        run(target(
            ["metrics", "send", "bad name", "1"]
                .map(String::from)
                .to_vec(),
        ))
    });
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("name"));
}
