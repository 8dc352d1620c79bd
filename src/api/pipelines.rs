//! `/v1/pipelines`: create, list, show (per-stage counters, queue depths, rate-limit waits, the
//! source's checkpoint, last errors), change (JSON merge patch of the definition), start,
//! pause, stop and delete pipelines; list and replay their dead letters.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{ApiJson, ApiPath};
use crate::clock::rfc3339;
use crate::observability::PipelineStageSample;
use crate::pipelines::PipelineSpec;
use crate::pipelines::accept::{seal_secrets, validate};
use crate::pipelines::model::{
    Pipeline, PipelineDeadLetter, PipelineLease, PipelineState, StageCounters,
};
use crate::pipelines::runtime::{LiveSource, LiveStage, stage_name};
use crate::pipelines::spec::SinkKind;
use crate::schedule::Origin;

/// Most dead letters one page lists.
const MAX_PAGE: usize = 1000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_pipeline, list_pipelines))
        .routes(routes!(get_pipeline, patch_pipeline, delete_pipeline))
        .routes(routes!(start_pipeline))
        .routes(routes!(pause_pipeline))
        .routes(routes!(stop_pipeline))
        .routes(routes!(list_dead_letters))
        .routes(routes!(replay_dead_letters))
}

/// One stage of a pipeline as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StageView {
    /// 0 is the source, then processors, then sinks.
    pub index: u32,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Durable counters: `entered = done + dead + queued` at every stage.
    #[schema(value_type = Object)]
    pub counters: StageCounters,
    /// Queue depth, in-flight messages, rate-limit waits and the last error, while running
    /// in this process.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub live: Option<LiveStage>,
}

/// The process that runs a pipeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunnerView {
    /// The process's lease name (`pipelines-…`, new at every start).
    pub owner: String,
    /// When another process may take the pipeline over unless this one renews the lease.
    pub lease_expires_at: String,
}

/// A pipeline as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineView {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    pub name: String,
    /// `api`, or `config` for `[[pipeline]]` entries of `gleaner.toml` (changed there).
    pub origin: Origin,
    /// `running`, `paused` (the source waits, queued messages still flow) or `stopped`.
    #[schema(value_type = String)]
    pub state: PipelineState,
    /// Whether this process runs it now.
    pub active: bool,
    /// The process holding its lease, which runs it (absent when none does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner: Option<RunnerView>,
    /// Why it could not start, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_error: Option<String>,
    /// The definition, secrets redacted.
    #[schema(value_type = Object)]
    pub spec: Value,
    /// The source's checkpoint (its cursor) after the last stored page.
    #[schema(value_type = Option<Object>)]
    pub checkpoint: Option<Value>,
    pub created_at: String,
    pub updated_at: String,
    /// Detail view only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub source: Option<LiveSource>,
    /// Detail view only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<StageView>>,
}

/// The definition with secrets hidden: connector settings marked secret, SQL passwords and
/// HTTP header values, and anything else stored sealed.
fn redacted(spec: &PipelineSpec, state: &AppState) -> Value {
    let mut spec = spec.clone();
    if let Some(entry) = state.inner.connectors.get(&spec.source.connector) {
        spec.source.settings = entry.schema.redact(&spec.source.settings);
    }
    let hide = |headers: &mut std::collections::BTreeMap<String, String>| {
        headers.values_mut().for_each(|value| *value = "***".into());
    };
    for stage in &mut spec.processors {
        if let crate::pipelines::spec::ProcessorKind::Http(call) = &mut stage.kind {
            hide(&mut call.headers);
        }
    }
    for stage in &mut spec.sinks {
        match &mut stage.kind {
            SinkKind::Http(call) => hide(&mut call.headers),
            SinkKind::Sql(sql) => sql.url = sql.redacted_url(),
        }
    }
    let mut view = serde_json::to_value(spec).unwrap_or(Value::Null);
    crate::secrets::mask_sealed(&mut view);
    view
}

impl PipelineView {
    fn new(pipeline: &Pipeline, state: &AppState) -> Self {
        Self {
            id: pipeline.id,
            name: pipeline.spec.name.clone(),
            origin: pipeline.origin,
            state: pipeline.state,
            active: false,
            runner: None,
            start_error: state.inner.pipelines.start_failure(pipeline.id),
            spec: redacted(&pipeline.spec, state),
            checkpoint: pipeline.checkpoint.clone(),
            created_at: rfc3339(pipeline.created_at),
            updated_at: rfc3339(pipeline.updated_at),
            source: None,
            stages: None,
        }
    }

    async fn detailed(pipeline: &Pipeline, state: &AppState) -> ApiResult<Self> {
        let mut view = Self::new(pipeline, state);
        let counters = state.inner.store.pipeline_counters(pipeline.id).await?;
        let live = state.inner.pipelines.live(pipeline.id).await;
        view.active = live.is_some();
        view.runner = state
            .inner
            .store
            .pipeline_lease(pipeline.id)
            .await?
            .map(RunnerView::from);
        let (source, mut stages) = match live {
            Some(live) => (Some(live.source), live.stages),
            None => (None, Vec::new()),
        };
        if let Some(source) = &source {
            view.checkpoint = source.checkpoint.clone();
        }
        view.source = source;
        let count = 1 + pipeline.spec.processors.len() + pipeline.spec.sinks.len();
        view.stages = Some(
            (0..count as u32)
                .map(|index| {
                    let kind = match index {
                        0 => pipeline.spec.source.connector.clone(),
                        _ => stages
                            .iter()
                            .find(|stage| stage.index == index)
                            .map(|stage| stage.kind.clone())
                            .unwrap_or_default(),
                    };
                    StageView {
                        index,
                        name: stage_name(&pipeline.spec, index),
                        kind,
                        counters: counters
                            .iter()
                            .find(|(stage, _)| *stage == index)
                            .map(|(_, counters)| *counters)
                            .unwrap_or_default(),
                        live: stages
                            .iter()
                            .position(|stage| stage.index == index)
                            .map(|at| stages.swap_remove(at)),
                    }
                })
                .collect(),
        );
        Ok(view)
    }
}

fn refuse(error: crate::pipelines::accept::SpecError) -> ApiError {
    ApiError::unprocessable(error.to_string())
}

async fn load(state: &AppState, key: &str) -> ApiResult<Pipeline> {
    state
        .inner
        .store
        .get_pipeline(key)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no pipeline {key:?}")))
}

fn editable(pipeline: &Pipeline, verb: &str) -> ApiResult<()> {
    if pipeline.origin == Origin::Config {
        return Err(ApiError::Conflict(format!(
            "pipeline {:?} is defined in the configuration file; {verb} it there",
            pipeline.spec.name
        )));
    }
    Ok(())
}

/// Create a pipeline; it starts running at once.
#[utoipa::path(post, path = "/v1/pipelines", tag = "pipelines", request_body = Object,
    responses((status = 201, body = PipelineView), (status = 400, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_pipeline(
    State(state): State<AppState>,
    body: ApiJson<PipelineSpec>,
) -> ApiResult<(StatusCode, Json<PipelineView>)> {
    validate(&body.value, &state.inner.connectors).map_err(refuse)?;
    let spec = seal_secrets(
        &body.value,
        &state.inner.connectors,
        &state.inner.scheduler.sealer,
    );
    let now = state.inner.clock.now();
    let pipeline = Pipeline {
        id: Uuid::now_v7(),
        origin: Origin::Api,
        spec,
        state: PipelineState::Running,
        checkpoint: None,
        created_at: now,
        updated_at: now,
    };
    state.inner.store.create_pipeline(&pipeline).await?;
    state.inner.pipelines.nudge();
    Ok((
        StatusCode::CREATED,
        Json(PipelineView::new(&pipeline, &state)),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
struct PipelineList {
    pipelines: Vec<PipelineView>,
}

/// List pipelines by name.
#[utoipa::path(get, path = "/v1/pipelines", tag = "pipelines",
    responses((status = 200, body = PipelineList)))]
async fn list_pipelines(State(state): State<AppState>) -> ApiResult<Json<PipelineList>> {
    let pipelines = state.inner.store.list_pipelines().await?;
    let live = state.inner.pipelines.live_all().await;
    let mut leases = state.inner.store.pipeline_leases().await?;
    let views = pipelines
        .iter()
        .map(|pipeline| {
            let mut view = PipelineView::new(pipeline, &state);
            view.active = live.iter().any(|(id, _)| *id == pipeline.id);
            view.runner = leases.remove(&pipeline.id).map(RunnerView::from);
            view
        })
        .collect();
    Ok(Json(PipelineList { pipelines: views }))
}

impl From<PipelineLease> for RunnerView {
    fn from(lease: PipelineLease) -> Self {
        Self {
            owner: lease.owner,
            lease_expires_at: rfc3339(lease.expires_at),
        }
    }
}

/// Show a pipeline (by id or name) with each stage's counters, queue and last error.
#[utoipa::path(get, path = "/v1/pipelines/{key}", tag = "pipelines",
    params(("key" = String, Path, description = "Pipeline id or name")),
    responses((status = 200, body = PipelineView), (status = 404, body = Problem)))]
async fn get_pipeline(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Json<PipelineView>> {
    let pipeline = load(&state, &key).await?;
    Ok(Json(PipelineView::detailed(&pipeline, &state).await?))
}

/// Applies an RFC 7396 merge patch: objects merge, `null` removes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// Change a pipeline's definition with a JSON merge patch (RFC 7396) over it. Queued messages
/// and the checkpoint are kept; removing stages that still hold messages is refused (409).
#[utoipa::path(patch, path = "/v1/pipelines/{key}", tag = "pipelines", request_body = Object,
    params(("key" = String, Path, description = "Pipeline id or name")),
    responses((status = 200, body = PipelineView), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn patch_pipeline(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    body: ApiJson<Value>,
) -> ApiResult<Json<PipelineView>> {
    let existing = load(&state, &key).await?;
    editable(&existing, "change")?;
    if !body.value.is_object() {
        return Err(ApiError::unprocessable(
            "a merge patch must be a JSON object",
        ));
    }
    // The patch applies to the clear definition (so a clear value may replace a sealed one);
    // the result is sealed again before it is stored.
    let sealer = &state.inner.scheduler.sealer;
    let opened = sealer.unseal_typed(&existing.spec).map_err(|error| {
        ApiError::Internal(format!("pipeline {:?}: {error}", existing.spec.name))
    })?;
    let mut merged =
        serde_json::to_value(&opened).map_err(|error| ApiError::Internal(error.to_string()))?;
    merge_patch(&mut merged, &body.value);
    let spec: PipelineSpec = serde_json::from_value(merged)
        .map_err(|error| ApiError::unprocessable(format!("patched definition: {error}")))?;
    validate(&spec, &state.inner.connectors).map_err(refuse)?;
    let pipeline = Pipeline {
        spec: seal_secrets(&spec, &state.inner.connectors, sealer),
        updated_at: state.inner.clock.now(),
        ..existing
    };
    state.inner.store.replace_pipeline(&pipeline).await?;
    state.inner.pipelines.nudge();
    let stored = load(&state, &pipeline.id.to_string()).await?;
    Ok(Json(PipelineView::new(&stored, &state)))
}

/// Delete a pipeline with its queued messages and dead letters.
#[utoipa::path(delete, path = "/v1/pipelines/{key}", tag = "pipelines",
    params(("key" = String, Path, description = "Pipeline id or name")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_pipeline(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let existing = load(&state, &key).await?;
    editable(&existing, "remove")?;
    state.inner.store.delete_pipeline(existing.id).await?;
    state.inner.pipelines.nudge();
    Ok(StatusCode::NO_CONTENT)
}

async fn set_state(
    state: &AppState,
    key: &str,
    to: PipelineState,
) -> ApiResult<Json<PipelineView>> {
    let existing = load(state, key).await?;
    if existing.state != to {
        state
            .inner
            .store
            .set_pipeline_state(existing.id, to, state.inner.clock.now())
            .await?;
        state.inner.pipelines.nudge();
    }
    let stored = load(state, &existing.id.to_string()).await?;
    Ok(Json(PipelineView::new(&stored, state)))
}

/// Run a pipeline: its source fetches and every stage works.
#[utoipa::path(post, path = "/v1/pipelines/{key}/start", tag = "pipelines",
    params(("key" = String, Path, description = "Pipeline id or name")),
    responses((status = 200, body = PipelineView), (status = 404, body = Problem)))]
async fn start_pipeline(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Json<PipelineView>> {
    set_state(&state, &key, PipelineState::Running).await
}

/// Pause a pipeline's source; messages already queued still flow to the sinks.
#[utoipa::path(post, path = "/v1/pipelines/{key}/pause", tag = "pipelines",
    params(("key" = String, Path, description = "Pipeline id or name")),
    responses((status = 200, body = PipelineView), (status = 404, body = Problem)))]
async fn pause_pipeline(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Json<PipelineView>> {
    set_state(&state, &key, PipelineState::Paused).await
}

/// Stop a pipeline; queued messages wait in the store until it starts again.
#[utoipa::path(post, path = "/v1/pipelines/{key}/stop", tag = "pipelines",
    params(("key" = String, Path, description = "Pipeline id or name")),
    responses((status = 200, body = PipelineView), (status = 404, body = Problem)))]
async fn stop_pipeline(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Json<PipelineView>> {
    set_state(&state, &key, PipelineState::Stopped).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct DeadLetterQuery {
    /// Only dead letters with a larger id (paging cursor).
    after: Option<i64>,
    /// Page size (1–1000, default 100).
    limit: Option<usize>,
    /// `true` (default) hides those already replayed.
    pending: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
struct DeadLetterPage {
    #[schema(value_type = Vec<Object>)]
    dead_letters: Vec<PipelineDeadLetter>,
    /// Pass as `after` for the next page.
    next_after: Option<i64>,
}

/// List a pipeline's dead letters: the message, the stage, the last error and response.
#[utoipa::path(get, path = "/v1/pipelines/{key}/dead-letters", tag = "pipelines",
    params(("key" = String, Path, description = "Pipeline id or name"), DeadLetterQuery),
    responses((status = 200, body = DeadLetterPage), (status = 404, body = Problem)))]
async fn list_dead_letters(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    Query(query): Query<DeadLetterQuery>,
) -> ApiResult<Json<DeadLetterPage>> {
    let pipeline = load(&state, &key).await?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let dead_letters = state
        .inner
        .store
        .pipeline_dead_letters(
            pipeline.id,
            query.after.unwrap_or(0),
            limit,
            query.pending.unwrap_or(true),
        )
        .await?;
    let next_after = (dead_letters.len() == limit)
        .then(|| dead_letters.last().map(|letter| letter.id))
        .flatten();
    Ok(Json(DeadLetterPage {
        dead_letters,
        next_after,
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    /// Dead letters to replay; all pending ones when absent.
    ids: Option<Vec<i64>>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Replayed {
    replayed: usize,
}

/// Queue dead letters again at the stage where they failed, with fresh attempts.
#[utoipa::path(post, path = "/v1/pipelines/{key}/dead-letters/replay", tag = "pipelines",
    request_body = ReplayRequest,
    params(("key" = String, Path, description = "Pipeline id or name")),
    responses((status = 200, body = Replayed), (status = 404, body = Problem)))]
async fn replay_dead_letters(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    body: ApiJson<ReplayRequest>,
) -> ApiResult<Json<Replayed>> {
    let pipeline = load(&state, &key).await?;
    if body
        .value
        .ids
        .as_ref()
        .is_some_and(|ids| ids.len() > 10_000)
    {
        return Err(ApiError::unprocessable("at most 10000 ids per replay"));
    }
    let stages = 1 + pipeline.spec.processors.len() + pipeline.spec.sinks.len();
    let queued = state
        .inner
        .store
        .replay_pipeline_dead_letters(
            pipeline.id,
            body.value.ids,
            stages as u32,
            state.inner.clock.now(),
        )
        .await?;
    state.inner.pipelines.nudge();
    Ok(Json(Replayed {
        replayed: queued.len(),
    }))
}

/// Every pipeline stage's counters, with depth and waits where it runs here, for `/metrics`.
pub(super) async fn samples(state: &AppState) -> ApiResult<Vec<PipelineStageSample>> {
    let live = state.inner.pipelines.live_all().await;
    let mut samples = Vec::new();
    for pipeline in state.inner.store.list_pipelines().await? {
        let counters = state.inner.store.pipeline_counters(pipeline.id).await?;
        let running = live
            .iter()
            .find(|(id, _)| *id == pipeline.id)
            .map(|(_, view)| view);
        for (index, counters) in counters {
            let stage = running.and_then(|view| view.stages.iter().find(|s| s.index == index));
            let waited_ms = match (index, running) {
                (0, Some(view)) => view.source.rate_limit.waited_ms,
                _ => stage.map_or(0, |stage| stage.rate_limit.waited_ms),
            };
            samples.push(PipelineStageSample {
                pipeline: pipeline.spec.name.clone(),
                stage: stage_name(&pipeline.spec, index),
                entered: counters.entered,
                done: counters.done,
                retried: counters.retried,
                dead: counters.dead,
                depth: match index {
                    0 => running.map(|_| 0),
                    _ => stage.map(|stage| stage.queue.depth as u64),
                },
                waited_ms,
            });
        }
    }
    Ok(samples)
}
