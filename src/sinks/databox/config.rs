//! The `[sinks.databox]` section and the settings of one `databox` sink.
//!
//! Invariant: a resolved [`Target`] names one API with the URL and the primary keys it needs;
//! `push` never carries a dataset or primary keys, `dataset` always carries both.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use crate::config::duration;

/// Where pushes go unless configured otherwise (what the seed's `databox` library used).
pub const DEFAULT_PUSH_URL: &str = "https://push.databox.com";
/// The root of Databox's API (v1), whose dataset ingestion this sink uses.
pub const DEFAULT_DATASET_URL: &str = "https://api.databox.com";
/// The columns a dataset row is identified by unless the job names others.
pub const DEFAULT_PRIMARY_KEYS: [&str; 2] = ["metric", "date"];
const MAX_TOKEN_CHARS: usize = 512;
const MAX_DATASET_CHARS: usize = 256;
const MAX_PRIMARY_KEYS: usize = 16;

/// Operator settings of the Databox sink (`[sinks.databox]`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataboxConfig {
    /// The push API: a delivery is `POST {base_url}/`.
    #[serde(with = "crate::config::http_url")]
    pub base_url: Url,
    /// The datasets API: batches are `POST {dataset_base_url}/v1/datasets/{dataset}/data`.
    #[serde(with = "crate::config::http_url")]
    pub dataset_base_url: Url,
    /// The token of jobs that name none: a push token for `push`, an API key for `dataset`.
    pub token: Option<String>,
    /// How long one request may take.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

impl Default for DataboxConfig {
    fn default() -> Self {
        Self {
            base_url: Url::parse(DEFAULT_PUSH_URL).expect("a valid literal URL"),
            dataset_base_url: Url::parse(DEFAULT_DATASET_URL).expect("a valid literal URL"),
            token: None,
            timeout: Duration::from_secs(15),
        }
    }
}

/// Shows everything but the token, so configuration dumps never leak it.
impl fmt::Debug for DataboxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataboxConfig")
            .field("base_url", &self.base_url.as_str())
            .field("dataset_base_url", &self.dataset_base_url.as_str())
            .field("token", &self.token.as_ref().map(|_| "********"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl DataboxConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout.is_zero() {
            return Err("sinks.databox.timeout must be positive".into());
        }
        if let Some(token) = &self.token {
            check_token(token).map_err(|error| format!("sinks.databox.token: {error}"))?;
        }
        Ok(())
    }

    /// Resolves a job's settings (already checked against [`settings_schema`]).
    pub fn target(&self, settings: &Value) -> Result<Target, String> {
        let settings = Settings::deserialize(settings).map_err(|error| error.to_string())?;
        if let Some(token) = &settings.token {
            check_token(token).map_err(|error| format!("token: {error}"))?;
        }
        let token = settings.token.or_else(|| self.token.clone());
        let (url, mode) = match (settings.api, settings.dataset) {
            (Api::Push, Some(_)) => return Err("dataset is only used with `api: dataset`".into()),
            (Api::Push, None) if settings.primary_keys.is_some() => {
                return Err("primary_keys is only used with `api: dataset`".into());
            }
            (Api::Push, None) => (push_url(&self.base_url), Mode::Push),
            (Api::Dataset, None) => return Err("dataset is required with `api: dataset`".into()),
            (Api::Dataset, Some(dataset)) => {
                let primary_keys = settings.primary_keys.unwrap_or_else(|| {
                    DEFAULT_PRIMARY_KEYS
                        .iter()
                        .map(|&key| key.to_owned())
                        .collect()
                });
                let url = dataset_url(&self.dataset_base_url, &dataset);
                (url, Mode::Dataset { primary_keys })
            }
        };
        Ok(Target { url, token, mode })
    }
}

/// Which Databox API a sink sends to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Api {
    #[default]
    Push,
    Dataset,
}

/// The settings of one `databox` sink, as submitted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    token: Option<String>,
    #[serde(default)]
    api: Api,
    dataset: Option<String>,
    primary_keys: Option<Vec<String>>,
}

/// Where one delivery goes and how, from the job's settings and the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: Url,
    /// The job's token, else the configured one; `None` when neither is set.
    pub token: Option<String>,
    pub mode: Mode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// One request with every metric.
    Push,
    /// Batches of rows, each identified by these columns.
    Dataset { primary_keys: Vec<String> },
}

/// A token goes into a header: it must be short and free of control characters.
fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() || token.chars().count() > MAX_TOKEN_CHARS {
        return Err(format!("must be 1–{MAX_TOKEN_CHARS} characters"));
    }
    if token.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// `{base}/`: the push API takes data at the root of its host (or of the configured path).
fn push_url(base: &Url) -> Url {
    let mut url = base.clone();
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

/// `{base}/v1/datasets/{dataset}/data`, the dataset id percent-encoded as one path segment.
fn dataset_url(base: &Url, dataset: &str) -> Url {
    let mut url = base.clone();
    url.path_segments_mut()
        .expect("an http(s) URL always has a path")
        .pop_if_empty()
        .extend(["v1", "datasets", dataset, "data"]);
    url
}

/// JSON Schema of the settings; the rules between fields are checked by [`DataboxConfig::target`].
pub fn settings_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "token": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_TOKEN_CHARS,
                "writeOnly": true,
                "description": "Push token (push API) or API key (dataset API); default: `sinks.databox.token`"
            },
            "api": {
                "type": "string",
                "enum": ["push", "dataset"],
                "default": "push",
                "description": "`push`: one POST of every metric; `dataset`: rows in batches of at most 100"
            },
            "dataset": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_DATASET_CHARS,
                "description": "Dataset id; required with `api: dataset`"
            },
            "primary_keys": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_PRIMARY_KEYS,
                "uniqueItems": true,
                "items": {"type": "string", "minLength": 1},
                "default": DEFAULT_PRIMARY_KEYS,
                "description": "Columns every row must carry, the dataset's primary keys (`api: dataset` only)"
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DataboxConfig {
        DataboxConfig {
            base_url: Url::parse("http://127.0.0.1:9/databox").expect("url"),
            dataset_base_url: Url::parse("http://127.0.0.1:9/").expect("url"),
            token: None,
            ..DataboxConfig::default()
        }
    }

    #[test]
    fn defaults_are_databox_hosts_and_valid() {
        let config = DataboxConfig::default();
        assert!(config.validate().is_ok());
        let push = config.target(&json!({"token": "t"})).expect("push");
        assert_eq!(push.url.as_str(), "https://push.databox.com/");
        assert_eq!(push.mode, Mode::Push);
        let dataset = config
            .target(&json!({"api": "dataset", "dataset": "a b/c"}))
            .expect("dataset");
        assert_eq!(
            dataset.url.as_str(),
            "https://api.databox.com/v1/datasets/a%20b%2Fc/data"
        );
        assert_eq!(dataset.token, None);
        assert_eq!(
            dataset.mode,
            Mode::Dataset {
                primary_keys: vec!["metric".into(), "date".into()]
            }
        );
        assert!(
            !format!(
                "{:?}",
                DataboxConfig {
                    token: Some("sekrit".into()),
                    ..config
                }
            )
            .contains("sekrit")
        );
    }

    #[test]
    fn urls_keep_a_configured_path_and_the_job_token_wins() {
        let config = DataboxConfig {
            token: Some("default".into()),
            ..config()
        };
        let push = config.target(&json!({})).expect("push");
        assert_eq!(push.url.as_str(), "http://127.0.0.1:9/databox/");
        assert_eq!(push.token.as_deref(), Some("default"));
        let own = config.target(&json!({"token": "mine"})).expect("push");
        assert_eq!(own.token.as_deref(), Some("mine"));
        let dataset = config
            .target(&json!({"api": "dataset", "dataset": "ds", "primary_keys": ["metric"]}))
            .expect("dataset");
        assert_eq!(
            dataset.url.as_str(),
            "http://127.0.0.1:9/v1/datasets/ds/data"
        );
        assert_eq!(
            dataset.mode,
            Mode::Dataset {
                primary_keys: vec!["metric".into()]
            }
        );
    }

    #[test]
    fn settings_that_mix_the_apis_are_refused() {
        let config = config();
        for (settings, named) in [
            (json!({"api": "dataset"}), "dataset is required"),
            (json!({"dataset": "ds"}), "dataset is only used"),
            (
                json!({"primary_keys": ["metric"]}),
                "primary_keys is only used",
            ),
            (json!({"api": "pull"}), "unknown variant"),
            (json!({"token": "a\nb"}), "control characters"),
        ] {
            let error = config.target(&settings).expect_err(named);
            assert!(error.contains(named), "{settings}: {error}");
        }
        let bad = DataboxConfig {
            timeout: Duration::ZERO,
            ..DataboxConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = DataboxConfig {
            token: Some(String::new()),
            ..DataboxConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
