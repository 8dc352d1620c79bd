//! The series in Prometheus/OpenMetrics text, under `user_*` names so they never mix with
//! Gleaner's own `gleaner_*` metrics: the series name is the `series` label and each tag a
//! `tag_<key>` label (key characters outside `[A-Za-z0-9_]` become `_`).

use std::fmt::Write;

use super::{AggregateView, SeriesView, StatsdStats};

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(series: &SeriesView, extra: Option<(&str, &str)>) -> String {
    let mut out = format!("series=\"{}\"", escape(&series.name));
    for (key, value) in &series.tags {
        let key: String = key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let _ = write!(out, ",tag_{key}=\"{}\"", escape(value));
    }
    if let Some((key, value)) = extra {
        let _ = write!(out, ",{key}=\"{value}\"");
    }
    out
}

/// One family: a `# TYPE` line, then a sample per series that has one.
fn family<'a>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl Iterator<Item = (String, &'a str, f64)>,
) {
    let samples: Vec<_> = samples.collect();
    if samples.is_empty() {
        return;
    }
    let _ = writeln!(out, "# TYPE {name} {kind}\n# HELP {name} {help}");
    for (labels, suffix, value) in samples {
        let _ = writeln!(out, "{name}{suffix}{{{labels}}} {value}");
    }
}

/// The series' families, and the StatsD listener's counters when it runs.
pub fn render(series: &[SeriesView], statsd: Option<&StatsdStats>) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "user_counter",
        "counter",
        "Counter series: the sum of their deltas.",
        series.iter().filter_map(|s| match &s.aggregate {
            AggregateView::Counter(view) => Some((labels(s, None), "_total", view.value)),
            _ => None,
        }),
    );
    family(
        &mut out,
        "user_gauge",
        "gauge",
        "Gauge series: their last value.",
        series.iter().filter_map(|s| match &s.aggregate {
            AggregateView::Gauge(view) => view.value.map(|value| (labels(s, None), "", value)),
            _ => None,
        }),
    );
    family(
        &mut out,
        "user_meter_events",
        "counter",
        "Meter series: events seen.",
        series.iter().filter_map(|s| match &s.aggregate {
            AggregateView::Meter(view) => Some((labels(s, None), "_total", view.count as f64)),
            _ => None,
        }),
    );
    let mut rates = Vec::new();
    for s in series {
        if let AggregateView::Meter(view) = &s.aggregate {
            for (window, value) in [
                ("1m", Some(view.m1_rate)),
                ("5m", Some(view.m5_rate)),
                ("15m", Some(view.m15_rate)),
                ("mean", view.mean_rate),
            ] {
                if let Some(value) = value {
                    rates.push((labels(s, Some(("window", window))), "", value));
                }
            }
        }
    }
    family(
        &mut out,
        "user_meter_rate",
        "gauge",
        "Meter series: events per second (1/5/15-minute EWMA, and the mean since the first).",
        rates.into_iter(),
    );
    let mut timers = Vec::new();
    for s in series {
        if let AggregateView::Timer(view) = &s.aggregate {
            for (quantile, value) in [
                ("0.5", view.p50),
                ("0.9", view.p90),
                ("0.95", view.p95),
                ("0.99", view.p99),
                ("0.999", view.p999),
            ] {
                if let Some(value) = value {
                    timers.push((labels(s, Some(("quantile", quantile))), "", value));
                }
            }
            timers.push((labels(s, None), "_sum", view.sum));
            timers.push((labels(s, None), "_count", view.count as f64));
        }
    }
    family(
        &mut out,
        "user_timer",
        "summary",
        "Timer series: quantiles within 1 % (DDSketch), sum and count.",
        timers.into_iter(),
    );
    if let Some(stats) = statsd {
        let _ = writeln!(
            out,
            "# TYPE gleaner_statsd_lines counter\n# HELP gleaner_statsd_lines StatsD lines by outcome.\n\
             gleaner_statsd_lines_total{{outcome=\"received\"}} {}\n\
             gleaner_statsd_lines_total{{outcome=\"invalid\"}} {}\n\
             gleaner_statsd_lines_total{{outcome=\"dropped\"}} {}",
            stats.received_lines(),
            stats.invalid_lines(),
            stats.dropped_lines()
        );
        if let Some(drops) = stats.kernel_drops() {
            let _ = writeln!(
                out,
                "# TYPE gleaner_statsd_kernel_drops counter\n# HELP gleaner_statsd_kernel_drops \
                 Datagrams the kernel dropped because the socket buffer was full.\n\
                 gleaner_statsd_kernel_drops_total {drops}"
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::metrics::{Event, MetricType, MetricsRegistry, SeriesKey};

    #[test]
    fn series_render_under_their_own_namespace() {
        let registry = MetricsRegistry::new(Duration::from_secs(60), 2);
        let key = |name: &str, tags: &[(&str, &str)]| {
            SeriesKey::new(
                name,
                tags.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
            )
            .expect("key")
        };
        let events = [
            (
                key("app.hits", &[("region", "eu-1")]),
                MetricType::Counter,
                3.0,
            ),
            (key("app.temp", &[]), MetricType::Gauge, 21.5),
            (key("app.latency", &[]), MetricType::Timer, 100.0),
        ]
        .map(|(key, kind, value)| Event { key, kind, value });
        registry
            .apply(
                &crate::metrics::EventBatch::from_events(events).unwrap(),
                1_000,
            )
            .expect("apply");
        let text = render(&registry.list(&Default::default(), None, 100, 2_000), None);
        for line in [
            "user_counter_total{series=\"app.hits\",tag_region=\"eu-1\"} 3\n",
            "user_gauge{series=\"app.temp\"} 21.5\n",
            "user_timer_count{series=\"app.latency\"} 1\n",
            "# TYPE user_timer summary\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("gleaner_"), "{text}");
    }
}
