//! `MockProviders`: the datahog mock provider API (seed contract 4.2) on `127.0.0.1:0`.
//!
//! `GET /providers/{id}` answers the seed's exact bytes for `gas` and `internet` (or a body the
//! test set), `404` with an empty body for an unknown id, and `500 text/plain #fail` when the
//! provider is down (switch or outage window on the test's time line) or when the seeded RNG
//! draws a failure. Nothing else is emulated: no ETag, no `__proto__` quirk.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gleaner::clock::Millis;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::outage::{Outage, TimeSource, wall_clock};
use super::served::Served;

/// The seed's `gas` body, byte for byte (`30.00` in its file is `30` on the wire).
pub const GAS: &str = r#"[{"billedOn":"2020-04-07T15:03:14.257Z","amount":22.27},{"billedOn":"2020-05-07T15:03:14.257Z","amount":30}]"#;
/// The seed's `internet` body, byte for byte.
pub const INTERNET: &str = r#"[{"billedOn":"2020-02-07T15:03:14.257Z","amount":15.12},{"billedOn":"2020-03-07T15:03:14.257Z","amount":15.12}]"#;
/// The seed's failure rate: `Math.random() > 0.5` fails a call.
pub const SEED_FAILURE_RATE: f64 = 0.5;
/// The seed's failure body (with `Content-Type: text/plain`).
pub const FAIL_BODY: &str = "#fail";

/// The providers a down switch or an outage window applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    All,
    Provider(String),
}

impl From<&str> for Scope {
    fn from(id: &str) -> Self {
        Self::Provider(id.to_owned())
    }
}

/// How the mock starts; everything but `latency` and `time` can also be changed while it runs.
#[derive(Clone)]
pub struct ProvidersConfig {
    pub seed: u64,
    /// Share of calls answered `500 #fail`, in `0.0..=1.0`; the seed's is [`SEED_FAILURE_RATE`].
    pub failure_rate: f64,
    /// Added before every answer of `/providers/{id}`.
    pub latency: Duration,
    /// The time line outage windows are read against.
    pub time: TimeSource,
    /// Provider id → exact response body; starts with the seed's `gas` and `internet`.
    pub bodies: BTreeMap<String, String>,
}

impl Default for ProvidersConfig {
    fn default() -> Self {
        Self {
            seed: 7,
            failure_rate: 0.0,
            latency: Duration::ZERO,
            time: wall_clock(),
            bodies: BTreeMap::from([
                ("gas".to_owned(), GAS.to_owned()),
                ("internet".to_owned(), INTERNET.to_owned()),
            ]),
        }
    }
}

impl ProvidersConfig {
    /// The seed's behaviour: half of all calls fail.
    pub fn seed_like(seed: u64) -> Self {
        Self {
            seed,
            failure_rate: SEED_FAILURE_RATE,
            ..Self::default()
        }
    }

    /// Adds or replaces the body of provider `id`.
    pub fn provider(mut self, id: &str, body: &str) -> Self {
        self.bodies.insert(id.to_owned(), body.to_owned());
        self
    }
}

/// Call counters of one provider id (or of all of them); written by the request handler.
#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    not_found: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub calls: u64,
    /// Answered `200` with the provider's body.
    pub successes: u64,
    /// Answered `500 #fail` (outage or random failure).
    pub failures: u64,
    /// Answered `404` (unknown id).
    pub not_found: u64,
}

impl Counters {
    fn snapshot(&self) -> Counts {
        Counts {
            calls: self.calls.load(Ordering::SeqCst),
            successes: self.successes.load(Ordering::SeqCst),
            failures: self.failures.load(Ordering::SeqCst),
            not_found: self.not_found.load(Ordering::SeqCst),
        }
    }
}

/// One call as the mock answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderCall {
    pub provider: String,
    /// On the configured time line.
    pub at: Millis,
    pub status: u16,
    /// The `500` came from the down switch or an outage window, not from the RNG.
    pub during_outage: bool,
}

/// What the mock decides for a call.
enum Verdict {
    Outage,
    RandomFailure,
    Body(String),
    NotFound,
}

/// State the test changes while the mock runs.
struct Script {
    rng: StdRng,
    failure_rate: f64,
    bodies: BTreeMap<String, String>,
    outages: HashMap<Scope, Outage>,
}

impl Script {
    fn decide(&mut self, id: &str, now: Millis) -> Verdict {
        let scope = Scope::from(id);
        let down = [&Scope::All, &scope]
            .into_iter()
            .filter_map(|scope| self.outages.get(scope))
            .any(|outage| outage.is_down(now));
        if down {
            return Verdict::Outage;
        }
        if self.rng.random_bool(self.failure_rate) {
            return Verdict::RandomFailure;
        }
        match self.bodies.get(id) {
            Some(body) => Verdict::Body(body.clone()),
            None => Verdict::NotFound,
        }
    }
}

struct Inner {
    latency: Duration,
    time: TimeSource,
    script: Mutex<Script>,
    total: Counters,
    per_provider: Mutex<HashMap<String, Arc<Counters>>>,
    calls: Mutex<Vec<ProviderCall>>,
}

impl Inner {
    fn counters(&self, id: &str) -> Arc<Counters> {
        let mut per_provider = self.per_provider.lock().expect("counters lock");
        per_provider.entry(id.to_owned()).or_default().clone()
    }
}

/// The running mock; stops when dropped.
pub struct MockProviders {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    _server: Served,
}

impl MockProviders {
    pub async fn start(config: ProvidersConfig) -> Self {
        assert!(
            (0.0..=1.0).contains(&config.failure_rate),
            "failure rate {} outside 0..=1",
            config.failure_rate
        );
        let inner = Arc::new(Inner {
            latency: config.latency,
            time: config.time,
            script: Mutex::new(Script {
                rng: StdRng::seed_from_u64(config.seed),
                failure_rate: config.failure_rate,
                bodies: config.bodies,
                outages: HashMap::new(),
            }),
            total: Counters::default(),
            per_provider: Mutex::new(HashMap::new()),
            calls: Mutex::new(Vec::new()),
        });
        // Express accepts a trailing slash and ignores the query string; so does this.
        let router = Router::new()
            .route("/providers/{id}", get(provider))
            .route("/providers/{id}/", get(provider))
            .fallback(cannot)
            .with_state(inner.clone());
        let server = Served::start(router, "mock providers").await;
        Self {
            addr: server.addr,
            inner,
            _server: server,
        }
    }

    /// `http://127.0.0.1:PORT`, the connector's base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/providers/{id}`.
    pub fn url(&self, id: &str) -> String {
        format!("{}/providers/{id}", self.base_url())
    }

    /// Adds or replaces the body of provider `id` (e.g. an `empty` provider answering `[]`).
    pub fn set_provider(&self, id: &str, body: &str) {
        self.script(|script| script.bodies.insert(id.to_owned(), body.to_owned()));
    }

    /// Makes `id` unknown (404).
    pub fn remove_provider(&self, id: &str) {
        self.script(|script| script.bodies.remove(id));
    }

    pub fn set_failure_rate(&self, rate: f64) {
        assert!(
            (0.0..=1.0).contains(&rate),
            "failure rate {rate} outside 0..=1"
        );
        self.script(|script| script.failure_rate = rate);
    }

    /// Turns the down switch of one provider (`"gas"`) or of [`Scope::All`] on or off.
    pub fn set_down(&self, scope: impl Into<Scope>, down: bool) {
        self.outage(scope.into(), |outage| outage.set_down(down));
    }

    /// Down during `[from, until)` on the configured time line.
    pub fn add_outage(&self, scope: impl Into<Scope>, from: Millis, until: Millis) {
        self.outage(scope.into(), |outage| outage.add_window(from, until));
    }

    /// Forgets every down switch and outage window.
    pub fn clear_outages(&self) {
        self.script(|script| script.outages.clear());
    }

    /// What provider `id` was asked and answered so far.
    pub fn counts(&self, id: &str) -> Counts {
        self.inner.counters(id).snapshot()
    }

    /// [`Self::counts`] over every id.
    pub fn total(&self) -> Counts {
        self.inner.total.snapshot()
    }

    /// Every call to `/providers/{id}`, in arrival order.
    pub fn calls(&self) -> Vec<ProviderCall> {
        self.inner.calls.lock().expect("calls lock").clone()
    }

    fn outage(&self, scope: Scope, change: impl FnOnce(&mut Outage)) {
        self.script(|script| change(script.outages.entry(scope).or_default()));
    }

    fn script<T>(&self, change: impl FnOnce(&mut Script) -> T) -> T {
        change(&mut self.inner.script.lock().expect("script lock"))
    }
}

async fn provider(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    let counters = inner.counters(&id);
    count(&inner, &counters, |counter| &counter.calls);
    let now = (inner.time)();
    let verdict = inner.script.lock().expect("script lock").decide(&id, now);
    let during_outage = matches!(verdict, Verdict::Outage);
    if !inner.latency.is_zero() {
        tokio::time::sleep(inner.latency).await;
    }
    let (response, status) = match verdict {
        Verdict::Outage | Verdict::RandomFailure => {
            count(&inner, &counters, |counter| &counter.failures);
            let response = (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain")],
                FAIL_BODY,
            );
            (response.into_response(), 500)
        }
        Verdict::Body(body) => {
            count(&inner, &counters, |counter| &counter.successes);
            let content_type = [(header::CONTENT_TYPE, "application/json; charset=utf-8")];
            ((StatusCode::OK, content_type, body).into_response(), 200)
        }
        Verdict::NotFound => {
            count(&inner, &counters, |counter| &counter.not_found);
            (StatusCode::NOT_FOUND.into_response(), 404)
        }
    };
    inner.calls.lock().expect("calls lock").push(ProviderCall {
        provider: id,
        at: now,
        status,
        during_outage,
    });
    response
}

/// Express's answer to any other method or path.
async fn cannot(method: Method, uri: Uri) -> Response {
    let page = format!("<pre>Cannot {method} {}</pre>", uri.path());
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}

fn count(inner: &Inner, counters: &Counters, field: impl Fn(&Counters) -> &AtomicU64) {
    for counter in [&inner.total, counters] {
        field(counter).fetch_add(1, Ordering::SeqCst);
    }
}
