//! The collection-engine seed's three upstreams on `127.0.0.1:0`, for pipeline tests: a
//! cursor-paginated message source, a processing API and a storage API.
//!
//! Every injected failure is decided by a hash of (seed, request number), so a run with the
//! same seed and the same request order fails the same requests, from any number of threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::served::Served;

/// Injected failures: request `n` fails when the hash of (seed, n) falls under the rate.
struct Faults {
    seed: u64,
    /// The failure rate's `f64` bits, so a test can change it while requests run.
    rate: AtomicU64,
    requests: AtomicU64,
}

impl Faults {
    fn new(seed: u64, rate: f64) -> Self {
        Self {
            seed,
            rate: AtomicU64::new(rate.clamp(0.0, 1.0).to_bits()),
            requests: AtomicU64::new(0),
        }
    }

    fn set_rate(&self, rate: f64) {
        self.rate
            .store(rate.clamp(0.0, 1.0).to_bits(), Ordering::SeqCst);
    }

    /// Numbers the next request (from 1) and says whether it fails.
    fn next(&self) -> (u64, bool) {
        let number = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let draw = mix(self.seed ^ mix(number)) as f64 / u64::MAX as f64;
        (
            number,
            draw < f64::from_bits(self.rate.load(Ordering::SeqCst)),
        )
    }
}

/// SplitMix64's finaliser: a well-spread deterministic hash of one word.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn injected_failure(what: &str, number: u64) -> Response {
    let body = json!({"error": format!("injected {what} failure"), "request": number});
    (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
}

// --- source ------------------------------------------------------------------------------

/// The shape of the message source and how it misbehaves.
#[derive(Debug, Clone)]
pub struct MessageSourceOptions {
    pub pages: usize,
    pub page_size: usize,
    /// Share of (authenticated) requests answered 500, in `0.0..=1.0`.
    pub failure_rate: f64,
    pub seed: u64,
    /// The `X-Auth-Token` every request must carry; others get 401.
    pub token: String,
    /// `(n, secs)`: every n-th request is answered 429 with `Retry-After: secs`.
    pub rate_limit_429: Option<(u64, u64)>,
}

impl Default for MessageSourceOptions {
    fn default() -> Self {
        Self {
            pages: 5,
            page_size: 10,
            failure_rate: 0.0,
            seed: 1,
            token: "source-token".to_owned(),
            rate_limit_429: None,
        }
    }
}

struct SourceState {
    options: MessageSourceOptions,
    faults: Faults,
    /// Every request's arrival and path, appended by the handler before it answers.
    log: Mutex<Vec<(Instant, String)>>,
    /// Set once the last page has been answered; `/messages` is empty from then on.
    last_served: AtomicBool,
    pages_served: AtomicUsize,
}

/// The seed's source API: `GET /messages` and `GET /messages/{cursor}`; stops when dropped.
pub struct MessageSourceMock {
    state: Arc<SourceState>,
    server: Served,
}

impl MessageSourceMock {
    pub async fn start(options: MessageSourceOptions) -> Self {
        let state = Arc::new(SourceState {
            faults: Faults::new(options.seed, options.failure_rate),
            options,
            log: Mutex::default(),
            last_served: AtomicBool::new(false),
            pages_served: AtomicUsize::new(0),
        });
        let router = Router::new()
            .route("/messages", get(first_page))
            .route("/messages/{cursor}", get(page_at))
            .with_state(Arc::clone(&state));
        let server = Served::start(router, "message source").await;
        Self { state, server }
    }

    /// The base URL (`http://127.0.0.1:port`), the `sourceApiBaseUrl`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn token(&self) -> &str {
        &self.state.options.token
    }

    /// When each request arrived, in arrival order.
    pub fn request_times(&self) -> Vec<Instant> {
        let log = self.state.log.lock().expect("source log");
        log.iter().map(|(at, _)| *at).collect()
    }

    /// Each request's path, in arrival order.
    pub fn paths(&self) -> Vec<String> {
        let log = self.state.log.lock().expect("source log");
        log.iter().map(|(_, path)| path.clone()).collect()
    }

    pub fn requests(&self) -> usize {
        self.state.log.lock().expect("source log").len()
    }

    /// Pages answered with 200 and their messages (repeats counted, empty answers not).
    pub fn pages_served(&self) -> usize {
        self.state.pages_served.load(Ordering::Relaxed)
    }

    /// Every message of every page, in order: what a complete run must store.
    pub fn all_messages(&self) -> Vec<Value> {
        let options = &self.state.options;
        (0..options.pages)
            .flat_map(|page| page_messages(options, page))
            .collect()
    }
}

/// The messages of page `page`.
fn page_messages(options: &MessageSourceOptions, page: usize) -> Vec<Value> {
    (0..options.page_size)
        .map(|i| message(options.seed, page, i, page * options.page_size + i))
        .collect()
}

/// One message in the seed's shape, with a unique 32-hex id derived from the seed and index.
pub fn message(seed: u64, page: usize, i: usize, index: usize) -> Value {
    let id = format!("{:016x}{:016x}", mix(seed), index as u64);
    json!({
        "id": id,
        "source": "MessagingSystem",
        "title": format!("Message title {index}"),
        "creation_date": format!("2030-08-24T17:{:02}:{:02}.228009", (index / 60) % 60, index % 60),
        "message": format!("test message {index} (page {page}, item {i})"),
        "tags": ["seed", format!("page-{page}")],
        "author": format!("author-{}", index % 7),
    })
}

async fn first_page(State(state): State<Arc<SourceState>>, headers: HeaderMap) -> Response {
    answer_page(&state, &headers, "/messages".to_owned(), None)
}

async fn page_at(
    State(state): State<Arc<SourceState>>,
    Path(cursor): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/messages/{cursor}");
    answer_page(&state, &headers, path, Some(cursor))
}

fn answer_page(
    state: &SourceState,
    headers: &HeaderMap,
    path: String,
    cursor: Option<String>,
) -> Response {
    state
        .log
        .lock()
        .expect("source log")
        .push((Instant::now(), path));
    let options = &state.options;
    let token = headers.get("x-auth-token").and_then(|v| v.to_str().ok());
    if token != Some(options.token.as_str()) {
        let body = json!({"error": "missing or wrong X-Auth-Token"});
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    let (number, fails) = state.faults.next();
    if let Some((every, retry_after)) = options.rate_limit_429
        && every > 0
        && number % every == 0
    {
        let body = json!({"error": "rate limit exceeded"});
        let header = [("retry-after", retry_after.to_string())];
        return (StatusCode::TOO_MANY_REQUESTS, header, Json(body)).into_response();
    }
    if fails {
        return injected_failure("source", number);
    }
    let page = match cursor.map(|cursor| cursor.parse::<usize>()) {
        None if state.last_served.load(Ordering::SeqCst) || options.pages == 0 => {
            return Json(json!({"results": [], "cursor": null})).into_response();
        }
        None => 0,
        Some(Ok(page)) if page < options.pages => page,
        Some(_) => {
            let body = json!({"error": "no such cursor"});
            return (StatusCode::NOT_FOUND, Json(body)).into_response();
        }
    };
    let is_last = page + 1 == options.pages;
    if is_last {
        state.last_served.store(true, Ordering::SeqCst);
    }
    state.pages_served.fetch_add(1, Ordering::Relaxed);
    let cursor = (!is_last).then_some(page + 1);
    Json(json!({"results": page_messages(options, page), "cursor": cursor})).into_response()
}

// --- processing --------------------------------------------------------------------------

struct ProcessingState {
    faults: Faults,
    received: AtomicUsize,
}

/// The seed's processing API: `POST /message` → 200 with the message plus `processing_date`.
pub struct ProcessingMock {
    state: Arc<ProcessingState>,
    server: Served,
}

impl ProcessingMock {
    pub async fn start(failure_rate: f64, seed: u64) -> Self {
        let state = Arc::new(ProcessingState {
            faults: Faults::new(seed, failure_rate),
            received: AtomicUsize::new(0),
        });
        let router = Router::new()
            .route("/message", post(process))
            .with_state(Arc::clone(&state));
        let server = Served::start(router, "processing api").await;
        Self { state, server }
    }

    /// The base URL, the `processingApiBaseUrl`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Requests received, failed ones included.
    pub fn received(&self) -> usize {
        self.state.received.load(Ordering::Relaxed)
    }

    /// Changes the share of requests that fail from now on.
    pub fn set_failure_rate(&self, rate: f64) {
        self.state.faults.set_rate(rate);
    }
}

/// Reads the body as JSON whatever its content type: the seed sent none.
fn json_object(body: &Bytes) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(fields)) => Some(fields),
        _ => None,
    }
}

async fn process(State(state): State<Arc<ProcessingState>>, body: Bytes) -> Response {
    state.received.fetch_add(1, Ordering::Relaxed);
    let (number, fails) = state.faults.next();
    if fails {
        return injected_failure("processing", number);
    }
    let Some(mut message) = json_object(&body) else {
        return (StatusCode::BAD_REQUEST, "expected a JSON object").into_response();
    };
    let now = jiff::Timestamp::now().to_string();
    message.insert("processing_date".to_owned(), Value::String(now));
    Json(Value::Object(message)).into_response()
}

// --- storage -----------------------------------------------------------------------------

struct StorageState {
    faults: Faults,
    received: AtomicUsize,
    /// `true` holds every request unanswered until it turns `false` (see [`StorageMock::stall`]).
    stalled: watch::Sender<bool>,
    /// Times each id was stored, and the last body stored for it; written after a 201 is decided.
    stored: Mutex<HashMap<String, (usize, Value)>>,
}

/// The seed's storage API: `POST /message` → 201; counts what it stored, by id.
pub struct StorageMock {
    state: Arc<StorageState>,
    server: Served,
}

impl StorageMock {
    pub async fn start(failure_rate: f64, seed: u64) -> Self {
        let state = Arc::new(StorageState {
            faults: Faults::new(seed, failure_rate),
            received: AtomicUsize::new(0),
            stalled: watch::Sender::new(false),
            stored: Mutex::default(),
        });
        let router = Router::new()
            .route("/message", post(store))
            .with_state(Arc::clone(&state));
        let server = Served::start(router, "storage api").await;
        Self { state, server }
    }

    /// The base URL, the `storageApiBaseUrl`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// While stalled, requests are held without any answer; un-stalling lets them complete
    /// (and be stored, if their client still waits).
    pub fn stall(&self, stalled: bool) {
        self.state.stalled.send_replace(stalled);
    }

    /// Requests received, held and failed ones included.
    pub fn received(&self) -> usize {
        self.state.received.load(Ordering::Relaxed)
    }

    /// How many times each message id was stored (answered 201).
    pub fn stored(&self) -> HashMap<String, usize> {
        let stored = self.state.stored.lock().expect("stored");
        stored
            .iter()
            .map(|(id, (times, _))| (id.clone(), *times))
            .collect()
    }

    /// The last body stored for each id.
    pub fn stored_messages(&self) -> HashMap<String, Value> {
        let stored = self.state.stored.lock().expect("stored");
        stored
            .iter()
            .map(|(id, (_, body))| (id.clone(), body.clone()))
            .collect()
    }

    /// How many ids were stored more than once.
    pub fn duplicates(&self) -> usize {
        let stored = self.state.stored.lock().expect("stored");
        stored.values().filter(|(times, _)| *times > 1).count()
    }
}

async fn store(State(state): State<Arc<StorageState>>, body: Bytes) -> Response {
    state.received.fetch_add(1, Ordering::Relaxed);
    let mut stalled = state.stalled.subscribe();
    if stalled.wait_for(|stalled| !*stalled).await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let (number, fails) = state.faults.next();
    if fails {
        return injected_failure("storage", number);
    }
    let Some(message) = json_object(&body) else {
        return (StatusCode::BAD_REQUEST, "expected a JSON object").into_response();
    };
    let Some(id) = message.get("id").and_then(Value::as_str).map(str::to_owned) else {
        return (StatusCode::BAD_REQUEST, "the message has no string id").into_response();
    };
    let mut stored = state.stored.lock().expect("stored");
    let entry = stored.entry(id).or_insert((0, Value::Null));
    entry.0 += 1;
    entry.1 = Value::Object(message);
    StatusCode::CREATED.into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn failures_depend_only_on_seed_and_request_number() {
        let draws = |seed| {
            let faults = Faults::new(seed, 0.3);
            (0..200).map(|_| faults.next().1).collect::<Vec<_>>()
        };
        assert_eq!(draws(5), draws(5));
        assert_ne!(draws(5), draws(6));
        let failed = draws(5).iter().filter(|fails| **fails).count();
        assert!((30..90).contains(&failed), "{failed} of 200 at 30%");
        let never = Faults::new(5, 0.0);
        assert!((0..100).all(|_| !never.next().1));
    }

    #[tokio::test]
    async fn the_three_mocks_follow_the_seed_contracts() {
        let source = MessageSourceMock::start(MessageSourceOptions {
            pages: 2,
            page_size: 3,
            rate_limit_429: Some((3, 2)),
            ..MessageSourceOptions::default()
        })
        .await;
        let http = crate::support::harness::client();
        let get = |path: &str, token: &str| {
            http.get(format!("{}{path}", source.url()))
                .header("X-Auth-Token", token)
                .send()
        };
        assert_eq!(get("/messages", "wrong").await.expect("401").status(), 401);
        assert_eq!(source.token(), "source-token");
        let first: Value = get("/messages", "source-token")
            .await
            .expect("page 0")
            .json()
            .await
            .expect("json");
        assert_eq!(first["cursor"], 1);
        assert_eq!(first["results"].as_array().expect("results").len(), 3);
        let last: Value = get("/messages/1", "source-token")
            .await
            .expect("page 1")
            .json()
            .await
            .expect("json");
        assert_eq!(last["cursor"], Value::Null);
        let throttled = get("/messages", "source-token").await.expect("429");
        assert_eq!(throttled.status(), 429);
        assert_eq!(throttled.headers()["retry-after"], "2");
        let after: Value = get("/messages", "source-token")
            .await
            .expect("empty")
            .json()
            .await
            .expect("json");
        assert_eq!(after, json!({"results": [], "cursor": null}));
        assert_eq!(source.requests(), 5);
        assert_eq!(source.request_times().len(), 5);
        assert!(source.request_times().is_sorted());
        assert_eq!(
            source.paths(),
            [
                "/messages",
                "/messages",
                "/messages/1",
                "/messages",
                "/messages"
            ]
        );
        assert_eq!(source.pages_served(), 2);
        let all = source.all_messages();
        assert_eq!(all.len(), 6);
        assert_eq!(Value::Array(all[..3].to_vec()), first["results"]);
        let id = all[0]["id"].as_str().expect("id");
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));

        let processing = ProcessingMock::start(0.0, 1).await;
        let processed: Value = http
            .post(format!("{}/message", processing.url()))
            .body(all[0].to_string())
            .send()
            .await
            .expect("processed")
            .json()
            .await
            .expect("json");
        assert_eq!(processed["message"], all[0]["message"]);
        assert!(processed["processing_date"].is_string());
        assert_eq!(processing.received(), 1);

        let storage = Arc::new(StorageMock::start(0.0, 1).await);
        storage.stall(true);
        let held = tokio::spawn({
            let request = http
                .post(format!("{}/message", storage.url()))
                .json(&processed);
            async move { request.send().await.expect("stored").status() }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!held.is_finished(), "a stalled storage answers nothing");
        assert!(storage.stored().is_empty());
        storage.stall(false);
        assert_eq!(held.await.expect("join"), 201);
        assert_eq!(storage.received(), 1);
        let again = http
            .post(format!("{}/message", storage.url()))
            .json(&processed)
            .send()
            .await
            .expect("stored again");
        assert_eq!(again.status(), 201);
        assert_eq!(storage.stored()[id], 2);
        assert_eq!(storage.duplicates(), 1);
        assert_eq!(
            storage.stored_messages()[id]["processing_date"],
            processed["processing_date"]
        );

        let failing = StorageMock::start(1.0, 1).await;
        let failed = http
            .post(format!("{}/message", failing.url()))
            .json(&processed)
            .send()
            .await
            .expect("answered");
        assert_eq!(failed.status(), 500);
        assert!(failing.stored().is_empty());
    }
}
