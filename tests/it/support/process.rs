//! The real `gleaner` binary as a child process: `serve` on `127.0.0.1:0` over a data directory
//! the test owns, killed with SIGKILL and restarted on the same directory.
//!
//! The address changes at every start (port 0), so the current base URL lives in an
//! [`Endpoint`] that clients share and read before each request.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How long one start may take before the test gives up (a debug build on a busy machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_gleaner")
}

/// Settings for a test server: loopback allow-listed, fast retries, short leases, many
/// attempts, no log on stdout (nobody reads the pipe), and no free-disk readiness floor.
pub fn default_env() -> Vec<(String, String)> {
    [
        ("GLEANER_NET__ALLOW", r#"["127.0.0.1/32"]"#),
        ("GLEANER_NET__REQUEST_TIMEOUT_MS", "10000"),
        ("GLEANER_ENGINE__BACKOFF_BASE", "20ms"),
        ("GLEANER_ENGINE__BACKOFF_CAP", "200ms"),
        ("GLEANER_ENGINE__LEASE_TIMEOUT", "2s"),
        ("GLEANER_ENGINE__SWEEP_INTERVAL", "250ms"),
        ("GLEANER_ENGINE__MAX_ATTEMPTS", "1000"),
        ("GLEANER_LOG__STDOUT", "false"),
        ("GLEANER_LOG__LEVEL", "warn"),
        ("GLEANER_SERVER__MIN_FREE_DISK", "0"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect()
}

/// The current base URL of the server, shared by every client of a test.
#[derive(Debug, Clone, Default)]
pub struct Endpoint(Arc<RwLock<String>>);

impl Endpoint {
    /// `http://127.0.0.1:PORT` of the process started last.
    pub fn base(&self) -> String {
        self.0.read().expect("endpoint lock").clone()
    }

    /// `base()` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    fn set(&self, base: String) {
        *self.0.write().expect("endpoint lock") = base;
    }
}

/// A `gleaner serve` child process over a data directory that outlives it.
pub struct GleanerProcess {
    data_dir: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    endpoint: Endpoint,
    token: String,
    starts: u32,
}

impl GleanerProcess {
    /// Starts `gleaner serve` on `data_dir` with [`default_env`] plus `extra_env` (later entries
    /// win) and waits until it answers `/healthz`.
    pub async fn start(data_dir: &Path, extra_env: &[(&str, &str)]) -> Self {
        let mut env = default_env();
        env.extend(
            extra_env
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
        );
        let mut process = Self {
            data_dir: data_dir.to_owned(),
            env,
            child: None,
            endpoint: Endpoint::default(),
            token: String::new(),
            starts: 0,
        };
        process.spawn().await;
        process
    }

    /// The shared, always-current base URL.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    /// The admin token written on first start (it stays valid across restarts).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// How many times the process was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// The file that collects the children's stdout and stderr (panics, early errors).
    pub fn output_path(&self) -> PathBuf {
        self.data_dir.join("process-output.log")
    }

    /// The last `bytes` of the children's output, for failure messages.
    pub fn output_tail(&self, bytes: usize) -> String {
        let text = std::fs::read_to_string(self.output_path()).unwrap_or_default();
        let start = text.len().saturating_sub(bytes);
        let start = (start..=text.len())
            .find(|index| text.is_char_boundary(*index))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }

    async fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "the previous process is still running"
        );
        std::fs::create_dir_all(&self.data_dir).expect("create data dir");
        let addr_file = self.data_dir.join("listen.addr");
        match std::fs::remove_file(&addr_file) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => panic!("remove stale {}: {error}", addr_file.display()),
        }
        let output = File::options()
            .create(true)
            .append(true)
            .open(self.output_path())
            .expect("open process output file");
        let child = Command::new(binary())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            // Not the crate root: a `gleaner.toml` there must not leak into the test.
            .current_dir(&self.data_dir)
            .env_remove("RUST_LOG")
            .env_remove("GLEANER_CONFIG")
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("clone output file"))
            .stderr(output)
            .spawn()
            .expect("spawn gleaner");
        self.child = Some(child);
        self.starts += 1;
        let started = Instant::now();
        let addr = loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "gleaner exited during start with {status}; output:\n{}",
                    self.output_tail(4000)
                );
            }
            // Written non-atomically: a half-written file does not parse yet.
            if let Ok(text) = std::fs::read_to_string(&addr_file)
                && let Ok(addr) = text.trim().parse::<std::net::SocketAddr>()
            {
                break addr;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "gleaner did not write listen.addr within {START_TIMEOUT:?}; output:\n{}",
                self.output_tail(4000)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        self.endpoint.set(format!("http://{addr}"));
        if self.token.is_empty() {
            let token = std::fs::read_to_string(self.data_dir.join("admin-token"))
                .expect("admin-token is written on first start");
            self.token = token.trim().to_owned();
        }
        let client = client();
        let health = self.endpoint.url("/healthz");
        loop {
            if let Ok(response) = client.get(&health).send().await
                && response.status().is_success()
            {
                break;
            }
            if let Some(status) = self.try_wait() {
                panic!(
                    "gleaner exited during start with {status}; output:\n{}",
                    self.output_tail(4000)
                );
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "gleaner did not answer /healthz within {START_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().expect("poll child"))
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap the process.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Err(error) = child.kill() {
                // Already exited: that is a crash the test did not cause.
                panic!("kill gleaner: {error}; output:\n{}", self.output_tail(4000));
            }
            let status = child.wait().expect("reap gleaner");
            assert!(!status.success(), "a killed process does not exit 0");
        }
    }

    /// Starts the binary again on the same data directory.
    pub async fn restart(&mut self) {
        self.kill_9();
        self.spawn().await;
    }

    /// Fails if the process died by itself.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_wait() {
            panic!(
                "gleaner exited on its own with {status}; output:\n{}",
                self.output_tail(4000)
            );
        }
    }

    /// Runs `gleaner --data-dir DIR <args>` to completion with the same environment.
    pub fn run_command(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .current_dir(&self.data_dir)
            .env_remove("RUST_LOG")
            .env_remove("GLEANER_CONFIG")
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .output()
            .expect("run gleaner")
    }
}

impl Drop for GleanerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A client for the process under test: no proxy, bounded time, no stale pooled connections
/// kept long (the process behind them dies often).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(20))
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("process test client")
}
