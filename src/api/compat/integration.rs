//! `POST /api/v1/integration` and `GET /api/v1/integration/logs`: the databox-collector seed's
//! contract. A request names data sources and metrics; it becomes one native job with a
//! `stackoverflow` or `reddit` source per metric and a `databox` sink, and the answer is the
//! seed's per-source report once that job has finished.
//!
//! Invariants: every seed bug stays fixed — bad bodies (not an array, unknown data source or
//! metric, duplicates) are a 4xx problem, never the seed's 200 with a stack trace; a failed
//! push no longer hides which metrics failed; the status says what happened (200 all sent,
//! 207 some metrics failed, 502 the push failed, 202 still running at the deadline).

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::AppState;
use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::extract::{ApiJson, ApiQuery};
use crate::api::jobs::{self, CreationProblems};
use crate::job::spec::{JobSpec, RetrySpec, SinkSpec, SourceSpec};
use crate::job::{JobStatus, StepKind, StepState};
use crate::observability::log_tail::RawLogQuery;

/// How long the route waits for its job before answering 202 with the job to poll.
const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(25);

/// The seed's metrics: name, data source, and what the connector reads (tag or subreddit).
const METRICS: &[(&str, Source, &str)] = &[
    (
        "TypeScriptQuestionCount",
        Source::StackOverflow,
        "typescript",
    ),
    ("PythonQuestionCount", Source::StackOverflow, "python"),
    ("GoQuestionCount", Source::StackOverflow, "go"),
    ("PhpQuestionCount", Source::StackOverflow, "php"),
    ("TypeScriptPostCount", Source::Reddit, "typescript"),
    ("GoPostCount", Source::Reddit, "golang"),
    ("PhpPostCount", Source::Reddit, "php"),
    ("PythonPostCount", Source::Reddit, "python"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    StackOverflow,
    Reddit,
}

impl Source {
    fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "stackoverflow" => Some(Source::StackOverflow),
            "reddit" => Some(Source::Reddit),
            _ => None,
        }
    }

    /// The seed's spelling, used in the report.
    fn name(self) -> &'static str {
        match self {
            Source::StackOverflow => "StackOverflow",
            Source::Reddit => "Reddit",
        }
    }

    fn source(self, metric: &str, target: &str) -> SourceSpec {
        let (connector, settings) = match self {
            Source::StackOverflow => ("stackoverflow", json!({"tag": target, "metric": metric})),
            Source::Reddit => ("reddit", json!({"subreddit": target, "metric": metric})),
        };
        SourceSpec {
            connector: connector.into(),
            name: Some(metric.into()),
            settings,
        }
    }
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(integrate))
        .routes(routes!(integration_logs))
}

/// One requested data source: `{"dataSource": "StackOverflow" | "Reddit", "metrics"?: [...]}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IntegrationOptions {
    #[schema(example = "StackOverflow")]
    data_source: String,
    /// Metric names of that source; absent or empty: all of them.
    #[serde(default)]
    metrics: Vec<String>,
}

/// One sent metric.
#[derive(Debug, Serialize, ToSchema)]
struct SentMetric {
    name: String,
    value: Value,
    date: Option<String>,
}

/// One metric that was not sent, and why.
#[derive(Debug, Serialize, ToSchema)]
struct FailedMetric {
    metric: String,
    error: String,
}

/// The report of one data source, in request order.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SourceReport {
    data_source: &'static str,
    metrics_sent: Vec<SentMetric>,
    metrics_failed: Vec<FailedMetric>,
    /// Set when the push to Databox failed: no metric of the source was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The planned request: data sources in order, each with its metric names.
type Plan = Vec<(Source, Vec<&'static str>)>;

fn plan(options: &[IntegrationOptions]) -> Result<Plan, String> {
    if options.is_empty() {
        return Err("name at least one data source".into());
    }
    let mut plan: Plan = Vec::new();
    let mut seen = BTreeSet::new();
    for (index, option) in options.iter().enumerate() {
        let source = Source::parse(&option.data_source).ok_or_else(|| {
            format!(
                "[{index}].dataSource: unknown data source {:?} (use StackOverflow or Reddit)",
                option.data_source
            )
        })?;
        if plan.iter().any(|(known, _)| *known == source) {
            return Err(format!(
                "[{index}].dataSource: {} is named twice",
                source.name()
            ));
        }
        let known: Vec<&'static str> = METRICS
            .iter()
            .filter(|(_, of, _)| *of == source)
            .map(|(name, _, _)| *name)
            .collect();
        let metrics = if option.metrics.is_empty() {
            known.clone()
        } else {
            let mut chosen = Vec::new();
            for (position, metric) in option.metrics.iter().enumerate() {
                let name = known
                    .iter()
                    .find(|name| **name == metric.as_str())
                    .ok_or_else(|| {
                        format!(
                            "[{index}].metrics[{position}]: {metric:?} is not a {} metric (known: {})",
                            source.name(),
                            known.join(", ")
                        )
                    })?;
                if !seen.insert(*name) {
                    return Err(format!(
                        "[{index}].metrics[{position}]: {metric:?} is named twice"
                    ));
                }
                chosen.push(*name);
            }
            chosen
        };
        plan.push((source, metrics));
    }
    Ok(plan)
}

fn job_spec(plan: &Plan) -> JobSpec {
    let sources = plan
        .iter()
        .flat_map(|(source, metrics)| {
            metrics.iter().map(|metric| {
                let target = METRICS
                    .iter()
                    .find(|(name, _, _)| name == metric)
                    .map_or("", |(_, _, target)| *target);
                source.source(metric, target)
            })
        })
        .collect();
    JobSpec {
        sources,
        processors: Vec::new(),
        sinks: vec![SinkSpec {
            kind: "databox".into(),
            settings: Map::new(),
        }],
        // The seed answered within one request; a few quick retries keep that promise, and
        // the job's own view still says what happened if the request times out.
        retry: Some(RetrySpec {
            max_attempts: Some(3),
            budget_seconds: Some(60),
        }),
        resolved_dates: Vec::new(),
    }
}

/// Run an integration: collect the named metrics (all of a source when `metrics` is absent)
/// and push them to Databox, answering with the seed's report per data source. 200 when every
/// metric was sent, 207 when some failed (`metricsFailed` says why), 502 when the push failed
/// (`error`), 202 with the job when it is still running after 20 s.
#[utoipa::path(post, path = "/api/v1/integration", tag = "compat",
    request_body = Vec<IntegrationOptions>,
    responses(
        (status = 200, description = "Every metric sent", body = Vec<SourceReport>),
        (status = 207, description = "Some metrics failed", body = Vec<SourceReport>),
        (status = 502, description = "The push to Databox failed", body = Vec<SourceReport>),
        (status = 202, description = "Still running; poll the job", body = crate::api::jobs::JobView),
        (status = 503, description = "No Databox token is configured", body = Problem),
        CreationProblems))]
async fn integrate(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: ApiJson<Vec<IntegrationOptions>>,
) -> ApiResult<Response> {
    let plan = plan(&body.value).map_err(ApiError::unprocessable)?;
    let spec = job_spec(&plan);
    let canonical = serde_json::to_value(&spec).unwrap_or(Value::Null);
    let created = jobs::create(&state, &headers, &spec, &canonical, |error| {
        let text = error.to_string();
        if text.contains("token") {
            ApiError::Unavailable(format!(
                "Databox is not configured: set [sinks.databox] token ({text})"
            ))
        } else {
            ApiError::unprocessable(text)
        }
    })
    .await?;
    let id = created.view.id;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let detail = state
            .inner
            .store
            .get_job(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("job {id} disappeared")))?;
        if detail.job.status.is_terminal() {
            let records = state.inner.store.job_records(id, None, 10_000).await?;
            let (status, reports) = report(&plan, &detail, &records);
            return Ok((status, Json(reports)).into_response());
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(created.into_response(|view| view));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The seed's report, built from the finished job.
fn report(
    plan: &Plan,
    detail: &crate::job::JobDetail,
    records: &[crate::job::RecordRow],
) -> (StatusCode, Vec<SourceReport>) {
    let delivery = detail
        .steps
        .iter()
        .find(|step| step.kind == StepKind::Deliver);
    let push_error = delivery
        .filter(|step| step.state != StepState::Succeeded)
        .map(|step| {
            step.last_error
                .clone()
                .unwrap_or_else(|| format!("the push ended {}", step.state.as_str()))
        });
    let date = delivery
        .and_then(|step| step.finished_at)
        .map(crate::clock::rfc3339);
    let mut any_failed = false;
    let reports = plan
        .iter()
        .map(|(source, metrics)| {
            let mut report = SourceReport {
                data_source: source.name(),
                metrics_sent: Vec::new(),
                metrics_failed: Vec::new(),
                error: push_error.clone(),
            };
            for metric in metrics {
                let step = detail.steps.iter().find(|step| {
                    step.kind == StepKind::Collect
                        && step.config.get("name").and_then(Value::as_str) == Some(metric)
                });
                let value = step.and_then(|step| {
                    records
                        .iter()
                        .find(|row| row.step_id == step.id)
                        .and_then(|row| row.data.get("value").cloned())
                });
                match (step, value) {
                    (Some(step), Some(value)) if step.state == StepState::Succeeded => {
                        if push_error.is_none() {
                            report.metrics_sent.push(SentMetric {
                                name: (*metric).into(),
                                value,
                                date: date.clone(),
                            });
                        }
                    }
                    (step, _) => {
                        any_failed = true;
                        report.metrics_failed.push(FailedMetric {
                            metric: (*metric).into(),
                            error: step
                                .and_then(|step| step.last_error.clone())
                                .unwrap_or_else(|| "no value was collected".into()),
                        });
                    }
                }
            }
            report
        })
        .collect();
    let status = if push_error.is_some() || detail.job.status == JobStatus::Failed {
        StatusCode::BAD_GATEWAY
    } else if any_failed {
        StatusCode::MULTI_STATUS
    } else {
        StatusCode::OK
    };
    (status, reports)
}

/// The server's NDJSON log (the seed streamed its whole log file), with the same filters as
/// `GET /v1/logs`.
#[utoipa::path(get, path = "/api/v1/integration/logs", tag = "compat",
    params(
        ("job" = Option<String>, Query, description = "Only lines about this job id"),
        ("level" = Option<String>, Query, description = "Minimum level"),
        ("since" = Option<String>, Query, description = "RFC 3339; only lines at or after it"),
        ("follow" = Option<bool>, Query, description = "Keep streaming new lines"),
        ("limit" = Option<usize>, Query, description = "Stop after this many lines")),
    responses((status = 200, content_type = "application/ndjson", body = String), (status = 400, body = Problem)))]
async fn integration_logs(
    State(state): State<AppState>,
    ApiQuery(raw): ApiQuery<RawLogQuery>,
) -> ApiResult<impl IntoResponse> {
    crate::api::logs::stream_log(&state, &raw, "application/ndjson")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(value: Value) -> Vec<IntegrationOptions> {
        serde_json::from_value(value).expect("options")
    }

    #[test]
    fn absent_metrics_mean_all_of_the_source_in_order() {
        let plan = plan(&options(json!([{"dataSource": "Reddit"}, {"dataSource": "stackoverflow", "metrics": ["GoQuestionCount"]}])))
            .expect("plan");
        assert_eq!(plan[0].0, Source::Reddit);
        assert_eq!(plan[0].1.len(), 4);
        assert_eq!(plan[1], (Source::StackOverflow, vec!["GoQuestionCount"]));
        let spec = job_spec(&plan);
        assert_eq!(spec.sources.len(), 5);
        assert_eq!(
            spec.sources[1].settings,
            json!({"subreddit": "golang", "metric": "GoPostCount"})
        );
        assert_eq!(spec.sinks[0].kind, "databox");
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        for (body, needle) in [
            (json!([]), "at least one"),
            (json!([{"dataSource": "Twitter"}]), "unknown data source"),
            (
                json!([{"dataSource": "Reddit"}, {"dataSource": "reddit"}]),
                "named twice",
            ),
            (
                json!([{"dataSource": "StackOverflow", "metrics": ["TypescriptQuestionCount"]}]),
                "not a StackOverflow metric",
            ),
            (
                json!([{"dataSource": "StackOverflow", "metrics": ["GoPostCount"]}]),
                "not a StackOverflow metric",
            ),
            (
                json!([{"dataSource": "StackOverflow", "metrics": ["GoQuestionCount", "GoQuestionCount"]}]),
                "named twice",
            ),
        ] {
            let error = plan(&options(body.clone())).expect_err("refused");
            assert!(error.contains(needle), "{body}: {error}");
        }
    }
}
