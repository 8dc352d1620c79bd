//! Per-series aggregation state for the four metric types, and its read-only view.
//!
//! `Aggregate` is the state that is snapshotted; `AggregateView` is what readers see. Reading
//! never mutates: time-dependent figures (mean rate, moving rates) are computed for `now`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::MetricType;
use super::ewma::MovingRates;
use super::sketch::Sketch;
use crate::clock::Millis;

/// The aggregation state of one series (or one window of it).
///
/// The larger meter and timer states are boxed so that counters and gauges, most series in
/// practice, take 80 bytes a window rather than the timer's 192 (serde sees through the box,
/// so snapshots are unchanged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Aggregate {
    Counter(CounterState),
    Gauge(GaugeState),
    Meter(Box<MeterState>),
    Timer(Box<TimerState>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterState {
    first_at: Millis,
    updated_at: Millis,
    count: u64,
    value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GaugeState {
    first_at: Millis,
    updated_at: Millis,
    count: u64,
    value: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterState {
    first_at: Millis,
    updated_at: Millis,
    count: u64,
    value: Option<f64>,
    sum: f64,
    rates: MovingRates,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimerState {
    first_at: Millis,
    updated_at: Millis,
    count: u64,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
    /// Welford's running mean and sum of squared deviations.
    mean: f64,
    m2: f64,
    sketch: Sketch,
}

impl Aggregate {
    /// An empty aggregate whose life (or window) starts at `at`; no event is counted yet.
    pub fn new(kind: MetricType, at: Millis) -> Self {
        match kind {
            MetricType::Counter => Aggregate::Counter(CounterState {
                first_at: at,
                updated_at: at,
                count: 0,
                value: 0.0,
            }),
            MetricType::Gauge => Aggregate::Gauge(GaugeState {
                first_at: at,
                updated_at: at,
                count: 0,
                value: None,
                min: None,
                max: None,
            }),
            MetricType::Meter => Aggregate::Meter(Box::new(MeterState {
                first_at: at,
                updated_at: at,
                count: 0,
                value: None,
                sum: 0.0,
                rates: MovingRates::new(at),
            })),
            MetricType::Timer => Aggregate::Timer(Box::new(TimerState {
                first_at: at,
                updated_at: at,
                count: 0,
                sum: 0.0,
                min: None,
                max: None,
                mean: 0.0,
                m2: 0.0,
                sketch: Sketch::new(),
            })),
        }
    }

    pub fn kind(&self) -> MetricType {
        match self {
            Aggregate::Counter(_) => MetricType::Counter,
            Aggregate::Gauge(_) => MetricType::Gauge,
            Aggregate::Meter(_) => MetricType::Meter,
            Aggregate::Timer(_) => MetricType::Timer,
        }
    }

    /// Events applied so far.
    pub fn count(&self) -> u64 {
        match self {
            Aggregate::Counter(state) => state.count,
            Aggregate::Gauge(state) => state.count,
            Aggregate::Meter(state) => state.count,
            Aggregate::Timer(state) => state.count,
        }
    }

    /// Applies one event with a finite `value` received at `at`.
    pub fn apply(&mut self, value: f64, at: Millis) {
        debug_assert!(value.is_finite(), "non-finite value reached an aggregate");
        if !value.is_finite() {
            return;
        }
        match self {
            Aggregate::Counter(state) => {
                state.count += 1;
                state.value += value;
                state.updated_at = state.updated_at.max(at);
            }
            Aggregate::Gauge(state) => {
                state.count += 1;
                state.value = Some(value);
                state.min = Some(state.min.map_or(value, |min| min.min(value)));
                state.max = Some(state.max.map_or(value, |max| max.max(value)));
                state.updated_at = state.updated_at.max(at);
            }
            Aggregate::Meter(state) => {
                state.count += 1;
                state.value = Some(value);
                state.sum += value;
                state.rates.mark(at);
                state.updated_at = state.updated_at.max(at);
            }
            Aggregate::Timer(state) => {
                state.count += 1;
                state.sum += value;
                state.min = Some(state.min.map_or(value, |min| min.min(value)));
                state.max = Some(state.max.map_or(value, |max| max.max(value)));
                let delta = value - state.mean;
                state.mean += delta / state.count as f64;
                state.m2 += delta * (value - state.mean);
                state.sketch.add(value);
                state.updated_at = state.updated_at.max(at);
            }
        }
    }

    /// What a reader sees at `now`; does not change the state.
    pub fn view(&self, now: Millis) -> AggregateView {
        match self {
            Aggregate::Counter(state) => AggregateView::Counter(CounterView {
                value: state.value,
                count: state.count,
                first_at: state.first_at,
                updated_at: state.updated_at,
            }),
            Aggregate::Gauge(state) => AggregateView::Gauge(GaugeView {
                value: state.value,
                min: state.min,
                max: state.max,
                count: state.count,
                first_at: state.first_at,
                updated_at: state.updated_at,
            }),
            Aggregate::Meter(state) => {
                let elapsed_ms = now - state.first_at;
                let mean_rate =
                    (elapsed_ms > 0).then(|| state.count as f64 / (elapsed_ms as f64 / 1000.0));
                let [m1_rate, m5_rate, m15_rate] = state.rates.at(now);
                AggregateView::Meter(MeterView {
                    count: state.count,
                    value: state.value,
                    sum: state.sum,
                    mean_rate,
                    m1_rate,
                    m5_rate,
                    m15_rate,
                    first_at: state.first_at,
                    updated_at: state.updated_at,
                })
            }
            Aggregate::Timer(state) => {
                let has_values = state.count > 0;
                let quantile = |q: f64| state.sketch.quantile(q);
                AggregateView::Timer(TimerView {
                    count: state.count,
                    sum: state.sum,
                    min: state.min,
                    max: state.max,
                    mean: has_values.then_some(state.mean),
                    stddev: has_values.then(|| (state.m2 / state.count as f64).sqrt()),
                    p50: quantile(0.5),
                    p90: quantile(0.9),
                    p95: quantile(0.95),
                    p99: quantile(0.99),
                    p999: quantile(0.999),
                    first_at: state.first_at,
                    updated_at: state.updated_at,
                })
            }
        }
    }
}

/// The figures of one aggregate at a point in time; serialised without a type tag (the series
/// carries its `kind`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum AggregateView {
    Counter(CounterView),
    Gauge(GaugeView),
    Meter(MeterView),
    Timer(TimerView),
}

impl AggregateView {
    pub fn count(&self) -> u64 {
        match self {
            AggregateView::Counter(view) => view.count,
            AggregateView::Gauge(view) => view.count,
            AggregateView::Meter(view) => view.count,
            AggregateView::Timer(view) => view.count,
        }
    }

    pub fn first_at(&self) -> Millis {
        match self {
            AggregateView::Counter(view) => view.first_at,
            AggregateView::Gauge(view) => view.first_at,
            AggregateView::Meter(view) => view.first_at,
            AggregateView::Timer(view) => view.first_at,
        }
    }

    pub fn updated_at(&self) -> Millis {
        match self {
            AggregateView::Counter(view) => view.updated_at,
            AggregateView::Gauge(view) => view.updated_at,
            AggregateView::Meter(view) => view.updated_at,
            AggregateView::Timer(view) => view.updated_at,
        }
    }
}

/// A counter: the sum of signed deltas.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CounterView {
    /// Sum of every event's value (negative values decrement).
    pub value: f64,
    /// Number of events.
    pub count: u64,
    /// Start of the aggregation (the first event, or the window start), ms since the epoch.
    pub first_at: Millis,
    /// Latest event time, ms since the epoch (`first_at` while empty).
    pub updated_at: Millis,
}

/// A gauge: the last value set, with the extremes seen.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct GaugeView {
    /// The most recently applied value; `null` while empty.
    pub value: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Number of events.
    pub count: u64,
    pub first_at: Millis,
    pub updated_at: Millis,
}

/// A meter: how often events happen. Each event counts as one occurrence; its value is kept as
/// `value` (last) and `sum`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MeterView {
    /// Number of events.
    pub count: u64,
    /// The last event's value; `null` while empty.
    pub value: Option<f64>,
    /// Sum of the events' values.
    pub sum: f64,
    /// Events per second from `first_at` to the time of reading: `count / ((now − first_at) / 1000)`.
    /// `null` when no time has passed (`now == first_at`).
    pub mean_rate: Option<f64>,
    /// Dropwizard 1-minute moving rate, events per second (5 s ticks; decays while idle).
    pub m1_rate: f64,
    /// Dropwizard 5-minute moving rate, events per second.
    pub m5_rate: f64,
    /// Dropwizard 15-minute moving rate, events per second.
    pub m15_rate: f64,
    pub first_at: Millis,
    pub updated_at: Millis,
}

/// A timer (histogram): the distribution of the values.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TimerView {
    /// Number of events.
    pub count: u64,
    pub sum: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Arithmetic mean; `null` while empty.
    pub mean: Option<f64>,
    /// Population standard deviation (divides by `count`, not `count − 1`); `null` while empty.
    pub stddev: Option<f64>,
    /// Median, within 1 % relative error (DDSketch); `null` while empty.
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub first_at: Millis,
    pub updated_at: Millis,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(kind: MetricType, events: &[(f64, Millis)]) -> Aggregate {
        let mut aggregate = Aggregate::new(kind, events[0].1);
        for (value, at) in events {
            aggregate.apply(*value, *at);
        }
        aggregate
    }

    #[test]
    fn counter_counts_the_first_event_once() {
        let counter = applied(MetricType::Counter, &[(5.0, 10), (3.0, 20), (10.0, 30)]);
        let AggregateView::Counter(view) = counter.view(30) else {
            panic!("not a counter")
        };
        assert_eq!(view.value, 18.0);
        assert_eq!(view.count, 3);
        assert_eq!((view.first_at, view.updated_at), (10, 30));
        let decrement = applied(MetricType::Counter, &[(5.0, 0), (-7.0, 1)]);
        assert_eq!(
            decrement.view(1),
            AggregateView::Counter(CounterView {
                value: -2.0,
                count: 2,
                first_at: 0,
                updated_at: 1,
            })
        );
    }

    #[test]
    fn gauge_keeps_last_min_max() {
        let gauge = applied(MetricType::Gauge, &[(5.0, 0), (-1.0, 1), (3.0, 2)]);
        let AggregateView::Gauge(view) = gauge.view(2) else {
            panic!("not a gauge")
        };
        assert_eq!(
            (view.value, view.min, view.max),
            (Some(3.0), Some(-1.0), Some(5.0))
        );
        assert_eq!(view.count, 3);
    }

    #[test]
    fn timer_figures() {
        let timer = applied(MetricType::Timer, &[(100.0, 0), (50.0, 1), (300.0, 2)]);
        let AggregateView::Timer(view) = timer.view(2) else {
            panic!("not a timer")
        };
        assert_eq!(view.count, 3);
        assert_eq!(view.sum, 450.0);
        assert_eq!((view.min, view.max), (Some(50.0), Some(300.0)));
        assert_eq!(view.mean, Some(150.0));
        // Population: sqrt(((−50)² + (−100)² + 150²) / 3).
        let stddev = view.stddev.unwrap();
        assert!(
            (stddev - (35_000.0f64 / 3.0).sqrt()).abs() < 1e-9,
            "{stddev}"
        );
        let p50 = view.p50.unwrap();
        assert!((p50 - 100.0).abs() <= 1.0, "{p50}");
        // Rank floor(0.999 × 2) = 1: the middle value, not the maximum.
        let p999 = view.p999.unwrap();
        assert!((p999 - 100.0).abs() <= 1.0, "{p999}");
    }

    #[test]
    fn empty_timer_has_null_statistics() {
        let AggregateView::Timer(view) = Aggregate::new(MetricType::Timer, 0).view(0) else {
            panic!("not a timer")
        };
        assert_eq!(
            (view.count, view.mean, view.stddev, view.p50),
            (0, None, None, None)
        );
    }

    #[test]
    fn meter_mean_rate_is_per_second() {
        let meter = applied(
            MetricType::Meter,
            &[(7.0, 1_000), (1.0, 1_250), (2.0, 1_500), (3.0, 1_750)],
        );
        let AggregateView::Meter(view) = meter.view(1_750) else {
            panic!("not a meter")
        };
        assert_eq!(view.count, 4);
        assert!((view.mean_rate.unwrap() - 4.0 / 0.75).abs() < 1e-9);
        assert_eq!((view.value, view.sum), (Some(3.0), 13.0));
        let AggregateView::Meter(same_instant) = meter.view(1_000) else {
            panic!("not a meter")
        };
        assert_eq!(same_instant.mean_rate, None);
        let json = serde_json::to_value(&same_instant).unwrap();
        assert!(json["mean_rate"].is_null());
    }

    #[test]
    fn meter_moving_rate_decays_while_idle_without_mutation() {
        let events: Vec<(f64, Millis)> = (0..600).map(|i| (1.0, i * 100)).collect();
        let meter = applied(MetricType::Meter, &events);
        let before = meter.clone();
        let AggregateView::Meter(busy) = meter.view(60_000) else {
            panic!("not a meter")
        };
        let AggregateView::Meter(idle) = meter.view(60_000 + 600_000) else {
            panic!("not a meter")
        };
        assert!(busy.m1_rate > 5.0, "{}", busy.m1_rate);
        assert!(
            idle.m1_rate < busy.m1_rate * 0.01,
            "{} vs {}",
            idle.m1_rate,
            busy.m1_rate
        );
        assert!(idle.m5_rate > idle.m1_rate && idle.m15_rate > idle.m5_rate);
        assert_eq!(meter, before);
    }

    #[test]
    fn snapshot_round_trip() {
        for kind in MetricType::ALL {
            let aggregate = applied(kind, &[(1.5, 0), (2.5, 6_000)]);
            let json = serde_json::to_string(&aggregate).unwrap();
            let back: Aggregate = serde_json::from_str(&json).unwrap();
            assert_eq!(back, aggregate);
            assert_eq!(back.kind(), kind);
        }
    }
}
