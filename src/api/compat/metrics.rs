//! The metrics-ingestion-service seed's contract: `POST /ingest/metrics`, `GET|POST
//! /data/metrics`, `GET|DELETE /data/metrics/{level.name}`, `GET /health/ping`, over the
//! native series.
//!
//! A seed record `{level, name, type, value}` is the series named `level.name` (no tags).
//! `level` may not contain a dot, so every key splits one way only (the seed's `"a.b"+"c"` and
//! `"a"+"b.c"` collided). Every seed bug stays fixed: a counter's first value is counted once,
//! concurrent events are all counted, `meanRate` is per second, GAUGE works, a type mismatch is
//! a 409, bad input is a 4xx problem, and an unknown key is a 404.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::AppState;
use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::extract::{ApiJson, ApiPath};
use crate::connectors::json_type;
use crate::metrics::{Event, MetricType, SeriesKey, SeriesView};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ingest_record))
        .routes(routes!(ingest_record_slash))
        .routes(routes!(list_records, put_record))
        .routes(routes!(get_record, delete_record))
        .routes(routes!(ping))
}

/// The seed's record. Fields stay raw JSON (absent = null) until checked, so each refusal
/// names its field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
#[derive(Default)]
pub struct SeedRecord {
    /// The first part of the key; no dots.
    #[schema(value_type = String, example = "application")]
    level: Value,
    #[schema(value_type = String, example = "server.get.timer")]
    name: Value,
    /// `COUNTER`, `GAUGE`, `METER` or `TIMER`.
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "TIMER")]
    kind: Value,
    #[schema(value_type = f64, example = 300)]
    value: Value,
}

fn text<'a>(field: &str, value: &'a Value) -> ApiResult<&'a str> {
    match value {
        Value::String(text) if !text.is_empty() => Ok(text),
        Value::String(_) => Err(ApiError::BadRequest(format!("{field}: must not be empty"))),
        Value::Null => Err(ApiError::BadRequest(format!("{field}: is required"))),
        other => Err(ApiError::BadRequest(format!(
            "{field}: must be a string, not a {}",
            json_type(other)
        ))),
    }
}

impl SeedRecord {
    /// The native event, or a 400 naming the field.
    fn event(&self) -> ApiResult<(Event, String)> {
        let level = text("level", &self.level)?;
        let name = text("name", &self.name)?;
        if level.contains('.') {
            return Err(ApiError::BadRequest(
                "level: must not contain '.', so that level.name names one series".into(),
            ));
        }
        let kind = text("type", &self.kind)?;
        let kind = MetricType::from_name(kind).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "type: unknown type {kind:?}; use COUNTER, GAUGE, METER or TIMER"
            ))
        })?;
        let value = match &self.value {
            Value::Number(number) => number.as_f64().filter(|value| value.is_finite()),
            _ => None,
        }
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "value: must be a finite number, not a {}",
                json_type(&self.value)
            ))
        })?;
        let input =
            json!({"name": format!("{level}.{name}"), "type": kind.as_str(), "value": value});
        let event = crate::api::metrics::validate_events(vec![input], 1)
            .map_err(|error| ApiError::BadRequest(error.to_string()))?
            .remove(0);
        Ok((event, name.to_owned()))
    }
}

async fn record(state: &AppState, body: SeedRecord) -> ApiResult<String> {
    let (event, name) = body.event()?;
    state.inner.metrics.ingest_events(None, vec![event]).await?;
    Ok(format!("Record {name} UPDATED"))
}

/// Record one event (the seed's ingest route); answers `Record <name> UPDATED` once durable.
#[utoipa::path(post, path = "/ingest/metrics", tag = "compatibility", request_body = SeedRecord,
    responses((status = 200, body = String, content_type = "text/plain"),
              (status = 400, body = Problem), (status = 409, body = Problem),
              (status = 429, body = Problem)))]
async fn ingest_record(
    State(state): State<AppState>,
    body: ApiJson<SeedRecord>,
) -> ApiResult<String> {
    record(&state, body.value).await
}

/// The same, with the trailing slash the seed's route was declared with.
#[utoipa::path(post, path = "/ingest/metrics/", tag = "compatibility", request_body = SeedRecord,
    responses((status = 200, body = String, content_type = "text/plain"),
              (status = 400, body = Problem)))]
async fn ingest_record_slash(
    State(state): State<AppState>,
    body: ApiJson<SeedRecord>,
) -> ApiResult<String> {
    record(&state, body.value).await
}

/// Record one event through the seed's API route (the seed stored the body as it came; here
/// it is validated and aggregated like any event).
#[utoipa::path(post, path = "/data/metrics", tag = "compatibility", request_body = SeedRecord,
    responses((status = 200, body = String, content_type = "text/plain"),
              (status = 400, body = Problem), (status = 409, body = Problem)))]
async fn put_record(State(state): State<AppState>, body: ApiJson<SeedRecord>) -> ApiResult<String> {
    record(&state, body.value).await
}

/// A series in the seed's shape: `level`, `name`, `type` and its aggregate under the seed's
/// field names, times in epoch milliseconds, `meanRate` in events per second.
fn seed_shape(view: &SeriesView) -> Option<Value> {
    if !view.tags.is_empty() {
        return None;
    }
    let (level, name) = view.name.split_once('.')?;
    let aggregate = serde_json::to_value(&view.aggregate).ok()?;
    let mut out = Map::new();
    out.insert("level".into(), json!(level));
    out.insert("name".into(), json!(name));
    out.insert(
        "type".into(),
        json!(view.kind.as_str().to_ascii_uppercase()),
    );
    for (native, seed) in [
        ("value", "value"),
        ("count", "count"),
        ("first_at", "startTime"),
        ("updated_at", "updateTime"),
        ("mean_rate", "meanRate"),
        ("min", "min"),
        ("max", "max"),
        ("mean", "mean"),
        ("sum", "sum"),
    ] {
        if let Some(value) = aggregate.get(native) {
            out.insert(seed.into(), value.clone());
        }
    }
    Some(Value::Object(out))
}

/// Every `level.name` series in the seed's shape.
#[utoipa::path(get, path = "/data/metrics", tag = "compatibility",
    responses((status = 200, body = Vec<Object>)))]
async fn list_records(State(state): State<AppState>) -> Json<Vec<Value>> {
    let service = &state.inner.metrics;
    let now = service.now();
    let mut records = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = service
            .registry()
            .list(&Default::default(), after.as_deref(), 1000, now);
        records.extend(page.iter().filter_map(seed_shape));
        match page.last() {
            Some(last) if page.len() == 1000 => after = Some(last.key.clone()),
            _ => break,
        }
    }
    Json(records)
}

fn seed_key(key: &str) -> ApiResult<SeriesKey> {
    if !key.contains('.') {
        return Err(ApiError::NotFound(format!(
            "no metric {key:?}; keys are level.name"
        )));
    }
    SeriesKey::parse(key).map_err(|error| ApiError::BadRequest(format!("key {key:?}: {error}")))
}

/// One series by its `level.name` key, in the seed's shape; 404 when unknown.
#[utoipa::path(get, path = "/data/metrics/{key}", tag = "compatibility",
    params(("key" = String, Path, description = "level.name")),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
async fn get_record(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let series = seed_key(&key)?;
    let service = &state.inner.metrics;
    service
        .registry()
        .get(&series, service.now())
        .as_ref()
        .and_then(seed_shape)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no metric {key:?}")))
}

/// Delete a series by its `level.name` key; 404 when unknown (the seed said DELETED anyway).
#[utoipa::path(delete, path = "/data/metrics/{key}", tag = "compatibility",
    params(("key" = String, Path, description = "level.name")),
    responses((status = 200, body = String, content_type = "text/plain"),
              (status = 404, body = Problem)))]
async fn delete_record(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<String> {
    let series = seed_key(&key)?;
    if state.inner.metrics.delete(&series).await? {
        Ok(format!("Record {key} DELETED"))
    } else {
        Err(ApiError::NotFound(format!("no metric {key:?}")))
    }
}

/// Liveness in the seed's words.
#[utoipa::path(get, path = "/health/ping", tag = "compatibility",
    responses((status = 200, body = String, content_type = "text/plain")))]
async fn ping() -> (StatusCode, &'static str) {
    (StatusCode::OK, "pong")
}
