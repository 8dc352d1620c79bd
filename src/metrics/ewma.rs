//! Dropwizard-style exponentially weighted moving rates (1, 5 and 15 minutes) for meters.
//!
//! Every 5 s tick folds the events counted since the previous tick into each rate:
//! `rate += α × (events / 5 s − rate)` with `α = 1 − e^(−5 / 60 / minutes)`; the first tick
//! sets the rate to its instant value. Ticks are aligned to the meter's start and caught up
//! lazily from event and read timestamps, so an idle meter decays without a background task:
//! after one tick that folds the pending events, `n` empty ticks multiply a rate by
//! `e^(−5n / 60 / minutes)` in one step. Rates are events per second and only reflect completed
//! ticks (0 during the first 5 s, as in Dropwizard).

use serde::{Deserialize, Serialize};

use crate::clock::Millis;

/// Interval between two ticks.
pub const TICK_MS: Millis = 5_000;

const WINDOWS_MINUTES: [f64; 3] = [1.0, 5.0, 15.0];

/// The three moving rates of a meter and the events not yet folded into them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MovingRates {
    last_tick: Millis,
    uncounted: u64,
    initialized: bool,
    /// Events per second over 1, 5 and 15 minutes.
    rates: [f64; 3],
}

impl MovingRates {
    /// Rates whose ticks fall at `start + k × TICK_MS`.
    pub fn new(start: Millis) -> Self {
        Self {
            last_tick: start,
            uncounted: 0,
            initialized: false,
            rates: [0.0; 3],
        }
    }

    /// Counts one event at `at`.
    pub fn mark(&mut self, at: Millis) {
        self.catch_up(at);
        self.uncounted += 1;
    }

    /// The 1-, 5- and 15-minute rates (events per second) as of `now`, without changing state.
    pub fn at(&self, now: Millis) -> [f64; 3] {
        let mut copy = *self;
        copy.catch_up(now);
        copy.rates
    }

    fn catch_up(&mut self, now: Millis) {
        let ticks = (now - self.last_tick).div_euclid(TICK_MS);
        if ticks <= 0 {
            return;
        }
        let instant_rate = self.uncounted as f64 / (TICK_MS as f64 / 1000.0);
        let idle_ticks = (ticks - 1) as f64;
        for (rate, minutes) in self.rates.iter_mut().zip(WINDOWS_MINUTES) {
            let keep_per_tick = (-(TICK_MS as f64 / 1000.0) / 60.0 / minutes).exp();
            if self.initialized {
                *rate += (1.0 - keep_per_tick) * (instant_rate - *rate);
            } else {
                *rate = instant_rate;
            }
            *rate *= keep_per_tick.powf(idle_ticks);
        }
        self.initialized = true;
        self.uncounted = 0;
        self.last_tick += ticks * TICK_MS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same rates computed tick by tick, as Dropwizard does.
    fn tick_by_tick(events_per_tick: &[u64]) -> [f64; 3] {
        let mut rates = [0.0; 3];
        for (i, events) in events_per_tick.iter().enumerate() {
            let instant = *events as f64 / 5.0;
            for (rate, minutes) in rates.iter_mut().zip(WINDOWS_MINUTES) {
                let alpha = 1.0 - (-5.0 / 60.0 / minutes).exp();
                if i == 0 {
                    *rate = instant;
                } else {
                    *rate += alpha * (instant - *rate);
                }
            }
        }
        rates
    }

    #[test]
    fn lazy_catch_up_matches_ticking_every_five_seconds() {
        let mut rates = MovingRates::new(0);
        // 10 events in the first tick, 5 in the second, then 30 idle ticks.
        (0..10).for_each(|i| rates.mark(i * 400));
        (0..5).for_each(|i| rates.mark(5_000 + i * 900));
        let mut expected_ticks = vec![10, 5];
        expected_ticks.extend([0; 30]);
        let expected = tick_by_tick(&expected_ticks);
        let got = rates.at(32 * TICK_MS);
        for (got, expected) in got.iter().zip(expected) {
            assert!(
                (got - expected).abs() <= 1e-12 * expected.max(1.0),
                "{got} vs {expected}"
            );
        }
    }

    #[test]
    fn first_tick_sets_the_rate_and_reads_do_not_mutate() {
        let mut rates = MovingRates::new(1_000);
        (0..10).for_each(|_| rates.mark(1_000));
        assert_eq!(rates.at(5_999), [0.0; 3]);
        assert_eq!(rates.at(6_000), [2.0; 3]);
        let before = rates;
        let _ = rates.at(1_000_000);
        assert_eq!(rates, before);
    }

    #[test]
    fn one_minute_rate_decays_below_one_percent_after_ten_idle_minutes() {
        let mut rates = MovingRates::new(0);
        (0..600).for_each(|i| rates.mark(i * 100)); // 10/s for a minute
        let busy = rates.at(60_000)[0];
        assert!(busy > 1.0, "{busy}");
        let idle = rates.at(60_000 + 10 * 60_000)[0];
        assert!(idle < busy * 0.01, "{idle} vs {busy}");
        let fifteen = rates.at(60_000 + 10 * 60_000)[2];
        assert!(fifteen > idle, "the 15-minute rate decays more slowly");
    }
}
