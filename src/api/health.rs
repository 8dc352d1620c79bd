//! Liveness (`/healthz`), readiness (`/readyz`: the store takes writes and the disk has room)
//! and Prometheus metrics (`/metrics`).

use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use crate::observability::CONTENT_TYPE as METRICS_CONTENT_TYPE;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

#[derive(Debug, Serialize, ToSchema)]
struct Health {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    free_disk_bytes: Option<u64>,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()), responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        free_disk_bytes: None,
    })
}

/// Free bytes on the file system holding `path`.
pub fn free_disk(path: &std::path::Path) -> Result<u64, String> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(|error| error.to_string())?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// Readiness: the store commits a write and the data directory has disk headroom.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, body = Health), (status = 503, body = Problem)))]
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    state.inner.store.ping().await.map_err(|error| {
        ApiError::Unavailable(format!("the store does not take writes: {error}"))
    })?;
    let free = free_disk(&state.inner.data_dir)
        .map_err(|error| ApiError::Unavailable(format!("cannot read free disk space: {error}")))?;
    if free < state.inner.server.min_free_disk {
        return Err(ApiError::Unavailable(format!(
            "only {free} bytes free in the data directory (server.min_free_disk is {})",
            state.inner.server.min_free_disk
        )));
    }
    Ok(Json(Health {
        status: "ready",
        free_disk_bytes: Some(free),
    }))
}

/// Prometheus metrics in the OpenMetrics text format: jobs by status, steps by state, queue
/// depth, dead letters, circuit breakers, attempts, step latency, HTTP requests, pipeline stages; then the metric series as `user_*` and the StatsD
/// listener's line counters.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, content_type = "application/openmetrics-text", body = String)))]
async fn metrics(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let mut snapshot = state.inner.store.snapshot(state.inner.clock.now()).await?;
    snapshot.breakers = state
        .inner
        .breakers
        .views()
        .into_iter()
        .map(|view| (view.key, view.state.as_str().to_owned()))
        .collect();
    snapshot.pipeline_stages = super::pipelines::samples(&state).await?;
    let mut body = state.inner.telemetry.render(&snapshot);
    // The series go in before the end marker, under their own `user_*` names.
    let series = state.inner.metrics.exposition();
    if let Some(end) = body.rfind("# EOF") {
        body.insert_str(end, &series);
    }
    Ok(([(CONTENT_TYPE, METRICS_CONTENT_TYPE)], body))
}
