//! `MockReddit`: the app-only OAuth token endpoint and `GET /r/{subreddit}/new` on
//! `127.0.0.1:0`. Posts are listed newest first, 100 (or `limit`) per page, with Reddit's
//! `t3_…` cursors and `after: null` at the end; tokens are checked on every listing call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};

/// The application credentials the mock accepts.
pub const CLIENT_ID: &str = "mock-app";
pub const CLIENT_SECRET: &str = "mock-secret";

#[derive(Default)]
struct Inner {
    /// Creation times (seconds) by subreddit.
    posts: HashMap<String, Vec<i64>>,
    tokens_issued: u32,
    listing_calls: u32,
    /// User-Agent of every call, token requests included.
    agents: Vec<String>,
}

/// A running mock Reddit.
#[derive(Clone)]
pub struct MockReddit {
    address: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl MockReddit {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/api/v1/access_token", post(access_token))
            .route("/r/{subreddit}/new", get(new_posts))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind reddit");
        let address = listener.local_addr().expect("reddit address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { address, inner }
    }

    /// Lists posts created at `created` (seconds since the epoch) in `subreddit`.
    pub fn set_posts(&self, subreddit: &str, mut created: Vec<i64>) {
        created.sort_unstable_by(|a, b| b.cmp(a));
        self.inner
            .lock()
            .expect("reddit")
            .posts
            .insert(subreddit.to_owned(), created);
    }

    /// `[reddit] auth_url`.
    pub fn auth_url(&self) -> String {
        format!("http://{}/api/v1/access_token", self.address)
    }

    /// `[reddit] base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn tokens_issued(&self) -> u32 {
        self.inner.lock().expect("reddit").tokens_issued
    }

    pub fn listing_calls(&self) -> u32 {
        self.inner.lock().expect("reddit").listing_calls
    }

    pub fn user_agents(&self) -> Vec<String> {
        self.inner.lock().expect("reddit").agents.clone()
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn access_token(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut inner = inner.lock().expect("reddit");
    inner.agents.push(header_text(&headers, header::USER_AGENT));
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    if header_text(&headers, header::AUTHORIZATION) != format!("Basic {expected}") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"message": "Unauthorized", "error": 401})),
        )
            .into_response();
    }
    if body != "grant_type=client_credentials" {
        return axum::Json(json!({"error": "unsupported_grant_type"})).into_response();
    }
    inner.tokens_issued += 1;
    let token = format!("mock-token-{}", inner.tokens_issued);
    axum::Json(
        json!({"access_token": token, "token_type": "bearer", "expires_in": 86_400, "scope": "*"}),
    )
    .into_response()
}

async fn new_posts(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(subreddit): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut inner = inner.lock().expect("reddit");
    inner.listing_calls += 1;
    inner.agents.push(header_text(&headers, header::USER_AGENT));
    let bearer = header_text(&headers, header::AUTHORIZATION);
    let issued = inner.tokens_issued;
    let valid = bearer
        .strip_prefix("Bearer mock-token-")
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| (1..=issued).contains(&n));
    if !valid {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(posts) = inner.posts.get(&subreddit) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"message": "Not Found", "error": 404})),
        )
            .into_response();
    };
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(25)
        .clamp(1, 100);
    let start = match query.get("after") {
        Some(after) => after
            .strip_prefix("t3_")
            .and_then(|i| i.parse::<usize>().ok())
            .map_or(0, |i| i + 1),
        None => 0,
    };
    let end = (start + limit).min(posts.len());
    let children: Vec<Value> = posts[start.min(end)..end]
        .iter()
        .enumerate()
        .map(|(offset, created)| {
            let id = start + offset;
            json!({"kind": "t3", "data": {"name": format!("t3_{id}"), "created_utc": *created as f64}})
        })
        .collect();
    let after = (end < posts.len()).then(|| format!("t3_{}", end - 1));
    (
        [("x-ratelimit-remaining", "599.0"), ("x-ratelimit-reset", "300"), ("x-ratelimit-used", "1")],
        axum::Json(json!({"kind": "Listing", "data": {"after": after, "dist": children.len(), "children": children}})),
    )
        .into_response()
}
