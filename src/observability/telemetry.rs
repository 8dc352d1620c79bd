//! Gleaner's own Prometheus metrics (all named `gleaner_*`), rendered in the OpenMetrics text
//! format for `GET /metrics`.
//!
//! Invariant: there is no global registry. Each [`Telemetry`] owns its registry, so tests and
//! several servers in one process never share counters. Hot-path calls (`step_finished`,
//! `http_request`, ...) take a read lock on an existing label set and bump an atomic; the
//! scrape-time gauges come from a [`StoreSnapshot`] passed to [`Telemetry::render`].

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// HTTP `Content-Type` of the body returned by [`Telemetry::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prefix joined to every metric name with `_`.
const PREFIX: &str = "gleaner";

/// Duration buckets in seconds: a 1-2.5-5 series (roughly ×2.5 per bucket) from 1 ms to 60 s.
/// Round bounds keep `le` labels readable in dashboards and alert rules.
const DURATION_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0,
];

/// Label values known in advance are borrowed, so the hot path does not allocate for them.
const KINDS: [&str; 2] = ["collect", "deliver"];
const OUTCOMES: [&str; 5] = ["succeeded", "retrying", "failed", "dead", "fenced"];
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// A label value: borrowed when it is one of the known values, owned otherwise.
type Label = Cow<'static, str>;

/// A histogram family whose members are all built with [`DURATION_BUCKETS`].
type DurationFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    kind: Label,
    outcome: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: Label,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// One upstream's request quota, as a connector reads it from the upstream's answers.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabels {
    connector: String,
    upstream: String,
}

/// Store-derived values reported as gauges at scrape time; the caller reads them from the
/// store just before calling [`Telemetry::render`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreSnapshot {
    /// Job count per status (`gleaner_jobs{status}`).
    pub jobs_by_status: Vec<(String, u64)>,
    /// Step count per state (`gleaner_steps{state}`).
    pub steps_by_state: Vec<(String, u64)>,
    /// Steps ready to run now (`gleaner_queue_depth`).
    pub queue_depth: u64,
    /// Entries in the dead-letter list (`gleaner_dead_letters`).
    pub dead_letters: u64,
    /// Circuit breakers that have seen failures, as `(key, state)`
    /// (`gleaner_circuit_breaker{key, state} 1`); filled from the engine, not the store.
    pub breakers: Vec<(String, String)>,
    /// One sample per pipeline stage; filled from the pipelines, not the store's snapshot.
    pub pipeline_stages: Vec<PipelineStageSample>,
}

/// A pipeline stage's counters (`gleaner_pipeline_messages_total{pipeline, stage, outcome}`),
/// and, while it runs in this process, its queue depth (`gleaner_pipeline_queue_depth`) and
/// rate-limit waits (`gleaner_pipeline_rate_limit_wait_seconds_total`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineStageSample {
    pub pipeline: String,
    pub stage: String,
    pub entered: u64,
    pub done: u64,
    pub retried: u64,
    pub dead: u64,
    pub depth: Option<u64>,
    pub waited_ms: u64,
}

/// Handle to gleaner's metrics; cheap to clone (one `Arc`), safe to use from any thread.
#[derive(Clone, Debug)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    steps_finished: Family<StepLabels, Counter>,
    step_duration: DurationFamily<KindLabels>,
    step_attempts: Family<KindLabels, Counter>,
    jobs_created: Counter,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: DurationFamily<RouteLabels>,
    records_collected: Counter,
    upstream_quota_remaining: Family<QuotaLabels, Gauge>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Creates a fresh registry with every gleaner metric registered (all at zero).
    pub fn new() -> Self {
        let steps_finished = Family::<StepLabels, Counter>::default();
        let step_duration = DurationFamily::<KindLabels>::new_with_constructor(duration_histogram);
        let step_attempts = Family::<KindLabels, Counter>::default();
        let jobs_created = Counter::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration = DurationFamily::<RouteLabels>::new_with_constructor(duration_histogram);
        let records_collected = Counter::default();
        let upstream_quota_remaining = Family::<QuotaLabels, Gauge>::default();

        // Counter names omit `_total`: the OpenMetrics encoder appends it.
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register(
            "steps_finished",
            "Steps that finished an attempt, by kind and outcome",
            steps_finished.clone(),
        );
        registry.register_with_unit(
            "step_duration",
            "Duration of one step attempt, by kind",
            Unit::Seconds,
            step_duration.clone(),
        );
        registry.register(
            "step_attempts",
            "Step attempts started, by kind",
            step_attempts.clone(),
        );
        registry.register("jobs_created", "Jobs created", jobs_created.clone());
        registry.register(
            "http_requests",
            "HTTP requests served, by method, route and status",
            http_requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Duration of HTTP requests, by route",
            Unit::Seconds,
            http_duration.clone(),
        );
        registry.register(
            "records_collected",
            "Records collected from sources",
            records_collected.clone(),
        );
        registry.register(
            "upstream_quota_remaining",
            "Requests an upstream last said it would still accept, by connector and upstream",
            upstream_quota_remaining.clone(),
        );

        Self {
            inner: Arc::new(Inner {
                registry,
                steps_finished,
                step_duration,
                step_attempts,
                jobs_created,
                http_requests,
                http_duration,
                records_collected,
                upstream_quota_remaining,
            }),
        }
    }

    /// Records the end of one step attempt: `kind` is `collect`/`deliver`, `outcome` one of
    /// `succeeded`, `retrying`, `failed`, `dead`, `fenced`.
    pub fn step_finished(&self, kind: &str, outcome: &str, duration: Duration) {
        let kind = known(kind, &KINDS);
        self.inner
            .step_duration
            .get_or_create(&KindLabels { kind: kind.clone() })
            .observe(duration.as_secs_f64());
        self.inner
            .steps_finished
            .get_or_create(&StepLabels {
                kind,
                outcome: known(outcome, &OUTCOMES),
            })
            .inc();
    }

    /// Records the start of one step attempt of the given kind.
    pub fn attempt(&self, kind: &str) {
        self.inner
            .step_attempts
            .get_or_create(&KindLabels {
                kind: known(kind, &KINDS),
            })
            .inc();
    }

    /// Adds `n` newly created jobs.
    pub fn jobs_created(&self, n: u64) {
        self.inner.jobs_created.inc_by(n);
    }

    /// Records one served HTTP request. `route` must be the matched route template (such as
    /// `/v1/jobs/{id}`), never the raw path, to keep the label set bounded.
    pub fn http_request(&self, method: &str, route: &str, status: u16, duration: Duration) {
        self.inner
            .http_duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(duration.as_secs_f64());
        self.inner
            .http_requests
            .get_or_create(&HttpLabels {
                method: known(method, &METHODS),
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    /// Adds `n` records collected from a source.
    pub fn records_collected(&self, n: u64) {
        self.inner.records_collected.inc_by(n);
    }

    /// Sets the latest quota an upstream reported (StackExchange `quota_remaining`, Reddit
    /// `x-ratelimit-remaining`); `upstream` is its origin, so the label set stays bounded.
    pub fn upstream_quota_remaining(&self, connector: &str, upstream: &str, remaining: i64) {
        self.inner
            .upstream_quota_remaining
            .get_or_create(&QuotaLabels {
                connector: connector.to_owned(),
                upstream: upstream.to_owned(),
            })
            .set(remaining);
    }

    /// Renders all metrics plus the snapshot gauges as one OpenMetrics text exposition ending
    /// in `# EOF`; serve it with [`CONTENT_TYPE`]. Safe to call concurrently.
    pub fn render(&self, snapshot: &StoreSnapshot) -> String {
        // The gauges live in a throwaway registry so concurrent scrapes never share state.
        let mut scrape = Registry::with_prefix(PREFIX);
        scrape.register_collector(Box::new(SnapshotCollector(snapshot.clone())));

        let mut out = String::with_capacity(8 * 1024);
        let encoded = encode_registry(&mut out, &self.inner.registry)
            .and_then(|()| encode_registry(&mut out, &scrape))
            .and_then(|()| encode_eof(&mut out));
        if encoded.is_err() {
            tracing::error!("failed to encode metrics; the scrape output is incomplete");
        }
        out
    }
}

/// Builds a histogram with the shared duration buckets (the constructor of the families).
fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Returns the label value borrowed from `known_values` when it is one of them, owned otherwise.
fn known(value: &str, known_values: &[&'static str]) -> Label {
    known_values
        .iter()
        .find(|candidate| **candidate == value)
        .map_or_else(
            || Cow::Owned(value.to_owned()),
            |candidate| Cow::Borrowed(*candidate),
        )
}

/// Encodes one scrape's [`StoreSnapshot`] as gauges.
#[derive(Debug)]
struct SnapshotCollector(StoreSnapshot);

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let snapshot = &self.0;
        encode_labelled_gauge(
            &mut encoder,
            "jobs",
            "Jobs by status.",
            "status",
            &snapshot.jobs_by_status,
        )?;
        encode_labelled_gauge(
            &mut encoder,
            "steps",
            "Steps by state.",
            "state",
            &snapshot.steps_by_state,
        )?;
        encoder
            .encode_descriptor(
                "queue_depth",
                "Steps ready to run now.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&snapshot.queue_depth)?;
        encoder
            .encode_descriptor(
                "dead_letters",
                "Entries in the dead-letter list.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&snapshot.dead_letters)?;
        let mut breakers = encoder.encode_descriptor(
            "circuit_breaker",
            "Circuit breakers with recent failures, by key and state (closed, open, half_open).",
            None,
            MetricType::Gauge,
        )?;
        for (key, state) in &snapshot.breakers {
            let labels = [("key", key.as_str()), ("state", state.as_str())];
            breakers.encode_family(&labels)?.encode_gauge(&1u64)?;
        }
        encode_pipelines(&mut encoder, &snapshot.pipeline_stages)
    }
}

/// The pipeline families: durable counters by outcome, live depths and waits.
fn encode_pipelines(
    encoder: &mut DescriptorEncoder,
    stages: &[PipelineStageSample],
) -> fmt::Result {
    let mut messages = encoder.encode_descriptor(
        "pipeline_messages",
        "Messages by pipeline, stage and outcome (entered, done, retried, dead).",
        None,
        MetricType::Counter,
    )?;
    for sample in stages {
        for (outcome, value) in [
            ("entered", sample.entered),
            ("done", sample.done),
            ("retried", sample.retried),
            ("dead", sample.dead),
        ] {
            let labels = [
                ("pipeline", sample.pipeline.as_str()),
                ("stage", sample.stage.as_str()),
                ("outcome", outcome),
            ];
            messages
                .encode_family(&labels)?
                .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&value, None)?;
        }
    }
    let mut depth = encoder.encode_descriptor(
        "pipeline_queue_depth",
        "Messages queued, retrying or in flight at a running pipeline stage.",
        None,
        MetricType::Gauge,
    )?;
    for sample in stages {
        if let Some(value) = sample.depth {
            let labels = [
                ("pipeline", sample.pipeline.as_str()),
                ("stage", sample.stage.as_str()),
            ];
            depth.encode_family(&labels)?.encode_gauge(&value)?;
        }
    }
    let mut waits = encoder.encode_descriptor(
        "pipeline_rate_limit_wait_seconds",
        "Time a running pipeline stage waited for its rate limits.",
        None,
        MetricType::Counter,
    )?;
    for sample in stages.iter().filter(|sample| sample.depth.is_some()) {
        let labels = [
            ("pipeline", sample.pipeline.as_str()),
            ("stage", sample.stage.as_str()),
        ];
        waits
            .encode_family(&labels)?
            .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                &(sample.waited_ms as f64 / 1000.0),
                None,
            )?;
    }
    Ok(())
}

/// Encodes a gauge family with one label, one sample per `(label value, count)` pair.
fn encode_labelled_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(String, u64)],
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value, count) in values {
        let labels = [(label, value.as_str())];
        metric.encode_family(&labels)?.encode_gauge(count)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> StoreSnapshot {
        StoreSnapshot {
            jobs_by_status: vec![("running".to_owned(), 3), ("succeeded".to_owned(), 7)],
            steps_by_state: vec![("ready".to_owned(), 5)],
            queue_depth: 5,
            dead_letters: 1,
            breakers: vec![("host http://a:80".to_owned(), "open".to_owned())],
            pipeline_stages: vec![PipelineStageSample {
                pipeline: "p".into(),
                stage: "storage".into(),
                entered: 10,
                done: 9,
                retried: 4,
                dead: 1,
                depth: Some(0),
                waited_ms: 1500,
            }],
        }
    }

    #[test]
    fn counters_get_total_suffix_and_labels() {
        let telemetry = Telemetry::new();
        telemetry.step_finished("collect", "succeeded", Duration::from_millis(3));
        telemetry.step_finished("collect", "succeeded", Duration::from_millis(40));
        telemetry.step_finished("deliver", "retrying", Duration::from_secs(2));
        telemetry.attempt("collect");
        telemetry.jobs_created(4);
        telemetry.records_collected(10);
        telemetry.http_request("GET", "/v1/jobs/{id}", 200, Duration::from_millis(2));
        telemetry.upstream_quota_remaining("stackoverflow", "https://api.stackexchange.com", 299);
        telemetry.upstream_quota_remaining("stackoverflow", "https://api.stackexchange.com", 298);

        let text = telemetry.render(&StoreSnapshot::default());
        for expected in [
            "gleaner_upstream_quota_remaining{connector=\"stackoverflow\",upstream=\"https://api.stackexchange.com\"} 298\n",
            "gleaner_steps_finished_total{kind=\"collect\",outcome=\"succeeded\"} 2\n",
            "gleaner_steps_finished_total{kind=\"deliver\",outcome=\"retrying\"} 1\n",
            "gleaner_step_attempts_total{kind=\"collect\"} 1\n",
            "gleaner_jobs_created_total 4\n",
            "gleaner_records_collected_total 10\n",
            "gleaner_http_requests_total{method=\"GET\",route=\"/v1/jobs/{id}\",status=\"200\"} 1\n",
            "# TYPE gleaner_steps_finished counter\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn histograms_use_seconds_and_duration_buckets() {
        let telemetry = Telemetry::new();
        telemetry.step_finished("collect", "succeeded", Duration::from_millis(3));
        telemetry.step_finished("collect", "failed", Duration::from_secs(90));
        telemetry.http_request("POST", "/v1/jobs", 201, Duration::from_millis(20));

        let text = telemetry.render(&StoreSnapshot::default());
        for expected in [
            "# TYPE gleaner_step_duration_seconds histogram\n",
            "# UNIT gleaner_step_duration_seconds seconds\n",
            "gleaner_step_duration_seconds_bucket{le=\"0.001\",kind=\"collect\"} 0\n",
            "gleaner_step_duration_seconds_bucket{le=\"0.005\",kind=\"collect\"} 1\n",
            "gleaner_step_duration_seconds_bucket{le=\"60.0\",kind=\"collect\"} 1\n",
            "gleaner_step_duration_seconds_bucket{le=\"+Inf\",kind=\"collect\"} 2\n",
            "gleaner_step_duration_seconds_count{kind=\"collect\"} 2\n",
            "gleaner_http_request_duration_seconds_bucket{le=\"0.025\",route=\"/v1/jobs\"} 1\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn render_includes_snapshot_gauges_and_ends_with_eof() {
        let telemetry = Telemetry::new();
        let text = telemetry.render(&snapshot());
        for expected in [
            "# TYPE gleaner_jobs gauge\n",
            "gleaner_jobs{status=\"running\"} 3\n",
            "gleaner_jobs{status=\"succeeded\"} 7\n",
            "gleaner_steps{state=\"ready\"} 5\n",
            "gleaner_queue_depth 5\n",
            "gleaner_dead_letters 1\n",
            "gleaner_circuit_breaker{key=\"host http://a:80\",state=\"open\"} 1\n",
            "gleaner_pipeline_messages_total{pipeline=\"p\",stage=\"storage\",outcome=\"dead\"} 1\n",
            "gleaner_pipeline_queue_depth{pipeline=\"p\",stage=\"storage\"} 0\n",
            "gleaner_pipeline_rate_limit_wait_seconds_total{pipeline=\"p\",stage=\"storage\"} 1.5\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert!(
            text.ends_with("# EOF\n"),
            "no EOF marker at the end:\n{text}"
        );
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn known_label_values_are_borrowed() {
        assert!(matches!(known("collect", &KINDS), Cow::Borrowed("collect")));
        assert!(matches!(known("backfill", &KINDS), Cow::Owned(ref v) if v == "backfill"));
    }

    #[test]
    fn clones_share_metrics_and_render_concurrently() {
        let telemetry = Telemetry::new();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let telemetry = telemetry.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        telemetry.attempt("deliver");
                        let _ = telemetry.render(&snapshot());
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("render thread panicked");
        }
        let text = telemetry.render(&snapshot());
        assert!(text.contains("gleaner_step_attempts_total{kind=\"deliver\"} 400\n"));
    }
}
