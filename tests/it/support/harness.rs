//! `TestApp`: the real application (store, engine, router) on a temporary data directory,
//! served on `127.0.0.1:0` and driven over real HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gleaner::clock::ManualClock;
use gleaner::config::Config;
use gleaner::server::{App, Parts};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A client for talking to the app under test: no proxy, bounded time.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("test client")
}

/// A config for tests: loopback allowed, fast backoff and sweeps.
pub fn test_config(data_dir: &std::path::Path) -> Config {
    let mut config = Config {
        data_dir: data_dir.to_owned(),
        ..Config::default()
    };
    config.net.allow = vec!["127.0.0.1/32".parse().expect("net")];
    config.net.request_timeout_ms = 10_000;
    config.engine.backoff_base = Duration::from_millis(10);
    config.engine.backoff_cap = Duration::from_millis(50);
    config.engine.sweep_interval = Duration::from_millis(100);
    config.server.min_free_disk = 0;
    config
}

/// Builds a [`TestApp`].
pub struct Builder {
    dir: Arc<TempDir>,
    config: Config,
    clock: Option<ManualClock>,
    connectors: Option<gleaner::connectors::ConnectorRegistry>,
    engine: bool,
}

impl Builder {
    /// Changes the configuration before the app is built.
    pub fn config(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.config);
        self
    }

    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Runs with exactly these connectors instead of the built-in ones.
    pub fn connectors(mut self, connectors: gleaner::connectors::ConnectorRegistry) -> Self {
        self.connectors = Some(connectors);
        self
    }

    /// Uses `dir` as the data directory (for a second app on the same store).
    pub fn data_dir(mut self, dir: Arc<TempDir>) -> Self {
        self.config.data_dir = dir.path().to_owned();
        self.dir = dir;
        self
    }

    /// Serves the API without starting the workers.
    pub fn without_engine(mut self) -> Self {
        self.engine = false;
        self
    }

    pub async fn start(self) -> TestApp {
        let parts = Parts {
            clock: self
                .clock
                .clone()
                .map(|clock| Arc::new(clock) as gleaner::clock::SharedClock),
            connectors: self.connectors.clone(),
            ..Parts::default()
        };
        let app = App::build(&self.config, parts).await.expect("build app");
        let shutdown = CancellationToken::new();
        let (engine, scheduler) = if self.engine {
            (
                Some(app.start_engine(&shutdown).await.expect("start engine")),
                Some(app.start_scheduler(&shutdown)),
            )
        } else {
            (None, None)
        };
        let metrics = Some(app.start_metrics(&shutdown).await.expect("start metrics"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind app");
        let addr = listener.local_addr().expect("app addr");
        let router = app.service();
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        let token = std::fs::read_to_string(self.dir.path().join("admin-token"))
            .expect("admin token")
            .trim()
            .to_owned();
        TestApp {
            base: format!("http://{addr}"),
            token,
            client: client(),
            dir: self.dir,
            shutdown,
            server: Some(server),
            engine,
            scheduler,
            metrics,
            app: Some(app),
        }
    }
}

/// The running application under test; stops when dropped.
pub struct TestApp {
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
    pub dir: Arc<TempDir>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
    engine: Option<JoinHandle<()>>,
    scheduler: Option<JoinHandle<()>>,
    metrics: Option<JoinHandle<()>>,
    /// Kept so the data directory lock is held while the app lives.
    app: Option<App>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for task in [
            self.server.take(),
            self.engine.take(),
            self.scheduler.take(),
            self.metrics.take(),
        ]
        .into_iter()
        .flatten()
        {
            task.abort();
        }
    }
}

/// A response read completely.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

impl TestApp {
    pub fn builder() -> Builder {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        Builder {
            config: test_config(dir.path()),
            dir,
            clock: None,
            connectors: None,
            engine: true,
        }
    }

    /// The default test app with the engine running.
    pub async fn start() -> TestApp {
        Self::builder().start().await
    }

    /// Stops like a crash: the shutdown token is cancelled, the server and the dispatcher are
    /// aborted without waiting for running steps, and the app (with its data directory lock)
    /// is dropped. Returns the data directory for a successor.
    pub fn kill(mut self) -> Arc<TempDir> {
        self.shutdown.cancel();
        for task in [
            self.server.take(),
            self.engine.take(),
            self.scheduler.take(),
            self.metrics.take(),
        ]
        .into_iter()
        .flatten()
        {
            task.abort();
        }
        drop(self.app.take());
        self.dir.clone()
    }

    /// Where the StatsD listener was bound, when `[metrics] statsd_listen` is set.
    pub fn statsd_addr(&self) -> Option<std::net::SocketAddr> {
        self.app.as_ref()?.metrics.statsd().map(|(addr, _)| addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the admin token.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(&self.token)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("response body");
        Answer {
            status,
            headers,
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.request(Method::GET, path)).await
    }

    /// POSTs `body` as JSON with the token.
    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// POST /v1/jobs; returns the status and the body.
    pub async fn post_job(&self, spec: &Value) -> (StatusCode, Value) {
        let answer = self.post("/v1/jobs", spec).await;
        let status = answer.status;
        (status, answer.json())
    }

    /// Creates a job that must be accepted; returns its id.
    pub async fn create_job(&self, spec: &Value) -> String {
        let (status, body) = self.post_job(spec).await;
        assert_eq!(status, StatusCode::ACCEPTED, "job accepted: {body}");
        body["id"].as_str().expect("job id").to_owned()
    }

    pub async fn job(&self, id: &str) -> Value {
        let answer = self.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.json()
    }

    /// Polls the job every 20 ms until its status is one of `statuses`; panics after `timeout`.
    pub async fn wait_for_status(&self, id: &str, statuses: &[&str], timeout: Duration) -> Value {
        let started = Instant::now();
        loop {
            let job = self.job(id).await;
            if statuses.contains(&job["status"].as_str().unwrap_or_default()) {
                return job;
            }
            assert!(
                started.elapsed() < timeout,
                "job {id} did not reach {statuses:?} within {timeout:?}: {job:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls the job until `done(job)` holds; panics after `timeout`.
    pub async fn wait_for_job(
        &self,
        id: &str,
        timeout: Duration,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let job = self.job(id).await;
            if done(&job) {
                return job;
            }
            assert!(
                started.elapsed() < timeout,
                "job {id}: {what} not reached within {timeout:?}: {job:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every record of the job (the `data` of each, in collection order).
    pub async fn records(&self, id: &str) -> Vec<Value> {
        let answer = self
            .get(&format!("/v1/jobs/{id}/records?limit=10000"))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.json()["records"]
            .as_array()
            .expect("records")
            .iter()
            .map(|record| record["data"].clone())
            .collect()
    }

    /// Dead letters of a job.
    pub async fn dead_letters(&self, id: &str) -> Vec<Value> {
        let answer = self
            .get(&format!(
                "/v1/dead-letters?job_id={id}&include_replayed=true"
            ))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.json()["dead_letters"]
            .as_array()
            .expect("dead letters")
            .clone()
    }
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after `timeout`.
pub async fn eventually(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < timeout, "{what} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts a problem+json answer with `status` and a non-empty `detail`; returns the document.
#[track_caller]
pub fn assert_problem(answer: &Answer, status: u16) -> Value {
    assert_eq!(answer.status.as_u16(), status, "status of {}", answer.text);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json"),
        "content type of {}",
        answer.text
    );
    let problem = answer.json();
    assert_eq!(problem["status"], status, "{problem}");
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|kind| kind.starts_with("urn:gleaner:problem:")),
        "{problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|detail| !detail.trim().is_empty()),
        "detail in {problem}"
    );
    problem
}

/// The `detail` of a problem document.
pub fn detail(problem: &Value) -> String {
    problem["detail"].as_str().unwrap_or_default().to_owned()
}

/// POSTs `body` as is, with `content_type` and the token.
pub async fn post_raw(
    app: &TestApp,
    path: &str,
    content_type: &str,
    body: impl Into<String>,
) -> Answer {
    app.send(
        app.request(Method::POST, path)
            .header("content-type", content_type)
            .body(body.into()),
    )
    .await
}

/// How many jobs `GET /v1/jobs` lists.
pub async fn job_count(app: &TestApp) -> usize {
    let answer = app.get("/v1/jobs").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.json()["jobs"].as_array().expect("jobs").len()
}
