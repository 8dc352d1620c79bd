//! `/v1/lookups`: the lookup tables that `lookup` sinks fill and `map` processors read, for
//! visibility. They change only through the jobs that fill them.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::ApiPath;
use crate::clock::rfc3339;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_lookups))
        .routes(routes!(get_lookup))
}

/// A lookup table without its entries.
#[derive(Debug, Serialize, ToSchema)]
struct LookupSummary {
    name: String,
    /// How many entries it holds.
    entries: u64,
    /// When a job last replaced it (RFC 3339).
    updated_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct LookupList {
    tables: Vec<LookupSummary>,
}

/// A lookup table with its entries, sorted by key.
#[derive(Debug, Serialize, ToSchema)]
struct LookupView {
    name: String,
    updated_at: String,
    entries: BTreeMap<String, String>,
}

/// Lookup tables, by name. A job with a `lookup` sink replaces one; `map` processors with a
/// `table` read them.
#[utoipa::path(get, path = "/v1/lookups", tag = "lookups",
    responses((status = 200, body = LookupList)))]
async fn list_lookups(State(state): State<AppState>) -> ApiResult<Json<LookupList>> {
    let tables = state.inner.store.list_lookup_tables().await?;
    let tables = tables
        .into_iter()
        .map(|table| LookupSummary {
            name: table.name,
            entries: table.entries,
            updated_at: rfc3339(table.updated_at),
        })
        .collect();
    Ok(Json(LookupList { tables }))
}

/// One lookup table with every entry. 404 until a job has filled it.
#[utoipa::path(get, path = "/v1/lookups/{name}", tag = "lookups",
    params(("name" = String, Path, description = "Lookup table name")),
    responses((status = 200, body = LookupView), (status = 404, body = Problem)))]
async fn get_lookup(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<LookupView>> {
    let table = state
        .inner
        .store
        .lookup_table(&name)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no lookup table {name:?}; a job with a lookup sink fills it"
            ))
        })?;
    Ok(Json(LookupView {
        name: table.name,
        updated_at: rfc3339(table.updated_at),
        entries: table.entries.into_iter().collect(),
    }))
}
