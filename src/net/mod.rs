//! The one hardened outgoing HTTP client used by every connector, callback and sink.
//!
//! Invariant: no outgoing request reaches a loopback, private, link-local or otherwise special
//! address (IPv4 or IPv6, literal, resolved or redirected to) unless the configuration
//! allow-lists it; responses are size-capped and every failure is an [`UpstreamError`].

mod client;
mod guard;
pub mod rate_limit;
mod resolver;

pub use client::{CappedResponse, HttpClientFactory};
pub use guard::AddressGuard;
pub use rate_limit::{RateLimiter, RateWindow, UpstreamLimits};
pub use resolver::GuardedResolver;

use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::{Deserialize, Serialize};

/// Longest `Retry-After` we honour; anything further out is capped to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// How many bytes of an error response body are kept in [`UpstreamError::Status`].
const EXCERPT_BYTES: usize = 1024;

/// Request headers that settings may not set: they frame the request or name its target.
pub const RESERVED_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-authorization",
];

/// Settings of the outgoing HTTP client factory.
///
/// Everything has a safe default: nothing allow-listed, bounded timeouts and response size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetConfig {
    /// Networks that may be reached even though they are in a refused range (for example
    /// `"127.0.0.1/32"` in tests, or an internal API). A bare IP means a single address.
    #[serde(with = "allow_list")]
    pub allow: Vec<IpNet>,
    /// Time allowed to establish a TCP (and TLS) connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Time allowed for a whole request, body included, in milliseconds.
    pub request_timeout_ms: u64,
    /// Largest response body accepted; larger bodies fail with [`UpstreamError::TooLarge`].
    pub max_response_bytes: u64,
    /// `User-Agent` header sent with every request.
    pub user_agent: String,
    /// Redirect hops followed before giving up (0 returns the 3xx response as is; capped at 10).
    pub max_redirects: usize,
    /// Idle keep-alive connections kept per host. At least the engine's concurrency, or bursts
    /// to one receiver open (and throw away) new connections.
    pub max_idle_per_host: usize,
    /// Request limits per upstream origin, shared by every pipeline stage calling it:
    /// `"https://api.example.com" = [{limit = 10, per = "1s"}, {limit = 1000, per = "1m"}]`.
    pub rate_limits: std::collections::BTreeMap<String, Vec<RateWindow>>,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            connect_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            max_response_bytes: 16 * 1024 * 1024,
            user_agent: concat!("gleaner/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_redirects: 5,
            max_idle_per_host: 256,
            rate_limits: Default::default(),
        }
    }
}

/// (De)serialises the allow-list as strings, accepting both CIDR (`"10.0.0.0/8"`) and bare
/// addresses (`"127.0.0.1"`, meaning `/32` or `/128`), so configuration stays readable.
pub mod allow_list {
    use std::net::IpAddr;

    use ipnet::IpNet;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(nets: &[IpNet], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(nets.iter().map(ToString::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
        let raw = Vec::<String>::deserialize(deserializer)?;
        raw.iter()
            .map(|s| parse(s).map_err(D::Error::custom))
            .collect()
    }

    /// Parses one allow-list entry: a network in CIDR form or a single address.
    pub fn parse(entry: &str) -> Result<IpNet, String> {
        let entry = entry.trim();
        if let Ok(net) = entry.parse::<IpNet>() {
            return Ok(net);
        }
        entry.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
            format!("invalid allow-list entry `{entry}`: expected a network like 10.0.0.0/8 or an address like 127.0.0.1")
        })
    }
}

/// Whether a failed outgoing call is worth retrying, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retryability {
    /// A later attempt may succeed; `after` is the delay the upstream asked for, if any.
    Retry { after: Option<Duration> },
    /// Retrying cannot help (bad request, refused address, oversized or undecodable body).
    Permanent,
}

/// The error every outgoing call returns, carrying what retry and reporting logic need.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream answered with a non-success status.
    #[error("upstream answered with status {status}")]
    Status {
        status: u16,
        /// The first 1 KiB of the response body, lossily decoded as UTF-8.
        body: String,
        /// The delay asked for by a `Retry-After` header, capped at 24 h.
        retry_after: Option<Duration>,
    },
    /// The request could not be completed at the network level (connect, TLS, reset, timeout).
    #[error("transport error{}: {message}", if *timeout { " (timed out)" } else { "" })]
    Transport { message: String, timeout: bool },
    /// The outgoing request policy refused the request (address guard, scheme, redirect limit).
    #[error("request refused: {reason}")]
    Refused { reason: String },
    /// The response body is larger than the configured limit.
    #[error("response body exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The response body could not be decoded into the expected shape.
    #[error("undecodable response body: {message}")]
    Decode { message: String },
    /// The URL or request could not be built.
    #[error("invalid url: {message}")]
    InvalidUrl { message: String },
}

impl UpstreamError {
    /// The one place that classifies failures for retry: network errors, timeouts and statuses
    /// 408, 425, 429 and 5xx are retryable; everything else is permanent.
    pub fn retryability(&self) -> Retryability {
        match self {
            Self::Status {
                status,
                retry_after,
                ..
            } => match status {
                408 | 425 | 429 | 500..=599 => Retryability::Retry {
                    after: *retry_after,
                },
                _ => Retryability::Permanent,
            },
            Self::Transport { .. } => Retryability::Retry { after: None },
            Self::Refused { .. }
            | Self::TooLarge { .. }
            | Self::Decode { .. }
            | Self::InvalidUrl { .. } => Retryability::Permanent,
        }
    }

    /// The HTTP status of the upstream answer, if the failure is a status.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The beginning of the upstream's error body, if the failure is a status.
    pub fn response_excerpt(&self) -> Option<&str> {
        match self {
            Self::Status { body, .. } => Some(body),
            _ => None,
        }
    }
}

/// Reads `Retry-After` as delta-seconds or an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`),
/// relative to `now`; a date in the past gives zero, and the result is capped at 24 h.
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let delay = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let at = parse_imf_fixdate(value)?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// Parses the HTTP date form `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 IMF-fixdate).
fn parse_imf_fixdate(value: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (_weekday, rest) = value.split_once(", ")?;
    let mut parts = rest.split(' ');
    let day: u32 = parse_digits(parts.next()?, 2)?;
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? as u32 + 1;
    let year: i64 = i64::from(parse_digits(parts.next()?, 4)?);
    let mut clock = parts.next()?.split(':');
    let hour = parse_digits(clock.next()?, 2)?;
    let minute = parse_digits(clock.next()?, 2)?;
    let second = parse_digits(clock.next()?, 2)?;
    if parts.next()? != "GMT" || parts.next().is_some() || clock.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    let secs = u64::try_from(secs).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Parses exactly `len` ASCII digits.
fn parse_digits(s: &str, len: usize) -> Option<u32> {
    if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The first [`EXCERPT_BYTES`] of a body as text, without a torn character at the cut.
fn body_excerpt(body: &[u8]) -> String {
    let mut cut = &body[..body.len().min(EXCERPT_BYTES)];
    if let Err(e) = std::str::from_utf8(cut)
        && e.error_len().is_none()
    {
        cut = &cut[..e.valid_up_to()];
    }
    String::from_utf8_lossy(cut).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(retry_after: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(retry_after).unwrap());
        h
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // 1994-11-06 08:49:37
        assert_eq!(
            parse_retry_after(&headers("7"), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(&headers(" 120 "), now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(&headers("Sun, 06 Nov 1994 08:50:07 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after(&headers("Sun, 06 Nov 1994 08:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after(&headers("9999999"), now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after(&headers("soon"), now), None);
        assert_eq!(parse_retry_after(&headers("-5"), now), None);
        assert_eq!(parse_retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn imf_fixdate_matches_known_epochs() {
        let at = |s| {
            parse_imf_fixdate(s)
                .map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs())
        };
        assert_eq!(at("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(at("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(at("Tue, 29 Feb 2028 12:00:00 GMT"), Some(1_835_438_400));
        assert_eq!(at("Sun, 06 Nov 1994 08:49:37 UTC"), None);
        assert_eq!(at("Sunday, 06-Nov-94 08:49:37 GMT"), None);
    }

    #[test]
    fn retry_classification() {
        let status = |status| UpstreamError::Status {
            status,
            body: String::new(),
            retry_after: Some(Duration::from_secs(3)),
        };
        for code in [408, 425, 429, 500, 502, 503, 504, 599] {
            assert_eq!(
                status(code).retryability(),
                Retryability::Retry {
                    after: Some(Duration::from_secs(3))
                },
                "{code}"
            );
        }
        for code in [300, 400, 401, 403, 404, 409, 410, 422] {
            assert_eq!(
                status(code).retryability(),
                Retryability::Permanent,
                "{code}"
            );
        }
        let transport = UpstreamError::Transport {
            message: "reset".into(),
            timeout: true,
        };
        assert_eq!(
            transport.retryability(),
            Retryability::Retry { after: None }
        );
        for permanent in [
            UpstreamError::Refused { reason: "x".into() },
            UpstreamError::TooLarge { limit: 1 },
            UpstreamError::Decode {
                message: "x".into(),
            },
            UpstreamError::InvalidUrl {
                message: "x".into(),
            },
        ] {
            assert_eq!(permanent.retryability(), Retryability::Permanent);
            assert_eq!(permanent.http_status(), None);
            assert_eq!(permanent.response_excerpt(), None);
        }
        let s = UpstreamError::Status {
            status: 404,
            body: "nope".into(),
            retry_after: None,
        };
        assert_eq!(s.http_status(), Some(404));
        assert_eq!(s.response_excerpt(), Some("nope"));
    }

    #[test]
    fn excerpt_is_bounded_and_never_tears_a_character() {
        let long = "é".repeat(1000); // 2000 bytes
        let excerpt = body_excerpt(long.as_bytes());
        assert_eq!(excerpt.len(), 1024);
        assert!(!excerpt.contains('\u{FFFD}'));
        let odd = format!("a{}", "é".repeat(600));
        let excerpt = body_excerpt(odd.as_bytes());
        assert_eq!(excerpt.len(), 1023);
        assert_eq!(body_excerpt(b"\xff\xfeok"), "\u{FFFD}\u{FFFD}ok");
    }

    #[test]
    fn config_defaults_and_allow_list_forms() {
        let config: NetConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, NetConfig::default());
        assert_eq!(config.max_response_bytes, 16 * 1024 * 1024);
        assert!(config.user_agent.starts_with("gleaner/"));

        let config: NetConfig =
            serde_json::from_str(r#"{"allow": ["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"]}"#)
                .unwrap();
        let shown: Vec<String> = config.allow.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["127.0.0.1/32", "10.0.0.0/8", "::1/128", "fd00::/8"]);

        let round: NetConfig =
            serde_json::from_value(serde_json::to_value(&config).unwrap()).unwrap();
        assert_eq!(round, config);

        assert!(serde_json::from_str::<NetConfig>(r#"{"allow": ["localhost"]}"#).is_err());
        assert!(serde_json::from_str::<NetConfig>(r#"{"allow": ["10.0.0.0/33"]}"#).is_err());
        assert!(serde_json::from_str::<NetConfig>(r#"{"proxy": "x"}"#).is_err());
    }
}
