//! The etlas-collector seed's contract: `GET|POST /system/alive`, `GET /platforms/get`,
//! `POST /execution/run`, `GET /execution/get`, with its envelope
//! `{"status": "Success"|"Failed", "message": …}`, over the platform catalog and native jobs.
//!
//! Every seed bug stays fixed: every client mistake is a 400 or 404 with `"status": "Failed"`
//! and a message saying what is wrong (the seed answered 500 for missing fields, unknown jobs,
//! jobs without progress yet and unreadable dates); the catalog lists every platform (the
//! seed's reflection failed on a class name and listed none); credentials are never echoed.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::jobs::{self, spec_error};
use crate::api::platforms::{catalog, run_spec};
use crate::clock::rfc3339;
use crate::connectors::json_type;
use crate::job::{JobDetail, JobStatus};

/// Most records of each dataset `GET /execution/get?full` returns.
const FULL_RECORDS: usize = 10_000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(alive, alive_check))
        .routes(routes!(platforms_get))
        .routes(routes!(execution_run))
        .routes(routes!(execution_get))
}

fn success(message: Value) -> Response {
    (
        StatusCode::OK,
        Json(json!({"status": "Success", "message": message})),
    )
        .into_response()
}

/// The seed's failure envelope; client mistakes are 400 (the seed's code) or 404.
fn failed(error: ApiError) -> Response {
    let status = match &error {
        ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
        ApiError::Conflict(_) => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    };
    let message = match &error {
        ApiError::Internal(_) => "internal error; see the server log".to_owned(),
        other => other.to_string(),
    };
    (
        status,
        Json(json!({"status": "Failed", "message": message})),
    )
        .into_response()
}

fn answer(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(message) => success(message),
        Err(error) => failed(error),
    }
}

/// Liveness in the seed's words.
#[utoipa::path(get, path = "/system/alive", tag = "compatibility",
    responses((status = 200, body = String, content_type = "text/plain")))]
async fn alive() -> &'static str {
    "Alive"
}

/// Readiness: `{"status": "Success", "message": {"Store": true}}` when the store answers.
#[utoipa::path(post, path = "/system/alive", tag = "compatibility",
    responses((status = 200, body = Object), (status = 503, body = Object)))]
async fn alive_check(State(state): State<AppState>) -> Response {
    match state.inner.store.ping().await {
        Ok(()) => success(json!({"Store": true})),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "Failed", "message": {"Store": false, "error": error.to_string()}})),
        )
            .into_response(),
    }
}

/// The catalog in the seed's shape: `{"<id>": {"display_name", "settings": {"<name>":
/// {"type", "default"}}}}`, plus each setting's description, secrecy and requirement.
#[utoipa::path(get, path = "/platforms/get", tag = "compatibility",
    responses((status = 200, body = Object)))]
async fn platforms_get(State(state): State<AppState>) -> Response {
    answer(catalog(&state).await.map(|entries| {
        let platforms: Map<String, Value> = entries
            .into_iter()
            .map(|entry| {
                let settings: Map<String, Value> = entry
                    .settings
                    .into_iter()
                    .map(|setting| {
                        (
                            setting.name.clone(),
                            json!({
                                "type": setting.kind,
                                "default": setting.default,
                                "description": setting.description,
                                "secret": setting.secret,
                                "required": setting.required,
                            }),
                        )
                    })
                    .collect();
                (
                    entry.id,
                    json!({"display_name": entry.display_name, "kind": entry.kind, "settings": settings}),
                )
            })
            .collect();
        Value::Object(platforms)
    }))
}

/// The seed's `storage` setting (`{"type": "mysql", "hostname", "db", "username",
/// "password", "table", "port"?}`) aimed at the platform's `sql` sink.
fn apply_storage(spec: &mut crate::job::spec::JobSpec, storage: &Value) -> Result<(), ApiError> {
    let Value::Object(storage) = storage else {
        return Err(ApiError::BadRequest(format!(
            "settings.storage: must be an object, not a {}",
            json_type(storage)
        )));
    };
    let text = |key: &str| -> Result<String, ApiError> {
        storage
            .get(key)
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::BadRequest(format!("settings.storage.{key}: is required")))
    };
    match storage.get("type").and_then(Value::as_str) {
        Some("mysql") => {}
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "settings.storage.type: {other:?} is not supported; use \"mysql\""
            )));
        }
        None => {
            return Err(ApiError::BadRequest(
                "settings.storage.type: is required (\"mysql\")".into(),
            ));
        }
    }
    let encode = |text: String| -> String {
        url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
    };
    let port = storage
        .get("port")
        .and_then(Value::as_u64)
        .map_or(String::new(), |port| format!(":{port}"));
    let url = format!(
        "mysql://{}:{}@{}{port}/{}",
        encode(text("username")?),
        encode(
            storage
                .get("password")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        ),
        text("hostname")?,
        encode(text("db")?),
    );
    let table = text("table")?;
    let sink = spec
        .sinks
        .iter_mut()
        .find(|sink| sink.kind == "sql")
        .ok_or_else(|| {
            ApiError::BadRequest(
                "settings.storage: this platform has no sql sink to store into; define one in its sinks"
                    .into(),
            )
        })?;
    sink.settings.insert("url".into(), json!(url));
    sink.settings.insert("table".into(), json!(table));
    Ok(())
}

/// Run a platform: `{"_id"?, "platform_id", "settings"}` → `{"job_id": …}`. Settings are
/// validated (relative dates resolved) before anything is stored; a `storage` setting aims the
/// platform's `sql` sink at that MySQL/MariaDB table.
#[utoipa::path(post, path = "/execution/run", tag = "compatibility", request_body = Object,
    responses((status = 200, body = Object), (status = 400, body = Object),
              (status = 404, body = Object)))]
async fn execution_run(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    answer(run(&state, &headers, &body).await)
}

async fn run(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|error| ApiError::BadRequest(format!("the body is not JSON: {error}")))?;
    let Value::Object(request) = request else {
        return Err(ApiError::BadRequest(
            "the body must be {\"platform_id\", \"settings\"}".into(),
        ));
    };
    let platform = match request.get("platform_id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "platform_id: must be a platform id, not a {}",
                json_type(other)
            )));
        }
        None => return Err(ApiError::BadRequest("platform_id: is required".into())),
    };
    let mut settings = match request.get("settings") {
        Some(Value::Object(settings)) => settings.clone(),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "settings: must be an object, not a {}",
                json_type(other)
            )));
        }
        None => return Err(ApiError::BadRequest("settings: is required".into())),
    };
    let storage = settings.remove("storage");
    let mut spec = match run_spec(state, &platform, &Value::Object(settings)).await {
        Err(ApiError::NotFound(_)) => {
            return Err(ApiError::BadRequest(format!(
                "Missing or invalid platform_id: no platform {platform:?} (see GET /platforms/get)"
            )));
        }
        other => other?,
    };
    if let Some(storage) = storage {
        apply_storage(&mut spec, &storage)?;
    }
    let canonical = Value::Object(request);
    let created = jobs::create(state, headers, &spec, &canonical, |error| {
        ApiError::BadRequest(format!(
            "Missing parameters in request: {}",
            spec_error(error)
        ))
    })
    .await?;
    Ok(json!({"job_id": created.view.id}))
}

#[derive(Debug, Deserialize, IntoParams)]
struct GetQuery {
    job_id: Option<String>,
    /// Present (any value) to include `meta.original` and `meta.processed`.
    full: Option<String>,
}

/// A job in RQ's terms: `status` (`queued`, `started`, `finished`, `failed`), `created_at`,
/// `enqueued_at`, `started_at`, `ended_at`, `exc_info` when it failed, and `meta` with every
/// step's progress entries; with `full`, `meta.original` (records as collected) and
/// `meta.processed` (after processors).
#[utoipa::path(get, path = "/execution/get", tag = "compatibility", params(GetQuery),
    responses((status = 200, body = Object), (status = 400, body = Object),
              (status = 404, body = Object)))]
async fn execution_get(State(state): State<AppState>, Query(query): Query<GetQuery>) -> Response {
    answer(get(&state, query).await)
}

async fn get(state: &AppState, query: GetQuery) -> Result<Value, ApiError> {
    let Some(text) = query.job_id.filter(|text| !text.is_empty()) else {
        return Err(ApiError::BadRequest("job_id: is required".into()));
    };
    let id = Uuid::parse_str(&text)
        .map_err(|_| ApiError::BadRequest(format!("job_id: {text:?} is not a job id")))?;
    let detail = state
        .inner
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {text}")))?;
    let mut view = rq_view(&detail);
    if query.full.is_some() {
        let store = &state.inner.store;
        let rows = |records: Vec<crate::job::RecordRow>| {
            Value::Array(records.into_iter().map(|row| row.data).collect())
        };
        view["meta"]["original"] = rows(store.original_records(id, None, FULL_RECORDS).await?);
        view["meta"]["processed"] = rows(store.job_records(id, None, FULL_RECORDS).await?);
    }
    Ok(view)
}

fn rq_view(detail: &JobDetail) -> Value {
    let job = &detail.job;
    let status = match job.status {
        JobStatus::Queued => "queued",
        JobStatus::Running => "started",
        JobStatus::Succeeded | JobStatus::PartiallySucceeded => "finished",
        JobStatus::Failed | JobStatus::Cancelled => "failed",
    };
    let mut meta = Map::new();
    for step in &detail.steps {
        if let Some(Value::Object(progress)) = &step.progress {
            meta.extend(progress.clone());
        }
    }
    meta.insert("job_status".into(), json!(job.status));
    let started = detail.attempts.iter().map(|a| a.started_at).min();
    let errors: Vec<String> = detail
        .steps
        .iter()
        .filter(|step| step.state.is_terminal())
        .filter_map(|step| {
            step.last_error
                .as_ref()
                .map(|e| format!("{}: {e}", step.name))
        })
        .collect();
    let mut view = json!({
        "id": job.id,
        "status": status,
        "origin": "gleaner",
        "description": detail.steps.first().map(|step| step.name.clone()),
        "created_at": rfc3339(job.created_at),
        "enqueued_at": rfc3339(job.created_at),
        "started_at": started.map(rfc3339),
        "ended_at": job.finished_at.map(rfc3339),
        "meta": meta,
    });
    if status == "failed" && !errors.is_empty() {
        view["exc_info"] = json!(errors.join("\n"));
    }
    view
}
