//! The metric ingest log and its snapshot.

use rusqlite::{Connection, OptionalExtension, params};

use crate::clock::Millis;
use crate::store::{LogEntry, Result};

/// Appends one entry; `None` when its batch id was seen before (nothing written).
pub fn append(
    conn: &Connection,
    batch_id: Option<&str>,
    kind: &str,
    payload: &str,
    now: Millis,
) -> Result<Option<i64>> {
    if let Some(id) = batch_id {
        let seen: bool = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM metric_log WHERE batch_id = ?1)")?
            .query_row([id], |row| row.get(0))?;
        if seen {
            return Ok(None);
        }
    }
    conn.prepare_cached(
        "INSERT INTO metric_log (batch_id, kind, payload, received_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![batch_id, kind, payload, now])?;
    Ok(Some(conn.last_insert_rowid()))
}

/// The snapshot, if any: `(through_seq, parts)` in order.
pub fn snapshot(conn: &Connection) -> Result<Option<(i64, Vec<Vec<u8>>)>> {
    let Some(through) = conn
        .prepare_cached("SELECT through_seq FROM metric_snapshot WHERE id = 1")?
        .query_row([], |row| row.get(0))
        .optional()?
    else {
        return Ok(None);
    };
    let parts = conn
        .prepare_cached("SELECT data FROM metric_snapshot_part ORDER BY part")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<Vec<u8>>>>()?;
    Ok(Some((through, parts)))
}

/// Entries after `seq` that still carry their payload, in order.
pub fn entries_after(conn: &Connection, seq: i64) -> Result<Vec<LogEntry>> {
    Ok(conn
        .prepare_cached(
            "SELECT seq, kind, payload, received_at FROM metric_log
             WHERE seq > ?1 AND payload IS NOT NULL ORDER BY seq",
        )?
        .query_map([seq], |row| {
            Ok(LogEntry {
                seq: row.get(0)?,
                kind: row.get(1)?,
                payload: row.get(2)?,
                received_at: row.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Stores the aggregates as of `through_seq` and drops what they cover: payloads up to it,
/// and the rows themselves unless their batch id must still be recognised (newer than
/// `keep_ids_after`).
pub fn save_snapshot(
    conn: &Connection,
    through_seq: i64,
    parts: &[Vec<u8>],
    keep_ids_after: Millis,
    now: Millis,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO metric_snapshot (id, through_seq, taken_at) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET through_seq = excluded.through_seq,
             taken_at = excluded.taken_at",
    )?
    .execute(params![through_seq, now])?;
    conn.prepare_cached("DELETE FROM metric_snapshot_part")?
        .execute([])?;
    let mut insert =
        conn.prepare_cached("INSERT INTO metric_snapshot_part (part, data) VALUES (?1, ?2)")?;
    for (index, part) in parts.iter().enumerate() {
        insert.execute(params![index as i64, part])?;
    }
    conn.prepare_cached(
        "DELETE FROM metric_log WHERE seq <= ?1 AND (batch_id IS NULL OR received_at < ?2)",
    )?
    .execute(params![through_seq, keep_ids_after])?;
    conn.prepare_cached(
        "UPDATE metric_log SET payload = NULL WHERE seq <= ?1 AND payload IS NOT NULL",
    )?
    .execute([through_seq])?;
    Ok(())
}

/// Forgets batch ids older than `before` whose payloads a snapshot already covers.
pub fn prune_ids(conn: &Connection, before: Millis) -> Result<u64> {
    Ok(conn
        .prepare_cached("DELETE FROM metric_log WHERE payload IS NULL AND received_at < ?1")?
        .execute([before])? as u64)
}
