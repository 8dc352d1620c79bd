//! What the SIGKILL crash tests share: a data directory kept when the test fails, creation
//! retried with an `Idempotency-Key` until acknowledged, and reads that ride out restarts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::Mutex;

use super::process::{Endpoint, GleanerProcess};

/// The test's data directory, kept (and its path printed) when the test fails.
pub struct DataDir {
    dir: Option<tempfile::TempDir>,
    test: &'static str,
}

impl DataDir {
    pub fn new(test: &'static str) -> Self {
        Self {
            dir: Some(tempfile::tempdir().expect("tempdir")),
            test,
        }
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.as_ref().expect("data dir").path()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!(
                "{} failed; its files are kept in {}",
                self.test,
                dir.keep().display()
            );
        }
    }
}

/// What the creating clients learned: the id acknowledged for each logical job.
#[derive(Default)]
pub struct Acknowledged {
    pub ids: Mutex<HashMap<usize, String>>,
    /// 202 answers: the job was created by this request.
    pub created: AtomicU64,
    /// 200 `Idempotent-Replayed` answers: an earlier request had stored it, its answer was lost.
    pub replayed: AtomicU64,
    /// Requests that got no answer (connection refused or reset, timeout) or a 5xx.
    pub unanswered: AtomicU64,
}

/// POSTs `body` to `path` with `Idempotency-Key: key` until it is acknowledged (202, or 200
/// replayed); returns the answer.
pub async fn post_until_acknowledged(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    token: &str,
    path: &str,
    key: &str,
    body: &Value,
    acknowledged: &Acknowledged,
) -> Value {
    loop {
        let sent = http
            .post(endpoint.url(path))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await;
        let Ok(response) = sent else {
            acknowledged.unanswered.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let status = response.status();
        let replayed = response.headers().contains_key("idempotent-replayed");
        // A body cut off by the kill is no acknowledgement either.
        let Ok(answer) = response.json::<Value>().await else {
            acknowledged.unanswered.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        match status {
            StatusCode::ACCEPTED => {
                acknowledged.created.fetch_add(1, Ordering::Relaxed);
            }
            StatusCode::OK if replayed => {
                acknowledged.replayed.fetch_add(1, Ordering::Relaxed);
            }
            status if status.is_server_error() => {
                acknowledged.unanswered.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            status => panic!("POST {path} for {key}: unexpected {status}: {answer}"),
        }
        assert!(
            answer["id"].is_string(),
            "acknowledged job without id: {answer}"
        );
        return answer;
    }
}

/// GETs `path` until a 2xx answer with a JSON body (the server is stable by then).
pub async fn get_json(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    token: &str,
    path: &str,
) -> Value {
    let mut last = String::new();
    for _ in 0..20 {
        match http.get(endpoint.url(path)).bearer_auth(token).send().await {
            Ok(response) if response.status().is_success() => {
                if let Ok(value) = response.json::<Value>().await {
                    return value;
                }
                last = "undecodable body".into();
            }
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                panic!("GET {path}: {status}: {body}");
            }
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("GET {path} kept failing: {last}");
}

/// How many jobs are still queued or running, or `None` while the server does not answer.
pub async fn unfinished(http: &reqwest::Client, endpoint: &Endpoint, token: &str) -> Option<usize> {
    let mut count = 0;
    for status in ["queued", "running"] {
        let path = format!("/v1/jobs?status={status}&limit=500");
        let response = http
            .get(endpoint.url(&path))
            .bearer_auth(token)
            .send()
            .await
            .ok()?;
        let page: Value = response.json().await.ok()?;
        count += page["jobs"].as_array()?.len();
    }
    Some(count)
}

/// Waits, without further kills, until no job is queued or running; fails when that takes
/// longer than `timeout` after `last_restart` or the process dies.
pub async fn wait_until_settled(
    process: &mut GleanerProcess,
    http: &reqwest::Client,
    token: &str,
    last_restart: std::time::Instant,
    timeout: Duration,
    poll: Duration,
) {
    let endpoint = process.endpoint();
    loop {
        process.assert_running();
        match unfinished(http, &endpoint, token).await {
            Some(0) => return,
            left => assert!(
                last_restart.elapsed() < timeout,
                "jobs still unfinished {timeout:?} after the last restart: {left:?}"
            ),
        }
        tokio::time::sleep(poll).await;
    }
}
