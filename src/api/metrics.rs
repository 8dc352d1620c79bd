//! `/v1/metrics`: ingest events (one, a JSON array, a `{"batch_id", "events"}` batch, or
//! NDJSON), list and read series with their aggregates and windows, delete a series, and
//! follow updates as server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::ApiPath;
use crate::metrics::{
    Event, EventBatch, EventInput, IngestError, Ingested, ListFilter, MetricType, SeriesKey,
    SeriesView, wire,
};

/// Header carrying the batch id of an array or NDJSON batch.
pub const BATCH_ID_HEADER: &str = "batch-id";
/// Longest batch id.
const MAX_BATCH_ID: usize = 200;
/// Most series one list page holds.
const MAX_PAGE: usize = 1000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ingest, list_series))
        .routes(routes!(stream_series))
        .routes(routes!(get_series, delete_series))
}

/// The object form of a batch.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    batch_id: Option<String>,
    events: Vec<Value>,
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::TypeMismatch { .. } => ApiError::Conflict(error.to_string()),
            IngestError::Saturated => ApiError::TooManyRequests {
                detail: error.to_string(),
                retry_after_seconds: 1,
            },
            IngestError::Store(error) => error.into(),
        }
    }
}

/// Reads a well-formed JSON or NDJSON body straight into a batch; `None` when the body is
/// anything else (a malformed or mistyped event, a type conflict), which the slower path then
/// reads and explains event by event.
fn fast_parse(
    headers: &HeaderMap,
    header_id: Option<String>,
    body: &[u8],
    max: usize,
) -> Option<(Option<String>, EventBatch)> {
    if is_ndjson(headers) {
        return wire::read_ndjson(body, max).map(|batch| (header_id, batch));
    }
    let (body_id, batch) = wire::read_json(body, max)?;
    Some((body_id.or(header_id), batch))
}

fn check_count(count: usize, max: usize) -> ApiResult<()> {
    if count == 0 {
        return Err(ApiError::unprocessable("the batch holds no events"));
    }
    if count > max {
        return Err(ApiError::unprocessable(format!(
            "{count} events in one batch; at most {max} are allowed (metrics.max_batch)"
        )));
    }
    Ok(())
}

/// Validates each raw event, naming the first bad one by its index.
pub(super) fn validate_events(raw: Vec<Value>, max: usize) -> ApiResult<Vec<Event>> {
    check_count(raw.len(), max)?;
    raw.into_iter()
        .enumerate()
        .map(|(index, value)| {
            let input: EventInput = serde_json::from_value(value)
                .map_err(|error| ApiError::unprocessable(format!("events[{index}]: {error}")))?;
            input
                .validate()
                .map_err(|error| ApiError::unprocessable(format!("events[{index}]: {error}")))
        })
        .collect()
}

fn is_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            matches!(
                mime.trim().to_ascii_lowercase().as_str(),
                "application/x-ndjson" | "application/ndjson" | "application/jsonl"
            )
        })
}

/// The `Batch-Id` header, if sent.
fn header_batch_id(headers: &HeaderMap) -> ApiResult<Option<String>> {
    headers
        .get(BATCH_ID_HEADER)
        .map(|value| {
            value
                .to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::BadRequest("Batch-Id must be visible ASCII".into()))
        })
        .transpose()
}

/// Reads the events and the batch id of a request body.
fn parse_body(
    headers: &HeaderMap,
    header_id: Option<String>,
    body: &[u8],
) -> ApiResult<(Option<String>, Vec<Value>)> {
    let syntax =
        |what: &str, error: serde_json::Error| ApiError::BadRequest(format!("{what}: {error}"));
    if is_ndjson(headers) {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::BadRequest("the body is not UTF-8".into()))?;
        let events = text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(number, line)| {
                serde_json::from_str(line).map_err(|e| syntax(&format!("line {}", number + 1), e))
            })
            .collect::<ApiResult<Vec<Value>>>()?;
        return Ok((header_id, events));
    }
    let json_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json_type {
        return Err(ApiError::UnsupportedMediaType(
            "send events as application/json or application/x-ndjson".into(),
        ));
    }
    match serde_json::from_slice::<Value>(body).map_err(|e| syntax("invalid JSON", e))? {
        Value::Array(events) => Ok((header_id, events)),
        Value::Object(object) if object.contains_key("events") => {
            let batch: BatchBody = serde_json::from_value(Value::Object(object))
                .map_err(|error| ApiError::unprocessable(format!("batch: {error}")))?;
            Ok((batch.batch_id.or(header_id), batch.events))
        }
        event @ Value::Object(_) => Ok((header_id, vec![event])),
        _ => Err(ApiError::unprocessable(
            "send an event object, an array of events, or {\"batch_id\", \"events\"}",
        )),
    }
}

/// Ingest one event or a batch: `{"name", "type", "value", "tags"?}`, an array of them,
/// `{"batch_id"?, "events": [...]}`, or NDJSON (`application/x-ndjson`, batch id in the
/// `Batch-Id` header). Answered after the batch is durable and aggregated; a batch id seen
/// within 24 h is acknowledged without being counted again. A batch with any bad event is
/// refused whole (422, naming the event); an event whose type differs from its series' is a 409.
#[utoipa::path(post, path = "/v1/metrics", tag = "metrics", request_body = Object,
    responses((status = 200, body = IngestAnswer), (status = 400, body = Problem),
              (status = 409, body = Problem), (status = 413, body = Problem),
              (status = 415, body = Problem), (status = 422, body = Problem),
              (status = 429, body = Problem)))]
async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<IngestAnswer>> {
    let service = &state.inner.metrics;
    let max = service.config().max_batch;
    let header_id = header_batch_id(&headers)?;
    let (batch_id, batch) = match fast_parse(&headers, header_id.clone(), &body, max) {
        Some(read) => read,
        None => {
            let (batch_id, raw) = parse_body(&headers, header_id, &body)?;
            let events = validate_events(raw, max)?;
            let batch = EventBatch::from_events(events).map_err(IngestError::from)?;
            (batch_id, batch)
        }
    };
    if let Some(id) = &batch_id
        && (id.is_empty() || id.len() > MAX_BATCH_ID)
    {
        return Err(ApiError::unprocessable(format!(
            "batch_id must be 1 to {MAX_BATCH_ID} characters"
        )));
    }
    let Ingested {
        accepted,
        duplicate,
    } = service.ingest(batch_id.clone(), batch).await?;
    Ok(Json(IngestAnswer {
        accepted,
        duplicate,
        batch_id,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
struct IngestAnswer {
    /// Events counted by this request (0 for a duplicate batch).
    accepted: usize,
    /// The batch id was seen before; nothing was counted again.
    duplicate: bool,
    batch_id: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only series whose name starts with this.
    prefix: Option<String>,
    /// Only series of this type (`counter`, `gauge`, `meter`, `timer`).
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Only series with this tag, as `key:value`.
    tag: Option<String>,
    /// Paging cursor: the last series id of the previous page.
    after: Option<String>,
    /// Page size (1–1000, default 100).
    limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
struct SeriesPage {
    #[schema(value_type = Vec<Object>)]
    series: Vec<SeriesView>,
    /// Pass as `after` for the next page.
    next_after: Option<String>,
}

/// List series with their aggregates, by id; filter by name prefix, type and tag.
#[utoipa::path(get, path = "/v1/metrics", tag = "metrics", params(ListQuery),
    responses((status = 200, body = SeriesPage), (status = 400, body = Problem)))]
async fn list_series(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<SeriesPage>> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let kind = query
        .kind
        .as_deref()
        .map(|text| {
            MetricType::from_name(text)
                .ok_or_else(|| ApiError::BadRequest(format!("unknown metric type {text:?}")))
        })
        .transpose()?;
    let tag = query
        .tag
        .as_deref()
        .map(|text| {
            text.split_once(':')
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .ok_or_else(|| ApiError::BadRequest("tag must be key:value".into()))
        })
        .transpose()?;
    let filter = ListFilter {
        prefix: query.prefix,
        kind,
        tag,
    };
    let service = &state.inner.metrics;
    let series = service
        .registry()
        .list(&filter, query.after.as_deref(), limit, service.now());
    let next_after = (series.len() == limit)
        .then(|| series.last().map(|view| view.key.clone()))
        .flatten();
    Ok(Json(SeriesPage { series, next_after }))
}

fn series_key(text: &str) -> ApiResult<SeriesKey> {
    SeriesKey::parse(text)
        .map_err(|error| ApiError::BadRequest(format!("series id {text:?}: {error}")))
}

/// One series (by id: `name` or `name{k=v,…}`, URL-encoded) with its lifetime aggregate and
/// windows.
#[utoipa::path(get, path = "/v1/metrics/{series}", tag = "metrics",
    params(("series" = String, Path, description = "Series id")),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
async fn get_series(
    State(state): State<AppState>,
    ApiPath(series): ApiPath<String>,
) -> ApiResult<Json<SeriesView>> {
    let key = series_key(&series)?;
    let service = &state.inner.metrics;
    service
        .registry()
        .get(&key, service.now())
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no series {series:?}")))
}

/// Delete a series and its aggregates (durably); its next event starts it afresh.
#[utoipa::path(delete, path = "/v1/metrics/{series}", tag = "metrics",
    params(("series" = String, Path, description = "Series id")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_series(
    State(state): State<AppState>,
    ApiPath(series): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let key = series_key(&series)?;
    if state.inner.metrics.delete(&key).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no series {series:?}")))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    /// Series ids to follow, comma-separated; all when absent.
    series: Option<String>,
}

/// Follow series as server-sent events: an `update` event with the series view after each
/// change. A client too slow to keep up skips to the latest state rather than blocking ingest.
#[utoipa::path(get, path = "/v1/metrics/stream", tag = "metrics", params(StreamQuery),
    responses((status = 200, content_type = "text/event-stream", body = String),
              (status = 400, body = Problem)))]
async fn stream_series(
    State(state): State<AppState>,
    Query(query): Query<StreamQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let wanted = query
        .series
        .as_deref()
        .map(|list| {
            list.split(',')
                .filter(|part| !part.is_empty())
                .map(series_key)
                .collect::<ApiResult<Vec<_>>>()
        })
        .transpose()?;
    let service = state.inner.metrics.clone();
    let updates = tokio_stream::wrappers::BroadcastStream::new(service.registry().subscribe());
    let stream = futures::StreamExt::filter_map(updates, move |update| {
        let service = service.clone();
        let wanted = wanted.clone();
        async move {
            let key = update.ok()?;
            if wanted.as_ref().is_some_and(|wanted| !wanted.contains(&key)) {
                return None;
            }
            let view = service.registry().get(&key, service.now())?;
            let data = serde_json::to_string(&view).ok()?;
            Some(Ok(SseEvent::default().event("update").data(data)))
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
