//! `/v1/lookups`: the lookup tables that `map` and `multiply` processors read. A job with a
//! `lookup` sink refreshes one from its records; a static one (country codes, fixed rates) is
//! put and deleted here. Steps load the tables they read when they start, so a change applies
//! from the next step on.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{ApiJson, ApiPath};
use crate::clock::rfc3339;
use crate::processors::tabular::check_table_name;
use crate::sinks::lookup::MAX_ENTRIES;

/// Longest key or value of an entry put over the API, in bytes.
const MAX_TEXT: usize = 4096;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_lookups))
        .routes(routes!(get_lookup, put_lookup, delete_lookup))
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

/// A whole lookup table, replacing any table of that name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LookupPut {
    /// Key → value, both strings (at least one entry; delete a table to empty it).
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

/// One lookup table with every entry. 404 until a job or a PUT has filled it.
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
                "no lookup table {name:?}; a job with a lookup sink or a PUT fills it"
            ))
        })?;
    Ok(Json(LookupView {
        name: table.name,
        updated_at: rfc3339(table.updated_at),
        entries: table.entries.into_iter().collect(),
    }))
}

/// Puts a whole lookup table, replacing the one of that name if any: `201` when it is new,
/// `200` when it replaced one. A job with a `lookup` sink for the same name replaces it again.
#[utoipa::path(put, path = "/v1/lookups/{name}", tag = "lookups",
    params(("name" = String, Path, description = "Lookup table name: 1-100 letters, digits, `_`, `-` or `.`")),
    request_body = LookupPut,
    responses((status = 200, body = LookupView), (status = 201, body = LookupView),
              (status = 422, body = Problem)))]
async fn put_lookup(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    body: ApiJson<LookupPut>,
) -> ApiResult<(StatusCode, Json<LookupView>)> {
    check_table_name(&name).map_err(ApiError::unprocessable)?;
    let entries = body.value.entries;
    check_entries(&entries).map_err(ApiError::unprocessable)?;
    let now = state.inner.clock.now();
    let pairs = entries
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let existed = state
        .inner
        .store
        .replace_lookup_table(&name, pairs, now)
        .await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(LookupView {
            name,
            updated_at: rfc3339(now),
            entries,
        }),
    ))
}

/// What is wrong with the entries of a PUT, if anything.
fn check_entries(entries: &BTreeMap<String, String>) -> Result<(), String> {
    if entries.is_empty() {
        return Err("entries: a lookup table needs at least one entry (DELETE removes one)".into());
    }
    if entries.len() > MAX_ENTRIES {
        return Err(format!(
            "entries: {} entries, a lookup table holds at most {MAX_ENTRIES}",
            entries.len()
        ));
    }
    for (key, value) in entries {
        if key.is_empty() {
            return Err("entries: a key is empty".into());
        }
        if key.len() > MAX_TEXT || value.len() > MAX_TEXT {
            return Err(format!(
                "entries[{:?}]: keys and values are at most {MAX_TEXT} bytes",
                key.chars().take(40).collect::<String>()
            ));
        }
    }
    Ok(())
}

/// Deletes a lookup table. Steps that read it fail (permanently) until it is filled again.
#[utoipa::path(delete, path = "/v1/lookups/{name}", tag = "lookups",
    params(("name" = String, Path, description = "Lookup table name")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_lookup(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let now = state.inner.clock.now();
    if state
        .inner
        .store
        .replace_lookup_table(&name, Vec::new(), now)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no lookup table {name:?}")))
    }
}
