//! The `datahog-provider` connector: one provider's bills from the datahog providers API,
//! `GET {base_url}/providers/{id}` answering a JSON array, collected in a single page.
//!
//! Invariant: only configured provider ids are fetched, and an empty array is a successful
//! collection of zero bills (the seed never completed such a provider).

mod config;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use reqwest::Method;
use reqwest::header::{ACCEPT, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use super::{Connector, ConnectorContext, Error, Page, json_type};

use config::ProviderSettings;
pub use config::{ConfigError, DatahogConfig};

/// The connector's name in job specs.
pub const NAME: &str = "datahog-provider";

/// Collects one datahog provider's bills; the provider list and base URL come from config.
#[derive(Debug, Clone)]
pub struct DatahogConnector {
    config: DatahogConfig,
}

impl DatahogConnector {
    pub fn new(config: DatahogConfig) -> Self {
        Self { config }
    }

    /// The provider id of `settings`, refused unless it is a configured provider. The schema
    /// already checked this at submission; a job stored before the provider was removed from
    /// the configuration fails here, permanently.
    fn provider(&self, settings: &Value) -> Result<String, Error> {
        let ProviderSettings { id } = ProviderSettings::deserialize(settings)
            .map_err(|error| Error::Settings(error.to_string()))?;
        if !self.config.knows(&id) {
            return Err(Error::Settings(format!(
                "id: unknown provider {id:?}; configured providers are {}",
                self.config.providers.join(", ")
            )));
        }
        Ok(id)
    }

    /// Fetches the provider's bills. Statuses and transport failures keep the shared retry
    /// classification (404 is permanent, 5xx and timeouts are retried).
    async fn fetch_bills(&self, ctx: &ConnectorContext, id: &str) -> Result<Vec<Value>, Error> {
        let request = ctx
            .http
            .request(Method::GET, self.config.provider_url(id))
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        let body: Value = ctx.http.send(request).await?.error_for_status()?.json()?;
        match body {
            Value::Array(bills) => Ok(bills),
            other => Err(Error::Response(format!(
                "provider {id:?} answered a JSON {} where an array of bills was expected",
                json_type(&other)
            ))),
        }
    }
}

#[async_trait]
impl Connector for DatahogConnector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "Collects one provider's bills from the datahog providers API (`GET {base_url}/providers/{id}`) in one page."
    }

    fn settings_schema(&self) -> Value {
        self.config.settings_schema()
    }

    fn validate(&self, settings: &Value) -> Result<(), Error> {
        self.provider(settings).map(|_| ())
    }

    /// Every provider lives on the one configured API, so they share its circuit breaker.
    fn upstream(&self, _settings: &Value) -> Option<String> {
        super::origin_of(self.config.base_url.as_str())
    }

    /// The provider id, as the seed named each provider's data in its callback.
    fn label(&self, settings: &Value) -> Option<String> {
        self.provider(settings).ok()
    }

    /// Fetches the provider's bills and discards them.
    async fn check(&self, ctx: &ConnectorContext, settings: &Value) -> Result<(), Error> {
        self.fetch_bills(ctx, &self.provider(settings)?)
            .await
            .map(|_| ())
    }

    /// Every bill in one page: the API has no paging, so there is no checkpoint to keep.
    async fn collect_page(
        &self,
        ctx: &ConnectorContext,
        settings: &Value,
        _checkpoint: Option<&Value>,
    ) -> Result<Page, Error> {
        let records = self.fetch_bills(ctx, &self.provider(settings)?).await?;
        Ok(Page {
            records,
            checkpoint: None,
            done: true,
        })
    }
}
