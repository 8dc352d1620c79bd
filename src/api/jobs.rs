//! `/v1/jobs`: create (202 once committed, idempotent with `Idempotency-Key`), list, show,
//! cancel, retry, and read a job's records.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, IntoResponses, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::clock::{Millis, rfc3339};
use crate::engine::breaker::BreakerView;
use crate::engine::breaker_key;
use crate::job::spec::{Catalog, JobSpec, SpecError};
use crate::job::{
    Attempt, GeneratedSecret, IdempotencyClaim, Job, JobDetail, JobFilter, JobStatus, Step,
    StepKind, StepState,
};
use crate::store::Created;

/// How long an idempotency key is remembered.
const IDEMPOTENCY_TTL_MS: Millis = 24 * 3600 * 1000;
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Most jobs one `POST /v1/jobs/batch` may create.
pub const MAX_BATCH_JOBS: usize = 1000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_job, list_jobs))
        .routes(routes!(create_jobs))
        .routes(routes!(get_job))
        .routes(routes!(cancel_job))
        .routes(routes!(retry_job))
        .routes(routes!(redeliver_job))
        .routes(routes!(job_records))
}

/// A job as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    pub status: JobStatus,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    /// The submitted spec with secret settings redacted.
    #[schema(value_type = Object)]
    pub spec: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<Attempt>>,
    /// Records stored so far over all sources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_collected: Option<u64>,
    /// Signing secrets generated for this job's callback sinks. Shown only in the answer that
    /// created the job: keep them to verify the callbacks' signatures.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signing_secrets: Vec<GeneratedSecret>,
}

/// A step as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepView {
    pub id: i64,
    pub kind: StepKind,
    /// The connector or sink type.
    pub name: String,
    pub state: StepState,
    pub attempts: u32,
    pub max_attempts: u32,
    /// When the next attempt may start (queued or retrying steps).
    pub next_attempt_at: Option<String>,
    pub deadline_at: Option<String>,
    /// Seconds left of the time budget (0 once spent; absent for finished steps).
    pub budget_remaining_seconds: Option<i64>,
    pub lease_expires_at: Option<String>,
    pub pages: u64,
    pub records: u64,
    pub last_error: Option<String>,
    pub last_status: Option<u16>,
    #[schema(value_type = Option<Object>)]
    pub checkpoint: Option<Value>,
    /// Named progress entries the step reported (`login`, `pull`, `processing`, `warnings`…).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub progress: Option<Value>,
    /// Attempts that only waited on an open circuit breaker (not counted against the limit).
    pub deferred_attempts: u32,
    /// The circuit breaker of the upstream host or callback endpoint this step calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerView>,
}

impl StepView {
    fn new(step: Step, now: Millis, state: &AppState) -> Self {
        let open = !step.state.is_terminal() && step.state != StepState::Waiting;
        let breaker = breaker_key(
            &state.inner.connectors,
            &state.inner.sinks,
            step.kind,
            &step.config,
        )
        .map(|key| state.inner.breakers.view(&key));
        Self {
            breaker,
            deferred_attempts: step.deferrals,
            id: step.id,
            kind: step.kind,
            name: step.name,
            state: step.state,
            attempts: step.attempt,
            max_attempts: step.max_attempts,
            next_attempt_at: step.run_at.filter(|_| open).map(rfc3339),
            deadline_at: open.then(|| rfc3339(step.deadline_at)),
            budget_remaining_seconds: open.then(|| ((step.deadline_at - now) / 1000).max(0)),
            lease_expires_at: step.lease_expires_at.map(rfc3339),
            pages: step.pages,
            records: step.records,
            last_error: step.last_error,
            last_status: step.last_status,
            checkpoint: step.checkpoint,
            progress: step.progress,
        }
    }
}

impl JobView {
    pub(super) fn summary(job: Job, state: &AppState) -> Self {
        Self {
            id: job.id,
            status: job.status,
            created_at: rfc3339(job.created_at),
            updated_at: rfc3339(job.updated_at),
            finished_at: job.finished_at.map(rfc3339),
            spec: JobSpec::redacted(&job.spec, &state.catalog()),
            steps: None,
            attempts: None,
            records_collected: None,
            signing_secrets: Vec::new(),
        }
    }

    pub(super) fn detail(detail: JobDetail, state: &AppState) -> Self {
        let now = state.inner.clock.now();
        let records = detail
            .steps
            .iter()
            .filter(|step| step.kind == StepKind::Collect)
            .map(|step| step.records)
            .sum();
        let mut view = Self::summary(detail.job, state);
        view.records_collected = Some(records);
        view.steps = Some(
            detail
                .steps
                .into_iter()
                .map(|step| StepView::new(step, now, state))
                .collect(),
        );
        view.attempts = Some(detail.attempts);
        view
    }
}

pub(super) fn spec_error(error: SpecError) -> ApiError {
    ApiError::unprocessable(error.to_string())
}

fn idempotency_claim(
    headers: &HeaderMap,
    canonical: &Value,
    now: Millis,
) -> ApiResult<Option<IdempotencyClaim>> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|key| !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Idempotency-Key must be 1–{MAX_IDEMPOTENCY_KEY} visible ASCII characters"
            ))
        })?;
    Ok(Some(IdempotencyClaim {
        key: key.to_owned(),
        request_hash: hex::encode(Sha256::digest(canonical.to_string().as_bytes())),
        expires_at: now + IDEMPOTENCY_TTL_MS,
    }))
}

/// A job just stored, or the one an earlier request with the same `Idempotency-Key` stored.
pub(super) struct CreatedJob {
    pub view: JobView,
    pub replayed: bool,
}

/// Plans `spec` and stores the job: the one path of every route that creates jobs, so
/// validation, idempotency and the durable 202 are the same whatever the request looked like.
/// `canonical` is what the idempotency key is bound to; `explain` words a refused spec in the
/// route's own vocabulary.
pub(super) async fn create(
    state: &AppState,
    headers: &HeaderMap,
    spec: &JobSpec,
    canonical: &Value,
    explain: impl FnOnce(SpecError) -> ApiError,
) -> ApiResult<CreatedJob> {
    create_with(state, &state.catalog(), headers, spec, canonical, explain).await
}

/// [`create`] planned against `catalog` (a schedule's run: its own time zone).
pub(super) async fn create_with(
    state: &AppState,
    catalog: &Catalog<'_>,
    headers: &HeaderMap,
    spec: &JobSpec,
    canonical: &Value,
    explain: impl FnOnce(SpecError) -> ApiError,
) -> ApiResult<CreatedJob> {
    let now = state.inner.clock.now();
    let claim = idempotency_claim(headers, canonical, now)?;
    let new_job = spec
        .plan(catalog, state.inner.engine.step_defaults(), now, claim)
        .map_err(explain)?;
    let secrets = new_job.generated_secrets.clone();
    let created = state.inner.store.create_job(new_job).await?;
    Ok(CreatedJob::new(state, created, secrets))
}

impl CreatedJob {
    /// The answer for a job the store returned: counted and with its generated secrets when it
    /// is new, as it was when it is a replay (secrets are shown only once).
    fn new(state: &AppState, created: Created, secrets: Vec<GeneratedSecret>) -> Self {
        let mut view = JobView::summary(created.job, state);
        if !created.replayed {
            state.inner.telemetry.jobs_created(1);
            view.signing_secrets = secrets;
        }
        CreatedJob {
            view,
            replayed: created.replayed,
        }
    }
}

/// The problems of every route that creates jobs, for the OpenAPI document: malformed JSON,
/// an idempotency key reused with another body, a body too large, not JSON, an invalid spec.
#[derive(IntoResponses)]
#[expect(
    dead_code,
    reason = "only describes responses; errors are built as `ApiError`"
)]
pub(super) enum CreationProblems {
    #[response(status = 400)]
    BadRequest(Problem),
    #[response(status = 409)]
    Conflict(Problem),
    #[response(status = 413)]
    TooLarge(Problem),
    #[response(status = 415)]
    UnsupportedMediaType(Problem),
    #[response(status = 422)]
    Invalid(Problem),
}

impl CreatedJob {
    /// 202 with `Location` for a new job, 200 with `Idempotent-Replayed: true` for a replay;
    /// the body is what `body` makes of the job's view.
    pub(super) fn into_response<T: Serialize>(self, body: impl FnOnce(JobView) -> T) -> Response {
        let location = format!("/v1/jobs/{}", self.view.id);
        if self.replayed {
            return replayed(body(self.view));
        }
        let mut response = (StatusCode::ACCEPTED, Json(body(self.view))).into_response();
        if let Ok(value) = HeaderValue::from_str(&location) {
            response
                .headers_mut()
                .insert(axum::http::header::LOCATION, value);
        }
        response
    }
}

/// Create a job. Answers 202 only once the job is durably stored. With an `Idempotency-Key`,
/// the same key and body return the same job (200 with `Idempotent-Replayed: true`); the same
/// key with another body is a 409.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = JobSpec,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries of this request safe for 24 h")),
    responses(
        (status = 202, description = "Accepted and stored", body = JobView),
        (status = 200, description = "Replay of an earlier request with the same Idempotency-Key", body = JobView),
        CreationProblems))]
async fn create_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: ApiJson<JobSpec>,
) -> ApiResult<Response> {
    let created = create(&state, &headers, &body.value, &body.canonical, spec_error).await?;
    Ok(created.into_response(|view| view))
}

/// Several jobs in one request, stored all or none.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobBatch {
    /// 1–1000 jobs, each as `POST /v1/jobs` takes it.
    pub jobs: Vec<JobSpec>,
}

/// The jobs a batch created, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobBatchView {
    pub jobs: Vec<JobView>,
}

/// Create up to 1000 jobs in one request and one transaction: every job is validated first,
/// and one invalid job refuses the batch (422 naming it by index) with nothing stored. Answers
/// 202 once all are durably stored. With an `Idempotency-Key`, the same key and body return
/// the same jobs (200 with `Idempotent-Replayed: true`); another body is a 409.
#[utoipa::path(post, path = "/v1/jobs/batch", tag = "jobs", request_body = JobBatch,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries of this request safe for 24 h")),
    responses(
        (status = 202, description = "Accepted and stored", body = JobBatchView),
        (status = 200, description = "Replay of an earlier request with the same Idempotency-Key", body = JobBatchView),
        CreationProblems))]
async fn create_jobs(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: ApiJson<JobBatch>,
) -> ApiResult<Response> {
    let specs = &body.value.jobs;
    if specs.is_empty() || specs.len() > MAX_BATCH_JOBS {
        return Err(ApiError::unprocessable(format!(
            "jobs must hold 1–{MAX_BATCH_JOBS} jobs (got {})",
            specs.len()
        )));
    }
    let now = state.inner.clock.now();
    let claim = idempotency_claim(&headers, &body.canonical, now)?;
    let catalog = state.catalog();
    let defaults = state.inner.engine.step_defaults();
    let planned = specs
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            // Each job of the batch is kept under its own key, bound to the whole body; a
            // newline cannot occur in a header, so these never meet a single job's key.
            let claim = claim.as_ref().map(|claim| IdempotencyClaim {
                key: format!("{}\n{index}", claim.key),
                ..claim.clone()
            });
            spec.plan(&catalog, defaults, now, claim)
                .map_err(|error| ApiError::unprocessable(format!("jobs[{index}]: {error}")))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let secrets: Vec<_> = planned
        .iter()
        .map(|job| job.generated_secrets.clone())
        .collect();
    let created = state.inner.store.create_jobs(planned).await?;
    let is_replay = created.iter().any(|created| created.replayed);
    let jobs: Vec<JobView> = created
        .into_iter()
        .zip(secrets)
        .map(|(created, secrets)| CreatedJob::new(&state, created, secrets).view)
        .collect();
    let body = JobBatchView { jobs };
    if is_replay {
        return Ok(replayed(body));
    }
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// 200 with `Idempotent-Replayed: true`: the answer to a request an earlier one already made.
fn replayed<T: Serialize>(body: T) -> Response {
    let mut response = (StatusCode::OK, Json(body)).into_response();
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only jobs in this status.
    status: Option<String>,
    /// Only jobs with a source using this connector.
    connector: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<Uuid>,
    /// Page size, 1–500 (default 50).
    limit: Option<usize>,
}

/// A page of jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
struct JobPage {
    jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

fn page_limit(limit: Option<usize>, default: usize, max: usize) -> ApiResult<usize> {
    match limit.unwrap_or(default) {
        0 => Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {max}"
        ))),
        limit if limit > max => Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {max}"
        ))),
        limit => Ok(limit),
    }
}

/// List jobs, newest first, filtered by status and connector, with cursor paging.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListParams),
    responses((status = 200, body = JobPage), (status = 400, body = Problem)))]
async fn list_jobs(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<JobPage>> {
    let status = params
        .status
        .as_deref()
        .map(|text| {
            JobStatus::parse(text).ok_or_else(|| {
                let known: Vec<_> = JobStatus::ALL
                    .iter()
                    .map(|status| status.as_str())
                    .collect();
                ApiError::BadRequest(format!(
                    "unknown status {text:?}; use one of {}",
                    known.join(", ")
                ))
            })
        })
        .transpose()?;
    let limit = page_limit(params.limit, 50, 500)?;
    let filter = JobFilter {
        status,
        connector: params.connector,
        before: params.cursor,
        limit,
    };
    let jobs = state.inner.store.list_jobs(&filter).await?;
    let next_cursor = (jobs.len() == limit)
        .then(|| jobs.last().map(|job| job.id.to_string()))
        .flatten();
    let jobs = jobs
        .into_iter()
        .map(|job| JobView::summary(job, &state))
        .collect();
    Ok(Json(JobPage { jobs, next_cursor }))
}

/// Store errors about job `id`, with a 404 that names it.
fn job_error(id: Uuid) -> impl FnOnce(crate::store::Error) -> ApiError {
    move |error| match error {
        crate::store::Error::NotFound => ApiError::NotFound(format!("no job {id}")),
        other => other.into(),
    }
}

async fn load(state: &AppState, id: Uuid) -> ApiResult<JobDetail> {
    state
        .inner
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))
}

/// Show a job with its steps (attempts, next attempt time, remaining budget, records) and its
/// attempt log.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = JobView), (status = 404, body = Problem)))]
async fn get_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<JobView>> {
    Ok(Json(JobView::detail(load(&state, id).await?, &state)))
}

/// Cancel a job: its unfinished steps stop and will not run again. 409 when it already finished.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = JobView), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn cancel_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<JobView>> {
    let now = state.inner.clock.now();
    state
        .inner
        .store
        .cancel_job(id, now)
        .await
        .map_err(job_error(id))?;
    Ok(Json(JobView::detail(load(&state, id).await?, &state)))
}

/// Retry a job's failed, dead or cancelled steps with a fresh attempt budget. When a source is
/// retried, the job's sinks deliver again once it is done.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = JobView), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn retry_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<JobView>> {
    let now = state.inner.clock.now();
    state
        .inner
        .store
        .retry_job(id, now, state.inner.engine.retry_budget())
        .await
        .map_err(job_error(id))?;
    Ok(Json(JobView::detail(load(&state, id).await?, &state)))
}

/// Send a finished job's result to its sinks again (all of them, succeeded ones included),
/// each on a fresh schedule. Callbacks keep their `webhook-id`, so receivers can tell a
/// redelivery from a new result. 409 while a source is still being collected.
#[utoipa::path(post, path = "/v1/jobs/{id}/redeliver", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = JobView), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn redeliver_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<JobView>> {
    let now = state.inner.clock.now();
    // Long enough for the longest fixed schedule among the sinks (callbacks span ~39 h).
    let mut budget = state.inner.engine.retry_budget();
    for entry in state.inner.sinks.iter() {
        if let Some(schedule) = entry.sink.retry_schedule() {
            let span = i64::try_from(schedule.span().as_millis()).unwrap_or(i64::MAX);
            budget.budget_ms = budget.budget_ms.max(span);
        }
    }
    state
        .inner
        .store
        .redeliver(id, now, budget)
        .await
        .map_err(job_error(id))?;
    Ok(Json(JobView::detail(load(&state, id).await?, &state)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RecordParams {
    /// The `next_cursor` of the previous page.
    cursor: Option<i64>,
    /// Page size, 1–10 000 (default 1 000).
    limit: Option<usize>,
    /// `processed` (default: what the processors produced, what sinks receive) or `original`
    /// (as collected, before processors; capped per step by `engine.keep_original_records`).
    dataset: Option<Dataset>,
}

/// Which records of a job to read.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Dataset {
    #[default]
    Processed,
    Original,
}

/// One stored record.
#[derive(Debug, Serialize, ToSchema)]
struct RecordView {
    id: i64,
    step_id: i64,
    page: u64,
    #[schema(value_type = Object)]
    data: Value,
}

/// A page of a job's records, in collection order.
#[derive(Debug, Serialize, ToSchema)]
struct RecordPage {
    records: Vec<RecordView>,
    next_cursor: Option<String>,
}

/// Read the records a job collected, in collection order.
#[utoipa::path(get, path = "/v1/jobs/{id}/records", tag = "jobs", params(("id" = Uuid, Path), RecordParams),
    responses((status = 200, body = RecordPage), (status = 404, body = Problem)))]
async fn job_records(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<RecordParams>,
) -> ApiResult<Json<RecordPage>> {
    let limit = page_limit(params.limit, 1000, 10_000)?;
    let store = &state.inner.store;
    let records = match params.dataset.unwrap_or_default() {
        Dataset::Processed => store.job_records(id, params.cursor, limit).await?,
        Dataset::Original => store.original_records(id, params.cursor, limit).await?,
    };
    if records.is_empty()
        && params.cursor.is_none()
        && state.inner.store.get_job(id).await?.is_none()
    {
        return Err(ApiError::NotFound(format!("no job {id}")));
    }
    let next_cursor = (records.len() == limit)
        .then(|| records.last().map(|row| row.id.to_string()))
        .flatten();
    let records = records
        .into_iter()
        .map(|row| RecordView {
            id: row.id,
            step_id: row.step_id,
            page: row.page,
            data: row.data,
        })
        .collect();
    Ok(Json(RecordPage {
        records,
        next_cursor,
    }))
}
