//! The `[reddit]` configuration section and the settings of one `reddit` source.
//!
//! Invariant: a loaded `RedditConfig` has absolute http(s) URLs and a non-empty User-Agent that
//! is a valid header value (Reddit refuses or throttles clients without one); a configured
//! client secret is only ever read through [`Secret::expose`].

use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use crate::config::Secret;
use crate::connectors::metric::metric_property;

/// Reddit's app-only OAuth application: where to get tokens and listings, and as whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedditConfig {
    /// The token endpoint (`POST`, client credentials grant).
    #[serde(with = "crate::config::http_url")]
    pub auth_url: Url,
    /// The OAuth API root; listings come from `{base_url}/r/{subreddit}/new`.
    #[serde(with = "crate::config::http_url")]
    pub base_url: Url,
    /// The application's client id, for jobs that name none.
    pub client_id: Option<String>,
    /// The application's secret, for jobs that name none (`GLEANER_REDDIT__CLIENT_SECRET`).
    pub client_secret: Option<Secret>,
    /// Sent with every Reddit call, as Reddit's API rules require.
    pub user_agent: String,
}

impl Default for RedditConfig {
    fn default() -> Self {
        Self {
            auth_url: Url::parse("https://www.reddit.com/api/v1/access_token")
                .expect("a valid literal URL"),
            base_url: Url::parse("https://oauth.reddit.com").expect("a valid literal URL"),
            client_id: None,
            client_secret: None,
            user_agent: concat!("gleaner/", env!("CARGO_PKG_VERSION"), " (by /u/gleaner)")
                .to_owned(),
        }
    }
}

impl RedditConfig {
    /// Checks what deserialisation cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.user_agent.trim().is_empty() || HeaderValue::from_str(&self.user_agent).is_err() {
            return Err("reddit.user_agent: must be a non-empty header value".into());
        }
        if self
            .client_id
            .as_deref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return Err("reddit.client_id: must not be empty when set".into());
        }
        if self
            .client_secret
            .as_ref()
            .is_some_and(|secret| secret.expose().is_empty())
        {
            return Err("reddit.client_secret: must not be empty when set".into());
        }
        Ok(())
    }

    /// JSON Schema of the settings; the client secret is `writeOnly`, so it is redacted.
    pub fn settings_schema(&self) -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["subreddit"],
            "properties": {
                "subreddit": {
                    "type": "string",
                    "pattern": "^[A-Za-z0-9][A-Za-z0-9_]{1,20}$",
                    "description": "The subreddit whose posts created today (UTC) are counted, without `r/`."
                },
                "metric": metric_property("`<subreddit>_post_count`"),
                "client_id": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 256,
                    "description": "Reddit application client id; `[reddit] client_id` when absent."
                },
                "client_secret": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 256,
                    "writeOnly": true,
                    "description": "Reddit application secret; `[reddit] client_secret` when absent."
                }
            }
        })
    }
}

/// Settings of one `reddit` source.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostSettings {
    pub subreddit: String,
    pub metric: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
}

impl PostSettings {
    pub fn metric(&self) -> String {
        self.metric
            .clone()
            .unwrap_or_else(|| format!("{}_post_count", self.subreddit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::schema::SettingsSchema;

    #[test]
    fn defaults_are_reddits_endpoints_and_a_descriptive_agent() {
        let config = RedditConfig::default();
        assert_eq!(
            config.auth_url.as_str(),
            "https://www.reddit.com/api/v1/access_token"
        );
        assert_eq!(config.base_url.as_str(), "https://oauth.reddit.com/");
        assert!(
            config.user_agent.starts_with("gleaner/"),
            "{}",
            config.user_agent
        );
        assert!(config.user_agent.ends_with("(by /u/gleaner)"));
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn bad_agents_and_blank_credentials_are_refused() {
        for config in [
            RedditConfig {
                user_agent: " ".into(),
                ..RedditConfig::default()
            },
            RedditConfig {
                user_agent: "a\nb".into(),
                ..RedditConfig::default()
            },
            RedditConfig {
                client_id: Some(String::new()),
                ..RedditConfig::default()
            },
            RedditConfig {
                client_secret: Some(Secret::new("")),
                ..RedditConfig::default()
            },
        ] {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let config = RedditConfig {
            client_secret: Some(Secret::new("s3cr3t")),
            ..RedditConfig::default()
        };
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }

    #[test]
    fn schema_admits_subreddit_names_and_hides_the_secret() {
        let schema =
            SettingsSchema::compile(RedditConfig::default().settings_schema()).expect("schema");
        for admitted in [
            json!({"subreddit": "rust"}),
            json!({"subreddit": "golang", "metric": "GoPostCount", "client_id": "id", "client_secret": "s"}),
        ] {
            assert_eq!(schema.validate(&admitted), Ok(()), "{admitted}");
        }
        for refused in [
            json!({}),
            json!({"subreddit": "r/rust"}),
            json!({"subreddit": "a"}),
            json!({"subreddit": "../admin"}),
            json!({"subreddit": "x".repeat(22)}),
            json!({"subreddit": "rust", "other": 1}),
        ] {
            assert!(schema.validate(&refused).is_err(), "{refused}");
        }
        let shown = schema.redact(&json!({"subreddit": "rust", "client_secret": "s"}));
        assert_eq!(shown["client_secret"], json!("********"));
    }
}
