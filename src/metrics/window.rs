//! Tumbling windows: a series' lifetime aggregate plus one aggregate per fixed-width window.
//!
//! Windows are aligned to the epoch (`start = at − at mod width`), so every series shares the
//! same boundaries. Only the `keep` most recent windows are retained, counted back from the
//! newest window seen (or, when reading, from the window containing `now`): a window is kept
//! while `start > newest_start − keep × width`. An event older than that only updates the
//! lifetime aggregate. A window's aggregate starts at the window start, so its `first_at` is the
//! window start and a meter's `mean_rate` is events per second since the window opened.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::MetricType;
use super::aggregate::{Aggregate, AggregateView};
use crate::clock::Millis;

/// A series' lifetime aggregate and its recent tumbling windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Windowed {
    lifetime: Aggregate,
    /// Ascending by start, without duplicates.
    windows: VecDeque<Window>,
    width_ms: Millis,
    keep: usize,
}

/// One tumbling window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub start: Millis,
    pub aggregate: Aggregate,
}

/// One window as readers see it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WindowView {
    /// Window start, inclusive, ms since the epoch.
    pub start: Millis,
    /// Window end, exclusive, ms since the epoch.
    pub end: Millis,
    pub aggregate: AggregateView,
}

/// The lifetime view and the retained windows, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowedView {
    pub aggregate: AggregateView,
    pub windows: Vec<WindowView>,
}

impl Windowed {
    /// An empty series starting at `at`. A zero `width` or `keep` disables windows.
    pub fn new(kind: MetricType, at: Millis, width: Duration, keep: usize) -> Self {
        Self {
            lifetime: Aggregate::new(kind, at),
            windows: VecDeque::new(),
            width_ms: width.as_millis().min(i64::MAX as u128) as Millis,
            keep,
        }
    }

    pub fn kind(&self) -> MetricType {
        self.lifetime.kind()
    }

    pub fn lifetime(&self) -> &Aggregate {
        &self.lifetime
    }

    pub fn windows(&self) -> impl Iterator<Item = &Window> {
        self.windows.iter()
    }

    /// Changes the window geometry; windows of another width are dropped (the lifetime stays).
    pub fn rewindow(&mut self, width: Duration, keep: usize) {
        let width_ms = width.as_millis().min(i64::MAX as u128) as Millis;
        if width_ms != self.width_ms {
            self.windows.clear();
            self.width_ms = width_ms;
        }
        self.keep = keep;
        if let Some(newest) = self.windows.back().map(|window| window.start) {
            self.drop_before(self.oldest_kept(newest));
        }
    }

    fn windows_enabled(&self) -> bool {
        self.width_ms > 0 && self.keep > 0
    }

    fn window_start(&self, at: Millis) -> Millis {
        at - at.rem_euclid(self.width_ms)
    }

    fn oldest_kept(&self, newest_start: Millis) -> Millis {
        let span = self.width_ms.saturating_mul(self.keep as Millis - 1);
        newest_start.saturating_sub(span)
    }

    fn drop_before(&mut self, oldest: Millis) {
        while self
            .windows
            .front()
            .is_some_and(|window| window.start < oldest)
        {
            self.windows.pop_front();
        }
    }

    /// Applies one event to the lifetime aggregate and to the window containing `at`.
    pub fn apply(&mut self, value: f64, at: Millis) {
        self.lifetime.apply(value, at);
        if !self.windows_enabled() {
            return;
        }
        let start = self.window_start(at);
        let newest = self
            .windows
            .back()
            .map_or(start, |window| window.start.max(start));
        let oldest = self.oldest_kept(newest);
        if start < oldest {
            return;
        }
        let position = self.windows.partition_point(|window| window.start < start);
        let exists = self
            .windows
            .get(position)
            .is_some_and(|window| window.start == start);
        if !exists {
            // Grow from one window, not `VecDeque`'s first four: most series see few windows
            // before they go idle, and with 100 000 series the spare windows added up.
            if self.windows.len() == self.windows.capacity() {
                let more = self.windows.len().clamp(1, self.keep);
                self.windows.reserve_exact(more);
            }
            let aggregate = Aggregate::new(self.kind(), start);
            self.windows.insert(position, Window { start, aggregate });
        }
        self.windows[position].aggregate.apply(value, at);
        self.drop_before(oldest);
    }

    /// The lifetime view and the windows still retained at `now`, oldest first. A window's
    /// figures are computed at the earlier of `now` and its end.
    pub fn view(&self, now: Millis) -> WindowedView {
        let aggregate = self.lifetime.view(now);
        if !self.windows_enabled() {
            return WindowedView {
                aggregate,
                windows: Vec::new(),
            };
        }
        let newest = self
            .windows
            .back()
            .map_or(i64::MIN, |window| window.start)
            .max(self.window_start(now));
        let oldest = self.oldest_kept(newest);
        let windows = self
            .windows
            .iter()
            .filter(|window| window.start >= oldest)
            .map(|window| {
                let end = window.start.saturating_add(self.width_ms);
                WindowView {
                    start: window.start,
                    end,
                    aggregate: window.aggregate.view(now.min(end)),
                }
            })
            .collect();
        WindowedView { aggregate, windows }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter_values(view: &WindowedView) -> Vec<(Millis, u64)> {
        view.windows
            .iter()
            .map(|window| (window.start, window.aggregate.count()))
            .collect()
    }

    #[test]
    fn events_land_in_their_window_and_old_windows_are_dropped() {
        let mut series = Windowed::new(MetricType::Counter, 0, Duration::from_secs(60), 3);
        for at in [0, 59_999, 60_000, 130_000, 200_000, 250_000] {
            series.apply(1.0, at);
        }
        let view = series.view(250_000);
        assert_eq!(view.aggregate.count(), 6);
        // Windows at 60 000 (dropped: older than 3 windows back from 240 000), 120 000, 180 000, 240 000.
        assert_eq!(
            counter_values(&view),
            vec![(120_000, 1), (180_000, 1), (240_000, 1)]
        );
        assert_eq!(series.windows().count(), 3);
    }

    #[test]
    fn late_events_fill_earlier_windows_or_only_the_lifetime() {
        let mut series = Windowed::new(MetricType::Counter, 0, Duration::from_secs(10), 2);
        series.apply(1.0, 25_000);
        series.apply(1.0, 15_000); // inserted before
        series.apply(1.0, 1_000); // older than the kept span: lifetime only
        let view = series.view(25_000);
        assert_eq!(view.aggregate.count(), 3);
        assert_eq!(counter_values(&view), vec![(10_000, 1), (20_000, 1)]);
    }

    #[test]
    fn reading_hides_windows_that_fell_out_while_idle() {
        let mut series = Windowed::new(MetricType::Meter, 0, Duration::from_secs(10), 2);
        (0..10).for_each(|i| series.apply(1.0, i * 1_000));
        let during = series.view(10_000);
        assert_eq!(during.windows.len(), 1);
        assert_eq!(during.windows[0].end, 10_000);
        let AggregateView::Meter(window) = &during.windows[0].aggregate else {
            panic!("not a meter")
        };
        assert_eq!(window.mean_rate, Some(1.0));
        assert_eq!(series.view(19_999).windows.len(), 1);
        assert!(series.view(20_000).windows.is_empty());
    }

    #[test]
    fn zero_keep_disables_windows_and_serde_round_trips() {
        let mut series = Windowed::new(MetricType::Timer, 0, Duration::from_secs(10), 0);
        series.apply(3.0, 5);
        assert!(series.view(5).windows.is_empty());
        let mut windowed = Windowed::new(MetricType::Gauge, 0, Duration::from_secs(10), 4);
        windowed.apply(3.0, 5);
        windowed.apply(4.0, 15_000);
        let json = serde_json::to_string(&windowed).unwrap();
        let back: Windowed = serde_json::from_str(&json).unwrap();
        assert_eq!(back, windowed);
        windowed.rewindow(Duration::from_secs(5), 4);
        assert_eq!(windowed.windows().count(), 0);
        assert_eq!(windowed.lifetime().count(), 2);
    }
}
