//! One page of `GET {base_url}/r/{subreddit}/new`, its rate-limit headers, and the tally of
//! posts created on one UTC day.
//!
//! Invariant: paging stops at the first page holding a post older than the day; posts of the
//! day on that page are all counted, even after the older one (order within a page is not
//! trusted), but a post of the day on a later page than an older post is never seen. Reddit
//! lists `/new` newest first, so that only misses posts whose listing order is itself wrong.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::Deserialize;
use url::Url;

/// Posts per page, Reddit's maximum.
pub const PAGE_SIZE: &str = "100";

#[derive(Deserialize)]
struct Listing {
    data: ListingData,
}

#[derive(Deserialize)]
struct ListingData {
    /// The cursor of the next page; `null` at the end of the listing.
    after: Option<String>,
    children: Vec<Child>,
}

#[derive(Deserialize)]
struct Child {
    data: Post,
}

#[derive(Deserialize)]
struct Post {
    /// Seconds since the epoch, possibly fractional.
    created_utc: f64,
}

/// What one page says: when each post was created (seconds) and where the next page starts.
#[derive(Debug, Clone, PartialEq)]
pub struct ListingPage {
    pub created: Vec<f64>,
    pub after: Option<String>,
}

impl ListingPage {
    /// Parses a listing body.
    pub fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        let listing: Listing = serde_json::from_slice(body)?;
        Ok(Self {
            created: listing
                .data
                .children
                .into_iter()
                .map(|child| child.data.created_utc)
                .collect(),
            after: listing.data.after.filter(|after| !after.is_empty()),
        })
    }
}

/// `{base_url}/r/{subreddit}/new?limit=100[&after=…]`.
pub fn listing_url(base_url: &Url, subreddit: &str, after: Option<&str>) -> Url {
    let mut url = base_url.clone();
    url.path_segments_mut()
        .expect("an http(s) URL always has a path")
        .pop_if_empty()
        .extend(["r", subreddit, "new"]);
    url.query_pairs_mut().append_pair("limit", PAGE_SIZE);
    if let Some(after) = after {
        url.query_pairs_mut().append_pair("after", after);
    }
    url
}

/// Reddit's `x-ratelimit-*` headers: requests left in the window and seconds until it resets.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RateLimit {
    pub remaining: Option<f64>,
    pub reset: Option<Duration>,
}

impl RateLimit {
    pub fn read(headers: &HeaderMap) -> Self {
        let number = |name: &str| -> Option<f64> {
            let value: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
            value.is_finite().then_some(value.max(0.0))
        };
        Self {
            remaining: number("x-ratelimit-remaining"),
            reset: number("x-ratelimit-reset").map(Duration::from_secs_f64),
        }
    }

    /// Whether the window has no request left (less than one, as Reddit sends decimals).
    pub fn exhausted(&self) -> bool {
        self.remaining.is_some_and(|remaining| remaining < 1.0)
    }
}

/// The posts of one UTC day, counted page by page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayTally {
    /// The day's first second; a post created exactly then belongs to the day.
    start_secs: i64,
    pub count: u64,
}

impl DayTally {
    /// A tally of the UTC day holding `now_ms`.
    pub fn of_day(now_ms: i64) -> Self {
        const DAY_MS: i64 = 86_400_000;
        Self {
            start_secs: now_ms.div_euclid(DAY_MS) * DAY_MS / 1_000,
            count: 0,
        }
    }

    /// The day's start in milliseconds.
    pub fn start_ms(&self) -> i64 {
        self.start_secs * 1_000
    }

    /// Counts the page's posts of the day; `true` once the page reached an older post, i.e.
    /// the listing has nothing more of the day.
    pub fn add(&mut self, created: &[f64]) -> bool {
        let start = self.start_secs as f64;
        let of_day = created.iter().filter(|created| **created >= start).count();
        self.count += of_day as u64;
        of_day < created.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn urls_page_with_limit_and_after() {
        let base = Url::parse("https://oauth.reddit.com").expect("url");
        assert_eq!(
            listing_url(&base, "rust", None).as_str(),
            "https://oauth.reddit.com/r/rust/new?limit=100"
        );
        let base = Url::parse("http://127.0.0.1:9/api/").expect("url");
        assert_eq!(
            listing_url(&base, "rust", Some("t3_abc")).as_str(),
            "http://127.0.0.1:9/api/r/rust/new?limit=100&after=t3_abc"
        );
    }

    #[test]
    fn a_post_at_midnight_belongs_to_the_day_and_one_a_second_before_does_not() {
        let midnight_ms = 1_714_521_600_000; // 2024-05-01T00:00:00Z
        let mut tally = DayTally::of_day(midnight_ms);
        assert_eq!(tally.start_ms(), midnight_ms);
        assert!(!tally.add(&[1_714_521_600.5, 1_714_521_600.0]));
        assert!(tally.add(&[1_714_521_599.999]));
        assert_eq!(tally.count, 2);

        let late = DayTally::of_day(midnight_ms + 86_399_999);
        assert_eq!(late.start_ms(), midnight_ms, "23:59:59.999 is the same day");
        assert_eq!(
            DayTally::of_day(midnight_ms - 1).start_ms(),
            midnight_ms - 86_400_000
        );
    }

    #[test]
    fn posts_of_the_day_after_an_older_one_on_the_same_page_count() {
        let mut tally = DayTally::of_day(1_714_521_600_000);
        assert!(tally.add(&[1_714_521_700.0, 1_714_000_000.0, 1_714_521_800.0]));
        assert_eq!(tally.count, 2);
    }

    #[test]
    fn listings_parse_and_an_empty_cursor_ends_them() {
        let page = ListingPage::parse(
            br#"{"kind":"Listing","data":{"after":"t3_x","children":[{"kind":"t3","data":{"created_utc":1714521600.0,"title":"t"}}]}}"#,
        )
        .expect("listing");
        assert_eq!(page.created, [1_714_521_600.0]);
        assert_eq!(page.after.as_deref(), Some("t3_x"));
        let end = ListingPage::parse(br#"{"data":{"after":"","children":[]}}"#).expect("end");
        assert_eq!(end.after, None);
        let end = ListingPage::parse(br#"{"data":{"after":null,"children":[]}}"#).expect("end");
        assert_eq!(end.after, None);
    }

    #[test]
    fn rate_limit_headers_are_read_as_decimals() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0.0"));
        headers.insert("x-ratelimit-reset", HeaderValue::from_static("42"));
        let limit = RateLimit::read(&headers);
        assert!(limit.exhausted());
        assert_eq!(limit.reset, Some(Duration::from_secs(42)));
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("598.0"));
        assert!(!RateLimit::read(&headers).exhausted());
        assert_eq!(RateLimit::read(&HeaderMap::new()), RateLimit::default());
        assert!(!RateLimit::default().exhausted());
    }
}
