//! `/v1/schedules`: create, list, show (with the next run times and recent ticks), change,
//! pause/resume (`paused` in a PATCH), run now and delete cron schedules.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{ApiJson, ApiPath};
use super::jobs::{self, CreationProblems, JobView};
use crate::clock::rfc3339;
use crate::config::duration;
use crate::job::GeneratedSecret;
use crate::job::spec::JobSpec;
use crate::schedule::scheduler::accept;
use crate::schedule::{CatchUp, Origin, Overlap, Schedule, ScheduleSpec, TickRow, Ticks};

/// How many upcoming run times a schedule view lists.
const UPCOMING: usize = 5;
/// How many recent ticks a schedule view lists.
const RECENT_TICKS: usize = 20;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_schedule, list_schedules))
        .routes(routes!(get_schedule, patch_schedule, delete_schedule))
        .routes(routes!(run_schedule))
}

/// A schedule as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    pub catch_up_max: u32,
    pub jitter: Option<String>,
    pub paused: bool,
    /// `api`, or `config` for `[[schedule]]` entries of `gleaner.toml` (read-only here).
    pub origin: Origin,
    /// The job template, secrets redacted.
    #[schema(value_type = Object)]
    pub job: Value,
    /// The next run times (before jitter).
    pub next_runs: Vec<String>,
    pub last_tick: Option<String>,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub last_job_id: Option<Uuid>,
    pub created_at: String,
    pub updated_at: String,
    /// Most recent ticks first (detail view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticks: Option<Vec<TickRow>>,
    /// Secrets generated for the template's sinks; shown only in the answer that created the
    /// schedule.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signing_secrets: Vec<GeneratedSecret>,
}

impl ScheduleView {
    fn new(schedule: Schedule, state: &AppState) -> Self {
        let spec = schedule.spec;
        let next_runs = match (schedule.next_at, Ticks::parse(&spec.cron, &spec.timezone)) {
            (Some(next), Ok(ticks)) => std::iter::once(next)
                .chain(ticks.upcoming(next, UPCOMING - 1))
                .map(rfc3339)
                .collect(),
            _ => Vec::new(),
        };
        let job = serde_json::to_value(&spec.job)
            .map(|job| JobSpec::redacted(&job, &state.catalog()))
            .unwrap_or(Value::Null);
        Self {
            id: schedule.id,
            name: spec.name,
            cron: spec.cron,
            timezone: spec.timezone,
            overlap: spec.overlap,
            catch_up: spec.catch_up,
            catch_up_max: spec.catch_up_max,
            jitter: (!spec.jitter.is_zero()).then(|| duration::format(&spec.jitter)),
            paused: spec.paused,
            origin: schedule.origin,
            job,
            next_runs,
            last_tick: schedule.last_tick.map(rfc3339),
            last_job_id: schedule.last_job_id,
            created_at: rfc3339(schedule.created_at),
            updated_at: rfc3339(schedule.updated_at),
            ticks: None,
            signing_secrets: Vec::new(),
        }
    }
}

fn invalid(error: crate::schedule::ScheduleError) -> ApiError {
    ApiError::unprocessable(error.to_string())
}

/// Create a schedule. Its first run is at the first tick after now.
#[utoipa::path(post, path = "/v1/schedules", tag = "schedules", request_body = ScheduleSpec,
    responses((status = 201, body = ScheduleView), (status = 400, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_schedule(
    State(state): State<AppState>,
    body: ApiJson<ScheduleSpec>,
) -> ApiResult<(StatusCode, Json<ScheduleView>)> {
    let context = &state.inner.scheduler;
    let now = context.clock.now();
    let (schedule, secrets) =
        accept(context, Uuid::now_v7(), Origin::Api, body.value, now, now).map_err(invalid)?;
    context.store.create_schedule(&schedule).await?;
    context.changed.notify_one();
    let mut view = ScheduleView::new(schedule, &state);
    view.signing_secrets = secrets;
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Debug, Serialize, ToSchema)]
struct ScheduleList {
    schedules: Vec<ScheduleView>,
}

/// List schedules by name.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules",
    responses((status = 200, body = ScheduleList)))]
async fn list_schedules(State(state): State<AppState>) -> ApiResult<Json<ScheduleList>> {
    let schedules = state.inner.store.list_schedules().await?;
    Ok(Json(ScheduleList {
        schedules: schedules
            .into_iter()
            .map(|schedule| ScheduleView::new(schedule, &state))
            .collect(),
    }))
}

async fn load(state: &AppState, key: &str) -> ApiResult<Schedule> {
    state
        .inner
        .store
        .get_schedule(key)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no schedule {key:?}")))
}

/// Show a schedule (by id or name) with its next run times and recent ticks.
#[utoipa::path(get, path = "/v1/schedules/{key}", tag = "schedules",
    params(("key" = String, Path, description = "Schedule id or name")),
    responses((status = 200, body = ScheduleView), (status = 404, body = Problem)))]
async fn get_schedule(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Json<ScheduleView>> {
    let schedule = load(&state, &key).await?;
    let ticks = state
        .inner
        .store
        .schedule_ticks(schedule.id, RECENT_TICKS)
        .await?;
    let mut view = ScheduleView::new(schedule, &state);
    view.ticks = Some(ticks);
    Ok(Json(view))
}

/// The fields a PATCH may change; absent ones stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SchedulePatch {
    name: Option<String>,
    cron: Option<String>,
    timezone: Option<String>,
    job: Option<JobSpec>,
    overlap: Option<Overlap>,
    catch_up: Option<CatchUp>,
    catch_up_max: Option<u32>,
    #[serde(default, with = "optional_duration")]
    #[schema(value_type = Option<String>)]
    jitter: Option<Duration>,
    /// `true` pauses (no tick fires), `false` resumes from the next tick after now.
    paused: Option<bool>,
}

mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "crate::config::duration")] Duration);
        Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(duration)| duration))
    }
}

/// Change a schedule. The next run is recomputed from now, so a change never re-runs a past
/// tick. Schedules from `gleaner.toml` are changed there, not here (409).
#[utoipa::path(patch, path = "/v1/schedules/{key}", tag = "schedules", request_body = SchedulePatch,
    params(("key" = String, Path, description = "Schedule id or name")),
    responses((status = 200, body = ScheduleView), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn patch_schedule(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    body: ApiJson<SchedulePatch>,
) -> ApiResult<Json<ScheduleView>> {
    let existing = load(&state, &key).await?;
    if existing.origin == Origin::Config {
        return Err(ApiError::Conflict(format!(
            "schedule {:?} is defined in the configuration file; change it there",
            existing.spec.name
        )));
    }
    let patch = body.value;
    let mut spec = existing.spec.clone();
    spec.name = patch.name.unwrap_or(spec.name);
    spec.cron = patch.cron.unwrap_or(spec.cron);
    spec.timezone = patch.timezone.unwrap_or(spec.timezone);
    spec.job = patch.job.unwrap_or(spec.job);
    spec.overlap = patch.overlap.unwrap_or(spec.overlap);
    spec.catch_up = patch.catch_up.unwrap_or(spec.catch_up);
    spec.catch_up_max = patch.catch_up_max.unwrap_or(spec.catch_up_max);
    spec.jitter = patch.jitter.unwrap_or(spec.jitter);
    spec.paused = patch.paused.unwrap_or(spec.paused);
    let context = &state.inner.scheduler;
    let now = context.clock.now();
    // `updated_at` must move on every change: it is the version a scheduler's decision was
    // made on, and a stale decision is refused by it.
    let now = now.max(existing.updated_at + 1);
    let (mut schedule, _) = accept(
        context,
        existing.id,
        Origin::Api,
        spec,
        now,
        existing.created_at,
    )
    .map_err(invalid)?;
    schedule.last_tick = existing.last_tick;
    schedule.last_job_id = existing.last_job_id;
    context.store.replace_schedule(&schedule).await?;
    context.changed.notify_one();
    Ok(Json(ScheduleView::new(schedule, &state)))
}

/// Delete a schedule; the jobs it created stay.
#[utoipa::path(delete, path = "/v1/schedules/{key}", tag = "schedules",
    params(("key" = String, Path, description = "Schedule id or name")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_schedule(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let existing = load(&state, &key).await?;
    if existing.origin == Origin::Config {
        return Err(ApiError::Conflict(format!(
            "schedule {:?} is defined in the configuration file; remove it there",
            existing.spec.name
        )));
    }
    state.inner.store.delete_schedule(existing.id).await?;
    state.inner.scheduler.changed.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

/// Run a schedule's job now, outside its ticks (paused or not): the job is planned from the
/// template as a tick's would be, its relative dates read now in the schedule's zone. It is not
/// a tick: the next run times, the recent ticks and the overlap policy are unaffected. Answers
/// as `POST /v1/jobs` does (202 once stored; `Idempotency-Key` honoured).
#[utoipa::path(post, path = "/v1/schedules/{key}/run", tag = "schedules",
    params(("key" = String, Path, description = "Schedule id or name"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries of this request safe for 24 h")),
    responses(
        (status = 202, description = "The job, accepted and stored", body = JobView),
        (status = 200, description = "Replay of an earlier request with the same Idempotency-Key", body = JobView),
        (status = 404, body = Problem),
        CreationProblems))]
async fn run_schedule(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Response> {
    let schedule = load(&state, &key).await?;
    let ticks = Ticks::parse(&schedule.spec.cron, &schedule.spec.timezone).map_err(invalid)?;
    let catalog = state.catalog().dated(ticks.zone(), None);
    // A key is bound to this schedule as it is now: reused after a change, it is a conflict.
    let canonical = serde_json::json!({"schedule": schedule.id, "version": schedule.updated_at});
    let created = jobs::create_with(
        &state,
        &catalog,
        &headers,
        &schedule.spec.job,
        &canonical,
        |error| ApiError::unprocessable(format!("the schedule's job no longer plans: {error}")),
    )
    .await?;
    Ok(created.into_response(|view| view))
}
