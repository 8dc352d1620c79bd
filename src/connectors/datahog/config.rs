//! The `[datahog]` configuration section and the settings of one `datahog-provider` source.
//!
//! Invariant: a loaded `DatahogConfig` has an absolute http(s) base URL and a non-empty list of
//! unique provider ids, each usable as one path segment; the settings schema admits only those.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

/// Longest provider id accepted in the configuration.
const MAX_ID_CHARS: usize = 128;

/// Where the datahog providers API lives and which provider ids it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatahogConfig {
    /// The API root; a provider is fetched from `{base_url}/providers/{id}`.
    #[serde(with = "crate::config::http_url")]
    pub base_url: Url,
    /// The provider ids jobs may name, compared case-sensitively.
    pub providers: Vec<String>,
}

impl Default for DatahogConfig {
    /// The seed's mock providers API: port 3000 on this host, providers `gas` and `internet`.
    fn default() -> Self {
        Self {
            base_url: Url::parse("http://127.0.0.1:3000").expect("a valid literal URL"),
            providers: vec!["gas".to_owned(), "internet".to_owned()],
        }
    }
}

/// Why the `[datahog]` section was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("providers: at least one provider id is needed")]
    NoProviders,
    #[error(
        "providers: ids must be 1–{MAX_ID_CHARS} characters without control characters, and not `.` or `..`; got {0:?}"
    )]
    InvalidId(String),
    #[error("providers: {0:?} is listed twice")]
    DuplicateId(String),
}

impl DatahogConfig {
    /// Checks what deserialisation cannot: the provider list (the URL was checked when read).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.providers.is_empty() {
            return Err(ConfigError::NoProviders);
        }
        for (index, id) in self.providers.iter().enumerate() {
            let usable = !id.is_empty()
                && id.chars().count() <= MAX_ID_CHARS
                && !id.chars().any(char::is_control)
                && id != "."
                && id != "..";
            if !usable {
                return Err(ConfigError::InvalidId(id.clone()));
            }
            if self.providers[..index].contains(id) {
                return Err(ConfigError::DuplicateId(id.clone()));
            }
        }
        Ok(())
    }

    /// Whether `id` is one of the configured providers (case-sensitive).
    pub fn knows(&self, id: &str) -> bool {
        self.providers.iter().any(|known| known == id)
    }

    /// `{base_url}/providers/{id}`, with `id` percent-encoded as a single path segment.
    pub fn provider_url(&self, id: &str) -> Url {
        let mut url = self.base_url.clone();
        url.path_segments_mut()
            .expect("an http(s) URL always has a path")
            .pop_if_empty()
            .extend(["providers", id]);
        url
    }

    /// JSON Schema of the settings: exactly `{"id": <one of the configured providers>}`.
    pub fn settings_schema(&self) -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["id"],
            "properties": {
                "id": {
                    "type": "string",
                    "enum": self.providers,
                    "description": "The provider to collect bills from (case-sensitive)."
                }
            }
        })
    }
}

/// Settings of one `datahog-provider` source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_providers(providers: &[&str]) -> DatahogConfig {
        DatahogConfig {
            providers: providers.iter().map(|id| (*id).to_owned()).collect(),
            ..DatahogConfig::default()
        }
    }

    #[test]
    fn defaults_are_the_seed_mock() {
        let config = DatahogConfig::default();
        assert_eq!(config.base_url.as_str(), "http://127.0.0.1:3000/");
        assert_eq!(config.providers, ["gas", "internet"]);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn provider_lists_must_be_non_empty_unique_and_path_safe() {
        assert_eq!(
            with_providers(&[]).validate(),
            Err(ConfigError::NoProviders)
        );
        assert_eq!(
            with_providers(&["gas", "water", "gas"]).validate(),
            Err(ConfigError::DuplicateId("gas".into()))
        );
        for bad in ["", ".", "..", "line\nbreak", &"x".repeat(MAX_ID_CHARS + 1)] {
            assert_eq!(
                with_providers(&["gas", bad]).validate(),
                Err(ConfigError::InvalidId(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!(with_providers(&["gas", "GAS"]).validate(), Ok(()));
    }

    #[test]
    fn base_url_must_be_absolute_http() {
        for bad in [
            "ftp://x",
            "127.0.0.1:3000",
            "/providers",
            "javascript:alert(1)",
        ] {
            let parsed = serde_json::from_value::<DatahogConfig>(json!({"base_url": bad}));
            assert!(parsed.is_err(), "{bad} accepted");
        }
        let parsed: DatahogConfig =
            serde_json::from_value(json!({"base_url": "https://bills.example/api/"}))
                .expect("https URL");
        assert_eq!(parsed.base_url.as_str(), "https://bills.example/api/");
        assert_eq!(parsed.providers, ["gas", "internet"]);
    }

    #[test]
    fn provider_urls_keep_the_base_path_and_encode_the_id() {
        let config: DatahogConfig =
            serde_json::from_value(json!({"base_url": "http://h:3000/api/?k=1"})).expect("url");
        assert_eq!(
            config.provider_url("gas").as_str(),
            "http://h:3000/api/providers/gas?k=1"
        );
        assert_eq!(
            DatahogConfig::default().provider_url("a/b c").as_str(),
            "http://127.0.0.1:3000/providers/a%2Fb%20c"
        );
    }
}
