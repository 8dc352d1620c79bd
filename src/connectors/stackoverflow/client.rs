//! The one StackExchange call the connector makes, `GET {base_url}/questions?filter=total`, and
//! what its response wrapper says besides the total: `backoff`, the quota and typed errors.
//!
//! Invariant: after an answer carrying `backoff: n`, no call to the same method of the same API
//! leaves this process for `n` seconds; such calls fail at once as `RetryLater`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{ACCEPT, HeaderValue};
use serde::Deserialize;
use url::Url;

use crate::clock::Millis;
use crate::connectors::{ConnectorContext, Error, origin_of};
use crate::net::CappedResponse;

/// The API method called, the second half of a backoff's key.
const METHOD: &str = "questions";

/// The response wrapper (<https://api.stackexchange.com/docs/wrapper>), as far as it is read.
/// The built-in `total` filter may leave out the quota fields, so every field is optional.
#[derive(Debug, Default, Deserialize)]
struct Wrapper {
    total: Option<u64>,
    quota_max: Option<i64>,
    quota_remaining: Option<i64>,
    /// Seconds to wait before calling this method again.
    backoff: Option<u64>,
    error_id: Option<u16>,
    error_name: Option<String>,
    error_message: Option<String>,
}

/// The question count of one tag, with the quota the API reported alongside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuestionTotal {
    pub total: u64,
    pub quota_remaining: Option<i64>,
    pub quota_max: Option<i64>,
}

/// What one call asks for.
pub struct Query<'a> {
    pub tag: &'a str,
    pub site: &'a str,
    pub key: Option<&'a str>,
}

/// Backoffs the API asked for, by (base URL, method): when each ends, on the injected clock.
///
/// A call made while one runs is not sent but deferred through the engine's retry schedule
/// (`RetryLater` with the rest of the wait): sleeping inside `collect_page` would hold a
/// worker and could outlast the step's time budget, and the engine already knows how to wait.
/// The map lives as long as the connector, i.e. the process; a restart forgets it, which
/// costs at most one call answered with a fresh `backoff`.
#[derive(Debug, Default, Clone)]
pub struct Backoffs {
    /// Written after every answer that carries `backoff`; read before every call.
    until: Arc<Mutex<HashMap<(String, &'static str), Millis>>>,
}

impl Backoffs {
    /// How much of a backoff on `key` is left at `now`, if any.
    fn remaining(&self, key: &(String, &'static str), now: Millis) -> Option<Duration> {
        let until = *self.until.lock().expect("backoff map poisoned").get(key)?;
        (until > now).then(|| Duration::from_millis((until - now) as u64))
    }

    /// Records a backoff of `seconds` from `now`, keeping a longer one already running.
    fn remember(&self, key: (String, &'static str), now: Millis, seconds: u64) {
        let until = now.saturating_add(seconds.saturating_mul(1_000) as i64);
        let mut map = self.until.lock().expect("backoff map poisoned");
        let entry = map.entry(key).or_insert(until);
        *entry = (*entry).max(until);
    }
}

/// `{base_url}/questions?tagged=…&site=…&filter=total[&key=…]`.
pub fn questions_url(base_url: &Url, query: &Query<'_>) -> Url {
    let mut url = base_url.clone();
    url.path_segments_mut()
        .expect("an http(s) URL always has a path")
        .pop_if_empty()
        .push(METHOD);
    url.query_pairs_mut()
        .append_pair("tagged", query.tag)
        .append_pair("site", query.site)
        .append_pair("filter", "total");
    if let Some(key) = query.key {
        url.query_pairs_mut().append_pair("key", key);
    }
    url
}

/// Asks for the question total of `query`, honouring and recording `backoff`.
pub async fn question_total(
    ctx: &ConnectorContext,
    backoffs: &Backoffs,
    base_url: &Url,
    query: &Query<'_>,
) -> Result<QuestionTotal, Error> {
    let backoff_key = (base_url.as_str().to_owned(), METHOD);
    if let Some(wait) = backoffs.remaining(&backoff_key, ctx.clock.now()) {
        return Err(Error::RetryLater {
            message: format!(
                "stackexchange asked for a backoff on /{METHOD}; {}s left",
                wait.as_secs_f64().ceil()
            ),
            retry_after: Some(wait),
        });
    }
    let request = ctx
        .http
        .request(Method::GET, questions_url(base_url, query))
        .header(ACCEPT, HeaderValue::from_static("application/json"));
    let response = ctx.http.send(request).await?;
    let wrapper = match response.json::<Wrapper>() {
        Ok(wrapper) => wrapper,
        Err(undecodable) => {
            // Not the API's JSON (a proxy's error page): the shared status classification.
            response.error_for_status()?;
            return Err(undecodable.into());
        }
    };
    if let Some(seconds) = wrapper.backoff.filter(|seconds| *seconds > 0) {
        backoffs.remember(backoff_key, ctx.clock.now(), seconds);
    }
    if let (Some(remaining), Some(origin)) = (wrapper.quota_remaining, origin_of(base_url.as_str()))
    {
        ctx.telemetry
            .upstream_quota_remaining(super::NAME, &origin, remaining);
    }
    if wrapper.error_id.is_some() {
        return Err(api_error(&wrapper));
    }
    let response = response.error_for_status()?;
    let total = wrapper.total.ok_or_else(|| {
        Error::Response(format!(
            "stackexchange answered {} without `total`",
            excerpt(&response)
        ))
    })?;
    Ok(QuestionTotal {
        total,
        quota_remaining: wrapper.quota_remaining,
        quota_max: wrapper.quota_max,
    })
}

fn excerpt(response: &CappedResponse) -> String {
    response.excerpt().unwrap_or_else(|| "an empty body".into())
}

/// Classifies an error wrapper (<https://api.stackexchange.com/docs/error-handling>) by its
/// `error_id`, whatever the HTTP status: throttles and transient failures are retried after
/// the wait the API named; refused parameters, keys and methods are the settings' fault.
fn api_error(wrapper: &Wrapper) -> Error {
    let id = wrapper.error_id.unwrap_or_default();
    let name = wrapper.error_name.as_deref().unwrap_or("unknown");
    let message = wrapper.error_message.as_deref().unwrap_or_default();
    let described = format!("stackexchange error {id} {name}: {message}");
    match id {
        // throttle_violation, temporarily_unavailable, internal_error, duplicate_request
        502 | 503 | 500 | 409 => {
            let wait = wrapper
                .backoff
                .into_iter()
                .chain(throttle_seconds(message))
                .max()
                .map(Duration::from_secs);
            Error::RetryLater {
                message: described,
                retry_after: wait,
            }
        }
        _ => Error::Settings(described),
    }
}

/// The wait a throttle message names: `… more requests available in 79538 seconds`.
fn throttle_seconds(message: &str) -> Option<u64> {
    let (before, _) = message.split_once(" seconds")?;
    let digits = before.rsplit(' ').next()?;
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_version_path_and_encode_the_query() {
        let base = Url::parse("https://api.stackexchange.com/2.3").expect("url");
        let query = Query {
            tag: "c#",
            site: "stackoverflow",
            key: Some("k&ey"),
        };
        assert_eq!(
            questions_url(&base, &query).as_str(),
            "https://api.stackexchange.com/2.3/questions?tagged=c%23&site=stackoverflow&filter=total&key=k%26ey"
        );
        let query = Query { key: None, ..query };
        let base = Url::parse("http://127.0.0.1:9/2.3/").expect("url");
        assert_eq!(
            questions_url(&base, &query).as_str(),
            "http://127.0.0.1:9/2.3/questions?tagged=c%23&site=stackoverflow&filter=total"
        );
    }

    #[test]
    fn throttle_messages_name_their_wait() {
        assert_eq!(
            throttle_seconds(
                "too many requests from this IP, more requests available in 79538 seconds"
            ),
            Some(79_538)
        );
        assert_eq!(throttle_seconds("Violation of backoff parameter"), None);
    }

    #[test]
    fn error_ids_decide_retryability() {
        let wrapper = |id: u16, backoff: Option<u64>, message: &str| Wrapper {
            error_id: Some(id),
            error_name: Some("name".into()),
            error_message: Some(message.into()),
            backoff,
            ..Wrapper::default()
        };
        let throttled = api_error(&wrapper(
            502,
            Some(10),
            "more requests available in 30 seconds",
        ));
        assert!(
            matches!(throttled, Error::RetryLater { retry_after: Some(wait), .. } if wait == Duration::from_secs(30)),
            "{throttled:?}"
        );
        let backoff = api_error(&wrapper(503, Some(12), "try later"));
        assert!(
            matches!(backoff, Error::RetryLater { retry_after: Some(wait), .. } if wait == Duration::from_secs(12)),
            "{backoff:?}"
        );
        for permanent in [400, 403, 404, 405] {
            let error = api_error(&wrapper(permanent, None, "no"));
            assert!(
                matches!(error, Error::Settings(_)),
                "{permanent}: {error:?}"
            );
        }
    }

    #[test]
    fn backoffs_keep_the_longest_wait_per_api_method() {
        let backoffs = Backoffs::default();
        let key = ("http://a/2.3".to_owned(), METHOD);
        backoffs.remember(key.clone(), 1_000, 10);
        backoffs.remember(key.clone(), 2_000, 1);
        assert_eq!(
            backoffs.remaining(&key, 5_000),
            Some(Duration::from_secs(6))
        );
        assert_eq!(backoffs.remaining(&key, 11_000), None);
        assert_eq!(
            backoffs.remaining(&("http://b/2.3".to_owned(), METHOD), 5_000),
            None
        );
    }
}
