//! Callback endpoints disabled by a `410 Gone`.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::rows;
use crate::store::{DisabledEndpoint, Result};

const COLUMNS: &str = "url, reason, job_id, disabled_at";

fn endpoint(row: &Row<'_>) -> rusqlite::Result<DisabledEndpoint> {
    let job_id: Option<String> = row.get(2)?;
    Ok(DisabledEndpoint {
        url: row.get(0)?,
        reason: row.get(1)?,
        job_id: match job_id {
            Some(_) => Some(rows::uuid(row, 2)?),
            None => None,
        },
        disabled_at: row.get(3)?,
    })
}

/// Disables an endpoint; a second `410` keeps the first entry.
pub fn disable(conn: &Connection, endpoint: &DisabledEndpoint) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO disabled_endpoints (url, reason, job_id, disabled_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (url) DO NOTHING",
    )?
    .execute(params![
        endpoint.url,
        endpoint.reason,
        endpoint.job_id.map(|id| id.to_string()),
        endpoint.disabled_at
    ])?;
    Ok(())
}

/// Whether any endpoint is disabled at all: when none is, a delivery's input needs no lookup
/// of its own endpoint (and so no sink to name it).
pub fn any(conn: &Connection) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM disabled_endpoints)")?
        .query_row([], |row| row.get(0))?)
}

pub fn get(conn: &Connection, url: &str) -> Result<Option<DisabledEndpoint>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM disabled_endpoints WHERE url = ?1"
        ))?
        .query_row([url], endpoint)
        .optional()?)
}

pub fn list(conn: &Connection) -> Result<Vec<DisabledEndpoint>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM disabled_endpoints ORDER BY disabled_at, url"
        ))?
        .query_map([], endpoint)?
        .collect::<rusqlite::Result<Vec<_>>>()?)
}

pub fn enable(conn: &Connection, url: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM disabled_endpoints WHERE url = ?1")?
        .execute([url])?
        > 0)
}
