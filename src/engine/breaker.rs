//! Circuit breakers per upstream host and per callback endpoint.
//!
//! A breaker watches the last `window` calls to its key (each upstream request, so a
//! three-page collection is three calls). When at least `min_calls` of them are
//! known and the share of retryable failures reaches `failure_ratio`, it opens: steps for that
//! key are deferred (no attempt used up) until `cooldown` has passed. Then one probe goes
//! through (half-open): success closes the breaker, failure opens it again for twice as long,
//! up to `max_cooldown`. A failed probe is a deferral of its step too, not a used attempt: it
//! was made for every waiting step, and charging it to one (the same one each time, as it is
//! due first again) exhausted that step's attempts in a long outage while the others waited.
//!
//! Breakers live in memory per process: they protect upstreams and attempt budgets, and a
//! restart that forgets them costs one probe's worth of failures.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::clock::Millis;
use crate::config::duration;

/// Breaker settings (`[engine.breaker]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// How many recent calls per key are remembered.
    pub window: usize,
    /// Fewest remembered calls before the breaker may open.
    pub min_calls: usize,
    /// Share of failures among the remembered calls that opens the breaker (0–1].
    pub failure_ratio: f64,
    /// How long the breaker stays open the first time.
    #[serde(with = "duration")]
    pub cooldown: Duration,
    /// The longest it stays open after repeated failed probes.
    #[serde(with = "duration")]
    pub max_cooldown: Duration,
    /// How long a half-open probe may take before another is let through.
    #[serde(with = "duration")]
    pub probe_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: 50,
            min_calls: 20,
            failure_ratio: 0.9,
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(600),
            probe_timeout: Duration::from_secs(60),
        }
    }
}

impl BreakerConfig {
    /// Refuses settings that would make a breaker open on nothing or never close.
    pub fn validate(&self) -> Result<(), String> {
        if self.window == 0 || self.min_calls == 0 || self.min_calls > self.window {
            return Err("engine.breaker: need 1 <= min_calls <= window".into());
        }
        if !(self.failure_ratio > 0.0 && self.failure_ratio <= 1.0) {
            return Err("engine.breaker.failure_ratio must be in (0, 1]".into());
        }
        if self.cooldown.is_zero() || self.max_cooldown < self.cooldown {
            return Err("engine.breaker: need 0 < cooldown <= max_cooldown".into());
        }
        Ok(())
    }
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// A breaker as the API and the metrics show it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct BreakerView {
    /// `host <origin>` for an upstream, `endpoint <url>` for a callback receiver.
    pub key: String,
    pub state: BreakerState,
    /// When an open breaker lets its next probe through.
    pub retry_at: Option<Millis>,
    /// Failures among the remembered recent calls.
    pub recent_failures: usize,
    pub recent_calls: usize,
}

/// Whether a call may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Proceed,
    /// The breaker was open and its cooldown is over: this call is the half-open probe, made
    /// on behalf of every step waiting on the breaker.
    Probe,
    /// The breaker is open (or a probe is out): try again at `until`.
    Wait {
        until: Millis,
    },
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Millis },
    HalfOpen { probe_since: Millis },
}

#[derive(Debug)]
struct Breaker {
    phase: Phase,
    /// `true` for a failure, newest last.
    recent: VecDeque<bool>,
    cooldown: Duration,
}

/// Every breaker of the process, by key.
#[derive(Clone)]
pub struct Breakers {
    config: Arc<BreakerConfig>,
    inner: Arc<Mutex<HashMap<String, Breaker>>>,
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Breakers {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config: Arc::new(config),
            inner: Arc::default(),
        }
    }

    /// Whether a call to `key` may go now; an open breaker past its cooldown lets this one
    /// call through as the probe.
    pub fn admit(&self, key: &str, now: Millis) -> Admission {
        let mut breakers = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(breaker) = breakers.get_mut(key) else {
            return Admission::Proceed;
        };
        match breaker.phase {
            Phase::Closed => Admission::Proceed,
            Phase::Open { until } if now < until => Admission::Wait { until },
            Phase::Open { .. } => {
                breaker.phase = Phase::HalfOpen { probe_since: now };
                Admission::Probe
            }
            Phase::HalfOpen { probe_since } => {
                let expires = probe_since.saturating_add(millis(self.config.probe_timeout));
                if now >= expires {
                    breaker.phase = Phase::HalfOpen { probe_since: now };
                    Admission::Probe
                } else {
                    // The probe's answer decides; look again shortly.
                    Admission::Wait {
                        until: expires.min(now.saturating_add(1_000)),
                    }
                }
            }
        }
    }

    /// Records the result of a call that was admitted: `failed` is a retryable failure
    /// (network error, timeout, 5xx, 429…); an answer the caller cannot use but that shows
    /// the other side is up (a 404) is a success here.
    pub fn record(&self, key: &str, failed: bool, now: Millis) {
        let config = &self.config;
        let mut breakers = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !failed && !breakers.contains_key(key) {
            // Healthy keys cost no memory until they fail.
            return;
        }
        let breaker = breakers.entry(key.to_owned()).or_insert_with(|| Breaker {
            phase: Phase::Closed,
            recent: VecDeque::with_capacity(config.window),
            cooldown: config.cooldown,
        });
        match breaker.phase {
            Phase::HalfOpen { .. } if failed => {
                breaker.cooldown = (breaker.cooldown * 2).min(config.max_cooldown);
                breaker.phase = Phase::Open {
                    until: now.saturating_add(millis(breaker.cooldown)),
                };
            }
            Phase::HalfOpen { .. } => {
                breakers.remove(key);
            }
            // Answers to calls admitted before the breaker opened change nothing.
            Phase::Open { .. } => {}
            Phase::Closed => {
                breaker.recent.push_back(failed);
                while breaker.recent.len() > config.window {
                    breaker.recent.pop_front();
                }
                let failures = breaker.recent.iter().filter(|failed| **failed).count();
                let calls = breaker.recent.len();
                if calls >= config.min_calls
                    && failures as f64 >= config.failure_ratio * calls as f64
                {
                    breaker.recent.clear();
                    breaker.phase = Phase::Open {
                        until: now.saturating_add(millis(breaker.cooldown)),
                    };
                } else if failures == 0 {
                    breakers.remove(key);
                }
            }
        }
    }

    /// The breaker of `key` as shown to users (closed when none is kept).
    pub fn view(&self, key: &str) -> BreakerView {
        let breakers = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match breakers.get(key) {
            Some(breaker) => view(key, breaker),
            None => BreakerView {
                key: key.to_owned(),
                state: BreakerState::Closed,
                retry_at: None,
                recent_failures: 0,
                recent_calls: 0,
            },
        }
    }

    /// Every breaker that has seen a failure recently, by key.
    pub fn views(&self) -> Vec<BreakerView> {
        let breakers = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut views: Vec<_> = breakers
            .iter()
            .map(|(key, breaker)| view(key, breaker))
            .collect();
        views.sort_by(|a, b| a.key.cmp(&b.key));
        views
    }
}

fn view(key: &str, breaker: &Breaker) -> BreakerView {
    let (state, retry_at) = match breaker.phase {
        Phase::Closed => (BreakerState::Closed, None),
        Phase::Open { until } => (BreakerState::Open, Some(until)),
        Phase::HalfOpen { .. } => (BreakerState::HalfOpen, None),
    };
    BreakerView {
        key: key.to_owned(),
        state,
        retry_at,
        recent_failures: breaker.recent.iter().filter(|failed| **failed).count(),
        recent_calls: breaker.recent.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers() -> Breakers {
        Breakers::new(BreakerConfig {
            window: 4,
            min_calls: 4,
            failure_ratio: 0.75,
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(25),
            probe_timeout: Duration::from_secs(5),
        })
    }

    #[test]
    fn opens_on_the_failure_ratio_and_not_before() {
        let b = breakers();
        for failed in [true, false, true] {
            b.record("k", failed, 0);
        }
        assert_eq!(b.admit("k", 0), Admission::Proceed, "3 calls < min_calls");
        b.record("k", true, 1);
        assert_eq!(b.view("k").state, BreakerState::Open);
        assert_eq!(b.admit("k", 5_000), Admission::Wait { until: 10_001 });
    }

    #[test]
    fn half_open_lets_one_probe_through_then_closes_on_success() {
        let b = breakers();
        for _ in 0..4 {
            b.record("k", true, 0);
        }
        assert_eq!(b.admit("k", 10_000), Admission::Probe, "the probe");
        assert_eq!(b.view("k").state, BreakerState::HalfOpen);
        assert!(matches!(b.admit("k", 10_001), Admission::Wait { .. }));
        b.record("k", false, 10_002);
        assert_eq!(b.view("k").state, BreakerState::Closed);
        assert_eq!(b.admit("k", 10_003), Admission::Proceed);
    }

    #[test]
    fn failed_probes_double_the_cooldown_up_to_the_cap() {
        let b = breakers();
        for _ in 0..4 {
            b.record("k", true, 0);
        }
        assert_eq!(b.admit("k", 10_000), Admission::Probe);
        b.record("k", true, 10_000);
        assert_eq!(b.view("k").retry_at, Some(30_000), "20 s");
        assert_eq!(b.admit("k", 30_000), Admission::Probe);
        b.record("k", true, 30_000);
        assert_eq!(b.view("k").retry_at, Some(55_000), "capped at 25 s");
    }

    #[test]
    fn a_lost_probe_is_replaced_after_the_probe_timeout() {
        let b = breakers();
        for _ in 0..4 {
            b.record("k", true, 0);
        }
        assert_eq!(b.admit("k", 10_000), Admission::Probe);
        assert!(matches!(b.admit("k", 14_999), Admission::Wait { .. }));
        assert_eq!(b.admit("k", 15_000), Admission::Probe);
    }

    #[test]
    fn healthy_keys_are_not_kept_and_keys_are_independent() {
        let b = breakers();
        b.record("a", false, 0);
        assert!(b.views().is_empty());
        for _ in 0..4 {
            b.record("b", true, 0);
        }
        assert_eq!(b.admit("a", 1), Admission::Proceed);
        assert_eq!(b.views().len(), 1);
        assert_eq!(b.views()[0].key, "b");
    }

    #[test]
    fn config_validation_refuses_nonsense() {
        assert!(BreakerConfig::default().validate().is_ok());
        let bad = BreakerConfig {
            failure_ratio: 0.0,
            ..BreakerConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = BreakerConfig {
            min_calls: 60,
            ..BreakerConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
