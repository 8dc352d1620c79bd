//! A flaky paged JSON source on `127.0.0.1:0`, living in the test process so it keeps serving
//! while the server under test is killed and restarted.
//!
//! `GET /src/{key}` is page 0 and `GET /src/{key}?cursor=N` page N. Each page answers
//! `{"items": [{"key": key, "page": N, "i": i}, …], "next": N + 1}` with `"next": null` on the
//! last page, so a job's expected records are known in advance. A seeded RNG fails a share of
//! all calls with 500 or 503 before anything is served.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::{Value, json};

use super::served::Served;

/// The shape of the source and how often it fails.
#[derive(Debug, Clone, Copy)]
pub struct FlakyConfig {
    pub seed: u64,
    /// Share of calls answered with 500 or 503, in `0.0..=1.0`.
    pub failure_rate: f64,
    pub pages: u64,
    pub per_page: u64,
}

impl Default for FlakyConfig {
    fn default() -> Self {
        Self {
            seed: 7,
            failure_rate: 0.3,
            pages: 3,
            per_page: 2,
        }
    }
}

/// Counters of what the source saw.
#[derive(Debug, Default)]
pub struct FlakyStats {
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    pub pages_served: AtomicU64,
    pub bad_requests: AtomicU64,
}

struct Inner {
    config: FlakyConfig,
    rng: Mutex<StdRng>,
    stats: FlakyStats,
}

/// The running source; stops when dropped.
pub struct FlakySource {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    _server: Served,
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    cursor: Option<String>,
}

impl FlakySource {
    pub async fn start(config: FlakyConfig) -> Self {
        let inner = Arc::new(Inner {
            config,
            rng: Mutex::new(StdRng::seed_from_u64(config.seed)),
            stats: FlakyStats::default(),
        });
        let router = Router::new()
            .route("/src/{key}", get(page))
            .with_state(inner.clone());
        let server = Served::start(router, "flaky source").await;
        Self {
            addr: server.addr,
            inner,
            _server: server,
        }
    }

    /// The first page's URL of `key`.
    pub fn url(&self, key: &str) -> String {
        format!("http://{}/src/{key}", self.addr)
    }

    pub fn config(&self) -> FlakyConfig {
        self.inner.config
    }

    pub fn stats(&self) -> &FlakyStats {
        &self.inner.stats
    }

    /// Every record `key` yields, in order, as `(page, i)`.
    pub fn expected(&self, key: &str) -> Vec<Value> {
        let config = self.inner.config;
        (0..config.pages)
            .flat_map(|page| (0..config.per_page).map(move |i| record(key, page, i)))
            .collect()
    }
}

/// The record `i` of page `page` of `key`.
pub fn record(key: &str, page: u64, i: u64) -> Value {
    json!({"key": key, "page": page, "i": i})
}

async fn page(
    State(inner): State<Arc<Inner>>,
    Path(key): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let stats = &inner.stats;
    stats.calls.fetch_add(1, Ordering::Relaxed);
    let failure = {
        let mut rng = inner.rng.lock().expect("rng lock");
        rng.random_bool(inner.config.failure_rate)
            .then(|| rng.random_bool(0.5))
    };
    if let Some(unavailable) = failure {
        stats.failures.fetch_add(1, Ordering::Relaxed);
        let status = if unavailable {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        return (status, Json(json!({"error": "flaky"}))).into_response();
    }
    let config = inner.config;
    let page = match query.cursor.as_deref().map(str::parse::<u64>) {
        None => 0,
        Some(Ok(page)) if page < config.pages => page,
        Some(_) => {
            stats.bad_requests.fetch_add(1, Ordering::Relaxed);
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "bad cursor"})),
            )
                .into_response();
        }
    };
    stats.pages_served.fetch_add(1, Ordering::Relaxed);
    let items: Vec<Value> = (0..config.per_page)
        .map(|i| record(&key, page, i))
        .collect();
    let next = (page + 1 < config.pages).then_some(page + 1);
    Json(json!({"items": items, "next": next})).into_response()
}
