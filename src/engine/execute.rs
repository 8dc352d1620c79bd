//! Running one claimed step: collect page by page from a connector (each page stored with its
//! checkpoint), or deliver the job's records to a sink; then record the outcome and schedule
//! the retry.
//!
//! Invariant: the outcome is decided from the error's `Retryability` alone; a fenced write stops
//! the step at once without recording anything.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use super::EngineContext;
use crate::job::{Claimed, JobStatus, Outcome, PageWrite, StepError, StepKind, StepState};
use crate::net::Retryability;
use crate::processors::{ProcessorChain, ProcessorSpec};
use crate::sinks::{Delivery, SourceOutcome};
use crate::store::Error as StoreError;

/// What a collect step runs.
#[derive(Deserialize)]
struct CollectConfig {
    connector: String,
    settings: Value,
    #[serde(default)]
    processors: Vec<ProcessorSpec>,
}

/// What a deliver step runs.
#[derive(Deserialize)]
struct DeliverConfig {
    sink: String,
    settings: Value,
}

/// An attempt's failure before it is placed on the retry schedule.
struct Failure {
    retry: Retryability,
    error: StepError,
}

impl Failure {
    fn permanent(kind: &str, message: impl Into<String>) -> Self {
        Self {
            retry: Retryability::Permanent,
            error: StepError {
                kind: kind.into(),
                message: message.into(),
                http_status: None,
                response: None,
            },
        }
    }
}

/// Why an attempt stopped without an outcome to record.
enum Stop {
    Fenced,
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Fenced => Stop::Fenced,
            other => Stop::Store(other),
        }
    }
}

/// The machine word for an upstream error, as the attempt log shows it.
pub fn classify(error: &crate::net::UpstreamError) -> &'static str {
    use crate::net::UpstreamError as E;
    match error {
        E::Status { .. } => "status",
        E::Transport { timeout: true, .. } => "timeout",
        E::Transport { .. } => "transport",
        E::Refused { .. } => "refused",
        E::TooLarge { .. } => "too_large",
        E::Decode { .. } => "decode",
        E::InvalidUrl { .. } => "settings",
    }
}

fn failure(
    kind: &str,
    retry: Retryability,
    message: String,
    http_status: Option<u16>,
    response: Option<&str>,
) -> Failure {
    Failure {
        retry,
        error: StepError {
            kind: kind.into(),
            message,
            http_status,
            response: response.map(str::to_owned),
        },
    }
}

fn connector_failure(error: &crate::connectors::Error) -> Failure {
    use crate::connectors::Error as E;
    let kind = match error {
        E::Settings(_) => "settings",
        E::Upstream(upstream) => classify(upstream),
        E::Response(_) => "response",
    };
    failure(
        kind,
        error.retryability(),
        error.to_string(),
        error.http_status(),
        error.response_excerpt(),
    )
}

fn sink_failure(error: &crate::sinks::Error) -> Failure {
    use crate::sinks::Error as E;
    let kind = match error {
        E::Settings(_) => "settings",
        E::Upstream(upstream) => classify(upstream),
        E::Io(_) => "io",
    };
    failure(
        kind,
        error.retryability(),
        error.to_string(),
        error.http_status(),
        error.response_excerpt(),
    )
}

/// Runs one claimed step to the end of its attempt and records the outcome.
pub async fn run_step(context: &EngineContext, claimed: Claimed) {
    let started = Instant::now();
    let kind = claimed.step.kind;
    context.telemetry.attempt(kind.as_str());
    let span = tracing::info_span!("step", job_id = %claimed.step.job_id, step_id = claimed.step.id,
                                   attempt = claimed.fence.attempt);
    let attempt = async {
        let heartbeat = heartbeat(context, &claimed);
        tokio::pin!(heartbeat);
        let work = async {
            if context.clock.now() > claimed.step.deadline_at {
                // Out of time budget: retries are exhausted, so `schedule` makes the step
                // `dead` (replayable), not `failed` (which means a non-retryable error).
                let failure = Failure {
                    retry: Retryability::Retry { after: None },
                    ..Failure::permanent(
                        "budget",
                        "the step's time budget ran out before this attempt",
                    )
                };
                return Err(Ok(failure));
            }
            match kind {
                StepKind::Collect => collect(context, &claimed).await,
                StepKind::Deliver => deliver(context, &claimed).await.map(|()| None),
            }
        };
        tokio::select! {
            result = work => result,
            stop = &mut heartbeat => Err(Err(stop)),
        }
    };
    let result = tracing::Instrument::instrument(attempt, span.clone()).await;
    // Events below are emitted inside the span (`in_scope`, not `parent:`): the JSON log layer
    // lists only the current span's scope, and `/v1/logs?job=` finds lines by that list.
    let now = context.clock.now();
    let (outcome, last_page) = match result {
        Ok(last_page) => (Outcome::Succeeded, last_page),
        Err(Ok(failure)) => (schedule(context, &claimed, failure, now), None),
        Err(Err(Stop::Fenced)) => {
            context
                .telemetry
                .step_finished(kind.as_str(), "fenced", started.elapsed());
            span.in_scope(|| tracing::warn!("step lease lost; attempt abandoned"));
            return;
        }
        Err(Err(Stop::Store(error))) => {
            span.in_scope(|| tracing::error!(%error, "store failed during step; the lease will expire and the step rerun"));
            return;
        }
    };
    let word = outcome.word();
    if let Outcome::Retry { error, .. } | Outcome::Failed { error } | Outcome::Dead { error } =
        &outcome
    {
        span.in_scope(|| tracing::warn!(outcome = word, error_kind = %error.kind, error = %error.message, "step attempt failed"));
    }
    match context
        .store
        .finish(&claimed.fence, outcome, last_page, now)
        .await
    {
        Ok(()) => context
            .telemetry
            .step_finished(kind.as_str(), word, started.elapsed()),
        Err(StoreError::Fenced) => {
            context
                .telemetry
                .step_finished(kind.as_str(), "fenced", started.elapsed());
            span.in_scope(|| tracing::warn!("step lease lost before its outcome was recorded"));
        }
        Err(error) => {
            span.in_scope(|| tracing::error!(%error, "recording the step outcome failed"))
        }
    }
}

/// Places a failed attempt: retry later, fail for good, or dead when out of attempts or budget.
fn schedule(context: &EngineContext, claimed: &Claimed, failure: Failure, now: i64) -> Outcome {
    let Failure { retry, mut error } = failure;
    let Retryability::Retry { after } = retry else {
        return Outcome::Failed { error };
    };
    let step = &claimed.step;
    let next = context.config.backoff().next_attempt_at(
        claimed.fence.attempt,
        step.max_attempts,
        after,
        now,
        step.deadline_at,
        &mut rand::rng(),
    );
    match next {
        Some(at) => Outcome::Retry { at, error },
        None => {
            let why = if claimed.fence.attempt >= step.max_attempts {
                format!("gave up after {} attempts", claimed.fence.attempt)
            } else {
                "gave up: the time budget ran out".to_owned()
            };
            error.message = format!("{why}; last error: {}", error.message);
            Outcome::Dead { error }
        }
    }
}

/// Extends the lease every third of its timeout; ends only when the lease is lost.
async fn heartbeat(context: &EngineContext, claimed: &Claimed) -> Stop {
    let period = context.config.lease_timeout / 3;
    loop {
        tokio::time::sleep(period.max(Duration::from_millis(10))).await;
        let until = context.clock.now() + context.config.lease_timeout.as_millis() as i64;
        match context.store.extend_lease(&claimed.fence, until).await {
            Ok(()) => {}
            Err(error @ StoreError::Fenced) => return Stop::from(error),
            Err(error) => tracing::warn!(%error, "lease heartbeat failed"),
        }
    }
}

type StepResult<T> = Result<T, Result<Failure, Stop>>;

/// Collects from the checkpoint on, storing each page with its checkpoint; the last page is
/// returned so it is stored in the same transaction as the step's success.
async fn collect(context: &EngineContext, claimed: &Claimed) -> StepResult<Option<PageWrite>> {
    let config: CollectConfig =
        serde_json::from_value(claimed.step.config.clone()).map_err(|error| {
            Ok(Failure::permanent(
                "settings",
                format!("stored step config is invalid: {error}"),
            ))
        })?;
    let entry = context.connectors.get(&config.connector).ok_or_else(|| {
        Ok(Failure::permanent(
            "settings",
            format!("unknown connector {:?}", config.connector),
        ))
    })?;
    let chain = ProcessorChain::compile(&config.processors)
        .map_err(|error| Ok(Failure::permanent("processing", error.to_string())))?;
    let mut checkpoint = claimed.step.checkpoint.clone();
    loop {
        let page = entry
            .connector
            .collect_page(
                &context.connector_context,
                &config.settings,
                checkpoint.as_ref(),
            )
            .await
            .map_err(|error| Ok(connector_failure(&error)))?;
        let records = if chain.is_empty() {
            page.records
        } else {
            chain
                .apply_async(page.records)
                .await
                .map_err(|error| Ok(Failure::permanent("processing", error.to_string())))?
        };
        context.telemetry.records_collected(records.len() as u64);
        let write = PageWrite {
            records,
            checkpoint: page.checkpoint.clone(),
        };
        if page.done {
            return Ok(Some(write));
        }
        context
            .store
            .save_page(&claimed.fence, write, context.clock.now())
            .await
            .map_err(|error| Err(Stop::from(error)))?;
        if page.checkpoint.is_some() {
            checkpoint = page.checkpoint;
        }
    }
}

/// Delivers the job's sources' outcome and every record to the step's sink.
async fn deliver(context: &EngineContext, claimed: &Claimed) -> StepResult<()> {
    let config: DeliverConfig =
        serde_json::from_value(claimed.step.config.clone()).map_err(|error| {
            Ok(Failure::permanent(
                "settings",
                format!("stored step config is invalid: {error}"),
            ))
        })?;
    let entry = context.sinks.get(&config.sink).ok_or_else(|| {
        Ok(Failure::permanent(
            "settings",
            format!("unknown sink {:?}", config.sink),
        ))
    })?;
    let job_id = claimed.step.job_id;
    let detail = context
        .store
        .get_job(job_id)
        .await
        .map_err(|error| Err(Stop::from(error)))?
        .ok_or(Err(Stop::Store(StoreError::NotFound)))?;
    let mut records = Vec::new();
    let mut after = None;
    loop {
        let batch = context
            .store
            .job_records(job_id, after, 10_000)
            .await
            .map_err(|error| Err(Stop::from(error)))?;
        let Some(last) = batch.last() else { break };
        after = Some(last.id);
        records.extend(batch.into_iter().map(|row| (row.step_id, row.data)));
    }
    let sources: Vec<SourceOutcome> = detail
        .steps
        .iter()
        .filter(|step| step.kind == StepKind::Collect)
        .map(|step| SourceOutcome {
            step_id: step.id,
            connector: step.name.clone(),
            state: step.state,
            attempts: step.attempt,
            records: step.records,
            error: (step.state != StepState::Succeeded)
                .then(|| step.last_error.clone())
                .flatten(),
        })
        .collect();
    let status = JobStatus::derive(
        sources
            .iter()
            .map(|source| (StepKind::Collect, source.state, true)),
    );
    let delivery = Delivery {
        job_id,
        status,
        created_at: detail.job.created_at,
        sources,
        records,
    };
    entry
        .sink
        .deliver(&context.sink_context, &config.settings, &delivery)
        .await
        .map_err(|error| Ok(sink_failure(&error)))
}
