//! The `http` connector: any JSON API described declaratively (URL, headers, auth, a jq record
//! path and a pagination mode), fetched one page per call through the guarded client.
//!
//! Invariant: all traffic goes through `ctx.http`; each page's checkpoint leads to the next page.

mod client;
mod config;
#[cfg(test)]
mod tests;
pub(crate) mod urls;

use async_trait::async_trait;
use serde_json::Value;

use super::{Connector, ConnectorContext, Error, Page};

pub use client::Checkpoint;
pub use config::{
    Auth, DEFAULT_MAX_PAGES, HttpSettings, MAX_MAX_PAGES, Pagination, settings_schema,
};

/// The generic declarative HTTP JSON connector; stateless, all state is in settings and checkpoint.
#[derive(Debug, Default, Clone, Copy)]
pub struct HttpConnector;

#[async_trait]
impl Connector for HttpConnector {
    fn name(&self) -> &'static str {
        "http"
    }

    fn description(&self) -> &'static str {
        "Collects records from any JSON HTTP API: headers, bearer/basic/header auth, a jq record path and cursor, next-link or page-number pagination."
    }

    fn settings_schema(&self) -> Value {
        settings_schema()
    }

    fn upstream(&self, settings: &Value) -> Option<String> {
        super::origin_of(settings.get("url")?.as_str()?)
    }

    /// Checks what the schema cannot: the URL and its scheme, header names and values, and
    /// that every jq path compiles.
    fn validate(&self, settings: &Value) -> Result<(), Error> {
        client::Plan::new(settings).map(|_| ())
    }

    /// Fetches the first page and discards it.
    async fn check(&self, ctx: &ConnectorContext, settings: &Value) -> Result<(), Error> {
        client::Plan::new(settings)?
            .collect_page(ctx, None)
            .await
            .map(|_| ())
    }

    async fn collect_page(
        &self,
        ctx: &ConnectorContext,
        settings: &Value,
        checkpoint: Option<&Value>,
    ) -> Result<Page, Error> {
        client::Plan::new(settings)?
            .collect_page(ctx, checkpoint)
            .await
    }
}
