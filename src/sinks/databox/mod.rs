//! The `databox` sink: a job's metric records (`{"metric": name, "value": number, …}`) go to
//! Databox through its push API (one request, Basic auth with the push token) or its datasets
//! API (rows in batches of 100, `x-api-key`), the databox-collector seed's destination.
//!
//! Invariants: every data point of a delivery has the same `date`; nothing counts as delivered
//! unless Databox answered 2xx and confirmed it in the body; retries use the engine's backoff
//! and are safe for datasets because rows are identified by their primary keys.

mod client;
mod config;
#[cfg(test)]
mod tests;
mod wire;

use async_trait::async_trait;
use serde_json::Value;

use super::{Delivery, Error, Sink, SinkContext, SinkValidation};
use crate::clock::rfc3339;
use crate::job::Receipt;

use client::Call;
pub use config::{DEFAULT_DATASET_URL, DEFAULT_PRIMARY_KEYS, DEFAULT_PUSH_URL, DataboxConfig};
use config::{Mode, Target};
pub use wire::DATASET_BATCH;

/// Delivery of metrics to Databox.
#[derive(Debug, Clone, Default)]
pub struct DataboxSink {
    config: DataboxConfig,
}

impl DataboxSink {
    pub fn new(config: DataboxConfig) -> Self {
        Self { config }
    }

    /// The job's settings resolved, with the token that applies.
    fn target(&self, settings: &Value) -> Result<(Target, String), Error> {
        let target = self.config.target(settings).map_err(Error::Settings)?;
        let token = target.token.clone().ok_or_else(|| {
            Error::Settings(
                "token: the job names none and no `sinks.databox.token` is configured".into(),
            )
        })?;
        Ok((target, token))
    }
}

#[async_trait]
impl Sink for DataboxSink {
    fn kind(&self) -> &'static str {
        "databox"
    }

    fn description(&self) -> &'static str {
        "Sends metric records ({\"metric\", \"value\"}) to Databox, all stamped with the job's \
         collection time: the push API (one POST, Basic auth with the push token) or a dataset \
         (batches of at most 100 rows, idempotent through the dataset's primary keys). Only a \
         2xx answer whose status Databox confirms is success; 5xx, 429 and network failures \
         are retried, other 4xx fail the delivery with Databox's answer kept."
    }

    fn settings_schema(&self) -> Value {
        config::settings_schema()
    }

    fn validate(&self, _ctx: &SinkValidation, settings: &Value) -> Result<(), Error> {
        self.target(settings).map(|_| ())
    }

    fn endpoint(&self, settings: &Value) -> Option<String> {
        let target = self.config.target(settings).ok()?;
        Some(target.url.into())
    }

    async fn deliver(
        &self,
        ctx: &SinkContext,
        settings: &Value,
        delivery: &Delivery,
    ) -> Result<Receipt, Error> {
        let (target, token) = self.target(settings)?;
        let metrics = wire::metrics(delivery)?;
        if metrics.is_empty() {
            return Ok(Receipt {
                http_status: None,
                response: Some("no metrics to send: no source produced a record".into()),
            });
        }
        // Collection time, not send time: a retry must send the very same data points.
        let date = rfc3339(delivery.collected_at);
        let call = Call {
            ctx,
            url: &target.url,
            token: &token,
            timeout: self.config.timeout,
        };
        match &target.mode {
            Mode::Push => call.push(&wire::push_body(&metrics, &date)).await,
            Mode::Dataset { primary_keys } => {
                let rows = wire::dataset_rows(&metrics, &date, primary_keys)?;
                call.ingest(&rows).await
            }
        }
    }
}
