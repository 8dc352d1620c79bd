//! Typed configuration: built-in defaults, then the optional `gleaner.toml`, then `GLEANER_*`
//! environment variables (`__` separates sections: `GLEANER_ENGINE__CONCURRENCY=64`), then CLI
//! flags. Parsed once at start with unknown keys refused; the rest of the code never re-checks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::connectors::datahog::{self, DatahogConfig};
use crate::connectors::reddit::RedditConfig;
use crate::connectors::stackoverflow::StackOverflowConfig;
use crate::engine::EngineConfig;
use crate::net::NetConfig;
use crate::observability::LogConfig;

mod secret;
pub use secret::Secret;

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the store, the logs, the admin token and `file` sink output live.
    pub data_dir: PathBuf,
    /// The IANA time zone (`Europe/Berlin`) relative dates in job settings are resolved in:
    /// `"yesterday"` is the day before in this zone. Default `UTC`.
    pub timezone: String,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub engine: EngineConfig,
    pub net: NetConfig,
    pub log: LogConfig,
    pub sinks: SinksConfig,
    /// The datahog providers API behind the `datahog-provider` connector and `POST /webhook`.
    pub datahog: DatahogConfig,
    /// The StackExchange API behind the `stackoverflow` connector.
    pub stackoverflow: StackOverflowConfig,
    /// Reddit's OAuth application behind the `reddit` connector.
    pub reddit: RedditConfig,
    /// Schedules defined in the file (`[[schedule]]`); they replace their stored copies at
    /// every start, and are removed from the store when removed from the file.
    pub schedule: Vec<crate::schedule::ScheduleSpec>,
    /// Pipelines defined in the file (`[[pipeline]]`); they replace their stored definitions
    /// at every start (keeping checkpoint and queues), and are stopped when removed.
    pub pipeline: Vec<crate::pipelines::PipelineSpec>,
    /// Platforms defined in the file (`[[platform]]`): named connector + processors + sinks
    /// templates, run with settings by `POST /v1/platforms/{name}/run`.
    pub platform: Vec<crate::platforms::PlatformSpec>,
    /// Metric ingest: windows, snapshots, limits, StatsD.
    pub metrics: crate::metrics::MetricsConfig,
    /// The key that seals credentials in the store (default: `<data_dir>/secret.key`).
    pub secrets: crate::secrets::SecretsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./gleaner-data"),
            timezone: "UTC".to_owned(),
            server: ServerConfig::default(),
            store: StoreConfig::default(),
            engine: EngineConfig::default(),
            net: NetConfig::default(),
            log: LogConfig::default(),
            sinks: SinksConfig::default(),
            datahog: DatahogConfig::default(),
            stackoverflow: StackOverflowConfig::default(),
            reddit: RedditConfig::default(),
            schedule: Vec::new(),
            pipeline: Vec::new(),
            metrics: Default::default(),
            secrets: Default::default(),
            platform: Vec::new(),
        }
    }
}

/// The HTTP API server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Deepest JSON nesting accepted in a request body.
    pub json_max_depth: usize,
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Free disk space below which `/readyz` reports not ready, in bytes.
    pub min_free_disk: u64,
    /// Compatibility routes that seed clients, which send no token, may call.
    pub open_routes: OpenRoutes,
    /// Browser origins allowed to call the API (CORS), e.g. `["http://localhost:3000"]` for
    /// the etlas seed's front end; preflight `OPTIONS` is answered on every path. None by default.
    pub cors_allow_origins: Vec<String>,
}

/// Routes let through without a token, for existing clients of a replaced system: only the
/// listed paths (compatibility routes), only from the listed networks. Empty by default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenRoutes {
    /// Exact paths, e.g. `["/webhook"]`; only compatibility routes may be named.
    pub paths: Vec<String>,
    /// Client networks they are open to (default loopback only).
    #[serde(with = "crate::net::allow_list")]
    pub from: Vec<ipnet::IpNet>,
}

impl Default for OpenRoutes {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            from: vec![
                ipnet::IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST)),
                ipnet::IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
            ],
        }
    }
}

impl OpenRoutes {
    /// Whether a request for `path` from `peer` may skip the token.
    pub fn admits(&self, path: &str, peer: Option<std::net::IpAddr>) -> bool {
        let Some(peer) = peer else { return false };
        let peer = match peer {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        };
        self.paths.iter().any(|open| path_matches(open, path))
            && self.from.iter().any(|net| net.contains(&peer))
    }
}

/// Whether `path` is an instance of `template`, whose `{…}` segments match any one segment.
fn path_matches(template: &str, path: &str) -> bool {
    let (mut template, mut path) = (template.split('/'), path.split('/'));
    loop {
        match (template.next(), path.next()) {
            (None, None) => return true,
            (Some(want), Some(got)) => {
                let wildcard = want.starts_with('{') && want.ends_with('}') && !got.is_empty();
                if !wildcard && want != got {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit: 2 * 1024 * 1024,
            json_max_depth: 64,
            request_timeout: Duration::from_secs(30),
            min_free_disk: 256 * 1024 * 1024,
            open_routes: OpenRoutes::default(),
            cors_allow_origins: Vec::new(),
        }
    }
}

/// The embedded store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite file; default `<data_dir>/gleaner.db`.
    pub path: Option<PathBuf>,
    /// Read connections in the pool (default 4).
    pub read_connections: Option<usize>,
}

/// Sink settings that are the operator's, not the job's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinksConfig {
    /// The folder `file` sinks write under; default `<data_dir>/files`.
    pub files_root: Option<PathBuf>,
    /// Signed callbacks (`[sinks.callback]`).
    pub callback: crate::sinks::CallbackConfig,
    /// Databox push and dataset APIs (`[sinks.databox]`).
    pub databox: crate::sinks::DataboxConfig,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Invalid(String),
    /// Shown whole in its message (not as a source), so the reason is printed once.
    #[error("configuration: datahog.{0}")]
    Datahog(datahog::ConfigError),
}

/// Flags that override the file and the environment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerOverrides>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

impl Config {
    /// Defaults ← `file` (or `./gleaner.toml` when present) ← `GLEANER_*` ← `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, Error> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) if !path.exists() => {
                return Err(Error::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new("gleaner.toml").exists() => {
                figment = figment.merge(Toml::file_exact("gleaner.toml"))
            }
            None => {}
        }
        let config: Config = figment
            .merge(
                Env::prefixed("GLEANER_")
                    .ignore(&["config", "token", "url"])
                    // `GLEANER_TEST_*` belongs to the test suite (database URLs for
                    // integration tests), not to the service's configuration.
                    .filter(|key| !key.as_str().to_ascii_lowercase().starts_with("test_"))
                    .split("__"),
            )
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|error| Error::Invalid(error.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), Error> {
        let engine = &self.engine;
        if engine.concurrency == 0 || engine.claim_batch == 0 {
            return Err(Error::Invalid(
                "engine.concurrency and engine.claim_batch must be at least 1".into(),
            ));
        }
        if engine.lease_timeout < Duration::from_millis(100) {
            return Err(Error::Invalid(
                "engine.lease_timeout must be at least 100ms".into(),
            ));
        }
        engine.breaker.validate().map_err(Error::Invalid)?;
        for origin in &self.server.cors_allow_origins {
            let valid = url::Url::parse(origin).is_ok_and(|url| {
                matches!(url.scheme(), "http" | "https")
                    && url.path() == "/"
                    && !origin.ends_with('/')
            });
            if !valid {
                return Err(Error::Invalid(format!(
                    "server.cors_allow_origins: {origin:?} is not an origin like https://app.example.com"
                )));
            }
        }
        for path in &self.server.open_routes.paths {
            if !crate::api::COMPAT_ROUTES.contains(&path.as_str()) {
                return Err(Error::Invalid(format!(
                    "server.open_routes.paths: {path:?} is not a compatibility route (known: {})",
                    crate::api::COMPAT_ROUTES.join(", ")
                )));
            }
        }
        self.sinks.callback.validate().map_err(Error::Invalid)?;
        self.sinks.databox.validate().map_err(Error::Invalid)?;
        if engine.max_attempts == 0 {
            return Err(Error::Invalid(
                "engine.max_attempts must be at least 1".into(),
            ));
        }
        if engine.backoff_base.is_zero() || engine.backoff_cap < engine.backoff_base {
            return Err(Error::Invalid(
                "engine.backoff_base must be > 0 and ≤ engine.backoff_cap".into(),
            ));
        }
        if self.server.json_max_depth == 0 || self.server.body_limit == 0 {
            return Err(Error::Invalid(
                "server.json_max_depth and server.body_limit must be > 0".into(),
            ));
        }
        self.datahog.validate().map_err(Error::Datahog)?;
        self.stackoverflow.validate().map_err(Error::Invalid)?;
        self.reddit.validate().map_err(Error::Invalid)?;
        self.timezone()?;
        Ok(())
    }

    /// The configured `timezone`, from the time zone database built into the binary.
    pub fn timezone(&self) -> Result<jiff::tz::TimeZone, Error> {
        jiff::tz::TimeZone::get(&self.timezone).map_err(|_| {
            Error::Invalid(format!(
                "timezone: {:?} is not an IANA time zone name (e.g. UTC, Europe/Berlin)",
                self.timezone
            ))
        })
    }

    pub fn store_path(&self) -> PathBuf {
        self.store
            .path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("gleaner.db"))
    }

    pub fn files_root(&self) -> PathBuf {
        self.sinks
            .files_root
            .clone()
            .unwrap_or_else(|| self.data_dir.join("files"))
    }
}

/// Durations in config as `"250ms"`, `"30s"`, `"10m"`, `"24h"`, `"7d"`, or whole seconds.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }

    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
        let millis = match unit.trim() {
            "ms" => 1,
            "" | "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => {
                return Err(format!(
                    "invalid duration unit in {text:?} (use ms, s, m, h or d)"
                ));
            }
        };
        Ok(Duration::from_millis(number.saturating_mul(millis)))
    }

    pub fn format(duration: &Duration) -> String {
        let millis = duration.as_millis();
        match millis {
            m if m % 86_400_000 == 0 && m > 0 => format!("{}d", m / 86_400_000),
            m if m % 3_600_000 == 0 && m > 0 => format!("{}h", m / 3_600_000),
            m if m % 60_000 == 0 && m > 0 => format!("{}m", m / 60_000),
            m if m % 1_000 == 0 => format!("{}s", m / 1_000),
            m => format!("{m}ms"),
        }
    }

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(duration))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(deserializer)? {
            Raw::Seconds(seconds) => Ok(Duration::from_secs(seconds)),
            Raw::Text(text) => parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// Base URLs in config, read from text and checked to be absolute http(s) once, at load.
pub mod http_url {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use url::Url;

    use crate::connectors::http::urls::parse_http_url;

    pub fn serialize<S: Serializer>(url: &Url, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(url.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Url, D::Error> {
        let raw = String::deserialize(deserializer)?;
        parse_http_url(&raw).map_err(D::Error::custom)
    }
}

/// Lists of durations in config, each as in [`duration`]: `["0s", "5s", "5m"]`.
pub mod durations {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    struct One(#[serde(with = "super::duration")] Duration);

    pub fn serialize<S: Serializer>(list: &[Duration], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(list.iter().map(super::duration::format))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Duration>, D::Error> {
        Ok(Vec::<One>::deserialize(deserializer)?
            .into_iter()
            .map(|One(duration)| duration)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_route_templates_match_one_segment_per_placeholder() {
        assert!(path_matches(
            "/data/metrics/{key}",
            "/data/metrics/app.requests"
        ));
        assert!(!path_matches("/data/metrics/{key}", "/data/metrics/"));
        assert!(!path_matches("/data/metrics/{key}", "/data/metrics/a/b"));
        assert!(!path_matches("/data/metrics/{key}", "/data/metrics"));
        assert!(path_matches("/webhook", "/webhook"));
        assert!(!path_matches("/webhook", "/webhooks"));
    }

    #[test]
    fn durations_parse_and_round_trip() {
        for (text, millis) in [
            ("250ms", 250),
            ("30s", 30_000),
            ("10m", 600_000),
            ("24h", 86_400_000),
            ("7d", 604_800_000),
            ("5", 5_000),
        ] {
            let parsed = duration::parse(text).expect(text);
            assert_eq!(parsed.as_millis(), millis, "{text}");
            assert_eq!(
                duration::parse(&duration::format(&parsed)).expect("round trip"),
                parsed
            );
        }
        assert!(duration::parse("5 fortnights").is_err());
        assert!(duration::parse("").is_err());
    }

    #[test]
    fn file_env_and_flags_layer_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gleaner.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from/file\"\n[engine]\nconcurrency = 7\nlease_timeout = \"9s\"\n",
        )
        .expect("write");
        let config = Config::load(Some(&file), &Overrides::default()).expect("load");
        assert_eq!(config.data_dir, PathBuf::from("/from/file"));
        assert_eq!(config.engine.concurrency, 7);
        assert_eq!(config.engine.lease_timeout, Duration::from_secs(9));
        let flags = Overrides {
            data_dir: Some("/from/flag".into()),
            ..Default::default()
        };
        assert_eq!(
            Config::load(Some(&file), &flags).expect("load").data_dir,
            PathBuf::from("/from/flag")
        );
    }

    /// Loads a configuration whose file holds `toml`.
    fn load_toml(toml: &str) -> Result<Config, Error> {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gleaner.toml");
        std::fs::write(&file, toml).expect("write");
        Config::load(Some(&file), &Overrides::default())
    }

    #[test]
    fn datahog_section_is_read_and_validated() {
        let config = load_toml(
            "[datahog]\nbase_url = \"https://bills.example/api\"\nproviders = [\"gas\", \"water\"]\n",
        )
        .expect("load");
        assert_eq!(
            config.datahog.base_url.as_str(),
            "https://bills.example/api"
        );
        assert_eq!(config.datahog.providers, ["gas", "water"]);
        for (toml, named) in [
            ("providers = [\"gas\", \"gas\"]", "datahog.providers"),
            ("providers = []", "datahog.providers"),
            ("base_url = \"ftp://bills.example\"", "ftp"),
            ("base_url = \"bills.example\"", "base_url"),
        ] {
            let error = load_toml(&format!("[datahog]\n{toml}\n")).expect_err(toml);
            assert!(error.to_string().contains(named), "{toml}: {error}");
        }
    }

    #[test]
    fn metric_source_sections_are_read_and_validated() {
        let config = load_toml(
            "[stackoverflow]\nbase_url = \"http://127.0.0.1:9/2.3\"\nkey = \"so-key\"\n\
             [reddit]\nclient_id = \"id\"\nclient_secret = \"reddit-secret\"\nuser_agent = \"test/1\"\n",
        )
        .expect("load");
        assert_eq!(
            config.stackoverflow.base_url.as_str(),
            "http://127.0.0.1:9/2.3"
        );
        assert_eq!(config.stackoverflow.key, Some(Secret::new("so-key")));
        assert_eq!(config.reddit.client_id.as_deref(), Some("id"));
        assert_eq!(config.reddit.user_agent, "test/1");
        assert_eq!(config.reddit.base_url.as_str(), "https://oauth.reddit.com/");
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("so-key") && !shown.contains("reddit-secret"),
            "{shown}"
        );
        for (toml, named) in [
            ("[reddit]\nuser_agent = \"\"", "reddit.user_agent"),
            ("[reddit]\nauth_url = \"ftp://x\"", "ftp"),
            ("[stackoverflow]\nkey = \"\"", "stackoverflow.key"),
            ("[stackoverflow]\nsite = \"x\"", "site"),
        ] {
            let error = load_toml(toml).expect_err(toml);
            assert!(error.to_string().contains(named), "{toml}: {error}");
        }
    }

    #[test]
    fn databox_section_is_read_and_validated() {
        let defaults = load_toml("").expect("load");
        assert_eq!(
            defaults.sinks.databox.base_url.as_str(),
            "https://push.databox.com/"
        );
        assert_eq!(
            defaults.sinks.databox.dataset_base_url.as_str(),
            "https://api.databox.com/"
        );
        let config = load_toml(
            "[sinks.databox]\nbase_url = \"http://10.1.2.3:8000/push\"\ntoken = \"t0k\"\ntimeout = \"5s\"\n",
        )
        .expect("load");
        let databox = &config.sinks.databox;
        assert_eq!(databox.base_url.as_str(), "http://10.1.2.3:8000/push");
        assert_eq!(databox.token.as_deref(), Some("t0k"));
        assert_eq!(databox.timeout, Duration::from_secs(5));
        for (toml, named) in [
            ("base_url = \"push.databox.com\"", "base_url"),
            ("dataset_base_url = \"ftp://x\"", "ftp"),
            ("timeout = \"0s\"", "sinks.databox.timeout"),
            ("token = \"\"", "sinks.databox.token"),
            ("push_token = \"x\"", "push_token"),
        ] {
            let error = load_toml(&format!("[sinks.databox]\n{toml}\n")).expect_err(toml);
            assert!(error.to_string().contains(named), "{toml}: {error}");
        }
    }

    #[test]
    fn open_routes_are_compat_paths_from_listed_networks() {
        let open = OpenRoutes {
            paths: vec!["/webhook".into()],
            ..OpenRoutes::default()
        };
        let loopback = Some("127.0.0.1".parse().expect("ip"));
        assert!(open.admits("/webhook", loopback));
        assert!(open.admits("/webhook", Some("::ffff:127.0.0.1".parse().expect("ip"))));
        assert!(!open.admits("/webhook", Some("10.1.2.3".parse().expect("ip"))));
        assert!(!open.admits("/webhook", None), "no peer address: closed");
        assert!(!open.admits("/v1/jobs", loopback));
        assert!(
            !OpenRoutes::default().admits("/webhook", loopback),
            "off by default"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gleaner.toml");
        std::fs::write(&file, "[server.open_routes]\npaths = [\"/v1/jobs\"]\n").expect("write");
        let error = Config::load(Some(&file), &Overrides::default()).expect_err("refused");
        assert!(
            error.to_string().contains("not a compatibility route"),
            "{error}"
        );
    }

    #[test]
    fn timezone_is_an_iana_name_defaulting_to_utc() {
        let config = load_toml("").expect("load");
        assert_eq!(config.timezone().expect("zone").iana_name(), Some("UTC"));
        let config = load_toml("timezone = \"Europe/Berlin\"\n").expect("load");
        assert_eq!(
            config.timezone().expect("zone").iana_name(),
            Some("Europe/Berlin")
        );
        let error = load_toml("timezone = \"Mars/Olympus\"\n").expect_err("unknown zone");
        assert!(error.to_string().contains("Mars/Olympus"), "{error}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gleaner.toml");
        std::fs::write(&file, "[engine]\nconcurency = 7\n").expect("write");
        let error = Config::load(Some(&file), &Overrides::default()).expect_err("typo refused");
        assert!(error.to_string().contains("concurency"), "{error}");
    }
}
