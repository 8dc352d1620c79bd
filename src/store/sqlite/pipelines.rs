//! Pipelines, their queued messages, counters and dead letters.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;
use uuid::Uuid;

use super::rows::{self, corrupt, json};
use crate::clock::Millis;
use crate::pipelines::model::{
    DeadMessage, Pipeline, PipelineDeadLetter, PipelineLease, PipelineState, QueuedMessage,
    SourcePage, StageCounters,
};
use crate::schedule::Origin;
use crate::store::{Error, Result};

const COLUMNS: &str = "id, origin, spec, state, checkpoint, created_at, updated_at";
const MESSAGE_COLUMNS: &str = "id, stage, payload, attempts, next_at, last_error";
const DEAD_COLUMNS: &str = "id, stage, stage_name, payload, attempts, error, http_status, response, \
     failed_at, replayed_at";

fn pipeline(row: &Row<'_>) -> rusqlite::Result<Pipeline> {
    let origin: String = row.get(1)?;
    let spec: String = row.get(2)?;
    let state: String = row.get(3)?;
    let checkpoint: Option<String> = row.get(4)?;
    Ok(Pipeline {
        id: rows::uuid(row, 0)?,
        origin: Origin::parse(&origin).ok_or_else(|| corrupt(1, "pipeline origin"))?,
        spec: serde_json::from_str(&spec).map_err(|_| corrupt(2, "pipeline spec"))?,
        state: PipelineState::parse(&state).ok_or_else(|| corrupt(3, "pipeline state"))?,
        checkpoint: checkpoint
            .map(|text| serde_json::from_str(&text).map_err(|_| corrupt(4, "checkpoint")))
            .transpose()?,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
    })
}

fn message(row: &Row<'_>) -> rusqlite::Result<QueuedMessage> {
    Ok(QueuedMessage {
        id: row.get(0)?,
        stage: row.get(1)?,
        payload: json(row, 2)?,
        attempts: row.get(3)?,
        next_at: row.get(4)?,
        last_error: row.get(5)?,
    })
}

fn dead_letter(row: &Row<'_>) -> rusqlite::Result<PipelineDeadLetter> {
    Ok(PipelineDeadLetter {
        id: row.get(0)?,
        stage: row.get(1)?,
        stage_name: row.get(2)?,
        payload: json(row, 3)?,
        attempts: row.get(4)?,
        error: row.get(5)?,
        http_status: row.get(6)?,
        response: row.get(7)?,
        failed_at: row.get(8)?,
        replayed_at: row.get(9)?,
    })
}

fn text(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|error| Error::Database(error.to_string()))
}

fn name_taken(conn: &Connection, name: &str, other_than: Uuid) -> Result<()> {
    let taken: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM pipelines WHERE name = ?1 AND id != ?2)")?
        .query_row(params![name, other_than.to_string()], |row| row.get(0))?;
    if taken {
        return Err(Error::Conflict(format!("a pipeline named {name:?} exists")));
    }
    Ok(())
}

/// Inserts a pipeline and its counters; `Conflict` when its name is taken.
pub fn create(conn: &Connection, pipeline: &Pipeline) -> Result<()> {
    name_taken(conn, &pipeline.spec.name, pipeline.id)?;
    conn.prepare_cached(
        "INSERT INTO pipelines (id, name, origin, spec, state, checkpoint, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        pipeline.id.to_string(),
        pipeline.spec.name,
        pipeline.origin.as_str(),
        text(&pipeline.spec)?,
        pipeline.state.as_str(),
        pipeline.checkpoint.as_ref().map(text).transpose()?,
        pipeline.created_at,
        pipeline.updated_at,
    ])?;
    ensure_counters(conn, pipeline)
}

/// One counter row per stage, kept when the stage count grows.
fn ensure_counters(conn: &Connection, pipeline: &Pipeline) -> Result<()> {
    let stages = 1 + pipeline.spec.processors.len() + pipeline.spec.sinks.len();
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO pipeline_counters (pipeline_id, stage) VALUES (?1, ?2)",
    )?;
    for stage in 0..stages {
        insert.execute(params![pipeline.id.to_string(), stage as i64])?;
    }
    Ok(())
}

/// Replaces a pipeline's definition and state (its checkpoint is kept); `NotFound` when gone,
/// `Conflict` when the name is taken or when stages that still hold messages would vanish.
pub fn replace(conn: &Connection, pipeline: &Pipeline) -> Result<()> {
    name_taken(conn, &pipeline.spec.name, pipeline.id)?;
    let stages = (1 + pipeline.spec.processors.len() + pipeline.spec.sinks.len()) as i64;
    let stranded: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM pipeline_messages WHERE pipeline_id = ?1 AND stage >= ?2",
        )?
        .query_row(params![pipeline.id.to_string(), stages], |row| row.get(0))?;
    if stranded > 0 {
        return Err(Error::Conflict(format!(
            "{stranded} messages wait at stages the new definition removes; let them drain first"
        )));
    }
    let changed = conn
        .prepare_cached(
            "UPDATE pipelines SET name = ?2, origin = ?3, spec = ?4, state = ?5,
                 updated_at = MAX(updated_at + 1, ?6)
             WHERE id = ?1",
        )?
        .execute(params![
            pipeline.id.to_string(),
            pipeline.spec.name,
            pipeline.origin.as_str(),
            text(&pipeline.spec)?,
            pipeline.state.as_str(),
            pipeline.updated_at,
        ])?;
    if changed == 0 {
        return Err(Error::NotFound);
    }
    ensure_counters(conn, pipeline)
}

/// Deletes a pipeline with its messages, counters and dead letters.
pub fn delete(conn: &Connection, id: Uuid) -> Result<bool> {
    let key = id.to_string();
    for table in [
        "pipeline_messages",
        "pipeline_counters",
        "pipeline_dead_letters",
        "pipeline_leases",
    ] {
        conn.prepare_cached(&format!("DELETE FROM {table} WHERE pipeline_id = ?1"))?
            .execute([&key])?;
    }
    Ok(conn
        .prepare_cached("DELETE FROM pipelines WHERE id = ?1")?
        .execute([&key])?
        > 0)
}

/// A pipeline by id or by name.
pub fn get(conn: &Connection, key: &str) -> Result<Option<Pipeline>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM pipelines WHERE id = ?1 OR name = ?1"
        ))?
        .query_row([key], pipeline)
        .optional()?)
}

pub fn list(conn: &Connection) -> Result<Vec<Pipeline>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM pipelines ORDER BY name"))?
        .query_map([], pipeline)?
        .collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Sets the state; `updated_at` always moves on, so running copies notice the change.
pub fn set_state(conn: &Connection, id: Uuid, state: PipelineState, now: Millis) -> Result<()> {
    let changed = conn
        .prepare_cached(
            "UPDATE pipelines SET state = ?2, updated_at = MAX(updated_at + 1, ?3) WHERE id = ?1",
        )?
        .execute(params![id.to_string(), state.as_str(), now])?;
    if changed == 0 {
        return Err(Error::NotFound);
    }
    Ok(())
}

fn bump(
    conn: &Connection,
    id: &str,
    stage: u32,
    column: &'static str,
    by: i64,
) -> rusqlite::Result<()> {
    if by == 0 {
        return Ok(());
    }
    conn.prepare_cached(&format!(
        "UPDATE pipeline_counters SET {column} = {column} + ?3 WHERE pipeline_id = ?1 AND stage = ?2"
    ))?
    .execute(params![id, stage, by])?;
    Ok(())
}

/// Queues `records` at each of `stages`; returns the new rows.
fn enqueue(
    conn: &Connection,
    id: &str,
    records: &[Value],
    stages: &[u32],
    now: Millis,
) -> Result<Vec<QueuedMessage>> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO pipeline_messages (pipeline_id, stage, payload, next_at) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut queued = Vec::with_capacity(records.len() * stages.len());
    for &stage in stages {
        for record in records {
            insert.execute(params![id, stage, text(record)?, now])?;
            queued.push(QueuedMessage {
                id: conn.last_insert_rowid(),
                stage,
                payload: record.clone(),
                attempts: 0,
                next_at: now,
                last_error: None,
            });
        }
        bump(conn, id, stage, "entered", records.len() as i64)?;
    }
    Ok(queued)
}

/// Commits a source page: its messages at the first stages and the new checkpoint together.
pub fn commit_page(
    conn: &Connection,
    id: Uuid,
    page: &SourcePage,
    now: Millis,
) -> Result<Vec<QueuedMessage>> {
    let key = id.to_string();
    let holder: Option<Option<String>> = conn
        .prepare_cached(
            "SELECT l.owner FROM pipelines p LEFT JOIN pipeline_leases l ON l.pipeline_id = p.id
             WHERE p.id = ?1",
        )?
        .query_row([&key], |row| row.get(0))
        .optional()?;
    match holder {
        None => return Err(Error::NotFound),
        Some(holder) if holder.as_deref() != Some(page.owner.as_str()) => {
            return Err(Error::Fenced);
        }
        Some(_) => {}
    }
    let changed = conn
        .prepare_cached("UPDATE pipelines SET checkpoint = ?2 WHERE id = ?1")?
        .execute(params![
            key,
            page.checkpoint.as_ref().map(text).transpose()?
        ])?;
    if changed == 0 {
        return Err(Error::NotFound);
    }
    let count = page.records.len() as i64;
    bump(conn, &key, 0, "pages", 1)?;
    bump(conn, &key, 0, "entered", count)?;
    bump(conn, &key, 0, "done", count)?;
    bump(conn, &key, 0, "produced", count)?;
    enqueue(conn, &key, &page.records, &page.stages, now)
}

/// Removes a message from its stage; `NotFound` when it is no longer there (replaced by a
/// concurrent change of the pipeline), so the caller's outcome is dropped, not applied twice.
fn take(conn: &Connection, id: &str, message: i64, stage: u32) -> Result<()> {
    let removed = conn
        .prepare_cached(
            "DELETE FROM pipeline_messages WHERE id = ?1 AND pipeline_id = ?2 AND stage = ?3",
        )?
        .execute(params![message, id, stage])?;
    if removed == 0 {
        return Err(Error::NotFound);
    }
    Ok(())
}

/// A processor finished a message: it leaves `stage` and its outputs enter `to`.
pub fn advance(
    conn: &Connection,
    id: Uuid,
    message: i64,
    stage: u32,
    outputs: &[Value],
    to: &[u32],
    now: Millis,
) -> Result<Vec<QueuedMessage>> {
    let key = id.to_string();
    take(conn, &key, message, stage)?;
    bump(conn, &key, stage, "done", 1)?;
    bump(conn, &key, stage, "produced", outputs.len() as i64)?;
    enqueue(conn, &key, outputs, to, now)
}

/// Processors finished these messages; those no longer at `stage` are skipped.
pub fn advance_all(
    conn: &Connection,
    id: Uuid,
    stage: u32,
    moves: &[(i64, Vec<Value>)],
    to: &[u32],
    now: Millis,
) -> Result<Vec<QueuedMessage>> {
    let mut queued = Vec::new();
    for (message, outputs) in moves {
        match advance(conn, id, *message, stage, outputs, to, now) {
            Ok(rows) => queued.extend(rows),
            Err(Error::NotFound) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(queued)
}

/// A sink stored these messages; returns how many were still queued.
pub fn complete(conn: &Connection, id: Uuid, stage: u32, messages: &[i64]) -> Result<u64> {
    let key = id.to_string();
    let mut done = 0;
    let mut delete = conn.prepare_cached(
        "DELETE FROM pipeline_messages WHERE id = ?1 AND pipeline_id = ?2 AND stage = ?3",
    )?;
    for message in messages {
        done += delete.execute(params![message, key, stage])? as u64;
    }
    bump(conn, &key, stage, "done", done as i64)?;
    bump(conn, &key, stage, "produced", done as i64)?;
    Ok(done)
}

/// Records a failed attempt; the message waits until `next_at`.
pub fn retry(
    conn: &Connection,
    id: Uuid,
    message: i64,
    stage: u32,
    attempts: u32,
    next_at: Millis,
    error: &str,
) -> Result<()> {
    let key = id.to_string();
    let changed = conn
        .prepare_cached(
            "UPDATE pipeline_messages SET attempts = ?4, next_at = ?5, last_error = ?6
             WHERE id = ?1 AND pipeline_id = ?2 AND stage = ?3",
        )?
        .execute(params![message, key, stage, attempts, next_at, error])?;
    if changed == 0 {
        return Err(Error::NotFound);
    }
    bump(conn, &key, stage, "retried", 1)?;
    Ok(())
}

/// Moves a message that failed for good into the dead letters.
pub fn dead(
    conn: &Connection,
    id: Uuid,
    message: &QueuedMessage,
    dead: &DeadMessage,
    now: Millis,
) -> Result<()> {
    let key = id.to_string();
    take(conn, &key, message.id, message.stage)?;
    conn.prepare_cached(
        "INSERT INTO pipeline_dead_letters
             (pipeline_id, stage, stage_name, payload, attempts, error, http_status, response, failed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        key,
        message.stage,
        dead.stage_name,
        text(&message.payload)?,
        dead.attempts,
        dead.error,
        dead.http_status,
        dead.response,
        now,
    ])?;
    bump(conn, &key, message.stage, "dead", 1)?;
    Ok(())
}

/// Every message queued in the pipeline, oldest first.
pub fn messages(conn: &Connection, id: Uuid) -> Result<Vec<QueuedMessage>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM pipeline_messages WHERE pipeline_id = +?1 ORDER BY id"
        ))?
        .query_map([id.to_string()], message)?
        .collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Counters by stage index.
pub fn counters(conn: &Connection, id: Uuid) -> Result<Vec<(u32, StageCounters)>> {
    Ok(conn
        .prepare_cached(
            "SELECT stage, entered, done, produced, retried, dead, pages FROM pipeline_counters
             WHERE pipeline_id = +?1 ORDER BY stage",
        )?
        .query_map([id.to_string()], |row| {
            Ok((
                row.get(0)?,
                StageCounters {
                    entered: row.get(1)?,
                    done: row.get(2)?,
                    produced: row.get(3)?,
                    retried: row.get(4)?,
                    dead: row.get(5)?,
                    pages: row.get(6)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Dead letters after `after`, oldest first; `pending` keeps only those not replayed.
pub fn dead_letters(
    conn: &Connection,
    id: Uuid,
    after: i64,
    limit: usize,
    pending: bool,
) -> Result<Vec<PipelineDeadLetter>> {
    let filter = if pending {
        "AND replayed_at IS NULL"
    } else {
        ""
    };
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {DEAD_COLUMNS} FROM pipeline_dead_letters
             WHERE pipeline_id = +?1 AND id > ?2 {filter} ORDER BY id LIMIT ?3 + 0"
        ))?
        .query_map(params![id.to_string(), after, limit as i64], dead_letter)?
        .collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Queues dead letters again at their stage with fresh attempts (all pending ones when `ids`
/// is `None`); each is marked replayed so it is never queued twice, and counts as queued
/// again instead of dead at its stage.
pub fn replay(
    conn: &Connection,
    id: Uuid,
    ids: Option<&[i64]>,
    stages: u32,
    now: Millis,
) -> Result<Vec<QueuedMessage>> {
    let key = id.to_string();
    let letters = match ids {
        Some(ids) => {
            let mut one = conn.prepare_cached(&format!(
                "SELECT {DEAD_COLUMNS} FROM pipeline_dead_letters
                 WHERE pipeline_id = ?1 AND id = ?2 AND replayed_at IS NULL"
            ))?;
            let mut found = Vec::new();
            for letter in ids {
                if let Some(row) = one
                    .query_row(params![key, letter], dead_letter)
                    .optional()?
                {
                    found.push(row);
                }
            }
            found
        }
        None => dead_letters(conn, id, 0, usize::MAX >> 1, true)?,
    };
    let mut mark =
        conn.prepare_cached("UPDATE pipeline_dead_letters SET replayed_at = ?2 WHERE id = ?1")?;
    // A new version, so the runtimes reload their queues with the replayed messages.
    conn.prepare_cached("UPDATE pipelines SET updated_at = MAX(updated_at + 1, ?2) WHERE id = ?1")?
        .execute(params![key, now])?;
    let mut queued = Vec::with_capacity(letters.len());
    for letter in letters.into_iter().filter(|letter| letter.stage < stages) {
        mark.execute(params![letter.id, now])?;
        queued.extend(enqueue(
            conn,
            &key,
            std::slice::from_ref(&letter.payload),
            &[letter.stage],
            now,
        )?);
        bump(conn, &key, letter.stage, "entered", -1)?;
        bump(conn, &key, letter.stage, "dead", -1)?;
    }
    Ok(queued)
}

/// Takes or renews `owner`'s lease on each existing pipeline of `ids` until `until` (a lease
/// that is free, expired at `now` or already `owner`'s); returns the ids `owner` holds.
pub fn lease(
    conn: &Connection,
    owner: &str,
    ids: &[Uuid],
    now: Millis,
    until: Millis,
) -> Result<Vec<Uuid>> {
    let mut take = conn.prepare_cached(
        "INSERT INTO pipeline_leases (pipeline_id, owner, expires_at)
         SELECT ?1, ?2, ?4 WHERE EXISTS (SELECT 1 FROM pipelines WHERE id = ?1)
         ON CONFLICT (pipeline_id) DO UPDATE SET owner = excluded.owner,
             expires_at = excluded.expires_at
         WHERE pipeline_leases.owner = excluded.owner OR pipeline_leases.expires_at <= ?3",
    )?;
    let mut held = Vec::with_capacity(ids.len());
    for id in ids {
        if take.execute(params![id.to_string(), owner, now, until])? > 0 {
            held.push(*id);
        }
    }
    Ok(held)
}

fn lease_row(row: &Row<'_>, from: usize) -> rusqlite::Result<PipelineLease> {
    Ok(PipelineLease {
        owner: row.get(from)?,
        expires_at: row.get(from + 1)?,
    })
}

/// The lease on pipeline `id`, if any.
pub fn lease_of(conn: &Connection, id: Uuid) -> Result<Option<PipelineLease>> {
    Ok(conn
        .prepare_cached("SELECT owner, expires_at FROM pipeline_leases WHERE pipeline_id = ?1")?
        .query_row([id.to_string()], |row| lease_row(row, 0))
        .optional()?)
}

/// Every lease held (expired or not), by pipeline.
pub fn leases(conn: &Connection) -> Result<HashMap<Uuid, PipelineLease>> {
    let mut statement =
        conn.prepare_cached("SELECT pipeline_id, owner, expires_at FROM pipeline_leases")?;
    let rows = statement.query_map([], |row| Ok((row.get::<_, String>(0)?, lease_row(row, 1)?)))?;
    let mut leases = HashMap::new();
    for row in rows {
        let (id, lease) = row?;
        let id = Uuid::parse_str(&id)
            .map_err(|error| Error::Corrupt(format!("pipeline lease {id:?}: {error}")))?;
        leases.insert(id, lease);
    }
    Ok(leases)
}

/// Drops `owner`'s leases on `ids`.
pub fn release(conn: &Connection, owner: &str, ids: &[Uuid]) -> Result<()> {
    let mut drop =
        conn.prepare_cached("DELETE FROM pipeline_leases WHERE pipeline_id = ?1 AND owner = ?2")?;
    for id in ids {
        drop.execute(params![id.to_string(), owner])?;
    }
    Ok(())
}
