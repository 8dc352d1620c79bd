//! Schedules and their fired ticks.

use rusqlite::{Connection, OptionalExtension, Row, params};
use uuid::Uuid;

use super::{jobs, rows};
use crate::clock::Millis;
use crate::schedule::{Origin, Overlap, Schedule, TickFire, TickOutcome, TickResult, TickRow};
use crate::store::{Error, Result};

const COLUMNS: &str = "id, origin, spec, next_at, last_tick, last_job_id, created_at, updated_at";

fn schedule(row: &Row<'_>) -> rusqlite::Result<Schedule> {
    let origin: String = row.get(1)?;
    let spec: String = row.get(2)?;
    let last_job: Option<String> = row.get(5)?;
    let corrupt = |index: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("invalid {what}").into(),
        )
    };
    Ok(Schedule {
        id: rows::uuid(row, 0)?,
        origin: Origin::parse(&origin).ok_or_else(|| corrupt(1, "schedule origin"))?,
        spec: serde_json::from_str(&spec).map_err(|_| corrupt(2, "schedule spec"))?,
        next_at: row.get(3)?,
        last_tick: row.get(4)?,
        last_job_id: match last_job {
            Some(_) => Some(rows::uuid(row, 5)?),
            None => None,
        },
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
    })
}

fn spec_text(schedule: &Schedule) -> Result<String> {
    serde_json::to_string(&schedule.spec).map_err(|error| Error::Database(error.to_string()))
}

/// Inserts a schedule; `Conflict` when its name is taken.
pub fn create(conn: &Connection, schedule: &Schedule) -> Result<()> {
    let taken: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM schedules WHERE name = ?1)")?
        .query_row([&schedule.spec.name], |row| row.get(0))?;
    if taken {
        return Err(Error::Conflict(format!(
            "a schedule named {:?} exists",
            schedule.spec.name
        )));
    }
    conn.prepare_cached(
        "INSERT INTO schedules (id, name, origin, spec, next_at, last_tick, last_job_id, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        schedule.id.to_string(),
        schedule.spec.name,
        schedule.origin.as_str(),
        spec_text(schedule)?,
        schedule.next_at,
        schedule.last_tick,
        schedule.last_job_id.map(|id| id.to_string()),
        schedule.created_at,
        schedule.updated_at,
    ])?;
    Ok(())
}

/// Replaces a schedule's definition and next tick; `NotFound` when it is gone, `Conflict`
/// when the new name is taken by another.
pub fn replace(conn: &Connection, schedule: &Schedule) -> Result<()> {
    let other: Option<String> = conn
        .prepare_cached("SELECT id FROM schedules WHERE name = ?1 AND id != ?2")?
        .query_row(
            params![schedule.spec.name, schedule.id.to_string()],
            |row| row.get(0),
        )
        .optional()?;
    if other.is_some() {
        return Err(Error::Conflict(format!(
            "a schedule named {:?} exists",
            schedule.spec.name
        )));
    }
    let changed = conn
        .prepare_cached(
            "UPDATE schedules SET name = ?2, origin = ?3, spec = ?4, next_at = ?5, updated_at = ?6
             WHERE id = ?1",
        )?
        .execute(params![
            schedule.id.to_string(),
            schedule.spec.name,
            schedule.origin.as_str(),
            spec_text(schedule)?,
            schedule.next_at,
            schedule.updated_at,
        ])?;
    if changed == 0 {
        return Err(Error::NotFound);
    }
    Ok(())
}

pub fn delete(conn: &Connection, id: Uuid) -> Result<bool> {
    let key = id.to_string();
    conn.prepare_cached("DELETE FROM schedule_ticks WHERE schedule_id = ?1")?
        .execute([&key])?;
    Ok(conn
        .prepare_cached("DELETE FROM schedules WHERE id = ?1")?
        .execute([&key])?
        > 0)
}

/// A schedule by id or by name.
pub fn get(conn: &Connection, key: &str) -> Result<Option<Schedule>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM schedules WHERE id = ?1 OR name = ?1"
        ))?
        .query_row([key], schedule)
        .optional()?)
}

pub fn list(conn: &Connection) -> Result<Vec<Schedule>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM schedules ORDER BY name"))?
        .query_map([], schedule)?
        .collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Schedules whose next tick is at or before `now`.
pub fn due(conn: &Connection, now: Millis) -> Result<Vec<Schedule>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM schedules WHERE next_at IS NOT NULL AND next_at <= ?1 ORDER BY next_at"
        ))?
        .query_map([now], schedule)?
        .collect::<rusqlite::Result<Vec<_>>>()?)
}

pub fn next_at(conn: &Connection) -> Result<Option<Millis>> {
    Ok(conn
        .prepare_cached("SELECT MIN(next_at) FROM schedules")?
        .query_row([], |row| row.get(0))?)
}

/// Moves a schedule's next tick from `from` to `to` without firing (missed ticks skipped by
/// the catch-up policy); false when another scheduler moved it first or it changed.
pub fn advance(
    conn: &Connection,
    id: Uuid,
    version: Millis,
    from: Millis,
    to: Option<Millis>,
) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE schedules SET next_at = ?4 WHERE id = ?1 AND updated_at = ?2 AND next_at = ?3",
        )?
        .execute(params![id.to_string(), version, from, to])?
        > 0)
}

/// Fires one tick: records it (once ever), applies the overlap policy, creates the job, and
/// moves the schedule to its next tick, all in the caller's transaction.
pub fn fire(conn: &Connection, fire: &TickFire) -> Result<TickResult> {
    let id = fire.schedule_id.to_string();
    let current: Option<(Millis, Option<String>)> = conn
        .prepare_cached("SELECT updated_at, last_job_id FROM schedules WHERE id = ?1")?
        .query_row([&id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((version, last_job)) = current else {
        return Ok(TickResult::AlreadyFired);
    };
    if version != fire.version {
        return Ok(TickResult::AlreadyFired);
    }
    let fired: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM schedule_ticks WHERE schedule_id = ?1 AND tick = ?2)",
        )?
        .query_row(params![id, fire.tick], |row| row.get(0))?;
    if fired {
        return Ok(TickResult::AlreadyFired);
    }
    let previous_running = match (&last_job, fire.overlap) {
        (Some(job), Overlap::Skip | Overlap::Queue) => conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = ?1
                                AND status NOT IN ('succeeded', 'partially_succeeded', 'failed', 'cancelled'))",
            )?
            .query_row([job], |row| row.get::<_, bool>(0))?,
        _ => false,
    };
    let (outcome, job_id) = match (previous_running, fire.overlap) {
        (true, Overlap::Queue) => return Ok(TickResult::Waiting),
        (true, _) => (TickOutcome::SkippedOverlap, None),
        (false, _) => {
            jobs::create(conn, &fire.job)?;
            (TickOutcome::Created, Some(fire.job.id))
        }
    };
    conn.prepare_cached(
        "INSERT INTO schedule_ticks (schedule_id, tick, outcome, job_id, fired_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        id,
        fire.tick,
        outcome.as_str(),
        job_id.map(|job| job.to_string()),
        fire.now
    ])?;
    conn.prepare_cached(
        "UPDATE schedules SET next_at = ?2, last_tick = ?3, last_job_id = COALESCE(?4, last_job_id)
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        fire.next_at,
        fire.tick,
        job_id.map(|job| job.to_string())
    ])?;
    Ok(match job_id {
        Some(job) => TickResult::Created(job),
        None => TickResult::SkippedOverlap,
    })
}

/// The most recent fired ticks of a schedule, newest first.
pub fn ticks(conn: &Connection, id: Uuid, limit: usize) -> Result<Vec<TickRow>> {
    let mut statement = conn.prepare_cached(
        "SELECT tick, outcome, job_id, fired_at FROM schedule_ticks WHERE schedule_id = +?1
         ORDER BY tick DESC LIMIT ?2 + 0",
    )?;
    let rows = statement
        .query_map(params![id.to_string(), limit as i64], |row| {
            let outcome: String = row.get(1)?;
            let job: Option<String> = row.get(2)?;
            Ok(TickRow {
                tick: row.get(0)?,
                outcome: TickOutcome::parse(&outcome).unwrap_or(TickOutcome::Created),
                job_id: match job {
                    Some(_) => Some(rows::uuid(row, 2)?),
                    None => None,
                },
                fired_at: row.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}
