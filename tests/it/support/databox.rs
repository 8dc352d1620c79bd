//! `MockDatabox`: a recording Databox on `127.0.0.1:0` serving the push API (`POST /`) and the
//! datasets API (`POST /v1/datasets/{dataset}/data`).
//!
//! Every request is recorded with its headers, body and the status it was answered. Answers:
//! the next one scripted for that API, else success (`{"status":"OK"}` for a push,
//! `{"status":"success", "ingestionId": …}` for an ingestion). Other paths answer 404.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::served::Served;

/// Which Databox API a request went to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Api {
    Push,
    /// An ingestion into the named dataset.
    Dataset(String),
}

/// One request as the mock saw and answered it.
#[derive(Debug, Clone)]
pub struct Request {
    pub api: Api,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub status: u16,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The token of HTTP Basic `<token>:` (empty password), as the push API takes it.
    pub fn push_token(&self) -> Option<String> {
        let encoded = self.header("authorization")?.strip_prefix("Basic ")?;
        let decoded = String::from_utf8(BASE64.decode(encoded).ok()?).ok()?;
        decoded.strip_suffix(':').map(str::to_owned)
    }

    /// A push's data points (`data`).
    pub fn data(&self) -> Vec<Value> {
        self.json()["data"].as_array().cloned().unwrap_or_default()
    }

    /// An ingestion's rows (`records`).
    pub fn records(&self) -> Vec<Value> {
        self.json()["records"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Answer {
    /// A server error (5xx) or throttling (429) with a JSON body.
    pub fn unavailable(status: u16) -> Self {
        Self::json(
            status,
            json!({"status": "error", "message": format!("scripted {status}")}),
        )
    }

    /// A client error (4xx) carrying Databox's error shape with `message`.
    pub fn refused(status: u16, message: &str) -> Self {
        Self::json(
            status,
            json!({"status": "error", "errors": [{"code": "invalid_input", "message": message}]}),
        )
    }

    /// `200` whose status is not the success word.
    pub fn not_ok() -> Self {
        Self::json(
            200,
            json!({"status": "ERROR", "message": "scripted refusal"}),
        )
    }

    /// `200` with a body that is not JSON (a proxy's page).
    pub fn unparsable() -> Self {
        Self {
            status: 200,
            content_type: "text/html",
            body: "<html>gateway</html>".into(),
        }
    }

    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.to_string(),
        }
    }
}

#[derive(Default)]
struct Script {
    push: VecDeque<Answer>,
    dataset: VecDeque<Answer>,
}

struct Inner {
    script: Mutex<Script>,
    requests: Mutex<Vec<Request>>,
}

/// The running mock; stops when dropped.
pub struct MockDatabox {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    _server: Served,
}

impl MockDatabox {
    pub async fn start() -> Self {
        let inner = Arc::new(Inner {
            script: Mutex::new(Script::default()),
            requests: Mutex::new(Vec::new()),
        });
        let router = Router::new()
            .route("/", post(push))
            .route("/v1/datasets/{dataset}/data", post(ingest))
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(inner.clone());
        let server = Served::start(router, "mock databox").await;
        Self {
            addr: server.addr,
            inner,
            _server: server,
        }
    }

    /// `http://127.0.0.1:PORT`, for both `base_url` and `dataset_base_url`.
    pub fn base_url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}", self.addr)).expect("mock url")
    }

    /// Queues `answer` for the next push.
    pub fn script_push(&self, answer: Answer) {
        self.script(|script| script.push.push_back(answer));
    }

    /// Queues `answer` for the next ingestion, whatever its dataset.
    pub fn script_dataset(&self, answer: Answer) {
        self.script(|script| script.dataset.push_back(answer));
    }

    /// Every request, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.inner.requests.lock().expect("requests").clone()
    }

    pub fn pushes(&self) -> Vec<Request> {
        let mut requests = self.requests();
        requests.retain(|request| request.api == Api::Push);
        requests
    }

    pub fn ingestions(&self, dataset: &str) -> Vec<Request> {
        let mut requests = self.requests();
        requests.retain(|request| request.api == Api::Dataset(dataset.to_owned()));
        requests
    }

    fn script(&self, change: impl FnOnce(&mut Script)) {
        change(&mut self.inner.script.lock().expect("script"));
    }
}

async fn push(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let scripted = inner.script.lock().expect("script").push.pop_front();
    let answer = scripted.unwrap_or_else(|| Answer::json(200, json!({"status": "OK"})));
    record(&inner, Api::Push, headers, body, answer)
}

async fn ingest(
    State(inner): State<Arc<Inner>>,
    Path(dataset): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let scripted = inner.script.lock().expect("script").dataset.pop_front();
    let answer = scripted.unwrap_or_else(|| {
        let number = inner.requests.lock().expect("requests").len();
        Answer::json(
            200,
            json!({
                "requestId": format!("request-{number}"),
                "status": "success",
                "ingestionId": format!("ingestion-{number}"),
                "message": "Data ingestion request accepted",
            }),
        )
    });
    record(&inner, Api::Dataset(dataset), headers, body, answer)
}

fn record(inner: &Inner, api: Api, headers: HeaderMap, body: Bytes, answer: Answer) -> Response {
    inner.requests.lock().expect("requests").push(Request {
        api,
        headers,
        body,
        status: answer.status,
    });
    let status = StatusCode::from_u16(answer.status).expect("status");
    (
        status,
        [(header::CONTENT_TYPE, answer.content_type)],
        answer.body,
    )
        .into_response()
}
