//! `CallbackReceiver`: a recording webhook endpoint on `127.0.0.1:0` that checks Standard
//! Webhooks signatures with the `standardwebhooks` crate, a verifier independent of gleaner.
//!
//! Every request is recorded with what it was answered. Answers, in order of precedence: down
//! (switch or window on the test's time line) → 503 or a dropped connection; the next scripted
//! answer for the path; a seeded random failure → 500; otherwise 200.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use gleaner::clock::Millis;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use standardwebhooks::{HEADER_WEBHOOK_ID, HEADER_WEBHOOK_TIMESTAMP, Webhook, WebhookError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::outage::{Outage, TimeSource, wall_clock};
use super::severable::{Connection, SeveringListener};

/// The `standardwebhooks` crate's timestamp tolerance.
const TOLERANCE_SECONDS: i64 = 5 * 60;

/// How the receiver behaves while down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownMode {
    /// Answer `503` without `Retry-After`.
    Unavailable,
    /// Close the connection without answering.
    Drop,
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Scripted {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: &str) -> Self {
        self.body = body.into();
        self
    }
}

/// What the receiver made of a delivery's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// No secret was set for the path.
    Unchecked,
    /// `Webhook::verify` accepted it (its timestamp is within 5 minutes of the wall clock).
    Verified,
    /// The crate's `sign` reproduces one of the `v1` signatures and the timestamp is within
    /// 5 minutes of the receiver's time line, which is not the wall clock: expected when the app
    /// signs with a moved `ManualClock`.
    VerifiedOnTestClock,
    /// Rejected, with the reason.
    Invalid(String),
}

/// One request as the receiver saw and answered it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Arrival, on the configured time line.
    pub at: Millis,
    /// `None` when the connection was dropped.
    pub status: Option<u16>,
    pub signature: Signature,
}

impl Delivery {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn webhook_id(&self) -> Option<&str> {
        self.header(HEADER_WEBHOOK_ID)
    }

    /// Answered 2xx.
    pub fn is_success(&self) -> bool {
        self.status
            .is_some_and(|status| (200..300).contains(&status))
    }

    /// Signed correctly, on the wall clock or the test's clock.
    pub fn signature_ok(&self) -> bool {
        matches!(
            self.signature,
            Signature::Verified | Signature::VerifiedOnTestClock
        )
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// How the receiver starts.
#[derive(Clone)]
pub struct ReceiverConfig {
    pub seed: u64,
    /// Share of otherwise successful requests answered `500`, in `0.0..=1.0`.
    pub failure_rate: f64,
    /// The time line down windows and signature timestamps are read against.
    pub time: TimeSource,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            seed: 11,
            failure_rate: 0.0,
            time: wall_clock(),
        }
    }
}

/// State the test changes while the receiver runs.
struct Script {
    rng: StdRng,
    failure_rate: f64,
    outage: Outage,
    down_mode: DownMode,
    /// Answers consumed first, in order; `None` matches any path.
    queue: VecDeque<(Option<String>, Scripted)>,
    secret: Option<String>,
    path_secrets: HashMap<String, String>,
}

impl Script {
    /// The answer to a request to `path` at `now`; `None` drops the connection.
    fn answer(&mut self, path: &str, now: Millis) -> Option<Scripted> {
        if self.outage.is_down(now) {
            return match self.down_mode {
                DownMode::Unavailable => Some(Scripted::status(503)),
                DownMode::Drop => None,
            };
        }
        let scripted = self
            .queue
            .iter()
            .position(|(only, _)| only.as_deref().is_none_or(|only| only == path));
        if let Some((_, answer)) = scripted.and_then(|index| self.queue.remove(index)) {
            return Some(answer);
        }
        if self.rng.random_bool(self.failure_rate) {
            return Some(Scripted::status(500).body("random failure"));
        }
        Some(Scripted::status(200).body("ok"))
    }

    fn secret_for(&self, path: &str) -> Option<String> {
        self.path_secrets
            .get(path)
            .or(self.secret.as_ref())
            .cloned()
    }
}

struct Inner {
    time: TimeSource,
    script: Mutex<Script>,
    deliveries: Mutex<Vec<Delivery>>,
    /// The number of recorded deliveries; bumped by the handler after each one.
    recorded: watch::Sender<usize>,
}

/// The running receiver; stops when dropped.
pub struct CallbackReceiver {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    server: JoinHandle<()>,
}

impl Drop for CallbackReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl CallbackReceiver {
    pub async fn start(config: ReceiverConfig) -> Self {
        assert!(
            (0.0..=1.0).contains(&config.failure_rate),
            "failure rate {} outside 0..=1",
            config.failure_rate
        );
        let inner = Arc::new(Inner {
            time: config.time,
            script: Mutex::new(Script {
                rng: StdRng::seed_from_u64(config.seed),
                failure_rate: config.failure_rate,
                outage: Outage::default(),
                down_mode: DownMode::Unavailable,
                queue: VecDeque::new(),
                secret: None,
                path_secrets: HashMap::new(),
            }),
            deliveries: Mutex::new(Vec::new()),
            recorded: watch::channel(0).0,
        });
        let router = Router::new()
            .fallback(receive)
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(inner.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind callback receiver");
        let addr = listener.local_addr().expect("callback receiver addr");
        let server = tokio::spawn(async move {
            let service = router.into_make_service_with_connect_info::<Connection>();
            let _ = axum::serve(SeveringListener(listener), service).await;
        });
        Self {
            addr,
            inner,
            server,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The `whsec_…` secret deliveries are verified with, unless their path has its own.
    pub fn set_secret(&self, secret: &str) {
        self.script(|script| script.secret = Some(secret.to_owned()));
    }

    /// The secret for deliveries to `path`.
    pub fn set_secret_for(&self, path: &str, secret: &str) {
        self.script(|script| {
            script
                .path_secrets
                .insert(path.to_owned(), secret.to_owned())
        });
    }

    pub fn set_failure_rate(&self, rate: f64) {
        assert!(
            (0.0..=1.0).contains(&rate),
            "failure rate {rate} outside 0..=1"
        );
        self.script(|script| script.failure_rate = rate);
    }

    /// Queues `answer` for the next request, whatever its path.
    pub fn push(&self, answer: Scripted) {
        self.script(|script| script.queue.push_back((None, answer)));
    }

    /// Queues `answer` for the next request to `path`.
    pub fn push_for(&self, path: &str, answer: Scripted) {
        self.script(|script| script.queue.push_back((Some(path.to_owned()), answer)));
    }

    pub fn set_down(&self, down: bool) {
        self.script(|script| script.outage.set_down(down));
    }

    /// What "down" looks like to the sender; [`DownMode::Unavailable`] at start.
    pub fn set_down_mode(&self, mode: DownMode) {
        self.script(|script| script.down_mode = mode);
    }

    /// Down during `[from, until)` on the configured time line.
    pub fn add_down_window(&self, from: Millis, until: Millis) {
        self.script(|script| script.outage.add_window(from, until));
    }

    /// Every request, in arrival order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner
            .deliveries
            .lock()
            .expect("deliveries lock")
            .clone()
    }

    pub fn deliveries_to(&self, path: &str) -> Vec<Delivery> {
        let mut deliveries = self.deliveries();
        deliveries.retain(|delivery| delivery.path == path);
        deliveries
    }

    /// The deliveries answered 2xx.
    pub fn successful(&self) -> Vec<Delivery> {
        let mut deliveries = self.deliveries();
        deliveries.retain(Delivery::is_success);
        deliveries
    }

    /// Deliveries grouped by their `webhook-id` header (those without one are left out).
    pub fn by_webhook_id(&self) -> BTreeMap<String, Vec<Delivery>> {
        let mut groups: BTreeMap<String, Vec<Delivery>> = BTreeMap::new();
        for delivery in self.deliveries() {
            if let Some(id) = delivery.webhook_id() {
                groups.entry(id.to_owned()).or_default().push(delivery);
            }
        }
        groups
    }

    /// The `webhook-id`s answered 2xx more than once.
    pub fn duplicated_ids(&self) -> Vec<String> {
        let mut duplicated = Vec::new();
        for (id, deliveries) in self.by_webhook_id() {
            if deliveries
                .iter()
                .filter(|delivery| delivery.is_success())
                .count()
                > 1
            {
                duplicated.push(id);
            }
        }
        duplicated
    }

    /// Successful deliveries beyond the first of each `webhook-id`.
    pub fn duplicate_successes(&self) -> usize {
        let groups = self.by_webhook_id();
        let successes = groups
            .values()
            .map(|deliveries| deliveries.iter().filter(|delivery| delivery.is_success()));
        successes.map(|each| each.count().saturating_sub(1)).sum()
    }

    /// Waits until `condition` holds over the deliveries; panics with `what` after `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        condition: impl Fn(&[Delivery]) -> bool,
    ) {
        let mut recorded = self.inner.recorded.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if condition(&self.inner.deliveries.lock().expect("deliveries lock")) {
                return;
            }
            let changed = tokio::time::timeout_at(deadline, recorded.changed()).await;
            assert!(changed.is_ok(), "{what} within {timeout:?}");
        }
    }

    /// Waits until `count` deliveries were answered 2xx.
    pub async fn wait_successful(&self, count: usize, timeout: Duration) {
        let what = format!("{count} successful deliveries");
        self.wait_until(timeout, &what, |deliveries| {
            deliveries
                .iter()
                .filter(|delivery| delivery.is_success())
                .count()
                >= count
        })
        .await;
    }

    fn script<T>(&self, change: impl FnOnce(&mut Script) -> T) -> T {
        change(&mut self.inner.script.lock().expect("script lock"))
    }
}

async fn receive(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let now = (inner.time)();
    let (answer, secret) = {
        let mut script = inner.script.lock().expect("script lock");
        let answer = if method == Method::POST {
            script.answer(&path, now)
        } else {
            Some(Scripted::status(405))
        };
        (answer, script.secret_for(&path))
    };
    let signature = match secret {
        None => Signature::Unchecked,
        Some(secret) => check_signature(&secret, &headers, &body, now),
    };
    if answer.is_none() {
        // The response below is never written: the connection fails on its next write.
        connection.sever();
    }
    let delivery = Delivery {
        method,
        path,
        headers,
        body,
        at: now,
        status: answer.as_ref().map(|answer| answer.status),
        signature,
    };
    inner
        .deliveries
        .lock()
        .expect("deliveries lock")
        .push(delivery);
    inner.recorded.send_modify(|count| *count += 1);
    answer.map_or_else(|| StatusCode::SERVICE_UNAVAILABLE.into_response(), reply)
}

fn reply(answer: Scripted) -> Response {
    let mut response = Response::new(answer.body.into());
    *response.status_mut() = StatusCode::from_u16(answer.status).expect("scripted status");
    for (name, value) in answer.headers {
        response.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("scripted header name"),
            HeaderValue::from_str(&value).expect("scripted header value"),
        );
    }
    response
}

/// Checks with the `standardwebhooks` crate; the timestamp also against the test's time line.
fn check_signature(secret: &str, headers: &HeaderMap, body: &[u8], now: Millis) -> Signature {
    let webhook = match Webhook::new(secret) {
        Ok(webhook) => webhook,
        Err(error) => return Signature::Invalid(format!("secret: {error}")),
    };
    match webhook.verify(body, headers) {
        Ok(()) => Signature::Verified,
        Err(WebhookError::TimestampTooOldError | WebhookError::FutureTimestampError) => {
            verify_on_test_clock(&webhook, headers, body, now)
        }
        Err(error) => Signature::Invalid(error.to_string()),
    }
}

/// The crate's own check, with "now" taken from the test's time line instead of the wall clock.
fn verify_on_test_clock(
    webhook: &Webhook,
    headers: &HeaderMap,
    body: &[u8],
    now: Millis,
) -> Signature {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let (Some(id), Some(timestamp), Some(signatures)) = (
        header(HEADER_WEBHOOK_ID),
        header(HEADER_WEBHOOK_TIMESTAMP).and_then(|text| text.parse::<i64>().ok()),
        header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE),
    ) else {
        return Signature::Invalid("headers".into());
    };
    if (now.div_euclid(1000) - timestamp).abs() > TOLERANCE_SECONDS {
        return Signature::Invalid(format!(
            "timestamp {timestamp} more than {TOLERANCE_SECONDS} s from the test clock ({now} ms)"
        ));
    }
    let expected = match webhook.sign(id, timestamp, body) {
        Ok(expected) => expected,
        Err(error) => return Signature::Invalid(error.to_string()),
    };
    if signatures.split(' ').any(|signature| signature == expected) {
        Signature::VerifiedOnTestClock
    } else {
        Signature::Invalid("signature invalid".into())
    }
}
