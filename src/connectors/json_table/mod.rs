//! The `json-table` connector: a DataTables-style JSON endpoint behind a form login (the seed's
//! second private scraping platform, which read only its first 1000 rows; this one pages).
//!
//! Each `collect_page` logs in and fetches `page_size` rows from the checkpoint's `start`;
//! array rows become objects through `columns`, and `skip_rows` drops rows such as `Total`.
//!
//! Invariant: all traffic goes through `ctx.http`; the session cookie is never stored.

mod config;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::form_login::{log_in, login_origin};
use super::{
    Connector, ConnectorContext, Error, Page, checkpoint_value, json_type, read_checkpoint,
};

pub use config::{
    DEFAULT_LENGTH_PARAM, DEFAULT_PAGE_SIZE, DEFAULT_START_PARAM, JsonTableSettings, MAX_PAGE_SIZE,
    SkipRule, settings_schema,
};

use config::Plan;

/// Resume state stored with each page: the first row of the next page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub start: u64,
}

/// Pages through a DataTables JSON endpoint (`aaData`) behind a form login.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonTableConnector;

#[async_trait]
impl Connector for JsonTableConnector {
    fn name(&self) -> &'static str {
        "json-table"
    }

    fn description(&self) -> &'static str {
        "Logs in with a form and pages through a DataTables JSON endpoint (aaData rows named by `columns`), dropping rows such as `Total`."
    }

    fn settings_schema(&self) -> Value {
        settings_schema()
    }

    fn upstream(&self, settings: &Value) -> Option<String> {
        login_origin(settings)
    }

    /// Checks what the schema cannot: URLs, dates, column names of the skip rules.
    fn validate(&self, settings: &Value) -> Result<(), Error> {
        Plan::new(settings).map(|_| ())
    }

    /// Logs in and reads the first page.
    async fn check(&self, ctx: &ConnectorContext, settings: &Value) -> Result<(), Error> {
        self.collect_page(ctx, settings, None).await.map(|_| ())
    }

    async fn collect_page(
        &self,
        ctx: &ConnectorContext,
        settings: &Value,
        checkpoint: Option<&Value>,
    ) -> Result<Page, Error> {
        let plan = Plan::new(settings)?;
        let start = read_checkpoint::<Checkpoint>(checkpoint)?.map_or(0, |resume| resume.start);
        let mut session = log_in(ctx, &plan.settings.login).await?;
        let response = session.get(plan.page_url(start)?, "the table page").await?;
        let body: Value = response.json()?;
        let table = Table::read(&body)?;

        let mut records = Vec::with_capacity(table.rows.len());
        for (offset, row) in table.rows.iter().enumerate() {
            let position = start + offset as u64;
            if let Some(record) = plan.record(position, row)? {
                records.push(record);
            }
        }
        let received = table.rows.len() as u64;
        let next = start + received;
        let short = received < plan.settings.page_size;
        let reached_total = table.total.is_some_and(|total| next >= total);
        Ok(Page {
            records,
            checkpoint: Some(checkpoint_value(&Checkpoint { start: next })?),
            done: short || reached_total,
        })
    }
}

/// The parts of a DataTables answer used here.
struct Table<'a> {
    rows: &'a [Value],
    /// `iTotalDisplayRecords` (or `iTotalRecords`): rows matching the query, all pages.
    total: Option<u64>,
}

impl<'a> Table<'a> {
    fn read(body: &'a Value) -> Result<Self, Error> {
        let rows = match body.get("aaData") {
            Some(Value::Array(rows)) => rows.as_slice(),
            Some(other) => {
                return Err(Error::Response(format!(
                    "aaData: expected an array, got {}",
                    json_type(other)
                )));
            }
            None => {
                return Err(Error::Response(format!(
                    "expected an object with aaData, got {}",
                    json_type(body)
                )));
            }
        };
        let total = ["iTotalDisplayRecords", "iTotalRecords"]
            .iter()
            .find_map(|field| count(body.get(*field)?));
        Ok(Self { rows, total })
    }
}

/// A count given as a number or as a numeric string (PHP often sends `"2500"`).
fn count(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

impl Plan {
    /// Row `position` as a record named by `columns`, or `None` when a skip rule drops it.
    fn record(&self, position: u64, row: &Value) -> Result<Option<Value>, Error> {
        let Value::Array(cells) = row else {
            return Err(Error::Response(format!(
                "aaData row {position}: expected an array, got {}",
                json_type(row)
            )));
        };
        let skipped = self.skips.iter().any(|(column, text)| {
            cells
                .get(*column)
                .is_some_and(|cell| cell_text(cell) == *text)
        });
        if skipped {
            return Ok(None);
        }
        let columns = &self.settings.columns;
        if cells.len() != columns.len() {
            return Err(Error::Response(format!(
                "aaData row {position}: {} cells, but columns names {}",
                cells.len(),
                columns.len()
            )));
        }
        let record: Map<String, Value> =
            columns.iter().cloned().zip(cells.iter().cloned()).collect();
        Ok(Some(Value::Object(record)))
    }
}

/// A cell as the text a skip rule compares: strings as they are, other values as JSON.
fn cell_text(cell: &Value) -> String {
    match cell {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}
