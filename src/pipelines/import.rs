//! Converts the collection-engine seed's `config.yaml` into a pipeline definition: the source
//! API as a `message-source`, the processing and storage APIs as `http` stages.
//!
//! Unlike the seed, a value that does not parse is an error naming its key (the seed used 0),
//! and each client timeout goes to its own stage (the seed wired them all to the source).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::spec::{MAX_WORKERS, PipelineSpec};
use crate::config::duration::format as format_duration;
use crate::connectors::http::urls::parse_http_url;
use crate::connectors::message_source;

/// The keys the seed reads; anything else is refused as a likely typo.
const KEYS: [&str; 13] = [
    "defaultClientTimeout",
    "defaultWorkersCount",
    "sourceApiBaseUrl",
    "sourceApiAuthToken",
    "sourceClientTimeout",
    "sourceApiRateLimit",
    "sourceApiRateLimitPeriodSecs",
    "processingApiBaseUrl",
    "processingClientTimeout",
    "processingWorkersCount",
    "storageApiBaseUrl",
    "storageClientTimeout",
    "storageWorkersCount",
];

/// The seed's defaults for a missing or zero value.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_WORKERS: u32 = 3;
const DEFAULT_RATE_PERIOD_SECS: u64 = 1;

/// Why a seed configuration could not be converted; the message names the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("not a YAML mapping of keys to values: {0}")]
    Yaml(String),
    #[error("unknown key {0:?} (known keys: {keys})", keys = KEYS.join(", "))]
    UnknownKey(String),
    #[error("{0}: required, and missing or empty")]
    Missing(&'static str),
    #[error("{key}: {problem}")]
    Invalid { key: &'static str, problem: String },
}

/// The seed's configuration: every value as the text the seed would have parsed.
struct SeedConfig(BTreeMap<String, String>);

impl SeedConfig {
    fn parse(text: &str) -> Result<Self, ImportError> {
        let raw: BTreeMap<String, serde_yaml_ng::Value> =
            serde_yaml_ng::from_str(text).map_err(|error| ImportError::Yaml(error.to_string()))?;
        let mut values = BTreeMap::new();
        for (key, value) in raw {
            if !KEYS.contains(&key.as_str()) {
                return Err(ImportError::UnknownKey(key));
            }
            let text = match value {
                serde_yaml_ng::Value::Null => continue,
                serde_yaml_ng::Value::String(text) => text,
                serde_yaml_ng::Value::Number(number) => number.to_string(),
                serde_yaml_ng::Value::Bool(flag) => flag.to_string(),
                _ => return Err(ImportError::Yaml(format!("{key}: expected a scalar value"))),
            };
            values.insert(key, text.trim().to_owned());
        }
        Ok(Self(values))
    }

    /// The value of `key`, `None` when absent or empty.
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn required(&self, key: &'static str) -> Result<&str, ImportError> {
        self.get(key).ok_or(ImportError::Missing(key))
    }

    fn url(&self, key: &'static str) -> Result<url::Url, ImportError> {
        parse_http_url(self.required(key)?).map_err(|problem| ImportError::Invalid { key, problem })
    }

    /// A Go duration (`5s`, `1m30s`, `250ms`); absent or zero gives `fallback`, as in the seed.
    fn timeout(&self, key: &'static str, fallback: Duration) -> Result<Duration, ImportError> {
        let Some(text) = self.get(key) else {
            return Ok(fallback);
        };
        let duration =
            parse_go_duration(text).map_err(|problem| ImportError::Invalid { key, problem })?;
        Ok(if duration.is_zero() {
            fallback
        } else {
            duration
        })
    }

    /// A whole number; absent gives 0, which every caller reads as "the default".
    fn number(&self, key: &'static str) -> Result<u64, ImportError> {
        let Some(text) = self.get(key) else {
            return Ok(0);
        };
        text.parse().map_err(|_| ImportError::Invalid {
            key,
            problem: format!("{text:?} is not a whole number"),
        })
    }

    /// A worker count; absent or zero gives `fallback`, as in the seed.
    fn workers(&self, key: &'static str, fallback: u32) -> Result<u32, ImportError> {
        match self.number(key)? {
            0 => Ok(fallback),
            count if count <= u64::from(MAX_WORKERS) => Ok(count as u32),
            count => Err(ImportError::Invalid {
                key,
                problem: format!("{count} workers; at most {MAX_WORKERS} are allowed"),
            }),
        }
    }
}

/// Parses Go's `time.ParseDuration` syntax: decimal numbers with units `ns`, `us`/`µs`, `ms`,
/// `s`, `m`, `h`, concatenated (`1h2m3.5s`), or a bare `0`. Sub-millisecond rests are refused.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration like 5s, 500ms or 1m30s");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut nanos: f64 = 0.0;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, after) = rest.split_at(number_end);
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(invalid()),
        };
        nanos += value * scale;
        rest = after;
    }
    let nanos = nanos.round();
    if !nanos.is_finite() || nanos > 1e21 {
        return Err(format!("{text:?} is too long"));
    }
    if nanos % 1e6 != 0.0 {
        return Err(format!("{text:?} is not a whole number of milliseconds"));
    }
    Ok(Duration::from_millis((nanos / 1e6) as u64))
}

/// `{base}/message`, the seed's processing and storage endpoint.
fn message_url(mut base: url::Url) -> String {
    if let Ok(mut segments) = base.path_segments_mut() {
        segments.pop_if_empty().push("message");
    }
    base.into()
}

/// Converts the seed's YAML into a pipeline named `name`: `message-source` → `http`
/// processor (success 200) → `http` sink (success 201), with the seed's defaults (5 s
/// timeouts, 3 workers, a 1 s rate period) and its 3 attempts per message.
///
/// The pipeline is written as a user would write it and read through the same
/// deserialisation, so every option not named here keeps its documented default.
pub fn from_collection_engine_yaml(text: &str, name: &str) -> Result<PipelineSpec, ImportError> {
    let config = SeedConfig::parse(text)?;
    let default_timeout = config.timeout("defaultClientTimeout", DEFAULT_TIMEOUT)?;
    let default_workers = config.workers("defaultWorkersCount", DEFAULT_WORKERS)?;

    config.url("sourceApiBaseUrl")?;
    let source_url = config.required("sourceApiBaseUrl")?;
    let token = config.required("sourceApiAuthToken")?;
    let source_timeout = config.timeout("sourceClientTimeout", default_timeout)?;
    let limit = config.number("sourceApiRateLimit")?;
    let limit = u32::try_from(limit).map_err(|_| ImportError::Invalid {
        key: "sourceApiRateLimit",
        problem: format!("{limit} is too large"),
    })?;
    let period = match config.number("sourceApiRateLimitPeriodSecs")? {
        0 => DEFAULT_RATE_PERIOD_SECS,
        secs => secs,
    };
    let rate_limit = if limit > 0 {
        json!([{"limit": limit, "per": format_duration(&Duration::from_secs(period))}])
    } else {
        json!([])
    };

    let processing_url = config.url("processingApiBaseUrl")?;
    let processing_timeout = config.timeout("processingClientTimeout", default_timeout)?;
    let processing_workers = config.workers("processingWorkersCount", default_workers)?;
    let storage_url = config.url("storageApiBaseUrl")?;
    let storage_timeout = config.timeout("storageClientTimeout", default_timeout)?;
    let storage_workers = config.workers("storageWorkersCount", default_workers)?;

    let pipeline = json!({
        "name": name,
        "source": {
            "connector": message_source::NAME,
            "settings": {
                "base_url": source_url,
                "token": token,
                "timeout": format_duration(&source_timeout),
            },
            "rate_limit": rate_limit,
        },
        "processors": [{
            "type": "http",
            "url": message_url(processing_url),
            "success_status": 200,
            "workers": processing_workers,
            "timeout": format_duration(&processing_timeout),
        }],
        "sinks": [{
            "type": "http",
            "url": message_url(storage_url),
            "success_status": 201,
            "workers": storage_workers,
            "timeout": format_duration(&storage_timeout),
        }],
    });
    Ok(serde_json::from_value(pipeline).expect("the import writes a well-formed pipeline"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipelines::spec::{MessageRetry, ProcessorKind, RateWindow, SinkKind};

    /// The seed's Helm `config.yaml` shape: every value a string.
    const HELM: &str = r#"
defaultClientTimeout: "5s"
defaultWorkersCount: "5"
sourceApiBaseUrl: "http://source.example.com/api"
sourceApiAuthToken: "s3cret"
sourceClientTimeout: "2s"
sourceApiRateLimit: "10"
sourceApiRateLimitPeriodSecs: "2"
processingApiBaseUrl: "http://processing.example.com/"
processingClientTimeout: "1500ms"
processingWorkersCount: "4"
storageApiBaseUrl: "http://storage.example.com"
storageClientTimeout: "1m30s"
"#;

    #[test]
    fn the_seed_config_becomes_source_processor_and_sink() {
        let spec = from_collection_engine_yaml(HELM, "collection-engine").expect("converts");
        assert_eq!(spec.name, "collection-engine");
        assert_eq!(spec.source.connector, "message-source");
        assert_eq!(
            spec.source.settings,
            json!({"base_url": "http://source.example.com/api", "token": "s3cret", "timeout": "2s"})
        );
        assert_eq!(
            spec.source.rate_limit,
            vec![RateWindow {
                limit: 10,
                per: Duration::from_secs(2)
            }]
        );
        let ProcessorKind::Http(call) = &spec.processors[0].kind else {
            panic!("an http processor");
        };
        assert_eq!(call.url, "http://processing.example.com/message");
        assert_eq!(call.success_status, Some(200));
        let processing = &spec.processors[0].options;
        assert_eq!(processing.workers, 4);
        assert_eq!(processing.timeout, Duration::from_millis(1500));
        let SinkKind::Http(call) = &spec.sinks[0].kind else {
            panic!("an http sink");
        };
        assert_eq!(call.url, "http://storage.example.com/message");
        assert_eq!(call.success_status, Some(201));
        let storage = &spec.sinks[0].options;
        assert_eq!(storage.workers, 5, "defaultWorkersCount applies");
        assert_eq!(storage.timeout, Duration::from_secs(90));
        assert_eq!(spec.retry, MessageRetry::default());
        assert_eq!(spec.retry.max_attempts, 3, "the seed's 1 + 2 retries");

        let again: PipelineSpec =
            serde_json::from_value(serde_json::to_value(&spec).expect("json")).expect("reads");
        assert_eq!(again, spec);
    }

    #[test]
    fn missing_values_take_the_seed_defaults() {
        let minimal = r#"
sourceApiBaseUrl: "https://source.example.com"
sourceApiAuthToken: "t"
sourceApiRateLimit: 7
sourceClientTimeout: "0s"
processingApiBaseUrl: "https://processing.example.com"
storageApiBaseUrl: "https://storage.example.com"
"#;
        let spec = from_collection_engine_yaml(minimal, "p").expect("converts");
        assert_eq!(spec.source.settings["timeout"], "5s");
        assert_eq!(spec.source.rate_limit[0].per, Duration::from_secs(1));
        assert_eq!(spec.source.rate_limit[0].limit, 7);
        for options in [&spec.processors[0].options, &spec.sinks[0].options] {
            assert_eq!(options.workers, 3);
            assert_eq!(options.timeout, Duration::from_secs(5));
        }
        let unlimited = minimal.replace("sourceApiRateLimit: 7", "sourceApiRateLimit: \"0\"");
        let spec = from_collection_engine_yaml(&unlimited, "p").expect("converts");
        assert!(spec.source.rate_limit.is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        let without = |key: &str| {
            let text: String = HELM
                .lines()
                .filter(|line| !line.starts_with(key))
                .map(|line| format!("{line}\n"))
                .collect();
            from_collection_engine_yaml(&text, "p").expect_err("refused")
        };
        for key in [
            "sourceApiBaseUrl",
            "sourceApiAuthToken",
            "processingApiBaseUrl",
            "storageApiBaseUrl",
        ] {
            let error = without(key);
            assert!(matches!(error, ImportError::Missing(_)), "{error:?}");
            assert!(error.to_string().starts_with(key), "{error}");
        }
        let with = |key: &str, value: &str| {
            let text = format!("{HELM}{key}: \"{value}\"\n");
            from_collection_engine_yaml(&text, "p")
                .expect_err("refused")
                .to_string()
        };
        assert!(with("storageWorkersCount", "many").starts_with("storageWorkersCount:"));
        assert!(with("storageWorkersCount", "-2").starts_with("storageWorkersCount:"));
        assert!(with("storageWorkersCount", "65").contains("at most 64"));
        let bad_timeout = HELM.replace("\"1500ms\"", "\"fast\"");
        let error = from_collection_engine_yaml(&bad_timeout, "p").expect_err("refused");
        assert!(
            error.to_string().starts_with("processingClientTimeout:"),
            "{error}"
        );
        let bad_url = HELM.replace("http://storage.example.com", "storage.example.com");
        let error = from_collection_engine_yaml(&bad_url, "p").expect_err("refused");
        assert!(
            error.to_string().starts_with("storageApiBaseUrl:"),
            "{error}"
        );
        let typo = format!("{HELM}storageWorkerCount: \"2\"\n");
        let error = from_collection_engine_yaml(&typo, "p").expect_err("refused");
        assert_eq!(error, ImportError::UnknownKey("storageWorkerCount".into()));
        assert!(matches!(
            from_collection_engine_yaml("- a list", "p"),
            Err(ImportError::Yaml(_))
        ));
    }

    #[test]
    fn go_durations() {
        let ms = |text| parse_go_duration(text).map(|d| d.as_millis());
        assert_eq!(ms("0"), Ok(0));
        assert_eq!(ms("5s"), Ok(5_000));
        assert_eq!(ms("250ms"), Ok(250));
        assert_eq!(ms("1m30s"), Ok(90_000));
        assert_eq!(ms("1.5h"), Ok(5_400_000));
        assert_eq!(ms("2000000ns"), Ok(2));
        assert_eq!(ms("3000us"), Ok(3));
        for bad in ["", "5", "5x", "s", "-5s", "1.2.3s", "1ns", "5 s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
    }
}
