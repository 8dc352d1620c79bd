//! When a test server is "down": a manual switch plus outage windows on a time line the test
//! supplies, so a test driving gleaner's `ManualClock` simulates hours of outage with no waiting.
//!
//! Windows are half-open, `[from, until)` in epoch milliseconds; the switch wins over windows.

use std::sync::Arc;

use gleaner::clock::{Clock, ManualClock, Millis, SystemClock};

/// "Now" in epoch milliseconds, as the test wants the servers to see it.
pub type TimeSource = Arc<dyn Fn() -> Millis + Send + Sync>;

/// The wall clock.
pub fn wall_clock() -> TimeSource {
    Arc::new(|| SystemClock.now())
}

/// The time line of `clock`, shared with the app under test.
pub fn manual(clock: &ManualClock) -> TimeSource {
    let clock = clock.clone();
    Arc::new(move || clock.now())
}

/// A manual down switch and a list of outage windows.
#[derive(Debug, Clone, Default)]
pub struct Outage {
    forced_down: bool,
    windows: Vec<(Millis, Millis)>,
}

impl Outage {
    pub fn set_down(&mut self, down: bool) {
        self.forced_down = down;
    }

    /// Down during `[from, until)`.
    pub fn add_window(&mut self, from: Millis, until: Millis) {
        assert!(
            from <= until,
            "outage window {from}..{until} ends before it starts"
        );
        self.windows.push((from, until));
    }

    pub fn is_down(&self, now: Millis) -> bool {
        self.forced_down
            || self
                .windows
                .iter()
                .any(|&(from, until)| from <= now && now < until)
    }
}
