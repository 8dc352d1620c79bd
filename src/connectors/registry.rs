//! The connector catalog: built-in connectors by name, each with its compiled settings schema.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::datahog::DatahogConnector;
use super::email_attachment::EmailAttachmentConnector;
use super::json_table::JsonTableConnector;
use super::reddit::RedditConnector;
use super::schema::SettingsSchema;
use super::stackoverflow::StackOverflowConnector;
use super::web_report::WebReportConnector;
use super::{Error, SharedConnector};

/// A registered connector with its compiled schema.
pub struct Registered {
    pub connector: SharedConnector,
    pub schema: SettingsSchema,
}

/// Every connector this binary can run, by name.
#[derive(Clone)]
pub struct ConnectorRegistry {
    entries: Arc<BTreeMap<&'static str, Registered>>,
}

impl ConnectorRegistry {
    /// The built-in catalog; connectors whose upstream is the operator's choice take it from
    /// their section of `config` (`[datahog]`, `[stackoverflow]`, `[reddit]`).
    pub fn builtin(config: &crate::config::Config) -> Self {
        Self::with(vec![
            Arc::new(super::http::HttpConnector) as SharedConnector,
            Arc::new(super::NoopConnector),
            Arc::new(super::message_source::MessageSourceConnector),
            Arc::new(DatahogConnector::new(config.datahog.clone())),
            Arc::new(StackOverflowConnector::new(config.stackoverflow.clone())),
            Arc::new(RedditConnector::new(config.reddit.clone())),
            Arc::new(WebReportConnector),
            Arc::new(JsonTableConnector),
            Arc::new(EmailAttachmentConnector),
        ])
    }

    /// A catalog of exactly these connectors (tests add their own).
    pub fn with(connectors: Vec<SharedConnector>) -> Self {
        let entries = connectors
            .into_iter()
            .map(|connector| {
                let schema =
                    SettingsSchema::compile(connector.settings_schema()).unwrap_or_else(|error| {
                        panic!(
                            "connector {} ships an invalid schema: {error}",
                            connector.name()
                        )
                    });
                (connector.name(), Registered { connector, schema })
            })
            .collect();
        Self {
            entries: Arc::new(entries),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Registered> {
        self.entries.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Registered> {
        self.entries.values()
    }

    /// Schema and semantic validation of `settings` for connector `name`.
    pub fn validate(&self, name: &str, settings: &Value) -> Result<(), ValidationError> {
        let entry = self
            .get(name)
            .ok_or_else(|| ValidationError::UnknownConnector(name.to_owned()))?;
        entry
            .schema
            .validate(settings)
            .map_err(ValidationError::Settings)?;
        entry
            .connector
            .validate(settings)
            .map_err(|error| ValidationError::Settings(vec![error.to_string()]))
    }
}

/// Why settings were refused before a job was accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ValidationError {
    #[error("unknown connector {0:?}")]
    UnknownConnector(String),
    #[error("unknown sink type {0:?}")]
    UnknownSink(String),
    #[error("settings do not match the schema: {}", .0.join("; "))]
    Settings(Vec<String>),
}

impl From<ValidationError> for Error {
    fn from(error: ValidationError) -> Self {
        Error::Settings(error.to_string())
    }
}
