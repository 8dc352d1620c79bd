//! The Databox sink against a tiny recording server on 127.0.0.1: wire formats, auth, the
//! single timestamp, the status check, batching and failure classification.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use url::Url;

use super::*;
use crate::clock::SystemClock;
use crate::job::{JobStatus, StepState};
use crate::net::{HttpClientFactory, NetConfig, Retryability};
use crate::sinks::SourceOutcome;

/// 2024-05-06T07:08:09.010Z.
const COLLECTED_AT: i64 = 1_714_979_289_010;
const DATE: &str = "2024-05-06T07:08:09.01Z";

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Value,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

#[derive(Default)]
struct Recording {
    seen: Vec<Seen>,
    /// Answers used first, in order; then the push or dataset success answer.
    script: VecDeque<(u16, String)>,
}

/// A recording Databox stand-in.
struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<Recording>>,
}

impl Server {
    async fn start() -> Self {
        let state = Arc::new(Mutex::new(Recording::default()));
        let shared = state.clone();
        let router =
            axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = shared.clone();
                async move {
                    let mut state = state.lock().expect("state");
                    state.seen.push(Seen {
                        path: uri.path().to_owned(),
                        headers,
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    });
                    let (status, body) = state.script.pop_front().unwrap_or_else(|| {
                        let word = if uri.path() == "/" { "OK" } else { "success" };
                        (
                            200,
                            json!({"status": word, "id": "ingestion-1"}).to_string(),
                        )
                    });
                    (StatusCode::from_u16(status).expect("status"), body)
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { addr, state }
    }

    fn answer(&self, status: u16, body: &str) {
        let mut state = self.state.lock().expect("state");
        state.script.push_back((status, body.to_owned()));
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("state").seen.clone()
    }

    fn sink(&self, token: Option<&str>) -> DataboxSink {
        let base = Url::parse(&format!("http://{}", self.addr)).expect("url");
        DataboxSink::new(DataboxConfig {
            base_url: base.clone(),
            dataset_base_url: base,
            token: token.map(str::to_owned),
            timeout: Duration::from_secs(5),
        })
    }
}

fn context() -> SinkContext {
    let net = NetConfig {
        allow: vec!["127.0.0.1/32".parse().expect("net")],
        ..NetConfig::default()
    };
    SinkContext {
        http: HttpClientFactory::new(&net).expect("client"),
        clock: Arc::new(SystemClock),
        files_root: std::env::temp_dir(),
    }
}

fn source(step_id: i64, name: &str) -> SourceOutcome {
    SourceOutcome {
        step_id,
        name: name.into(),
        connector: "http".into(),
        state: StepState::Succeeded,
        attempts: 1,
        records: 1,
        error: None,
    }
}

/// A delivery of `records` from sources `so` (step 1) and `reddit` (step 2).
fn delivery(records: Vec<(i64, Value)>) -> Delivery {
    Delivery {
        job_id: uuid::Uuid::nil(),
        delivery_id: "msg_1".into(),
        status: JobStatus::Succeeded,
        created_at: COLLECTED_AT - 5_000,
        collected_at: COLLECTED_AT,
        sources: vec![source(1, "so"), source(2, "reddit")],
        records,
    }
}

fn metric(name: &str, value: Value) -> Value {
    json!({"metric": name, "value": value, "tag": name.to_lowercase()})
}

/// `count` metric records, alternating between the two sources.
fn many(count: usize) -> Delivery {
    delivery(
        (0..count)
            .map(|n| (1 + (n % 2) as i64, metric(&format!("M{n}"), json!(n))))
            .collect(),
    )
}

fn validation() -> SinkValidation {
    SinkValidation {
        files_root: std::env::temp_dir(),
        guard: crate::net::AddressGuard::default(),
    }
}

#[test]
fn the_date_is_the_collection_time_in_rfc3339() {
    assert_eq!(rfc3339(COLLECTED_AT), DATE);
}

#[tokio::test]
async fn push_sends_every_metric_with_basic_auth_and_one_date() {
    let server = Server::start().await;
    let sink = server.sink(None);
    let records = vec![
        (1, metric("RustQuestionCount", json!(120))),
        (1, metric("GoQuestionCount", json!(75.5))),
        (2, metric("RustPostCount", json!(3))),
    ];
    let receipt = sink
        .deliver(
            &context(),
            &json!({"token": "push-token"}),
            &delivery(records),
        )
        .await
        .expect("delivered");
    assert_eq!(receipt.http_status, Some(200));
    assert!(receipt.response.expect("answer kept").contains("OK"));

    let seen = server.seen();
    assert_eq!(seen.len(), 1, "one request for the whole batch");
    let push = &seen[0];
    assert_eq!(push.path, "/");
    let credentials = push
        .header("authorization")
        .and_then(|value| value.strip_prefix("Basic "))
        .expect("basic auth");
    assert_eq!(BASE64.decode(credentials).expect("base64"), b"push-token:");
    assert_eq!(
        push.header("accept"),
        Some("application/vnd.databox.v2+json")
    );
    assert_eq!(push.header("content-type"), Some("application/json"));
    assert!(
        push.header("user-agent")
            .is_some_and(|agent| agent.starts_with("gleaner/")),
        "{:?}",
        push.header("user-agent")
    );
    assert_eq!(
        push.body,
        json!({"data": [
            {"$RustQuestionCount": 120, "date": DATE},
            {"$GoQuestionCount": 75.5, "date": DATE},
            {"$RustPostCount": 3, "date": DATE},
        ]})
    );
}

#[tokio::test]
async fn a_retried_push_sends_the_same_body() {
    let server = Server::start().await;
    server.answer(503, "busy");
    let sink = server.sink(Some("configured"));
    let delivery = many(3);
    let error = sink
        .deliver(&context(), &json!({}), &delivery)
        .await
        .expect_err("503");
    assert!(matches!(error.retryability(), Retryability::Retry { .. }));
    sink.deliver(&context(), &json!({}), &delivery)
        .await
        .expect("delivered");
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, seen[1].body, "same data points, same date");
    let credentials = seen[1].header("authorization").expect("auth");
    assert_eq!(
        credentials,
        format!("Basic {}", BASE64.encode("configured:"))
    );
}

#[tokio::test]
async fn only_a_confirmed_answer_is_success() {
    let server = Server::start().await;
    let sink = server.sink(Some("t"));
    for (body, reason) in [
        (r#"{"status":"ERROR","message":"bad metric"}"#, "\"ERROR\""),
        (r#"{"status":"ok"}"#, "\"ok\""),
        (r#"{"message":"fine"}"#, "no status"),
        ("<html>proxy</html>", "not JSON"),
        ("", "not JSON"),
    ] {
        server.answer(200, body);
        let error = sink
            .deliver(&context(), &json!({}), &many(1))
            .await
            .expect_err(body);
        assert!(matches!(error, Error::Unconfirmed { .. }), "{error:?}");
        assert!(error.to_string().contains(reason), "{body}: {error}");
        assert_eq!(error.retryability(), Retryability::Permanent);
        assert_eq!(error.http_status(), Some(200));
        assert_eq!(error.response_excerpt(), Some(body), "the answer is kept");
    }
}

#[tokio::test]
async fn server_errors_and_throttling_are_retried_and_client_errors_are_final() {
    let server = Server::start().await;
    let sink = server.sink(Some("t"));
    for status in [500, 502, 503, 429, 408] {
        server.answer(status, "later");
        let error = sink
            .deliver(&context(), &json!({}), &many(1))
            .await
            .expect_err("failure");
        assert!(
            matches!(error.retryability(), Retryability::Retry { .. }),
            "{status}: {error:?}"
        );
        assert_eq!(error.http_status(), Some(status));
    }
    for status in [400, 401, 403, 404, 410, 422] {
        let body = r#"{"type":"invalid_json","message":"metric key is invalid"}"#;
        server.answer(status, body);
        let error = sink
            .deliver(&context(), &json!({}), &many(1))
            .await
            .expect_err("failure");
        assert_eq!(error.retryability(), Retryability::Permanent, "{status}");
        assert_eq!(error.http_status(), Some(status));
        assert_eq!(error.response_excerpt(), Some(body), "{status}");
    }
}

#[tokio::test]
async fn an_unreachable_databox_is_retried() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let base = Url::parse(&format!("http://{addr}")).expect("url");
    let sink = DataboxSink::new(DataboxConfig {
        base_url: base,
        token: Some("t".into()),
        ..DataboxConfig::default()
    });
    let error = sink
        .deliver(&context(), &json!({}), &many(1))
        .await
        .expect_err("nobody listens");
    assert!(matches!(error, Error::Upstream(_)), "{error:?}");
    assert_eq!(error.retryability(), Retryability::Retry { after: None });
}

#[tokio::test]
async fn dataset_sends_250_records_as_3_batches_of_rows() {
    let server = Server::start().await;
    let sink = server.sink(None);
    let settings = json!({"api": "dataset", "dataset": "ds-1", "token": "api-key"});
    sink.deliver(&context(), &settings, &many(250))
        .await
        .expect("delivered");
    let seen = server.seen();
    let sizes: Vec<usize> = seen
        .iter()
        .map(|request| request.body["records"].as_array().expect("records").len())
        .collect();
    assert_eq!(sizes, [100, 100, 50]);
    let mut n = 0;
    for request in &seen {
        assert_eq!(request.path, "/v1/datasets/ds-1/data");
        assert_eq!(request.header("x-api-key"), Some("api-key"));
        assert_eq!(request.header("authorization"), None);
        assert_eq!(request.header("content-type"), Some("application/json"));
        for row in request.body["records"].as_array().expect("records") {
            let name = format!("M{n}");
            assert_eq!(
                *row,
                json!({"metric": name, "value": n, "tag": name.to_lowercase(), "date": DATE})
            );
            n += 1;
        }
    }
    assert_eq!(n, 250, "every record once, in order");
}

#[tokio::test]
async fn a_failed_batch_is_named_and_classified_by_its_answer() {
    let server = Server::start().await;
    let sink = server.sink(Some("k"));
    let settings = json!({"api": "dataset", "dataset": "ds"});
    let accepted = r#"{"status":"success","ingestionId":"a"}"#;
    server.answer(200, accepted);
    server.answer(503, "overloaded");
    let error = sink
        .deliver(&context(), &settings, &many(250))
        .await
        .expect_err("second batch failed");
    assert!(
        matches!(
            error,
            Error::Part {
                number: 2,
                total: 3,
                records: 100,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(matches!(error.retryability(), Retryability::Retry { .. }));
    assert_eq!(server.seen().len(), 2, "no batch after the failed one");

    let refusal = r#"{"status":"error","errors":[{"code":"invalid_input","field":"records"}]}"#;
    server.answer(200, accepted);
    server.answer(200, accepted);
    server.answer(400, refusal);
    let error = sink
        .deliver(&context(), &settings, &many(250))
        .await
        .expect_err("third batch refused");
    assert!(
        error.to_string().starts_with("request 3 of 3 (50 records)"),
        "{error}"
    );
    assert_eq!(error.retryability(), Retryability::Permanent);
    assert_eq!(error.http_status(), Some(400));
    assert_eq!(error.response_excerpt(), Some(refusal));

    server.answer(200, r#"{"status":"processing"}"#);
    let error = sink
        .deliver(&context(), &settings, &many(10))
        .await
        .expect_err("unconfirmed");
    assert!(error.to_string().contains("\"processing\""), "{error}");
    assert_eq!(error.retryability(), Retryability::Permanent);
}

#[tokio::test]
async fn records_that_are_not_metrics_are_refused_by_name_without_a_request() {
    let server = Server::start().await;
    let sink = server.sink(Some("t"));
    let records = vec![
        (1, metric("Fine", json!(1))),
        (1, json!({"metric": "Text", "value": "12"})),
        (2, json!({"value": 3})),
        (2, json!([1, 2])),
    ];
    let error = sink
        .deliver(&context(), &json!({}), &delivery(records))
        .await
        .expect_err("refused");
    let message = error.to_string();
    for named in [
        "record 2 of source `so` (metric `Text`) has no numeric `value`",
        "record 1 of source `reddit` has no `metric` name",
        "record 2 of source `reddit` is not a JSON object",
    ] {
        assert!(message.contains(named), "{named} in {message}");
    }
    assert!(!message.contains("Fine"), "{message}");
    assert_eq!(error.retryability(), Retryability::Permanent);
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn dataset_rows_need_their_primary_keys_once_each() {
    let server = Server::start().await;
    let sink = server.sink(Some("t"));
    let duplicate = vec![(1, metric("Same", json!(1))), (2, metric("Same", json!(2)))];
    let error = sink
        .deliver(
            &context(),
            &json!({"api": "dataset", "dataset": "ds"}),
            &delivery(duplicate),
        )
        .await
        .expect_err("two rows with one key");
    assert!(
        error.to_string().contains(&format!(
            "metric `Same` repeats the primary key [\"Same\",\"{DATE}\"]"
        )),
        "{error}"
    );
    let error = sink
        .deliver(
            &context(),
            &json!({"api": "dataset", "dataset": "ds", "primary_keys": ["metric", "region"]}),
            &many(2),
        )
        .await
        .expect_err("no region");
    assert!(
        error
            .to_string()
            .contains("metric `M0` has no primary key column region"),
        "{error}"
    );
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn nothing_is_sent_when_no_source_produced_a_record() {
    let server = Server::start().await;
    let receipt = server
        .sink(Some("t"))
        .deliver(&context(), &json!({}), &delivery(Vec::new()))
        .await
        .expect("nothing to do");
    assert_eq!(receipt.http_status, None);
    assert!(server.seen().is_empty());
}

#[test]
fn a_token_is_required_from_the_job_or_the_configuration() {
    let bare = DataboxSink::default();
    let error = bare
        .validate(&validation(), &json!({}))
        .expect_err("no token");
    assert!(error.to_string().contains("sinks.databox.token"), "{error}");
    assert!(bare.validate(&validation(), &json!({"token": "t"})).is_ok());
    let configured = DataboxSink::new(DataboxConfig {
        token: Some("default".into()),
        ..DataboxConfig::default()
    });
    assert!(configured.validate(&validation(), &json!({})).is_ok());
    assert!(
        configured
            .validate(&validation(), &json!({"api": "dataset"}))
            .is_err()
    );
}

#[test]
fn the_endpoint_is_the_push_or_dataset_url() {
    let sink = DataboxSink::default();
    assert_eq!(
        sink.endpoint(&json!({})).as_deref(),
        Some("https://push.databox.com/")
    );
    assert_eq!(
        sink.endpoint(&json!({"api": "dataset", "dataset": "ds"}))
            .as_deref(),
        Some("https://api.databox.com/v1/datasets/ds/data")
    );
    assert!(
        sink.retry_schedule().is_none(),
        "the engine's backoff applies"
    );
}

#[test]
fn the_settings_schema_marks_the_token_secret() {
    let schema = crate::connectors::schema::SettingsSchema::compile(
        DataboxSink::default().settings_schema(),
    )
    .expect("compiles");
    let redacted = schema.redact(&json!({"token": "secret", "api": "push"}));
    assert_eq!(redacted, json!({"token": "********", "api": "push"}));
    assert!(
        schema
            .validate(&json!({"api": "dataset", "dataset": "d", "primary_keys": ["metric"]}))
            .is_ok()
    );
    assert!(schema.validate(&json!({"url": "x"})).is_err());
    assert!(schema.validate(&json!({"primary_keys": []})).is_err());
}
