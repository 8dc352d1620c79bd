//! The retry schedule: exponential backoff with full jitter, `Retry-After` honoured, bounded by
//! an attempt count and a time budget.
//!
//! Invariant: a scheduled retry never lies beyond the step's deadline.

use std::time::Duration;

use rand::Rng;

use crate::clock::Millis;

/// The shape of the backoff curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Ceiling of the first retry's delay.
    pub base: Duration,
    /// Largest ceiling any retry's delay may have.
    pub cap: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(600),
        }
    }
}

impl BackoffPolicy {
    /// The ceiling of the delay after `failed` failed attempts: `base · 2^(failed-1)`, capped.
    pub fn ceiling(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(40);
        let ceiling = self.base.as_millis().saturating_mul(1u128 << doublings);
        Duration::from_millis(ceiling.min(self.cap.as_millis()) as u64)
    }

    /// When the next attempt may start after `failed` failed attempts, or `None` when the
    /// attempt count or the time budget is used up.
    ///
    /// The delay is uniform in `[0, ceiling]` (full jitter), but never shorter than
    /// `retry_after`; a time past `deadline` is pulled back to it unless `retry_after` itself
    /// reaches past the deadline, in which case the step is out of budget.
    pub fn next_attempt_at(
        &self,
        failed: u32,
        max_attempts: u32,
        retry_after: Option<Duration>,
        now: Millis,
        deadline: Millis,
        rng: &mut impl Rng,
    ) -> Option<Millis> {
        if failed >= max_attempts || now >= deadline {
            return None;
        }
        let ceiling = self.ceiling(failed).as_millis() as i64;
        let jittered = rng.random_range(0..=ceiling);
        let floor = retry_after.map_or(0, |after| after.as_millis().min(i64::MAX as u128) as i64);
        if now.saturating_add(floor) > deadline {
            return None;
        }
        Some(now.saturating_add(jittered.max(floor)).min(deadline))
    }
}

/// A fixed retry schedule, as webhook senders use (Svix: at once, 5 s, 5 min, 30 min, 2 h,
/// 5 h, 10 h, 10 h): `delays[n]` is the wait before attempt `n + 1`, each jittered by
/// ±`jitter` (a fraction). There are as many attempts as delays.
#[derive(Debug, Clone, PartialEq)]
pub struct FixedSchedule {
    pub delays: Vec<Duration>,
    pub jitter: f64,
}

impl FixedSchedule {
    /// Everything the schedule can wait, at most (jitter included): the time budget a step
    /// on this schedule needs.
    pub fn span(&self) -> Duration {
        let total: Duration = self.delays.iter().sum();
        total.mul_f64(1.0 + self.jitter.clamp(0.0, 1.0))
    }

    /// When attempt `tries + 1` may start after `tries` failed ones, or `None` when the
    /// schedule or the time budget is used up. `retry_after` is a floor; the deadline a ceiling.
    pub fn next_attempt_at(
        &self,
        tries: u32,
        retry_after: Option<Duration>,
        now: Millis,
        deadline: Millis,
        rng: &mut impl Rng,
    ) -> Option<Millis> {
        let delay = self.delays.get(tries as usize)?;
        if now >= deadline {
            return None;
        }
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 {
            rng.random_range((1.0 - jitter)..=(1.0 + jitter))
        } else {
            1.0
        };
        let wait = (delay.as_millis() as f64 * factor) as i64;
        let floor = retry_after.map_or(0, |after| after.as_millis().min(i64::MAX as u128) as i64);
        if now.saturating_add(floor) > deadline {
            return None;
        }
        Some(now.saturating_add(wait.max(floor)).min(deadline))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn svix() -> FixedSchedule {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        FixedSchedule {
            delays: vec![
                Duration::ZERO,
                Duration::from_secs(5),
                minutes(5),
                minutes(30),
                minutes(120),
                minutes(300),
                minutes(600),
                minutes(600),
            ],
            jitter: 0.2,
        }
    }

    #[test]
    fn fixed_schedule_follows_its_delays_then_stops() {
        let schedule = svix();
        let mut rng = StdRng::seed_from_u64(7);
        let far = i64::MAX / 2;
        for tries in 1..8u32 {
            let delay = schedule.delays[tries as usize].as_millis() as i64;
            let at = schedule
                .next_attempt_at(tries, None, 0, far, &mut rng)
                .expect("within the schedule");
            assert!(
                (delay * 8 / 10..=delay * 12 / 10).contains(&at),
                "try {tries}: {at} vs {delay}"
            );
        }
        assert_eq!(schedule.next_attempt_at(8, None, 0, far, &mut rng), None);
        let at = schedule
            .next_attempt_at(1, Some(Duration::from_secs(60)), 0, far, &mut rng)
            .expect("retry-after honoured");
        assert_eq!(at, 60_000, "Retry-After is a floor");
        assert!(schedule.span() > Duration::from_secs(32 * 3600));
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let policy = BackoffPolicy::default();
        assert_eq!(policy.ceiling(1), Duration::from_secs(1));
        assert_eq!(policy.ceiling(2), Duration::from_secs(2));
        assert_eq!(policy.ceiling(5), Duration::from_secs(16));
        assert_eq!(policy.ceiling(11), Duration::from_secs(600));
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_secs(600));
    }

    #[test]
    fn out_of_attempts_or_budget_gives_up() {
        let policy = BackoffPolicy::default();
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            policy.next_attempt_at(3, 3, None, 0, 1_000_000, &mut rng),
            None
        );
        assert_eq!(
            policy.next_attempt_at(1, 3, None, 1_000, 1_000, &mut rng),
            None
        );
        assert_eq!(
            policy.next_attempt_at(1, 3, Some(Duration::from_secs(60)), 0, 30_000, &mut rng),
            None,
            "a Retry-After past the deadline cannot be honoured"
        );
    }

    #[test]
    fn retry_after_is_a_floor() {
        let policy = BackoffPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        let at =
            policy.next_attempt_at(1, 10, Some(Duration::from_secs(7)), 0, 86_400_000, &mut rng);
        assert_eq!(at, Some(7_000));
    }

    proptest! {
        #[test]
        fn schedule_is_bounded_jittered_and_within_budget(
            failed in 1u32..60,
            max_attempts in 1u32..60,
            retry_after_ms in proptest::option::of(0u64..3_600_000),
            now in 0i64..1_000_000_000,
            budget in 0i64..200_000_000,
            base_ms in 1u64..10_000,
            cap_factor in 1u64..1_000,
            seed in any::<u64>(),
        ) {
            let policy = BackoffPolicy {
                base: Duration::from_millis(base_ms),
                cap: Duration::from_millis(base_ms * cap_factor),
            };
            let deadline = now + budget;
            let retry_after = retry_after_ms.map(Duration::from_millis);
            let mut rng = StdRng::seed_from_u64(seed);
            let next = policy.next_attempt_at(failed, max_attempts, retry_after, now, deadline, &mut rng);
            if failed >= max_attempts || now >= deadline {
                prop_assert_eq!(next, None);
            }
            if let Some(at) = next {
                prop_assert!(at >= now, "never in the past");
                prop_assert!(at <= deadline, "never beyond the time budget");
                let delay = (at - now) as u64;
                let ceiling = policy.ceiling(failed).as_millis() as u64;
                let floor = retry_after_ms.unwrap_or(0);
                prop_assert!(delay <= ceiling.max(floor), "bounded by the ceiling or Retry-After");
                prop_assert!(delay >= floor.min((deadline - now) as u64), "Retry-After honoured");
                prop_assert!(policy.ceiling(failed) <= policy.cap, "ceiling capped");
            }
        }

        #[test]
        fn jitter_spreads_over_the_whole_window(seed in any::<u64>()) {
            let policy = BackoffPolicy { base: Duration::from_millis(1000), cap: Duration::from_secs(600) };
            let mut rng = StdRng::seed_from_u64(seed);
            let delays: Vec<i64> = (0..200)
                .filter_map(|_| policy.next_attempt_at(4, 100, None, 0, i64::MAX / 2, &mut rng))
                .collect();
            let low = delays.iter().filter(|d| **d < 4_000).count();
            let high = delays.len() - low;
            prop_assert!(low > 40 && high > 40, "full jitter over [0, 8 s]: {low} low, {high} high");
        }
    }
}
