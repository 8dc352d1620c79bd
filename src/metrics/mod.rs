//! Metric series: events, aggregates, percentiles, tumbling windows and the StatsD listener.
//!
//! Pure in-memory logic; durability (the ingest log, snapshots) and HTTP live elsewhere.
//!
//! # Series and events
//!
//! A series is a name plus up to 32 tags, written `name` or `name{k1=v1,k2=v2}` (tags sorted;
//! see [`SeriesKey`]). Every event carries a type, and a series keeps the type of its first
//! event: an event of another type is refused, and so is the whole batch it came in. Values
//! must be finite numbers. Time is the server's receive time in milliseconds since the epoch;
//! events carry no timestamp of their own.
//!
//! # Types
//!
//! Every aggregate reports `count` (events applied), `first_at` (first event; for a window, the
//! window start) and `updated_at` (latest event).
//!
//! - **counter**: `value` is the sum of the events' values; negative values decrement. Each
//!   event counts once, the first one included (5, 3, 10 → 18).
//! - **gauge**: `value` is the last value received, with the `min` and `max` seen.
//! - **meter**: how often something happens; each event is one occurrence whatever its value
//!   (the last value is `value`, their sum `sum`). `mean_rate` is events per second since the
//!   first event, measured when read: `count / ((now − first_at) / 1000)`, `null` when no time
//!   has passed (4 events 250 ms apart, read at the fourth: 4 / 0.75 s = 5.33/s).
//!   `m1_rate`, `m5_rate` and `m15_rate` are Dropwizard's exponentially weighted moving rates
//!   (5 s ticks, `α = 1 − e^(−5/60/minutes)`), in events per second; they decay while the
//!   meter is idle and only move on completed 5 s ticks.
//! - **timer** (alias **histogram**): the distribution of the values: `sum`, `min`, `max`,
//!   `mean`, `stddev` (population: divided by `count`), and the percentiles `p50`, `p90`, `p95`,
//!   `p99`, `p999` from a DDSketch, each within 1 % of the exact value of rank
//!   `floor(q × (count − 1))`.
//!
//! # Windows
//!
//! Besides its lifetime aggregate, each series keeps the last N tumbling windows of a fixed
//! width (e.g. 60 s), aligned to the epoch. An event goes to the lifetime aggregate and to the
//! window that contains its time; windows older than N widths before the newest disappear.
//!
//! # StatsD
//!
//! `name:value|c|g|ms|h|d|m` with `|@rate` and DogStatsD `|#tag:value` tags; see [`statsd`].

mod aggregate;
mod batch;
mod claims;
mod config;
mod event;
mod ewma;
pub mod exposition;
mod ingest;
mod registry;
pub mod sketch;
pub mod statsd;
mod window;
pub mod wire;

pub use aggregate::{
    Aggregate, AggregateView, CounterState, CounterView, GaugeState, GaugeView, MeterState,
    MeterView, TimerState, TimerView,
};
pub use batch::{BatchConflict, EventBatch, SeriesValues};
pub use config::MetricsConfig;
pub use event::{
    Event, EventError, EventInput, MAX_NAME_LEN, MAX_TAG_KEY_LEN, MAX_TAG_VALUE_LEN, MAX_TAGS,
    MetricType, SeriesKey,
};
pub use ewma::{MovingRates, TICK_MS};
pub use ingest::{IngestError, Ingested, MetricsService, SnapshotTaken};
pub use registry::{ListFilter, MetricsRegistry, SeriesView, TypeMismatch};
pub use sketch::Sketch;
pub use statsd::{StatsdError, StatsdListener, StatsdStats};
pub use window::{Window, WindowView, Windowed, WindowedView};
