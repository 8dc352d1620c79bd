//! `/v1/connectors` and `/v1/sinks`: the catalog with each component's settings schema, and a
//! `check` that tests a connector's settings against its upstream without collecting.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{ApiJson, ApiPath};
use crate::net::Retryability;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_connectors))
        .routes(routes!(get_connector))
        .routes(routes!(check_connector))
        .routes(routes!(list_sinks))
}

/// A catalog entry.
#[derive(Debug, Serialize, ToSchema)]
struct ComponentView {
    name: String,
    description: String,
    /// JSON Schema of the settings; secret fields are `writeOnly`.
    #[schema(value_type = Object)]
    settings_schema: Value,
}

/// List the connectors with their settings schemas.
#[utoipa::path(get, path = "/v1/connectors", tag = "connectors",
    responses((status = 200, body = Vec<ComponentView>)))]
async fn list_connectors(State(state): State<AppState>) -> Json<Vec<ComponentView>> {
    Json(
        state
            .inner
            .connectors
            .iter()
            .map(|entry| ComponentView {
                name: entry.connector.name().to_owned(),
                description: entry.connector.description().to_owned(),
                settings_schema: entry.schema.raw().clone(),
            })
            .collect(),
    )
}

/// Show one connector's settings spec.
#[utoipa::path(get, path = "/v1/connectors/{name}", tag = "connectors", params(("name" = String, Path)),
    responses((status = 200, body = ComponentView), (status = 404, body = Problem)))]
async fn get_connector(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<ComponentView>> {
    let entry = state
        .inner
        .connectors
        .get(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no connector {name:?}")))?;
    Ok(Json(ComponentView {
        name: entry.connector.name().to_owned(),
        description: entry.connector.description().to_owned(),
        settings_schema: entry.schema.raw().clone(),
    }))
}

/// The result of a check: `ok`, or the upstream's error and whether it may pass later.
#[derive(Debug, Serialize, ToSchema)]
struct CheckResult {
    ok: bool,
    error: Option<String>,
    retryable: Option<bool>,
    http_status: Option<u16>,
}

/// Test settings against the connector's upstream (credentials, reachability). Settings that do
/// not match the schema are a 422; an upstream that refuses them is `ok: false`.
#[utoipa::path(post, path = "/v1/connectors/{name}/check", tag = "connectors", params(("name" = String, Path)),
    request_body(content = Object, description = "The settings to check"),
    responses((status = 200, body = CheckResult), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn check_connector(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    body: ApiJson<Value>,
) -> ApiResult<Json<CheckResult>> {
    let entry = state
        .inner
        .connectors
        .get(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no connector {name:?}")))?;
    state
        .inner
        .connectors
        .validate(&name, &body.value)
        .map_err(|error| ApiError::unprocessable(error.to_string()))?;
    let result = match entry
        .connector
        .check(&state.inner.connector_context, &body.value)
        .await
    {
        Ok(()) => CheckResult {
            ok: true,
            error: None,
            retryable: None,
            http_status: None,
        },
        Err(error) => CheckResult {
            ok: false,
            retryable: Some(matches!(error.retryability(), Retryability::Retry { .. })),
            http_status: error.http_status(),
            error: Some(error.to_string()),
        },
    };
    Ok(Json(result))
}

/// List the sink types with their settings schemas.
#[utoipa::path(get, path = "/v1/sinks", tag = "connectors", responses((status = 200, body = Vec<ComponentView>)))]
async fn list_sinks(State(state): State<AppState>) -> Json<Vec<ComponentView>> {
    Json(
        state
            .inner
            .sinks
            .iter()
            .map(|entry| ComponentView {
                name: entry.sink.kind().to_owned(),
                description: entry.sink.description().to_owned(),
                settings_schema: entry.schema.raw().clone(),
            })
            .collect(),
    )
}
