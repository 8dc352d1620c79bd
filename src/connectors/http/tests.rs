//! Tests of the `http` connector against axum mock upstreams on 127.0.0.1.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::HttpConnector;
use crate::clock::SystemClock;
use crate::connectors::schema::SettingsSchema;
use crate::connectors::{Connector, ConnectorContext, Error, Page};
use crate::net::{HttpClientFactory, NetConfig, Retryability, UpstreamError};

/// One request as the mock saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    query: BTreeMap<String, String>,
    headers: HeaderMap,
}

type Responder = Arc<dyn Fn(&Seen) -> Response + Send + Sync>;

struct Mock {
    base: String,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl Mock {
    async fn start(respond: impl Fn(&Seen) -> Response + Send + Sync + 'static) -> Self {
        let log = Arc::new(Mutex::new(Vec::new()));
        let state: (Arc<Mutex<Vec<Seen>>>, Responder) = (Arc::clone(&log), Arc::new(respond));
        let app = axum::Router::new().fallback(handle).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base: format!("http://{address}"),
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn seen(&self) -> Vec<Seen> {
        self.log.lock().expect("log").clone()
    }
}

async fn handle(
    State((log, respond)): State<(Arc<Mutex<Vec<Seen>>>, Responder)>,
    request: Request,
) -> Response {
    let query = url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let seen = Seen {
        path: request.uri().path().to_owned(),
        query,
        headers: request.headers().clone(),
    };
    log.lock().expect("log").push(seen.clone());
    respond(&seen)
}

fn json_response(body: Value) -> Response {
    axum::Json(body).into_response()
}

fn ctx() -> ConnectorContext {
    let config = NetConfig {
        allow: vec!["127.0.0.1/32".parse().expect("net")],
        ..Default::default()
    };
    ConnectorContext {
        http: HttpClientFactory::new(&config).expect("factory"),
        clock: Arc::new(SystemClock),
        telemetry: crate::observability::Telemetry::new(),
    }
}

/// Collects pages until `done`, returning every record and the pages.
async fn collect_all(settings: &Value) -> (Vec<Value>, Vec<Page>) {
    let ctx = ctx();
    let mut pages = Vec::new();
    let mut checkpoint: Option<Value> = None;
    for _ in 0..20 {
        let page = HttpConnector
            .collect_page(&ctx, settings, checkpoint.as_ref())
            .await
            .expect("page");
        checkpoint = page.checkpoint.clone().or(checkpoint);
        let done = page.done;
        pages.push(page);
        if done {
            break;
        }
    }
    let records = pages.iter().flat_map(|page| page.records.clone()).collect();
    (records, pages)
}

fn ids(range: std::ops::Range<u64>) -> Vec<Value> {
    range.map(|id| json!({"id": id})).collect()
}

#[tokio::test]
async fn bearer_basic_and_header_auth_reach_the_upstream() {
    let mock = Mock::start(|_| json_response(json!([]))).await;
    let ctx = ctx();
    for auth in [
        json!({"type": "bearer", "token": "t0k"}),
        json!({"type": "basic", "username": "ann", "password": "pw"}),
        json!({"type": "header", "name": "X-Auth-Token", "value": "s3cret"}),
    ] {
        let settings =
            json!({"url": mock.url("/items"), "auth": auth, "headers": {"X-Api-Version": "2"}});
        HttpConnector
            .collect_page(&ctx, &settings, None)
            .await
            .expect("page");
    }
    let seen = mock.seen();
    let header = |i: usize, name: &str| {
        seen[i]
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header(0, "authorization").as_deref(), Some("Bearer t0k"));
    assert_eq!(
        header(1, "authorization").as_deref(),
        Some("Basic YW5uOnB3")
    ); // ann:pw
    assert_eq!(header(2, "x-auth-token").as_deref(), Some("s3cret"));
    assert!(
        seen.iter()
            .all(|s| header_is(&s.headers, "x-api-version", "2"))
    );
    assert!(
        seen.iter()
            .all(|s| header_is(&s.headers, "accept", "application/json"))
    );
}

fn header_is(headers: &HeaderMap, name: &str, value: &str) -> bool {
    headers.get(name).and_then(|v| v.to_str().ok()) == Some(value)
}

#[tokio::test]
async fn record_path_splits_and_defaults_follow_the_body_shape() {
    let mock = Mock::start(|seen| match seen.path.as_str() {
        "/wrapped" => json_response(json!({"items": [{"id": 1}, {"id": 2}], "total": 2})),
        "/array" => json_response(json!([{"id": 1}, {"id": 2}])),
        _ => json_response(json!({"id": 9})),
    })
    .await;
    let (records, pages) =
        collect_all(&json!({"url": mock.url("/wrapped"), "record_path": ".items[]"})).await;
    assert_eq!(records, ids(1..3));
    assert_eq!(pages.len(), 1);
    assert!(pages[0].done);
    let (records, _) = collect_all(&json!({"url": mock.url("/array")})).await;
    assert_eq!(records, ids(1..3));
    let (records, _) =
        collect_all(&json!({"url": mock.url("/object"), "query": {"tag": "rust"}})).await;
    assert_eq!(records, vec![json!({"id": 9})]);
    assert_eq!(
        mock.seen()[2].query.get("tag").map(String::as_str),
        Some("rust")
    );
}

/// Three pages of two records behind cursors `""` → `c2` → `c3`.
fn cursor_upstream(seen: &Seen) -> Response {
    let (page, next) = match seen.query.get("cursor").map(String::as_str) {
        None => (0, json!("c2")),
        Some("c2") => (1, json!("c3")),
        Some("c3") => (2, Value::Null),
        Some(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    json_response(json!({"data": ids(page * 2..page * 2 + 2), "meta": {"next": next}}))
}

fn cursor_settings(mock: &Mock) -> Value {
    json!({
        "url": mock.url("/items"),
        "record_path": ".data[]",
        "pagination": {"type": "cursor", "cursor_path": ".meta.next", "param": "cursor"}
    })
}

#[tokio::test]
async fn cursor_pagination_collects_every_record_once() {
    let mock = Mock::start(cursor_upstream).await;
    let (records, pages) = collect_all(&cursor_settings(&mock)).await;
    assert_eq!(records, ids(0..6));
    assert_eq!(pages.len(), 3);
    assert_eq!(
        pages[0].checkpoint,
        Some(json!({"pages": 1, "cursor": "c2"}))
    );
    assert_eq!(pages[2].checkpoint, Some(json!({"pages": 3})));
    assert!(pages[2].done && !pages[1].done);
    assert_eq!(mock.seen().len(), 3);
}

#[tokio::test]
async fn resume_from_page_two_checkpoint_fetches_page_three_only() {
    let mock = Mock::start(cursor_upstream).await;
    let settings = cursor_settings(&mock);
    let ctx = ctx();
    let first = HttpConnector
        .collect_page(&ctx, &settings, None)
        .await
        .expect("page 1");
    let second = HttpConnector
        .collect_page(&ctx, &settings, first.checkpoint.as_ref())
        .await
        .expect("page 2");
    let before = mock.seen().len();
    let third = HttpConnector
        .collect_page(&ctx, &settings, second.checkpoint.as_ref())
        .await
        .expect("page 3");
    let seen = mock.seen();
    assert_eq!(seen.len(), before + 1);
    assert_eq!(
        seen[before].query.get("cursor").map(String::as_str),
        Some("c3")
    );
    assert_eq!(third.records, ids(4..6));
    assert!(third.done);
    // Resuming after the last page fetches nothing.
    let after = HttpConnector
        .collect_page(&ctx, &settings, third.checkpoint.as_ref())
        .await
        .expect("after");
    assert_eq!(
        after,
        Page {
            records: Vec::new(),
            checkpoint: None,
            done: true
        }
    );
    assert_eq!(mock.seen().len(), before + 1);
}

#[tokio::test]
async fn next_link_from_the_body_follows_relative_urls() {
    let mock = Mock::start(|seen| {
        let page: u64 = seen
            .query
            .get("p")
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        let next = if page < 3 {
            json!(format!("items?p={}", page + 1))
        } else {
            Value::Null
        };
        json_response(json!({"items": ids(page * 10..page * 10 + 2), "links": {"next": next}}))
    })
    .await;
    let settings = json!({
        "url": mock.url("/api/items"),
        "record_path": ".items[]",
        "pagination": {"type": "next_link", "next_path": ".links.next"}
    });
    let (records, pages) = collect_all(&settings).await;
    let expected: Vec<Value> = [10..12, 20..22, 30..32].into_iter().flat_map(ids).collect();
    assert_eq!(records, expected);
    assert_eq!(pages.len(), 3);
    assert_eq!(
        pages[0].checkpoint,
        Some(json!({"pages": 1, "next": mock.url("/api/items?p=2")}))
    );
    assert!(mock.seen().iter().all(|s| s.path == "/api/items"));
}

#[tokio::test]
async fn next_link_from_the_link_header() {
    let base = Arc::new(Mutex::new(String::new()));
    let base_in_mock = Arc::clone(&base);
    let mock = Mock::start(move |seen| {
        let page: u64 = seen
            .query
            .get("page")
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        let mut response = json_response(json!(ids(page * 10..page * 10 + 2)));
        if page < 4 {
            let base = base_in_mock.lock().expect("base").clone();
            let link = format!(
                "<{base}/items?page=1>; rel=\"first\", <{base}/items?page={}>; rel=\"next\"",
                page + 1
            );
            response
                .headers_mut()
                .insert(header::LINK, link.parse().expect("header"));
        }
        response
    })
    .await;
    *base.lock().expect("base") = mock.base.clone();
    let settings = json!({"url": mock.url("/items"), "pagination": {"type": "next_link"}});
    let (records, pages) = collect_all(&settings).await;
    let expected: Vec<Value> = [10..12, 20..22, 30..32, 40..42]
        .into_iter()
        .flat_map(ids)
        .collect();
    assert_eq!(records, expected);
    assert_eq!(pages.len(), 4);
    assert_eq!(mock.seen().len(), 4);
}

#[tokio::test]
async fn page_number_pagination_stops_on_an_empty_page() {
    let mock = Mock::start(|seen| {
        let page: u64 = seen
            .query
            .get("page")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let records = if (1..=3).contains(&page) {
            ids(page * 10..page * 10 + 2)
        } else {
            Vec::new()
        };
        json_response(json!({"results": records}))
    })
    .await;
    let settings = json!({"url": mock.url("/items"), "record_path": ".results[]", "pagination": {"type": "page_number"}});
    let (records, pages) = collect_all(&settings).await;
    let expected: Vec<Value> = [10..12, 20..22, 30..32].into_iter().flat_map(ids).collect();
    assert_eq!(records, expected);
    assert_eq!(pages.len(), 4);
    assert_eq!(pages[1].checkpoint, Some(json!({"pages": 2, "page": 3})));
    let asked: Vec<Option<String>> = mock
        .seen()
        .iter()
        .map(|s| s.query.get("page").cloned())
        .collect();
    assert_eq!(asked, ["1", "2", "3", "4"].map(|p| Some(p.to_owned())));
}

#[tokio::test]
async fn page_number_with_size_stops_on_a_short_page() {
    let mock = Mock::start(|seen| {
        let page: u64 = seen
            .query
            .get("p")
            .and_then(|p| p.parse().ok())
            .unwrap_or(99);
        let size: u64 = seen
            .query
            .get("per_page")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let count = if page < 2 { size } else { size - 1 };
        json_response(json!(ids(page * 100..page * 100 + count)))
    })
    .await;
    let settings = json!({
        "url": mock.url("/items"),
        "pagination": {"type": "page_number", "param": "p", "start": 0, "size_param": "per_page", "size": 3}
    });
    let (records, pages) = collect_all(&settings).await;
    let expected: Vec<Value> = [0..3, 100..103, 200..202]
        .into_iter()
        .flat_map(ids)
        .collect();
    assert_eq!(records, expected);
    assert_eq!(pages.len(), 3);
    assert!(
        mock.seen()
            .iter()
            .all(|s| s.query.get("per_page").map(String::as_str) == Some("3"))
    );
}

#[tokio::test]
async fn max_pages_caps_the_collection() {
    let mock = Mock::start(|seen| {
        let page: u64 = seen
            .query
            .get("page")
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        json_response(json!(ids(page..page + 1)))
    })
    .await;
    let settings =
        json!({"url": mock.url("/items"), "pagination": {"type": "page_number"}, "max_pages": 2});
    let (records, pages) = collect_all(&settings).await;
    assert_eq!(records, ids(1..3));
    assert!(pages[1].done);
    assert_eq!(mock.seen().len(), 2);
}

#[tokio::test]
async fn status_503_with_retry_after_is_retryable() {
    let mock = Mock::start(|_| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "7")],
            "busy",
        )
            .into_response()
    })
    .await;
    let error = HttpConnector
        .collect_page(&ctx(), &json!({"url": mock.url("/items")}), None)
        .await
        .expect_err("503");
    assert_eq!(
        error.retryability(),
        Retryability::Retry {
            after: Some(Duration::from_secs(7))
        }
    );
    assert_eq!(error.http_status(), Some(503));
    assert_eq!(error.response_excerpt(), Some("busy"));
}

#[tokio::test]
async fn status_404_is_permanent() {
    let mock = Mock::start(|_| StatusCode::NOT_FOUND.into_response()).await;
    let error = HttpConnector
        .collect_page(&ctx(), &json!({"url": mock.url("/items")}), None)
        .await
        .expect_err("404");
    assert_eq!(error.retryability(), Retryability::Permanent);
    assert_eq!(error.http_status(), Some(404));
}

#[tokio::test]
async fn non_json_body_is_a_permanent_decode_error() {
    let mock = Mock::start(|_| "<html>hello</html>".into_response()).await;
    let error = HttpConnector
        .collect_page(&ctx(), &json!({"url": mock.url("/items")}), None)
        .await
        .expect_err("not json");
    assert!(
        matches!(error, Error::Upstream(UpstreamError::Decode { .. })),
        "{error:?}"
    );
    assert_eq!(error.retryability(), Retryability::Permanent);
}

#[tokio::test]
async fn failing_record_path_is_a_response_error() {
    let mock = Mock::start(|_| json_response(json!({"items": 3}))).await;
    let settings = json!({"url": mock.url("/items"), "record_path": ".items[]"});
    let error = HttpConnector
        .collect_page(&ctx(), &settings, None)
        .await
        .expect_err("cannot iterate");
    assert!(
        matches!(&error, Error::Response(m) if m.starts_with("record_path: jq error")),
        "{error:?}"
    );
}

#[tokio::test]
async fn cursor_that_does_not_advance_is_an_error() {
    let mock = Mock::start(|_| json_response(json!({"data": [], "next": "same"}))).await;
    let settings = json!({"url": mock.url("/"), "record_path": ".data[]", "pagination": {"type": "cursor", "cursor_path": ".next"}});
    let ctx = ctx();
    let first = HttpConnector
        .collect_page(&ctx, &settings, None)
        .await
        .expect("first");
    let error = HttpConnector
        .collect_page(&ctx, &settings, first.checkpoint.as_ref())
        .await
        .expect_err("loop");
    assert!(
        matches!(&error, Error::Response(m) if m.contains("did not advance")),
        "{error:?}"
    );
}

#[tokio::test]
async fn check_fetches_the_first_page_and_reports_failures() {
    let mock = Mock::start(|seen| match seen.path.as_str() {
        "/ok" => json_response(json!([1])),
        _ => StatusCode::UNAUTHORIZED.into_response(),
    })
    .await;
    HttpConnector
        .check(&ctx(), &json!({"url": mock.url("/ok")}))
        .await
        .expect("check");
    let error = HttpConnector
        .check(&ctx(), &json!({"url": mock.url("/denied")}))
        .await
        .expect_err("401");
    assert_eq!(error.http_status(), Some(401));
    assert_eq!(mock.seen().len(), 2);
}

#[test]
fn validate_names_the_bad_field() {
    let message = |settings: Value| match HttpConnector.validate(&settings) {
        Err(Error::Settings(message)) => message,
        other => panic!("expected a settings error, got {other:?}"),
    };
    let ok = json!({"url": "https://api.example.com/items", "record_path": ".items[]"});
    assert!(HttpConnector.validate(&ok).is_ok());
    assert!(message(json!({"url": "ftp://example.com/x"})).starts_with("url: "));
    assert!(message(json!({"url": "not a url"})).starts_with("url: "));
    assert!(
        message(json!({"url": "https://x.test", "record_path": ".items[ | "}))
            .starts_with("record_path: invalid jq")
    );
    let cursor = json!({"url": "https://x.test", "pagination": {"type": "cursor", "cursor_path": "nope(1)"}});
    assert!(message(cursor).starts_with("pagination.cursor_path: "));
    let next =
        json!({"url": "https://x.test", "pagination": {"type": "next_link", "next_path": ".a |"}});
    assert!(message(next).starts_with("pagination.next_path: "));
    let size =
        json!({"url": "https://x.test", "pagination": {"type": "page_number", "size_param": "n"}});
    assert!(message(size).starts_with("pagination.size: "));
    assert!(
        message(json!({"url": "https://x.test", "headers": {"Host": "evil"}}))
            .starts_with("headers: ")
    );
    let auth = json!({"url": "https://x.test", "auth": {"type": "header", "name": "bad name", "value": "v"}});
    assert!(message(auth).starts_with("auth.name: "));
}

#[test]
fn schema_accepts_the_documented_shapes_and_rejects_unknown_fields() {
    let schema = SettingsSchema::compile(HttpConnector.settings_schema()).expect("valid schema");
    let full = json!({
        "url": "https://api.example.com/items",
        "headers": {"X-Api-Version": "2"},
        "query": {"tag": "rust"},
        "auth": {"type": "basic", "username": "u", "password": "p"},
        "record_path": ".items[]",
        "pagination": {"type": "page_number", "param": "page", "start": 1, "size_param": "per_page", "size": 100},
        "max_pages": 1000
    });
    assert_eq!(schema.validate(&full), Ok(()));
    for pagination in [
        json!({"type": "none"}),
        json!({"type": "cursor", "cursor_path": ".next_cursor", "param": "cursor"}),
        json!({"type": "next_link", "next_path": ".links.next"}),
        json!({"type": "next_link"}),
    ] {
        let settings = json!({"url": "https://x.test", "pagination": pagination});
        assert_eq!(schema.validate(&settings), Ok(()), "{settings}");
        assert!(serde_json::from_value::<super::HttpSettings>(settings).is_ok());
    }
    for bad in [
        json!({"url": "https://x.test", "extra": 1}),
        json!({"url": "https://x.test", "auth": {"type": "bearer", "token": "t", "password": "p"}}),
        json!({"url": "https://x.test", "pagination": {"type": "cursor"}}),
        json!({"url": "https://x.test", "pagination": {"type": "none", "param": "p"}}),
        json!({"url": "ftp://x.test"}),
        json!({"headers": {}}),
    ] {
        assert!(schema.validate(&bad).is_err(), "{bad}");
        assert!(HttpConnector.validate(&bad).is_err(), "{bad}");
    }
    let redacted = schema.redact(
        &json!({"url": "u", "auth": {"type": "header", "name": "X-Key", "value": "s3cret"}}),
    );
    assert_eq!(
        redacted["auth"],
        json!({"type": "header", "name": "X-Key", "value": "********"})
    );
    let redacted = schema.redact(&json!({"auth": {"type": "bearer", "token": "t"}}));
    assert_eq!(redacted["auth"]["token"], json!("********"));
}
