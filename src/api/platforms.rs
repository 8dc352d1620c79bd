//! `/v1/platforms`: the catalog of everything runnable — every connector and every platform
//! (a named connector + processors + sinks template) — with its settings listed (type, default,
//! description, secret, required) and its JSON Schema; platforms are created, shown, deleted
//! and run with settings into an ordinary job.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{ApiJson, ApiPath};
use super::jobs::{self, spec_error};
use crate::clock::rfc3339;
use crate::platforms::{Platform, PlatformSpec, SettingView, schema_with_defaults, settings_of};
use crate::schedule::Origin;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_catalog, create_platform))
        .routes(routes!(get_entry, delete_platform))
        .routes(routes!(run_platform))
}

/// One runnable entry of the catalog.
#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogEntry {
    /// What `platform_id` / the path names.
    pub id: String,
    /// `connector` (built in) or `platform` (defined in gleaner.toml or over the API).
    pub kind: &'static str,
    pub display_name: String,
    pub description: Option<String>,
    /// The connector a platform runs (itself for a connector).
    pub connector: String,
    pub settings: Vec<SettingView>,
    /// JSON Schema of a run's settings (platform defaults written in).
    #[schema(value_type = Object)]
    pub schema: Value,
    /// The processors and sinks a platform's runs get (secrets redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub template: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// A display name from an id: `json-table` → `Json Table`.
fn titled(id: &str) -> String {
    id.split(['-', '_', '.'])
        .filter(|word| !word.is_empty())
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn connector_entry(state: &AppState, name: &str) -> Option<CatalogEntry> {
    let entry = state.inner.connectors.get(name)?;
    let schema = entry.schema.raw().clone();
    Some(CatalogEntry {
        id: name.to_owned(),
        kind: "connector",
        display_name: titled(name),
        description: Some(entry.connector.description().to_owned()),
        connector: name.to_owned(),
        settings: settings_of(&schema, &json!({})),
        schema,
        template: None,
        origin: None,
        updated_at: None,
    })
}

fn platform_entry(state: &AppState, platform: &Platform) -> CatalogEntry {
    let spec = &platform.spec;
    let (raw, redacted_defaults) = match state.inner.connectors.get(&spec.connector) {
        Some(entry) => (
            entry.schema.raw().clone(),
            entry.schema.redact(&spec.settings),
        ),
        None => (json!({"type": "object"}), json!({})),
    };
    let template = spec
        .job(&json!({}))
        .ok()
        .and_then(|job| serde_json::to_value(job).ok())
        .map(|job| crate::job::spec::JobSpec::redacted(&job, &state.catalog()))
        .map(|job| json!({"processors": job["processors"], "sinks": job["sinks"]}));
    CatalogEntry {
        id: spec.name.clone(),
        kind: "platform",
        display_name: spec
            .display_name
            .clone()
            .unwrap_or_else(|| titled(&spec.name)),
        description: spec.description.clone(),
        connector: spec.connector.clone(),
        settings: settings_of(&raw, &redacted_defaults),
        schema: schema_with_defaults(&raw, &redacted_defaults),
        template,
        origin: Some(platform.origin),
        updated_at: Some(rfc3339(platform.updated_at)),
    }
}

/// Every catalog entry: connectors, then platforms, each by id.
pub(super) async fn catalog(state: &AppState) -> ApiResult<Vec<CatalogEntry>> {
    let mut entries: Vec<CatalogEntry> = state
        .inner
        .connectors
        .iter()
        .filter_map(|registered| connector_entry(state, registered.connector.name()))
        .collect();
    for platform in state.inner.store.list_platforms().await? {
        entries.push(platform_entry(state, &platform));
    }
    Ok(entries)
}

/// One catalog entry by id: a platform of that name, else a connector.
pub(super) async fn entry(state: &AppState, id: &str) -> ApiResult<CatalogEntry> {
    if let Some(platform) = state.inner.store.get_platform(id).await? {
        return Ok(platform_entry(state, &platform));
    }
    connector_entry(state, id).ok_or_else(|| ApiError::NotFound(format!("no platform {id:?}")))
}

#[derive(Debug, Serialize, ToSchema)]
struct Catalog {
    platforms: Vec<CatalogEntry>,
}

/// The catalog: every connector and platform with its settings and schema.
#[utoipa::path(get, path = "/v1/platforms", tag = "platforms",
    responses((status = 200, body = Catalog)))]
async fn list_catalog(State(state): State<AppState>) -> ApiResult<Json<Catalog>> {
    Ok(Json(Catalog {
        platforms: catalog(&state).await?,
    }))
}

/// One catalog entry.
#[utoipa::path(get, path = "/v1/platforms/{id}", tag = "platforms",
    params(("id" = String, Path, description = "Platform or connector id")),
    responses((status = 200, body = CatalogEntry), (status = 404, body = Problem)))]
async fn get_entry(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<CatalogEntry>> {
    Ok(Json(entry(&state, &id).await?))
}

/// Define a platform: `{"name", "connector", "settings"?: defaults, "processors"?, "sinks"?,
/// "display_name"?, "description"?, "retry"?}`. Its processors and sinks are checked now; its
/// settings when it runs.
#[utoipa::path(post, path = "/v1/platforms", tag = "platforms", request_body = Object,
    responses((status = 201, body = CatalogEntry), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
async fn create_platform(
    State(state): State<AppState>,
    body: ApiJson<PlatformSpec>,
) -> ApiResult<(StatusCode, Json<CatalogEntry>)> {
    let spec = body.value;
    spec.validate(&state.inner.connectors)
        .map_err(|error| ApiError::unprocessable(error.to_string()))?;
    if state.inner.connectors.get(&spec.name).is_some()
        || state.inner.store.get_platform(&spec.name).await?.is_some()
    {
        return Err(ApiError::Conflict(format!(
            "{:?} is taken by a connector or platform",
            spec.name
        )));
    }
    let now = state.inner.clock.now();
    let platform = Platform {
        spec: spec.sealed(&state.catalog()),
        origin: Origin::Api,
        created_at: now,
        updated_at: now,
    };
    state.inner.store.put_platform(&platform).await?;
    Ok((StatusCode::CREATED, Json(platform_entry(&state, &platform))))
}

/// Delete a platform defined over the API (those from gleaner.toml are changed there).
#[utoipa::path(delete, path = "/v1/platforms/{id}", tag = "platforms",
    params(("id" = String, Path, description = "Platform id")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_platform(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let platform = state
        .inner
        .store
        .get_platform(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no platform {id:?}")))?;
    if platform.origin == Origin::Config {
        return Err(ApiError::Conflict(format!(
            "platform {id:?} is defined in the configuration file; remove it there"
        )));
    }
    state.inner.store.delete_platform(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A run's settings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    #[serde(default = "empty")]
    #[schema(value_type = Object)]
    pub settings: Value,
}

fn empty() -> Value {
    json!({})
}

/// The job spec a run of catalog entry `id` with `settings` creates.
pub(super) async fn run_spec(
    state: &AppState,
    id: &str,
    settings: &Value,
) -> ApiResult<crate::job::spec::JobSpec> {
    let spec = match state.inner.store.get_platform(id).await? {
        Some(platform) => platform.spec,
        None if state.inner.connectors.get(id).is_some() => PlatformSpec {
            name: id.to_owned(),
            display_name: None,
            description: None,
            connector: id.to_owned(),
            settings: json!({}),
            processors: Vec::new(),
            sinks: Vec::new(),
            retry: None,
        },
        None => return Err(ApiError::NotFound(format!("no platform {id:?}"))),
    };
    spec.job(settings)
        .map_err(|error| ApiError::unprocessable(error.to_string()))
}

/// Run a platform (or a bare connector) with settings: `202` with the job, as `POST /v1/jobs`
/// answers (`Idempotency-Key` works the same).
#[utoipa::path(post, path = "/v1/platforms/{id}/run", tag = "platforms", request_body = RunRequest,
    params(("id" = String, Path, description = "Platform or connector id")),
    responses((status = 202, body = Object), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn run_platform(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: ApiJson<RunRequest>,
) -> ApiResult<Response> {
    let spec = run_spec(&state, &id, &body.value.settings).await?;
    let canonical = json!({"platform": id, "settings": body.canonical});
    let created = jobs::create(&state, &headers, &spec, &canonical, spec_error).await?;
    Ok(created.into_response(|view| view))
}
