//! The `stackoverflow` connector: how many questions carry one tag on a StackExchange site,
//! from `GET {base_url}/questions?tagged=…&site=…&filter=total`, as one metric record.
//!
//! Invariant: the API's `backoff` is honoured per (API, method) across jobs (see
//! [`client::Backoffs`]), and its typed errors keep their meaning: a throttle is retried after
//! the wait it names, a refused parameter or key fails the source at once.

mod client;
mod config;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Connector, ConnectorContext, Error, Page, metric};

use client::{Backoffs, Query};
use config::QuestionSettings;
pub use config::StackOverflowConfig;

/// The connector's name in job specs.
pub const NAME: &str = "stackoverflow";

/// Counts a tag's questions; the API's base URL and default key come from `[stackoverflow]`.
#[derive(Debug, Clone)]
pub struct StackOverflowConnector {
    config: StackOverflowConfig,
    /// Shared by every job this process runs, so one job's backoff defers the next.
    backoffs: Backoffs,
}

impl StackOverflowConnector {
    pub fn new(config: StackOverflowConfig) -> Self {
        Self {
            config,
            backoffs: Backoffs::default(),
        }
    }

    fn settings(settings: &Value) -> Result<QuestionSettings, Error> {
        QuestionSettings::deserialize(settings).map_err(|error| Error::Settings(error.to_string()))
    }

    /// The settings' key, else the configured one.
    fn key<'a>(&'a self, settings: &'a QuestionSettings) -> Option<&'a str> {
        settings
            .key
            .as_deref()
            .or(self.config.key.as_ref().map(|key| key.expose()))
    }

    async fn count(
        &self,
        ctx: &ConnectorContext,
        settings: &QuestionSettings,
    ) -> Result<Value, Error> {
        let query = Query {
            tag: &settings.tag,
            site: settings.site(),
            key: self.key(settings),
        };
        let total =
            client::question_total(ctx, &self.backoffs, &self.config.base_url, &query).await?;
        Ok(metric::record(
            &settings.metric(),
            total.total,
            [
                ("tag", json!(settings.tag)),
                ("site", json!(settings.site())),
                ("quota_remaining", json!(total.quota_remaining)),
                ("quota_max", json!(total.quota_max)),
            ],
        ))
    }
}

#[async_trait]
impl Connector for StackOverflowConnector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "Counts the questions tagged with one tag on a StackExchange site (`GET {base_url}/questions?filter=total`), as one metric record."
    }

    fn settings_schema(&self) -> Value {
        self.config.settings_schema()
    }

    fn validate(&self, settings: &Value) -> Result<(), Error> {
        Self::settings(settings).map(|_| ())
    }

    /// Every site lives on the one configured API, which also keeps one quota per key.
    fn upstream(&self, _settings: &Value) -> Option<String> {
        super::origin_of(self.config.base_url.as_str())
    }

    /// The metric name: a job has one source per metric, so failures are reported per metric.
    fn label(&self, settings: &Value) -> Option<String> {
        Self::settings(settings)
            .ok()
            .map(|settings| settings.metric())
    }

    /// Asks for the total once (it costs one request of the quota).
    async fn check(&self, ctx: &ConnectorContext, settings: &Value) -> Result<(), Error> {
        self.count(ctx, &Self::settings(settings)?)
            .await
            .map(|_| ())
    }

    /// The one record; nothing to resume, so no checkpoint.
    async fn collect_page(
        &self,
        ctx: &ConnectorContext,
        settings: &Value,
        _checkpoint: Option<&Value>,
    ) -> Result<Page, Error> {
        Ok(Page::only(vec![
            self.count(ctx, &Self::settings(settings)?).await?,
        ]))
    }
}
