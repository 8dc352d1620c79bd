//! A scriptable mock upstream on `127.0.0.1:0`.
//!
//! Every request is recorded (method, path, query, headers, arrival time). Each path has a
//! default behaviour (fixed reply or pages over a list of records) and a queue of scripted
//! replies that are consumed first, in order; a scripted reply may be limited to requests whose
//! query contains a given text. Unknown paths answer 404.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// One request as the mock saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub at: Instant,
}

impl Recorded {
    /// The value of query parameter `name`, if present.
    pub fn param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_deref().unwrap_or_default().as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }
}

/// A reply: status, headers, body, and optionally a delay or a hold until released.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
    /// Wait for [`Mock::release_held`] (or forever) before answering.
    pub hold: bool,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
            hold: false,
        }
    }

    /// A JSON error body with `status`.
    pub fn status(status: u16) -> Self {
        Self::json(status, json!({"error": format!("scripted {status}")}))
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Never answers until [`Mock::release_held`] is called.
    pub fn held(mut self) -> Self {
        self.hold = true;
        self
    }

    /// A redirect to `location`.
    pub fn redirect(location: &str) -> Self {
        Self {
            status: 302,
            headers: vec![("location".into(), location.into())],
            body: String::new(),
            delay: Duration::ZERO,
            hold: false,
        }
    }
}

/// What a path answers once its script is used up.
#[derive(Debug, Clone)]
enum Behaviour {
    Fixed(Reply),
    /// `records` in pages of `size`. The page is chosen by `?cursor=N` (0-based) or `?page=N`
    /// (1-based); the body is `{"items": [...], "next_cursor": "N+1"|null, "next": link|null}`.
    Paged {
        records: Vec<Value>,
        size: usize,
    },
}

#[derive(Debug, Clone)]
struct Scripted {
    /// Only requests whose query string contains this text consume the reply.
    when_query: Option<String>,
    reply: Reply,
}

#[derive(Debug, Default)]
struct Route {
    script: VecDeque<Scripted>,
    default: Option<Behaviour>,
}

#[derive(Debug, Default)]
struct State {
    requests: Mutex<Vec<Recorded>>,
    routes: Mutex<HashMap<String, Route>>,
    release: Notify,
}

/// The running mock; stops when dropped.
pub struct Mock {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.state.release.notify_waiters();
        self.task.abort();
    }
}

impl Mock {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock");
        let addr = listener.local_addr().expect("mock addr");
        let state = Arc::new(State::default());
        let shared = state.clone();
        let router = Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
            let state = shared.clone();
            async move { answer(state, method, uri, headers).await }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, state, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The default reply of `path` (after its script).
    pub fn set(&self, path: &str, reply: Reply) {
        self.route(path, |route| route.default = Some(Behaviour::Fixed(reply)));
    }

    /// `path` answers 200 with `body`.
    pub fn set_json(&self, path: &str, body: Value) {
        self.set(path, Reply::json(200, body));
    }

    /// `path` serves `records` in pages of `size` (see [`Behaviour::Paged`]).
    pub fn set_paged(&self, path: &str, records: Vec<Value>, size: usize) {
        self.route(path, |route| {
            route.default = Some(Behaviour::Paged { records, size })
        });
    }

    /// Queues `reply` for the next request to `path`.
    pub fn push(&self, path: &str, reply: Reply) {
        self.route(path, |route| {
            route.script.push_back(Scripted {
                when_query: None,
                reply,
            })
        });
    }

    /// Queues `reply` for the next request to `path` whose query contains `query`.
    pub fn push_when(&self, path: &str, query: &str, reply: Reply) {
        self.route(path, |route| {
            route.script.push_back(Scripted {
                when_query: Some(query.into()),
                reply,
            })
        });
    }

    /// Lets every held request answer.
    pub fn release_held(&self) {
        self.state.release.notify_waiters();
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("requests").clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|request| request.path == path)
            .collect()
    }

    pub fn count(&self, path: &str) -> usize {
        self.requests_to(path).len()
    }

    fn route(&self, path: &str, change: impl FnOnce(&mut Route)) {
        let mut routes = self.state.routes.lock().expect("routes");
        change(routes.entry(path.to_owned()).or_default());
    }
}

async fn answer(state: Arc<State>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().map(str::to_owned);
    let recorded = Recorded {
        method,
        path: path.clone(),
        query: query.clone(),
        headers,
        at: Instant::now(),
    };
    // Register interest before the request becomes visible, so a release right after a test
    // saw the request is not missed.
    let released = state.release.notified();
    tokio::pin!(released);
    released.as_mut().enable();
    state
        .requests
        .lock()
        .expect("requests")
        .push(recorded.clone());
    let reply = {
        let mut routes = state.routes.lock().expect("routes");
        match routes.get_mut(&path) {
            None => Reply::json(404, json!({"error": "no such mock route"})),
            Some(route) => {
                let query_text = query.as_deref().unwrap_or_default();
                let scripted = route.script.iter().position(|entry| {
                    entry
                        .when_query
                        .as_deref()
                        .is_none_or(|text| query_text.contains(text))
                });
                match scripted.and_then(|index| route.script.remove(index)) {
                    Some(entry) => entry.reply,
                    None => match &route.default {
                        None => Reply::json(404, json!({"error": "no default reply"})),
                        Some(Behaviour::Fixed(reply)) => reply.clone(),
                        Some(Behaviour::Paged { records, size }) => page(&recorded, records, *size),
                    },
                }
            }
        }
    };
    if reply.hold {
        released.await;
    }
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() = StatusCode::from_u16(reply.status).expect("status");
    for (name, value) in reply.headers {
        response.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(&value).expect("header value"),
        );
    }
    response
}

fn page(request: &Recorded, records: &[Value], size: usize) -> Reply {
    let index = match (request.param("cursor"), request.param("page")) {
        (Some(cursor), _) => cursor.parse::<usize>().unwrap_or(usize::MAX),
        (None, Some(page)) => page.parse::<usize>().unwrap_or(1).saturating_sub(1),
        (None, None) => 0,
    };
    let start = index.saturating_mul(size).min(records.len());
    let end = start.saturating_add(size).min(records.len());
    let more = end < records.len();
    let next_cursor = more.then(|| (index + 1).to_string());
    let next = more.then(|| format!("{}?page={}", request.path, index + 2));
    Reply::json(
        200,
        json!({"items": &records[start..end], "next_cursor": next_cursor, "next": next}),
    )
}
