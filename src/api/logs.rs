//! `GET /v1/logs`: the server's NDJSON log, filtered by job, level and time, optionally followed.

use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::ApiQuery;
use crate::observability::log_tail::{self, RawLogQuery};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(logs))
}

/// Stream log lines as NDJSON. `follow=true` keeps the response open and streams new lines.
#[utoipa::path(get, path = "/v1/logs", tag = "logs",
    params(
        ("job" = Option<String>, Query, description = "Only lines about this job id"),
        ("level" = Option<String>, Query, description = "Minimum level: error, warn, info, debug, trace"),
        ("since" = Option<String>, Query, description = "RFC 3339; only lines at or after it"),
        ("follow" = Option<bool>, Query, description = "Keep streaming new lines"),
        ("limit" = Option<usize>, Query, description = "Stop after this many lines")),
    responses((status = 200, content_type = "application/x-ndjson", body = String), (status = 400, body = Problem)))]
async fn logs(
    State(state): State<AppState>,
    ApiQuery(raw): ApiQuery<RawLogQuery>,
) -> ApiResult<impl IntoResponse> {
    stream_log(&state, &raw, "application/x-ndjson")
}

/// The log lines `raw` selects, streamed as NDJSON under `content_type`.
pub(super) fn stream_log(
    state: &AppState,
    raw: &RawLogQuery,
    content_type: &'static str,
) -> ApiResult<impl IntoResponse + use<>> {
    let query = log_tail::parse(raw).map_err(|error| ApiError::BadRequest(error.to_string()))?;
    let stream = log_tail::tail(state.inner.log_file.clone(), query);
    Ok(([(CONTENT_TYPE, content_type)], Body::from_stream(stream)))
}
