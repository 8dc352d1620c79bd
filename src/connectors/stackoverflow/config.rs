//! The `[stackoverflow]` configuration section and the settings of one `stackoverflow` source.
//!
//! Invariant: a loaded `StackOverflowConfig` has an absolute http(s) base URL, and a key, when
//! configured, is non-empty; settings name one tag (no `;`, which would AND several tags).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use crate::config::Secret;
use crate::connectors::metric::metric_property;

/// The site asked when the settings name none.
pub const DEFAULT_SITE: &str = "stackoverflow";

/// Where the StackExchange API lives and the operator's application key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StackOverflowConfig {
    /// The API root, version included; questions come from `{base_url}/questions`.
    #[serde(with = "crate::config::http_url")]
    pub base_url: Url,
    /// Application key for jobs that name none: it raises the daily quota per IP from 300
    /// to 10,000 requests (the seed called without one and ran out within hours).
    pub key: Option<Secret>,
}

impl Default for StackOverflowConfig {
    fn default() -> Self {
        Self {
            base_url: Url::parse("https://api.stackexchange.com/2.3").expect("a valid literal URL"),
            key: None,
        }
    }
}

impl StackOverflowConfig {
    /// Checks what deserialisation cannot.
    pub fn validate(&self) -> Result<(), String> {
        match &self.key {
            Some(key) if key.expose().trim().is_empty() => {
                Err("stackoverflow.key: must not be empty when set".into())
            }
            _ => Ok(()),
        }
    }

    /// JSON Schema of the settings; the key is `writeOnly`, so it is redacted when shown.
    pub fn settings_schema(&self) -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["tag"],
            "properties": {
                "tag": {
                    "type": "string",
                    "pattern": "^[^;\\s]{1,64}$",
                    "description": "The tag whose questions are counted, e.g. `rust`."
                },
                "metric": metric_property("`<tag>_question_count`"),
                "site": {
                    "type": "string",
                    "pattern": "^[a-z0-9.-]{1,64}$",
                    "description": "The StackExchange site (default `stackoverflow`)."
                },
                "key": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 256,
                    "writeOnly": true,
                    "description": "StackExchange application key; the configured `[stackoverflow] key` when absent."
                }
            }
        })
    }
}

/// Settings of one `stackoverflow` source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestionSettings {
    pub tag: String,
    pub metric: Option<String>,
    pub site: Option<String>,
    pub key: Option<String>,
}

impl QuestionSettings {
    pub fn metric(&self) -> String {
        self.metric
            .clone()
            .unwrap_or_else(|| format!("{}_question_count", self.tag))
    }

    pub fn site(&self) -> &str {
        self.site.as_deref().unwrap_or(DEFAULT_SITE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::schema::SettingsSchema;

    #[test]
    fn defaults_point_at_the_public_api_without_a_key() {
        let config = StackOverflowConfig::default();
        assert_eq!(
            config.base_url.as_str(),
            "https://api.stackexchange.com/2.3"
        );
        assert_eq!(config.key, None);
        assert_eq!(config.validate(), Ok(()));
        let blank = StackOverflowConfig {
            key: Some(Secret::new(" ")),
            ..config
        };
        assert!(blank.validate().is_err());
    }

    #[test]
    fn schema_admits_one_tag_and_hides_the_key() {
        let schema = SettingsSchema::compile(StackOverflowConfig::default().settings_schema())
            .expect("schema");
        for admitted in [
            json!({"tag": "rust"}),
            json!({"tag": "c#", "metric": "CSharpQuestionCount", "site": "ru.stackoverflow", "key": "k"}),
        ] {
            assert_eq!(schema.validate(&admitted), Ok(()), "{admitted}");
        }
        for refused in [
            json!({}),
            json!({"tag": ""}),
            json!({"tag": "rust;go"}),
            json!({"tag": "rust go"}),
            json!({"tag": "rust", "site": "Stack Overflow"}),
            json!({"tag": "rust", "metric": ""}),
            json!({"tag": "rust", "extra": 1}),
        ] {
            assert!(schema.validate(&refused).is_err(), "{refused}");
        }
        let shown = schema.redact(&json!({"tag": "rust", "key": "k"}));
        assert_eq!(shown["key"], json!("********"));
    }

    #[test]
    fn metric_and_site_have_defaults() {
        let settings: QuestionSettings =
            serde_json::from_value(json!({"tag": "rust"})).expect("settings");
        assert_eq!(settings.metric(), "rust_question_count");
        assert_eq!(settings.site(), "stackoverflow");
    }
}
