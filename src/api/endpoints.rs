//! `/v1/endpoints`: callback endpoints disabled by a `410 Gone` (and re-enabling them), and
//! the circuit breakers currently tracking upstream hosts and endpoints.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::ApiJson;
use crate::engine::breaker::BreakerView;
use crate::store::DisabledEndpoint;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_disabled))
        .routes(routes!(enable))
        .routes(routes!(list_breakers))
}

#[derive(Debug, Serialize, ToSchema)]
struct DisabledList {
    endpoints: Vec<DisabledEndpoint>,
}

/// Callback endpoints that answered `410 Gone`. Deliveries to them fail at once (and are
/// dead-lettered, so they can be replayed once the endpoint is enabled again).
#[utoipa::path(get, path = "/v1/endpoints/disabled", tag = "endpoints",
    responses((status = 200, body = DisabledList)))]
async fn list_disabled(State(state): State<AppState>) -> ApiResult<Json<DisabledList>> {
    let endpoints = state.inner.store.list_disabled_endpoints().await?;
    Ok(Json(DisabledList { endpoints }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct EnableRequest {
    /// The endpoint URL exactly as jobs name it.
    url: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct Enabled {
    url: String,
    enabled: bool,
}

/// Enable a disabled callback endpoint again. 404 when it is not disabled.
#[utoipa::path(post, path = "/v1/endpoints/enable", tag = "endpoints", request_body = EnableRequest,
    responses((status = 200, body = Enabled), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn enable(
    State(state): State<AppState>,
    body: ApiJson<EnableRequest>,
) -> ApiResult<Json<Enabled>> {
    let url = body.value.url;
    if !state.inner.store.enable_endpoint(&url).await? {
        return Err(ApiError::NotFound(format!(
            "endpoint {url} is not disabled"
        )));
    }
    Ok(Json(Enabled { url, enabled: true }))
}

#[derive(Debug, Serialize, ToSchema)]
struct BreakerList {
    breakers: Vec<BreakerView>,
}

/// Circuit breakers that have seen failures recently (healthy keys are not listed).
#[utoipa::path(get, path = "/v1/breakers", tag = "endpoints",
    responses((status = 200, body = BreakerList)))]
async fn list_breakers(State(state): State<AppState>) -> Json<BreakerList> {
    Json(BreakerList {
        breakers: state.inner.breakers.views(),
    })
}
