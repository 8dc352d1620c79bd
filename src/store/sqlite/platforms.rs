//! Platforms (named connector + processors + sinks templates).

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::platforms::Platform;
use crate::schedule::Origin;
use crate::store::{Error, Result};

fn platform(row: &Row<'_>) -> rusqlite::Result<Platform> {
    let origin: String = row.get(1)?;
    let spec: String = row.get(2)?;
    let corrupt = |index: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("invalid {what}").into(),
        )
    };
    Ok(Platform {
        origin: Origin::parse(&origin).ok_or_else(|| corrupt(1, "platform origin"))?,
        spec: serde_json::from_str(&spec).map_err(|_| corrupt(2, "platform spec"))?,
        created_at: row.get(3)?,
        updated_at: row.get(4)?,
    })
}

/// Inserts or replaces a platform by name.
pub fn put(conn: &Connection, platform: &Platform) -> Result<()> {
    let spec = serde_json::to_string(&platform.spec)
        .map_err(|error| Error::Database(error.to_string()))?;
    conn.prepare_cached(
        "INSERT INTO platforms (name, origin, spec, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (name) DO UPDATE SET origin = excluded.origin, spec = excluded.spec,
             updated_at = excluded.updated_at",
    )?
    .execute(params![
        platform.spec.name,
        platform.origin.as_str(),
        spec,
        platform.created_at,
        platform.updated_at
    ])?;
    Ok(())
}

pub fn delete(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM platforms WHERE name = ?1")?
        .execute([name])?
        > 0)
}

pub fn get(conn: &Connection, name: &str) -> Result<Option<Platform>> {
    Ok(conn
        .prepare_cached(
            "SELECT name, origin, spec, created_at, updated_at FROM platforms WHERE name = ?1",
        )?
        .query_row([name], platform)
        .optional()?)
}

pub fn list(conn: &Connection) -> Result<Vec<Platform>> {
    Ok(conn
        .prepare_cached(
            "SELECT name, origin, spec, created_at, updated_at FROM platforms ORDER BY name",
        )?
        .query_map([], platform)?
        .collect::<rusqlite::Result<Vec<_>>>()?)
}
