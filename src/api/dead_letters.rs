//! `/v1/dead-letters`: steps that failed for good, with their last error and response, and
//! their replay (one, a job's, all since a time, or all).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{ApiJson, ApiQuery};
use crate::job::{DeadLetter, DeadLetterFilter};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_dead_letters))
        .routes(routes!(replay_dead_letters))
}

fn parse_time(text: &str) -> ApiResult<i64> {
    text.parse::<jiff::Timestamp>()
        .map(|at| at.as_millisecond())
        .map_err(|error| ApiError::BadRequest(format!("`since` must be an RFC 3339 time: {error}")))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    job_id: Option<Uuid>,
    /// RFC 3339; only dead letters created at or after it.
    since: Option<String>,
    /// Also list the ones already replayed.
    #[serde(default)]
    include_replayed: bool,
    cursor: Option<i64>,
    /// 1–500, default 100.
    limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
struct DeadLetterPage {
    dead_letters: Vec<DeadLetter>,
    next_cursor: Option<String>,
}

/// List dead letters, oldest first.
#[utoipa::path(get, path = "/v1/dead-letters", tag = "dead letters", params(ListParams),
    responses((status = 200, body = DeadLetterPage), (status = 400, body = Problem)))]
async fn list_dead_letters(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<DeadLetterPage>> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 500".into(),
        ));
    }
    let filter = DeadLetterFilter {
        ids: Vec::new(),
        job_id: params.job_id,
        since: params.since.as_deref().map(parse_time).transpose()?,
        include_replayed: params.include_replayed,
        after: params.cursor,
        limit,
    };
    let dead_letters = state.inner.store.list_dead_letters(&filter).await?;
    let next_cursor = (dead_letters.len() == limit)
        .then(|| dead_letters.last().map(|d| d.id.to_string()))
        .flatten();
    Ok(Json(DeadLetterPage {
        dead_letters,
        next_cursor,
    }))
}

/// Which dead letters to replay; name at least one selector (or `all: true`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    #[serde(default)]
    ids: Vec<i64>,
    #[schema(value_type = Option<String>, format = Uuid)]
    job_id: Option<Uuid>,
    /// RFC 3339.
    since: Option<String>,
    #[serde(default)]
    all: bool,
}

#[derive(Debug, Serialize, ToSchema)]
struct ReplayResult {
    /// Steps put back in the queue.
    replayed: u64,
}

/// Replay dead letters: their steps run again with a fresh attempt budget.
#[utoipa::path(post, path = "/v1/dead-letters/replay", tag = "dead letters", request_body = ReplayRequest,
    responses((status = 200, body = ReplayResult), (status = 400, body = Problem), (status = 422, body = Problem)))]
async fn replay_dead_letters(
    State(state): State<AppState>,
    body: ApiJson<ReplayRequest>,
) -> ApiResult<Json<ReplayResult>> {
    let request = body.value;
    if request.ids.is_empty() && request.job_id.is_none() && request.since.is_none() && !request.all
    {
        return Err(ApiError::unprocessable(
            "name `ids`, `job_id` or `since`, or set `all: true`",
        ));
    }
    if request.ids.len() > 10_000 {
        return Err(ApiError::unprocessable("at most 10 000 ids per request"));
    }
    let filter = DeadLetterFilter {
        ids: request.ids,
        job_id: request.job_id,
        since: request.since.as_deref().map(parse_time).transpose()?,
        include_replayed: false,
        after: None,
        limit: 100_000,
    };
    let now = state.inner.clock.now();
    let replayed = state
        .inner
        .store
        .replay_dead_letters(&filter, now, state.inner.engine.retry_budget())
        .await?;
    Ok(Json(ReplayResult { replayed }))
}
