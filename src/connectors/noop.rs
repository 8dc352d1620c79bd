//! The `noop` connector: yields a fixed number of empty records without any I/O. It exists for
//! benchmarks of the engine and for trying the API without an upstream.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Connector, ConnectorContext, Error, Page};

#[derive(Debug, Default)]
pub struct NoopConnector;

#[async_trait]
impl Connector for NoopConnector {
    fn name(&self) -> &'static str {
        "noop"
    }

    fn description(&self) -> &'static str {
        "Yields `records` copies of `{\"n\": i}` in one page without any I/O (benchmarks, trials)."
    }

    fn settings_schema(&self) -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "records": {"type": "integer", "minimum": 0, "maximum": 10000, "default": 0,
                            "description": "How many records the single page holds."}
            }
        })
    }

    async fn check(&self, _ctx: &ConnectorContext, _settings: &Value) -> Result<(), Error> {
        Ok(())
    }

    async fn collect_page(
        &self,
        _ctx: &ConnectorContext,
        settings: &Value,
        _checkpoint: Option<&Value>,
    ) -> Result<Page, Error> {
        let count = settings.get("records").and_then(Value::as_u64).unwrap_or(0);
        Ok(Page {
            records: (0..count).map(|n| json!({ "n": n })).collect(),
            checkpoint: None,
            done: true,
        })
    }
}
