//! Request rate limits with several windows at once ("10 per second and 1000 per minute"),
//! exact over any span: each window keeps the times of its last `limit` grants, so no span of
//! `per` ever holds more than `limit` requests, wherever it starts. Time comes from the
//! injected clock, so tests can run hours of limits without waiting.
//!
//! Each window is held [`MARGIN_MS`] longer than `per`: a request granted at `t` reaches the
//! upstream a little after `t`, and without the margin two grants exactly `per` apart could
//! arrive less than `per` apart, one request too many in the upstream's own count.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::{Millis, SharedClock};
use crate::config::duration;

/// Slack added to every window against the jitter between a grant and the request's arrival.
pub const MARGIN_MS: Millis = 10;

/// At most `limit` requests in any span of `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateWindow {
    pub limit: u32,
    #[serde(with = "duration")]
    pub per: Duration,
}

impl RateWindow {
    /// Refuses windows that could never grant or never limit.
    pub fn validate(&self) -> Result<(), String> {
        if self.limit == 0 {
            return Err("rate limit: limit must be at least 1".into());
        }
        if self.per.is_zero() || self.per > Duration::from_secs(31 * 86_400) {
            return Err("rate limit: per must be between 1ms and 31d".into());
        }
        if self.limit > 1_000_000 {
            return Err("rate limit: limit must be at most 1000000".into());
        }
        Ok(())
    }
}

/// What a limiter has cost its callers so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WaitStats {
    /// Requests that had to wait.
    pub waits: u64,
    /// Time spent waiting, in milliseconds.
    pub waited_ms: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Per window, the grant times still inside it, oldest first.
    grants: Vec<VecDeque<Millis>>,
    /// Nothing is granted before this (an upstream's `Retry-After`).
    hold_until: Millis,
    stats: WaitStats,
}

/// One limiter: its windows all apply to every request.
#[derive(Debug)]
pub struct RateLimiter {
    windows: Vec<RateWindow>,
    state: Mutex<State>,
}

impl RateLimiter {
    pub fn new(windows: Vec<RateWindow>) -> Self {
        let grants = windows.iter().map(|_| VecDeque::new()).collect();
        Self {
            windows,
            state: Mutex::new(State {
                grants,
                ..State::default()
            }),
        }
    }

    /// Grants now and returns `None`, or returns the earliest time worth asking again.
    pub fn try_acquire(&self, now: Millis) -> Option<Millis> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if now < state.hold_until {
            return Some(state.hold_until);
        }
        let mut ready_at = None;
        for (window, grants) in self.windows.iter().zip(state.grants.iter_mut()) {
            let per = window.per.as_millis() as Millis + MARGIN_MS;
            while grants.front().is_some_and(|&at| at + per <= now) {
                grants.pop_front();
            }
            if grants.len() >= window.limit as usize {
                let at = grants[grants.len() - window.limit as usize] + per;
                ready_at = Some(ready_at.map_or(at, |other: Millis| other.max(at)));
            }
        }
        if ready_at.is_some() {
            return ready_at;
        }
        for grants in &mut state.grants {
            grants.push_back(now);
        }
        None
    }

    /// Waits until every window has room, then takes it.
    pub async fn acquire(&self, clock: &SharedClock) {
        let started = clock.now();
        let mut waited = false;
        while let Some(at) = self.try_acquire(clock.now()) {
            waited = true;
            clock.sleep_until(at).await;
        }
        if waited {
            let mut state = self
                .state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state.stats.waits += 1;
            state.stats.waited_ms += (clock.now() - started).max(0) as u64;
        }
    }

    /// Grants nothing before `until` (the upstream said `Retry-After`).
    pub fn hold_until(&self, until: Millis) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.hold_until = state.hold_until.max(until);
    }

    pub fn stats(&self) -> WaitStats {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .stats
    }
}

/// The limiters of upstream origins (`[net.rate_limits]`), shared by every caller of that
/// origin in the process.
#[derive(Debug, Clone, Default)]
pub struct UpstreamLimits {
    limiters: Arc<HashMap<String, Arc<RateLimiter>>>,
}

impl UpstreamLimits {
    /// One limiter per configured origin (`scheme://host[:port]`).
    pub fn new(config: &BTreeMap<String, Vec<RateWindow>>) -> Self {
        let limiters = config
            .iter()
            .map(|(origin, windows)| {
                let origin = crate::connectors::origin_of(origin).unwrap_or_else(|| origin.clone());
                (origin, Arc::new(RateLimiter::new(windows.clone())))
            })
            .collect();
        Self {
            limiters: Arc::new(limiters),
        }
    }

    /// The limiter of the origin of `url`, if one is configured.
    pub fn for_url(&self, url: &str) -> Option<Arc<RateLimiter>> {
        let origin = crate::connectors::origin_of(url)?;
        self.limiters.get(&origin).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn window(limit: u32, per_ms: u64) -> RateWindow {
        RateWindow {
            limit,
            per: Duration::from_millis(per_ms),
        }
    }

    /// Grants as fast as allowed over `span` ms and returns the grant times.
    fn grants(limiter: &RateLimiter, span: Millis) -> Vec<Millis> {
        let mut now = 0;
        let mut granted = Vec::new();
        while now < span {
            match limiter.try_acquire(now) {
                None => granted.push(now),
                Some(at) => now = at.max(now + 1),
            }
        }
        granted
    }

    #[test]
    fn no_span_of_any_window_holds_more_than_its_limit() {
        let limiter = RateLimiter::new(vec![window(5, 1_000), window(12, 10_000)]);
        let granted = grants(&limiter, 60_000);
        for (limit, per) in [(5usize, 1_000), (12, 10_000)] {
            for (index, &start) in granted.iter().enumerate() {
                let inside = granted[index..]
                    .iter()
                    .take_while(|&&at| at < start + per)
                    .count();
                assert!(inside <= limit, "{inside} grants in {per} ms from {start}");
            }
        }
        assert_eq!(granted.len(), 12 * 6, "the larger window binds");
    }

    #[test]
    fn a_hold_stops_grants_until_it_ends() {
        let limiter = RateLimiter::new(vec![window(100, 1_000)]);
        limiter.hold_until(5_000);
        assert_eq!(limiter.try_acquire(10), Some(5_000));
        assert_eq!(limiter.try_acquire(5_000), None);
    }

    #[tokio::test]
    async fn acquire_waits_on_the_injected_clock_and_counts_the_wait() {
        let clock = ManualClock::new(0);
        let shared: SharedClock = Arc::new(clock.clone());
        let limiter = Arc::new(RateLimiter::new(vec![window(1, 1_000)]));
        limiter.acquire(&shared).await;
        let second = tokio::spawn({
            let limiter = limiter.clone();
            let shared = shared.clone();
            async move { limiter.acquire(&shared).await }
        });
        tokio::task::yield_now().await;
        assert!(!second.is_finished());
        clock.advance(Duration::from_millis(999));
        tokio::task::yield_now().await;
        assert!(
            !second.is_finished(),
            "a window holds a little longer than `per`"
        );
        clock.advance(Duration::from_millis(1 + MARGIN_MS as u64));
        second.await.expect("granted");
        assert_eq!(
            limiter.stats(),
            WaitStats {
                waits: 1,
                waited_ms: 1_000 + MARGIN_MS as u64
            }
        );
    }

    #[test]
    fn upstream_limits_match_by_origin() {
        let limits = UpstreamLimits::new(&BTreeMap::from([(
            "http://127.0.0.1:8080".to_owned(),
            vec![window(1, 1_000)],
        )]));
        assert!(limits.for_url("http://127.0.0.1:8080/messages/3").is_some());
        assert!(limits.for_url("http://127.0.0.1:8081/messages").is_none());
    }
}
