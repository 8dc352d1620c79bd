//! The `reddit` connector: how many posts were created today (UTC, by the injected clock) in
//! one subreddit, by paging `GET {base_url}/r/{subreddit}/new` with an app-only OAuth token,
//! as one metric record.
//!
//! Invariant: a collection makes at most [`MAX_PAGES`] listing calls (Reddit lists ~1000 posts),
//! ends on an empty page or a `null` cursor with the running count (the seed returned 0 or
//! looped forever), and never calls again once Reddit said no request is left.

mod config;
mod listing;
#[cfg(test)]
mod tests;
mod token;

use async_trait::async_trait;
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, USER_AGENT};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Connector, ConnectorContext, Error, Page, metric};
use crate::net::{CappedResponse, parse_retry_after};

use config::PostSettings;
pub use config::RedditConfig;
use listing::{DayTally, ListingPage, RateLimit, listing_url};
use token::{Credentials, Token, TokenCache, TokenEndpoint};

/// The connector's name in job specs.
pub const NAME: &str = "reddit";

/// Most listing pages read in one collection: 10 × 100 posts is Reddit's listing cap.
pub const MAX_PAGES: usize = 10;

/// Counts a subreddit's posts of the day; endpoints and default credentials from `[reddit]`.
#[derive(Debug, Clone)]
pub struct RedditConnector {
    config: RedditConfig,
    endpoint: TokenEndpoint,
    /// Shared by every job of the process, so they share tokens and their refreshes.
    tokens: TokenCache,
}

impl RedditConnector {
    pub fn new(config: RedditConfig) -> Self {
        let endpoint = TokenEndpoint {
            url: config.auth_url.clone(),
            user_agent: config.user_agent.clone(),
        };
        Self {
            config,
            endpoint,
            tokens: TokenCache::default(),
        }
    }

    fn settings(settings: &Value) -> Result<PostSettings, Error> {
        PostSettings::deserialize(settings).map_err(|error| Error::Settings(error.to_string()))
    }

    /// The settings' credentials, each part falling back to the configured one.
    fn credentials(&self, settings: &PostSettings) -> Result<Credentials, Error> {
        let client_id = settings
            .client_id
            .as_ref()
            .or(self.config.client_id.as_ref());
        let client_secret = settings
            .client_secret
            .as_ref()
            .or(self.config.client_secret.as_ref());
        match (client_id, client_secret) {
            (Some(client_id), Some(client_secret)) => Ok(Credentials {
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
            }),
            _ => Err(Error::Settings(
                "client_id and client_secret: set them in the settings or in [reddit]".into(),
            )),
        }
    }

    /// Counts the posts of the day, page by page (see the module invariant).
    async fn posts_today(
        &self,
        ctx: &ConnectorContext,
        settings: &PostSettings,
    ) -> Result<Value, Error> {
        let credentials = self.credentials(settings)?;
        let mut tally = DayTally::of_day(ctx.clock.now());
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let url = listing_url(&self.config.base_url, &settings.subreddit, after.as_deref());
            let (page, rate) = self.listing_page(ctx, &credentials, url).await?;
            let reached_older = tally.add(&page.created);
            if reached_older || page.created.is_empty() {
                break;
            }
            let Some(next) = page.after else { break };
            if rate.exhausted() {
                return Err(Error::RetryLater {
                    message: "reddit rate limit used up before the count was complete".into(),
                    retry_after: rate.reset,
                });
            }
            after = Some(next);
        }
        let day = crate::clock::rfc3339(tally.start_ms());
        Ok(metric::record(
            &settings.metric(),
            tally.count,
            [
                ("subreddit", json!(settings.subreddit)),
                ("day", json!(day.get(..10).unwrap_or(&day))),
            ],
        ))
    }

    /// One listing page; a 401 drops the token and tries once more with a new one.
    async fn listing_page(
        &self,
        ctx: &ConnectorContext,
        credentials: &Credentials,
        url: url::Url,
    ) -> Result<(ListingPage, RateLimit), Error> {
        let token = self.tokens.token(ctx, &self.endpoint, credentials).await?;
        let mut response = self.get(ctx, &token, url.clone()).await?;
        if response.status == 401 {
            self.tokens.invalidate(&self.endpoint, credentials, &token);
            let token = self.tokens.token(ctx, &self.endpoint, credentials).await?;
            response = self.get(ctx, &token, url).await?;
        }
        let rate = RateLimit::read(&response.headers);
        if let (Some(remaining), Some(origin)) = (
            rate.remaining,
            super::origin_of(self.config.base_url.as_str()),
        ) {
            ctx.telemetry
                .upstream_quota_remaining(NAME, &origin, remaining as i64);
        }
        if response.status == 429 {
            let asked = parse_retry_after(&response.headers, std::time::SystemTime::now());
            return Err(Error::RetryLater {
                message: "reddit answered 429 too many requests".into(),
                retry_after: asked.or(rate.reset),
            });
        }
        let response = response.error_for_status()?;
        let page = ListingPage::parse(&response.body).map_err(|error| {
            Error::Response(format!("reddit listing is not a listing: {error}"))
        })?;
        Ok((page, rate))
    }

    async fn get(
        &self,
        ctx: &ConnectorContext,
        token: &Token,
        url: url::Url,
    ) -> Result<CappedResponse, Error> {
        let bearer =
            HeaderValue::from_str(&format!("Bearer {}", token.access_token)).map_err(|_| {
                Error::Response("reddit issued a token that is not a header value".into())
            })?;
        let request = ctx
            .http
            .request(Method::GET, url)
            .header(AUTHORIZATION, bearer)
            .header(USER_AGENT, &self.config.user_agent)
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        Ok(ctx.http.send(request).await?)
    }
}

#[async_trait]
impl Connector for RedditConnector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "Counts the posts created today (UTC) in one subreddit, paging `/r/{subreddit}/new` with an app-only OAuth token, as one metric record."
    }

    fn settings_schema(&self) -> Value {
        self.config.settings_schema()
    }

    /// Refuses a source that has no credentials, neither its own nor configured ones.
    fn validate(&self, settings: &Value) -> Result<(), Error> {
        self.credentials(&Self::settings(settings)?).map(|_| ())
    }

    /// Listings come from the one configured API (the token endpoint is a separate host).
    fn upstream(&self, _settings: &Value) -> Option<String> {
        super::origin_of(self.config.base_url.as_str())
    }

    /// The metric name: a job has one source per metric, so failures are reported per metric.
    fn label(&self, settings: &Value) -> Option<String> {
        Self::settings(settings)
            .ok()
            .map(|settings| settings.metric())
    }

    /// Gets a token and reads the first listing page.
    async fn check(&self, ctx: &ConnectorContext, settings: &Value) -> Result<(), Error> {
        let settings = Self::settings(settings)?;
        let url = listing_url(&self.config.base_url, &settings.subreddit, None);
        self.listing_page(ctx, &self.credentials(&settings)?, url)
            .await
            .map(|_| ())
    }

    /// The one record. The count is recomputed from scratch on a retry: the listing moves
    /// between attempts, so a cursor kept as a checkpoint would not resume the same list.
    async fn collect_page(
        &self,
        ctx: &ConnectorContext,
        settings: &Value,
        _checkpoint: Option<&Value>,
    ) -> Result<Page, Error> {
        Ok(Page::only(vec![
            self.posts_today(ctx, &Self::settings(settings)?).await?,
        ]))
    }
}
