//! The `web-report` connector: a site that lists one downloadable CSV report per date behind a
//! form login (the seed's first private scraping platform, made configurable).
//!
//! Each `collect_page` logs in, reads the listing for the whole range, checks that every date
//! still to collect has a report, and downloads the first of them: one page per date, the
//! checkpoint naming the dates done so a retry never downloads a finished date again.
//!
//! Invariant: all traffic goes through `ctx.http`; the session cookie is never stored.

mod config;
mod listing;
mod report;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use async_trait::async_trait;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::date_range::parse_date;
use super::form_login::{Session, log_in, login_origin};
use super::http::urls::check_http_scheme;
use super::{Connector, ConnectorContext, Error, Page, checkpoint_value, read_checkpoint};

pub use config::{CsvSettings, Gzip, ListingSettings, WebReportSettings, settings_schema};
pub use listing::Listing;
pub use report::REPORT_DATE_FIELD;

use config::Plan;

/// A report may grow to this many times `net.max_response_bytes` once decompressed.
const DECOMPRESSED_FACTOR: u64 = 8;

/// Resume state stored with each page: the report dates already collected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub done_dates: Vec<String>,
}

/// Downloads dated CSV reports listed on a page behind a form login.
#[derive(Debug, Default, Clone, Copy)]
pub struct WebReportConnector;

#[async_trait]
impl Connector for WebReportConnector {
    fn name(&self) -> &'static str {
        "web-report"
    }

    fn description(&self) -> &'static str {
        "Logs in with a form, reads an HTML listing of dated report links, requires one for every date of the range, and collects each (gzip) CSV, one page per date."
    }

    fn settings_schema(&self) -> Value {
        settings_schema()
    }

    fn upstream(&self, settings: &Value) -> Option<String> {
        login_origin(settings)
    }

    /// Checks what the schema cannot: URLs, dates, the CSS selector, the date pattern.
    fn validate(&self, settings: &Value) -> Result<(), Error> {
        Plan::new(settings).map(|_| ())
    }

    /// Logs in and checks that the listing has a report for every date of the range.
    async fn check(&self, ctx: &ConnectorContext, settings: &Value) -> Result<(), Error> {
        let plan = Plan::new(settings)?;
        let mut session = log_in(ctx, &plan.settings.login).await?;
        fetch_listing(&mut session, &plan)
            .await?
            .check_available(plan.range.days())
    }

    async fn collect_page(
        &self,
        ctx: &ConnectorContext,
        settings: &Value,
        checkpoint: Option<&Value>,
    ) -> Result<Page, Error> {
        let plan = Plan::new(settings)?;
        let done = done_dates(checkpoint)?;
        let remaining: Vec<Date> = plan
            .range
            .days()
            .filter(|day| !done.contains(day))
            .collect();
        let Some(&date) = remaining.first() else {
            return Ok(Page {
                records: Vec::new(),
                checkpoint: None,
                done: true,
            });
        };

        let mut session = log_in(ctx, &plan.settings.login).await?;
        let listing = fetch_listing(&mut session, &plan).await?;
        listing.check_available(remaining.iter().copied())?;
        let href = listing
            .links
            .get(&date)
            .expect("check_available ensured a link for every remaining date");
        let url = plan
            .download_base
            .join(href)
            .map_err(|error| Error::Response(format!("report link {href:?}: {error}")))?;
        check_http_scheme(&url)
            .map_err(|error| Error::Response(format!("report link {href:?}: {error}")))?;
        let response = session.get(url, &format!("the report of {date}")).await?;

        let format = report::Format {
            gzip: plan.settings.csv.gzip,
            delimiter: plan.delimiter,
            max_bytes: ctx
                .http
                .config()
                .max_response_bytes
                .saturating_mul(DECOMPRESSED_FACTOR),
        };
        let date_text = date.to_string();
        let body = response.body;
        let records =
            tokio::task::spawn_blocking(move || report::records(&body, format, &date_text))
                .await
                .map_err(|error| {
                    Error::Response(format!("report {date}: decoding stopped: {error}"))
                })??;

        let mut done_dates: Vec<String> = done.iter().map(Date::to_string).collect();
        done_dates.push(date.to_string());
        done_dates.sort();
        Ok(Page {
            records,
            checkpoint: Some(checkpoint_value(&Checkpoint { done_dates })?),
            done: remaining.len() == 1,
        })
    }
}

/// The dates a checkpoint names as collected.
fn done_dates(checkpoint: Option<&Value>) -> Result<BTreeSet<Date>, Error> {
    let Some(checkpoint) = read_checkpoint::<Checkpoint>(checkpoint)? else {
        return Ok(BTreeSet::new());
    };
    checkpoint
        .done_dates
        .iter()
        .map(|text| parse_date("invalid checkpoint: done_dates", text))
        .collect()
}

/// GETs the listing with the session and picks its report links.
async fn fetch_listing(session: &mut Session<'_>, plan: &Plan) -> Result<Listing, Error> {
    let response = session.get(plan.listing_url.clone(), "the listing").await?;
    let html = String::from_utf8_lossy(&response.body);
    Listing::parse(&html, &plan.link_selector, &plan.date_pattern)
}
