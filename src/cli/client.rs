//! `gleaner jobs …` and `pipeline import --create`: a thin client of a running server's API
//! (`gleaner schedules …` and `gleaner metrics …` share it).
//! The address comes from `--url`, `GLEANER_URL`, or `<data_dir>/listen.addr`; the token from
//! `--token`, `GLEANER_TOKEN`, or `<data_dir>/admin-token`.

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::config::Config;

/// Which server to talk to, and as whom.
#[derive(Debug, Args)]
pub struct Target {
    /// Base URL of the server, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "GLEANER_URL")]
    url: Option<String>,
    /// API token.
    #[arg(long, env = "GLEANER_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        connector: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Create a job from a JSON spec (as `POST /v1/jobs` takes it) in a file, or `-` for stdin;
    /// prints the job.
    Create {
        #[command(flatten)]
        target: Target,
        spec: std::path::PathBuf,
    },
    /// Print a job's records as NDJSON (the `data` of each, in collection order).
    Records {
        #[command(flatten)]
        target: Target,
        id: String,
        /// The records as collected, before the job's processors.
        #[arg(long)]
        original: bool,
        /// Records fetched per request (1–10 000).
        #[arg(long, default_value_t = 10_000)]
        page_size: usize,
    },
    /// Show a job with its steps and attempts.
    Show {
        #[command(flatten)]
        target: Target,
        id: String,
    },
    /// Cancel a job.
    Cancel {
        #[command(flatten)]
        target: Target,
        id: String,
    },
    /// Retry a job's failed steps.
    Retry {
        #[command(flatten)]
        target: Target,
        id: String,
    },
}

pub(super) struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    pub(super) fn new(config: &Config, target: Target) -> anyhow::Result<Self> {
        let base = match target.url {
            Some(url) => url,
            None => {
                let path = config.data_dir.join("listen.addr");
                let addr = std::fs::read_to_string(&path).map_err(|error| {
                    anyhow::anyhow!("no --url given and {} unreadable: {error}", path.display())
                })?;
                format!("http://{}", addr.trim())
            }
        };
        let token = match target.token {
            Some(token) => token,
            None => {
                let path = config.data_dir.join("admin-token");
                std::fs::read_to_string(&path)
                    .map_err(|error| {
                        anyhow::anyhow!(
                            "no --token given and {} unreadable: {error}",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_owned()
            }
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder().no_proxy().build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<Value> {
        let request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .query(query);
        self.send(request).await
    }

    /// GETs `path` and returns the items of its array `field` (`{"jobs": […]}`).
    pub(super) async fn items(
        &self,
        path: &str,
        query: &[(&str, String)],
        field: &str,
    ) -> anyhow::Result<Vec<Value>> {
        let mut answer = self.call(reqwest::Method::GET, path, query).await?;
        Ok(match answer.get_mut(field).map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        })
    }

    /// Prints `line` of each item of the list at `path` (its array `field`).
    pub(super) async fn print_items(
        &self,
        path: &str,
        query: &[(&str, String)],
        field: &str,
        line: impl Fn(&Value) -> String,
    ) -> anyhow::Result<()> {
        for item in self.items(path, query, field).await? {
            println!("{}", line(&item));
        }
        Ok(())
    }

    /// Prints `line` of each item of the array `field` of every page at `path`, following the
    /// page's `next` field into the query parameter `cursor` until it is absent.
    pub(super) async fn print_pages(
        &self,
        path: &str,
        mut query: Vec<(&str, String)>,
        field: &str,
        (next, cursor): (&str, &'static str),
        line: impl Fn(&Value) -> String,
    ) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        loop {
            let page = self.call(reqwest::Method::GET, path, &query).await?;
            for item in page
                .get(field)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                writeln!(out, "{}", line(item))?;
            }
            let next = match page.get(next) {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Number(number)) => number.to_string(),
                _ => return Ok(()),
            };
            query.retain(|(name, _)| *name != cursor);
            query.push((cursor, next));
        }
    }

    /// Sends `body` as JSON and returns the answer, or an error with the problem's detail.
    pub(super) async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<Value> {
        let request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .json(body);
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request.bearer_auth(&self.token).send().await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let detail = body
                .get("detail")
                .and_then(Value::as_str)
                .unwrap_or("no detail");
            anyhow::bail!("{status}: {detail}");
        }
        Ok(body)
    }
}

/// The JSON in file `path`, or on stdin for `-`.
pub(super) fn read_json(path: &std::path::Path) -> anyhow::Result<Value> {
    let text = read_input(path)?;
    serde_json::from_str(&text)
        .map_err(|error| anyhow::anyhow!("{}: not JSON: {error}", path.display()))
}

/// The API path of the resource `key` in `collection` (`/v1/{collection}/{key}`), for names
/// and ids of letters, digits, `-`, `_` and `.`: any other key cannot name one (`noun`), so it
/// is refused here rather than sent as another path.
pub(super) fn resource_path(collection: &str, noun: &str, key: &str) -> anyhow::Result<String> {
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    anyhow::ensure!(
        valid,
        "{key:?} is not a {noun} name or id (letters, digits, `-`, `_`, `.`)"
    );
    Ok(format!("/v1/{collection}/{key}"))
}

/// The text of file `path`, or of stdin for `-`.
pub(super) fn read_input(path: &std::path::Path) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        return Ok(std::io::read_to_string(std::io::stdin())?);
    }
    std::fs::read_to_string(path).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))
}

pub async fn run(config: &Config, command: JobsCommand) -> anyhow::Result<()> {
    let output = match command {
        JobsCommand::List {
            target,
            status,
            connector,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(status.map(|status| ("status", status)));
            query.extend(connector.map(|connector| ("connector", connector)));
            return Api::new(config, target)?
                .print_items("/v1/jobs", &query, "jobs", |job| {
                    format!(
                        "{}  {:<20} {}",
                        job.get("id").and_then(Value::as_str).unwrap_or("?"),
                        job.get("status").and_then(Value::as_str).unwrap_or("?"),
                        job.get("created_at").and_then(Value::as_str).unwrap_or("?"),
                    )
                })
                .await;
        }
        JobsCommand::Create { target, spec } => {
            let body = read_json(&spec)?;
            Api::new(config, target)?
                .send_json(reqwest::Method::POST, "/v1/jobs", &body)
                .await?
        }
        JobsCommand::Records {
            target,
            id,
            original,
            page_size,
        } => {
            let mut query = vec![("limit", page_size.to_string())];
            if original {
                query.push(("dataset", "original".to_owned()));
            }
            return Api::new(config, target)?
                .print_pages(
                    &format!("/v1/jobs/{id}/records"),
                    query,
                    "records",
                    ("next_cursor", "cursor"),
                    |record| record.get("data").unwrap_or(&Value::Null).to_string(),
                )
                .await;
        }
        JobsCommand::Show { target, id } => {
            Api::new(config, target)?
                .call(reqwest::Method::GET, &format!("/v1/jobs/{id}"), &[])
                .await?
        }
        JobsCommand::Cancel { target, id } => {
            Api::new(config, target)?
                .call(reqwest::Method::POST, &format!("/v1/jobs/{id}/cancel"), &[])
                .await?
        }
        JobsCommand::Retry { target, id } => {
            Api::new(config, target)?
                .call(reqwest::Method::POST, &format!("/v1/jobs/{id}/retry"), &[])
                .await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}
