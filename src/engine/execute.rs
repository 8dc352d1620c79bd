//! Running one claimed step: collect page by page from a connector (each page stored with its
//! checkpoint), or deliver the job's records to a sink; then record the outcome and schedule
//! the retry.
//!
//! Invariant: the outcome is decided from the error's `Retryability` alone; a fenced write stops
//! the step at once without recording anything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use super::EngineContext;
use super::breaker::Admission;
use crate::job::progress::Progress;
use crate::job::{Claimed, JobStatus, Outcome, PageWrite, Receipt, StepError, StepKind, StepState};
use crate::net::Retryability;
use crate::processors::{Lookups, ProcessorChain, ProcessorSpec, tabular};
use crate::sinks::{Delivery, SourceOutcome};
use crate::store::{DeliveryInput, DisabledEndpoint, Error as StoreError, Handed};

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
    /// The other side answered or was unreachable (as opposed to a local or settings
    /// problem): the result counts for its circuit breaker.
    upstream: bool,
}

impl Failure {
    fn permanent(kind: &str, message: impl Into<String>) -> Self {
        Self {
            retry: Retryability::Permanent,
            upstream: false,
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
    upstream: bool,
    message: String,
    http_status: Option<u16>,
    response: Option<&str>,
) -> Failure {
    Failure {
        retry,
        upstream,
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
        E::RetryLater { .. } => "retry_later",
    };
    failure(
        kind,
        error.retryability(),
        matches!(
            error,
            E::Upstream(_) | E::Response(_) | E::RetryLater { .. }
        ),
        error.to_string(),
        error.http_status(),
        error.response_excerpt(),
    )
}

/// The machine word for a sink error, as the attempt log shows it.
fn sink_kind(error: &crate::sinks::Error) -> &'static str {
    use crate::sinks::Error as E;
    match error {
        E::Settings(_) => "settings",
        E::Upstream(upstream) | E::Refused(upstream) => classify(upstream),
        E::Gone(_) => "gone",
        E::Io(_) => "io",
        E::Records(_) => "records",
        E::Unconfirmed { .. } => "unconfirmed",
        E::Part { error, .. } => sink_kind(error),
    }
}

fn sink_failure(error: &crate::sinks::Error) -> Failure {
    failure(
        sink_kind(error),
        error.retryability(),
        error.upstream().is_some(),
        error.to_string(),
        error.http_status(),
        error.response_excerpt(),
    )
}

/// What a successful attempt hands to `finish`.
enum Done {
    /// The last page of a collection, stored with the step's success.
    Collected(Option<PageWrite>),
    Delivered(Receipt),
}

/// The circuit breaker key of a step: its connector's upstream origin, or its sink's endpoint.
pub fn breaker_key(
    connectors: &crate::connectors::ConnectorRegistry,
    sinks: &crate::sinks::SinkRegistry,
    kind: StepKind,
    config: &Value,
) -> Option<String> {
    let settings = config.get("settings")?;
    match kind {
        StepKind::Collect => {
            let entry = connectors.get(config.get("connector")?.as_str()?)?;
            entry
                .connector
                .upstream(settings)
                .map(|origin| format!("host {origin}"))
        }
        StepKind::Deliver => {
            let entry = sinks.get(config.get("sink")?.as_str()?)?;
            entry
                .sink
                .endpoint(settings)
                .map(|url| format!("endpoint {url}"))
        }
    }
}

/// Runs one claimed step to the end of its attempt and records the outcome. With `hand_off`,
/// a collect step that ends its job's last source hands back the job's deliver step, already
/// leased to this worker: the caller runs it next in the same slot, with the `input` the
/// store read for it when it handed it over.
pub async fn run_step(
    context: &EngineContext,
    mut claimed: Claimed,
    input: Option<DeliveryInput>,
    hand_off: bool,
) -> Option<Handed> {
    let started = Instant::now();
    // Settings are stored with their secrets sealed; this attempt's copy holds them in clear.
    let unsealed = context.sealer.unseal_all(&mut claimed.step.config);
    let kind = claimed.step.kind;
    context.telemetry.attempt(kind.as_str());
    let span = tracing::info_span!("step", job_id = %claimed.step.job_id, step_id = claimed.step.id,
                                   attempt = claimed.fence.attempt);
    let breaker = breaker_key(
        &context.connectors,
        &context.sinks,
        kind,
        &claimed.step.config,
    );
    // Whether this attempt's first call is its breaker's half-open probe.
    let mut probe = false;
    let attempt = async {
        let heartbeat = heartbeat(context, &claimed);
        tokio::pin!(heartbeat);
        let work = async {
            let now = context.clock.now();
            if now > claimed.step.deadline_at {
                // Out of time budget: retries are exhausted, so `schedule` makes the step
                // `dead` (replayable), not `failed` (which means a non-retryable error).
                let last = claimed.step.last_error.as_deref().unwrap_or("none");
                let failure = Failure {
                    retry: Retryability::Retry { after: None },
                    ..Failure::permanent(
                        "budget",
                        format!("gave up: the time budget ran out; last error: {last}"),
                    )
                };
                return Err(Ok(failure));
            }
            if let Err(error) = &unsealed {
                return Err(Ok(Failure::permanent("settings", error.to_string())));
            }
            if let Some(key) = &breaker {
                match context.breakers.admit(key, now) {
                    Admission::Wait { until } => return Ok(Err((key.clone(), until))),
                    Admission::Probe => probe = true,
                    Admission::Proceed => {}
                }
            }
            let breaker = breaker.as_deref();
            match kind {
                StepKind::Collect => collect(context, &claimed, breaker)
                    .await
                    .map(|page| Ok(Done::Collected(page))),
                StepKind::Deliver => deliver(context, &claimed, input, breaker)
                    .await
                    .map(|receipt| Ok(Done::Delivered(receipt))),
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
        Ok(Ok(Done::Collected(last_page))) => (Outcome::Succeeded, last_page),
        Ok(Ok(Done::Delivered(receipt))) => (Outcome::Delivered { receipt }, None),
        Ok(Err((key, until))) => (deferral(&claimed, &key, until), None),
        Err(Ok(failure)) => {
            if failure.error.kind == "gone" {
                disable_endpoint(context, &claimed, &failure.error, now).await;
            }
            let reopened = probe
                .then(|| failed_probe(context, &claimed, breaker.as_deref(), &failure))
                .flatten();
            match reopened {
                Some(deferred) => (deferred, None),
                None => (schedule(context, &claimed, failure, now), None),
            }
        }
        Err(Err(Stop::Fenced)) => {
            context
                .telemetry
                .step_finished(kind.as_str(), "fenced", started.elapsed());
            span.in_scope(|| tracing::warn!("step lease lost; attempt abandoned"));
            return None;
        }
        Err(Err(Stop::Store(error))) => {
            span.in_scope(|| tracing::error!(%error, "store failed during step; the lease will expire and the step rerun"));
            return None;
        }
    };
    let word = outcome.word();
    match &outcome {
        Outcome::Retry { error, .. } | Outcome::Failed { error } | Outcome::Dead { error } => {
            span.in_scope(|| tracing::warn!(outcome = word, error_kind = %error.kind, error = %error.message, "step attempt failed"));
        }
        Outcome::Deferred { error, .. } => {
            span.in_scope(
                || tracing::info!(outcome = word, error = %error.message, "step deferred"),
            );
        }
        Outcome::Succeeded | Outcome::Delivered { .. } => {}
    }
    let lease_until =
        (hand_off && kind == StepKind::Collect).then(|| context.config.lease_until(now));
    match context
        .store
        .finish_and_continue(&claimed.fence, outcome, last_page, now, lease_until)
        .await
    {
        Ok(next) => {
            context
                .telemetry
                .step_finished(kind.as_str(), word, started.elapsed());
            next
        }
        Err(StoreError::Fenced) => {
            context
                .telemetry
                .step_finished(kind.as_str(), "fenced", started.elapsed());
            span.in_scope(|| tracing::warn!("step lease lost before its outcome was recorded"));
            None
        }
        Err(error) => {
            span.in_scope(|| tracing::error!(%error, "recording the step outcome failed"));
            None
        }
    }
}

/// A step that waits on an open breaker: it runs again when the breaker lets a probe through,
/// or just after its deadline (where the budget check ends it), whichever comes first.
fn deferral(claimed: &Claimed, key: &str, until: i64) -> Outcome {
    Outcome::Deferred {
        at: until.min(claimed.step.deadline_at.saturating_add(1)),
        error: StepError {
            kind: "breaker_open".into(),
            message: format!(
                "circuit breaker for {key} is open; waiting until {}",
                crate::clock::rfc3339(until)
            ),
            http_status: None,
            response: None,
        },
    }
}

/// A half-open probe that failed and reopened its breaker. The probe was made for every step
/// waiting on the breaker, so its step is deferred like them (no attempt used up) and runs again
/// when the breaker lets the next probe through; the probe's answer stays in the attempt log.
/// Counting it as an attempt charged one step, due first again each time, with every probe of
/// a long outage, until it died out of attempts while the others waited within their budget.
fn failed_probe(
    context: &EngineContext,
    claimed: &Claimed,
    key: Option<&str>,
    failure: &Failure,
) -> Option<Outcome> {
    let key = key?;
    if !failure.upstream || !matches!(failure.retry, Retryability::Retry { .. }) {
        return None;
    }
    let until = context.breakers.view(key).retry_at?;
    let mut error = failure.error.clone();
    error.message = format!(
        "half-open probe of {key} failed; circuit breaker open until {}: {}",
        crate::clock::rfc3339(until),
        error.message
    );
    Some(Outcome::Deferred {
        at: until.min(claimed.step.deadline_at.saturating_add(1)),
        error,
    })
}

/// A `410 Gone` from a receiver disables its endpoint for every job.
async fn disable_endpoint(context: &EngineContext, claimed: &Claimed, error: &StepError, now: i64) {
    let Some(url) = claimed
        .step
        .config
        .get("settings")
        .and_then(|settings| settings.get("url"))
        .and_then(Value::as_str)
    else {
        return;
    };
    let endpoint = DisabledEndpoint {
        url: url.to_owned(),
        reason: error.message.clone(),
        job_id: Some(claimed.step.job_id),
        disabled_at: now,
    };
    if let Err(error) = context.store.disable_endpoint(&endpoint).await {
        tracing::error!(%error, url, "could not record the disabled endpoint");
    }
}

/// Places a failed attempt: retry later, fail for good, or dead when out of attempts or budget.
/// Deliveries to sinks with a fixed schedule follow it; everything else backs off
/// exponentially.
fn schedule(context: &EngineContext, claimed: &Claimed, failure: Failure, now: i64) -> Outcome {
    let Failure {
        retry, mut error, ..
    } = failure;
    let Retryability::Retry { after } = retry else {
        return Outcome::Failed { error };
    };
    let step = &claimed.step;
    let tries = step.tries(claimed.fence.attempt);
    let allowed = step.tries(step.max_attempts);
    let fixed = (step.kind == StepKind::Deliver)
        .then(|| step.config.get("sink").and_then(Value::as_str))
        .flatten()
        .and_then(|sink| context.sinks.get(sink))
        .and_then(|entry| entry.sink.retry_schedule());
    let next = match &fixed {
        Some(schedule) if tries < allowed => {
            schedule.next_attempt_at(tries, after, now, step.deadline_at, &mut rand::rng())
        }
        Some(_) => None,
        None => context.config.backoff().next_attempt_at(
            tries,
            allowed,
            after,
            now,
            step.deadline_at,
            &mut rand::rng(),
        ),
    };
    match next {
        Some(at) => Outcome::Retry { at, error },
        None if error.kind == "budget" => Outcome::Dead { error },
        None => {
            let why = if now >= step.deadline_at {
                "gave up: the time budget ran out".to_owned()
            } else {
                format!("gave up after {tries} attempts")
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
        let until = context.config.lease_until(context.clock.now());
        match context.store.extend_lease(&claimed.fence, until).await {
            Ok(()) => {}
            Err(error @ StoreError::Fenced) => return Stop::from(error),
            Err(error) => tracing::warn!(%error, "lease heartbeat failed"),
        }
    }
}

type StepResult<T> = Result<T, Result<Failure, Stop>>;

/// Tells the breaker of `key` how one upstream call went: retryable failures count against
/// it; answers that show the other side is up (even a 404) count for it.
fn record_call<T>(context: &EngineContext, key: Option<&str>, result: &StepResult<T>) {
    let Some(key) = key else { return };
    let failed = match result {
        Ok(_) => false,
        Err(Ok(failure)) if failure.upstream => {
            matches!(failure.retry, Retryability::Retry { .. })
        }
        Err(_) => return,
    };
    context.breakers.record(key, failed, context.clock.now());
}

/// Collects from the checkpoint on, storing each page with its checkpoint; the last page is
/// returned so it is stored in the same transaction as the step's success.
async fn collect(
    context: &EngineContext,
    claimed: &Claimed,
    breaker: Option<&str>,
) -> StepResult<Option<PageWrite>> {
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
    let lookups = load_lookups(context, &chain).await?;
    let mut checkpoint = claimed.step.checkpoint.clone();
    let progress = Progress::resume(claimed.step.progress.as_ref());
    let (mut pages, mut collected, mut kept) = (claimed.step.pages, claimed.step.records, 0);
    loop {
        let page = progress
            .scope(entry.connector.collect_page(
                &context.connector_context,
                &config.settings,
                checkpoint.as_ref(),
            ))
            .await
            .map_err(|error| Ok(connector_failure(&error)));
        record_call(context, breaker, &page);
        let page = page?;
        pages += 1;
        let fetched = page.records.len() as u64;
        let room = context.config.keep_original_records.saturating_sub(kept);
        let originals = if chain.is_empty() || room == 0 {
            Vec::new()
        } else {
            page.records.iter().take(room).cloned().collect()
        };
        kept += originals.len();
        let records = if chain.is_empty() {
            page.records
        } else {
            chain
                .apply_async(page.records, lookups.clone())
                .await
                .map_err(|error| Ok(Failure::permanent("processing", error.to_string())))?
        };
        context.telemetry.records_collected(records.len() as u64);
        collected += records.len() as u64;
        progress.set(
            "pull",
            serde_json::json!({"pages": pages, "records": collected}),
        );
        if !chain.is_empty() {
            progress.set(
                "processing",
                serde_json::json!({"last_page_in": fetched, "last_page_out": records.len(), "records": collected}),
            );
        }
        let write = PageWrite {
            records,
            checkpoint: page.checkpoint.clone(),
            progress: Some(progress.snapshot()),
            originals,
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

/// Loads the lookup tables the chain reads, once per step; a table no job has filled yet fails
/// the step for good.
async fn load_lookups(context: &EngineContext, chain: &ProcessorChain) -> StepResult<Arc<Lookups>> {
    let mut lookups = Lookups::new();
    for name in chain.tables() {
        let table = context
            .store
            .lookup_table(&name)
            .await
            .map_err(|error| Err(Stop::from(error)))?
            .ok_or_else(|| {
                Ok(Failure::permanent(
                    "processing",
                    tabular::missing_table(&name),
                ))
            })?;
        lookups.insert(name, table.entries);
    }
    Ok(Arc::new(lookups))
}

/// Delivers the job's sources' outcome and every record to the step's sink; `input` is what
/// the store already read for it, if anything.
async fn deliver(
    context: &EngineContext,
    claimed: &Claimed,
    input: Option<DeliveryInput>,
    breaker: Option<&str>,
) -> StepResult<Receipt> {
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
    let input = match input {
        Some(input) => input,
        None => context
            .store
            .delivery_input(job_id, entry.sink.endpoint(&config.settings))
            .await
            .map_err(|error| Err(Stop::from(error)))?
            .ok_or(Err(Stop::Store(StoreError::NotFound)))?,
    };
    if let Some(disabled) = input.disabled {
        return Err(Ok(Failure::permanent(
            "endpoint_disabled",
            format!(
                "the endpoint is disabled since {} ({}); enable it, then replay this delivery",
                crate::clock::rfc3339(disabled.disabled_at),
                disabled.reason
            ),
        )));
    }
    let sources: Vec<SourceOutcome> = input
        .sources
        .iter()
        .map(|step| SourceOutcome {
            step_id: step.id,
            name: source_name(step),
            connector: step.name.clone(),
            state: step.state,
            attempts: step.tries(step.attempt),
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
        delivery_id: format!("msg_{}_{}", job_id.simple(), claimed.step.position),
        status,
        created_at: input.created_at,
        collected_at: input
            .sources
            .iter()
            .filter_map(|step| step.finished_at)
            .max()
            .unwrap_or(input.created_at),
        sources,
        records: input.records,
    };
    let result = entry
        .sink
        .deliver(&context.sink_context, &config.settings, &delivery)
        .await
        .map_err(|error| Ok(sink_failure(&error)));
    record_call(context, breaker, &result);
    result
}

/// The name a source has in results: the one the job gave it, else the connector's.
fn source_name(step: &crate::job::Step) -> String {
    step.config
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(&step.name)
        .to_owned()
}
