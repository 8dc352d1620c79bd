//! `MockStackExchange`: `GET /2.3/questions?tagged=…&site=…&filter=total` on `127.0.0.1:0`,
//! answering the StackExchange wrapper with a decreasing quota, and the API's own errors: an
//! unknown tag is `bad_parameter`, and a throttle switch answers `throttle_violation`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

/// The quota a fresh mock starts with (StackExchange's without a key).
pub const QUOTA_MAX: i64 = 300;

#[derive(Default)]
struct Inner {
    totals: HashMap<String, u64>,
    quota_remaining: i64,
    /// Seconds a throttle error names; `None` answers normally.
    throttle: Option<u64>,
    queries: Vec<HashMap<String, String>>,
}

/// A running mock StackExchange API.
#[derive(Clone)]
pub struct MockStackExchange {
    address: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl MockStackExchange {
    /// Serves `totals` (tag → question count).
    pub async fn start(totals: &[(&str, u64)]) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            totals: totals
                .iter()
                .map(|(tag, total)| ((*tag).to_owned(), *total))
                .collect(),
            quota_remaining: QUOTA_MAX,
            ..Inner::default()
        }));
        let app = Router::new()
            .route("/2.3/questions", get(questions))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stackexchange");
        let address = listener.local_addr().expect("stackexchange address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { address, inner }
    }

    /// The API root to configure as `[stackoverflow] base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/2.3", self.address)
    }

    /// Answers every call with `throttle_violation` naming `seconds` (or normally with `None`).
    pub fn throttle(&self, seconds: Option<u64>) {
        self.inner.lock().expect("stackexchange").throttle = seconds;
    }

    /// The query parameters of every call so far.
    pub fn queries(&self) -> Vec<HashMap<String, String>> {
        self.inner.lock().expect("stackexchange").queries.clone()
    }
}

async fn questions(
    State(inner): State<Arc<Mutex<Inner>>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut inner = inner.lock().expect("stackexchange");
    inner.queries.push(query.clone());
    inner.quota_remaining = (inner.quota_remaining - 1).max(0);
    let quota = json!({"quota_max": QUOTA_MAX, "quota_remaining": inner.quota_remaining});
    let error = |id: u16, name: &str, message: String| {
        let mut body = quota.clone();
        body["error_id"] = json!(id);
        body["error_name"] = json!(name);
        body["error_message"] = json!(message);
        (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
    };
    if let Some(seconds) = inner.throttle {
        return error(
            502,
            "throttle_violation",
            format!("too many requests from this IP, more requests available in {seconds} seconds"),
        );
    }
    let tag = query.get("tagged").cloned().unwrap_or_default();
    match (
        inner.totals.get(&tag),
        query.get("filter").map(String::as_str),
    ) {
        (Some(total), Some("total")) => {
            let mut body = quota;
            body["total"] = json!(total);
            axum::Json(body).into_response()
        }
        _ => error(400, "bad_parameter", "tagged".into()),
    }
}
