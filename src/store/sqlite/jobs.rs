//! Job-level reads and writes: creation with idempotency keys, listing, cancellation, records,
//! dead letters, pruning and the counts behind `/metrics`.

use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::rows::{self, DEAD_LETTER_COLUMNS, JOB_COLUMNS, JOB_STATUS, STEP_COLUMNS};
use super::{endpoints, steps};
use crate::clock::Millis;
use crate::job::{
    DeadLetter, DeadLetterFilter, IdempotencyClaim, Job, JobDetail, JobFilter, NewJob, RecordRow,
    StepKind, StepState,
};
use crate::store::{Created, DeliveryInput, Error, Result, Snapshot};

/// A new job's rows, serialised ahead of the write so the writer thread only binds them.
pub struct JobRows {
    id: String,
    created_at: Millis,
    spec: String,
    steps: Vec<StepRow>,
    idempotency: Option<IdempotencyClaim>,
}

struct StepRow {
    kind: StepKind,
    name: String,
    max_attempts: u32,
    deadline_at: Millis,
    config: String,
}

impl JobRows {
    pub fn new(job: &NewJob) -> Self {
        Self {
            id: job.id.to_string(),
            created_at: job.created_at,
            spec: job.spec.to_string(),
            steps: job
                .steps
                .iter()
                .map(|step| StepRow {
                    kind: step.kind,
                    name: step.name.clone(),
                    max_attempts: step.max_attempts,
                    deadline_at: step.deadline_at,
                    config: step.config.to_string(),
                })
                .collect(),
            idempotency: job.idempotency.clone(),
        }
    }
}

/// The live job an idempotency key already names (`Some`), `Conflict` when the key came with
/// another request body or its job was pruned, `None` when the job is new. Writes nothing, so a
/// batch can check every job before storing any.
fn replay(conn: &Connection, job: &JobRows) -> Result<Option<Job>> {
    let Some(claim) = &job.idempotency else {
        return Ok(None);
    };
    let mut lookup = conn.prepare_cached(
        "SELECT request_hash, job_id, expires_at FROM idempotency_keys WHERE key = ?1",
    )?;
    let existing: Option<(String, String, i64)> = lookup
        .query_row([&claim.key], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    let Some((hash, job_id, expires_at)) = existing else {
        return Ok(None);
    };
    if expires_at <= job.created_at {
        return Ok(None);
    }
    if hash != claim.request_hash {
        return Err(Error::Conflict(
            "this Idempotency-Key was already used with a different request body".into(),
        ));
    }
    let id = Uuid::parse_str(&job_id).map_err(|_| Error::Corrupt("idempotency job id".into()))?;
    let job = get(conn, id)?.ok_or_else(|| {
        Error::Conflict("this Idempotency-Key names a job that was pruned".into())
    })?;
    Ok(Some(job))
}

/// Stores new jobs in one transaction, all or none, unless an idempotency key names a live
/// job: that job is returned instead (`Some`), or `Conflict` when the key came with another
/// request body. Every key is checked before the first job is written, so a conflict leaves
/// nothing behind. `None` is a job stored now.
pub fn insert_all(conn: &Connection, jobs: &[JobRows]) -> Result<Vec<Option<Job>>> {
    let replayed = jobs
        .iter()
        .map(|job| replay(conn, job))
        .collect::<Result<Vec<_>>>()?;
    for (job, replayed) in jobs.iter().zip(&replayed) {
        if replayed.is_none() {
            write(conn, job)?;
        }
    }
    Ok(replayed)
}

/// Writes a new job's rows (and its idempotency key, replacing an expired one).
fn write(conn: &Connection, job: &JobRows) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO jobs (id, status, spec, created_at, updated_at) VALUES (?1, 'queued', ?2, ?3, ?3)",
    )?
    .execute(params![job.id, job.spec, job.created_at])?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO steps (job_id, position, kind, name, state, max_attempts, budget_ms, run_at, deadline_at,
                            config, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
    )?;
    for (position, step) in job.steps.iter().enumerate() {
        let (state, run_at) = match step.kind {
            StepKind::Collect => (StepState::Queued, Some(job.created_at)),
            StepKind::Deliver => (StepState::Waiting, None),
        };
        insert.execute(params![
            job.id,
            position as i64,
            step.kind.as_str(),
            step.name,
            state.as_str(),
            step.max_attempts,
            step.deadline_at - job.created_at,
            run_at,
            step.deadline_at,
            step.config,
            job.created_at,
        ])?;
    }
    if let Some(claim) = &job.idempotency {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO idempotency_keys (key, request_hash, job_id, expires_at)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            claim.key,
            claim.request_hash,
            job.id,
            claim.expires_at
        ])?;
    }
    Ok(())
}

/// What creating `job` gave: the job just stored, or the one `insert_all` returned instead.
pub fn created(job: NewJob, replayed: Option<Job>) -> Created {
    match replayed {
        Some(job) => Created {
            job,
            replayed: true,
        },
        None => Created {
            job: Job {
                id: job.id,
                status: crate::job::JobStatus::Queued,
                created_at: job.created_at,
                updated_at: job.created_at,
                finished_at: None,
                spec: job.spec,
            },
            replayed: false,
        },
    }
}

/// Stores a new job (see [`insert_all`]) in one call, for writes that create a job among
/// others.
pub fn create(conn: &Connection, job: &NewJob) -> Result<Created> {
    let replayed = insert_all(conn, &[JobRows::new(job)])?.pop().flatten();
    Ok(created(job.clone(), replayed))
}

pub fn get(conn: &Connection, id: Uuid) -> Result<Option<Job>> {
    let mut statement =
        conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?;
    Ok(statement
        .query_row([id.to_string()], rows::job)
        .optional()?)
}

pub fn detail(conn: &Connection, id: Uuid) -> Result<Option<JobDetail>> {
    let Some(job) = get(conn, id)? else {
        return Ok(None);
    };
    let key = id.to_string();
    let mut steps = conn.prepare_cached(&format!(
        "SELECT {STEP_COLUMNS} FROM steps WHERE job_id = +?1 ORDER BY position"
    ))?;
    let steps = steps
        .query_map([&key], |row| rows::step(row).map(|(step, _)| step))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut attempts = conn.prepare_cached(
        "SELECT step_id, attempt, started_at, ended_at, outcome, error_kind, http_status, error, response
         FROM attempts WHERE job_id = +?1 ORDER BY id",
    )?;
    let attempts = attempts
        .query_map([&key], rows::attempt)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(JobDetail {
        job,
        steps,
        attempts,
    }))
}

/// What [`delivery_input`] found.
pub enum DeliveryRead {
    Found(DeliveryInput),
    /// No such job.
    Missing,
    /// The job's sources hold more records than the caller would read here.
    Larger,
}

impl DeliveryRead {
    /// The input, if it was read.
    pub fn found(self) -> Option<DeliveryInput> {
        match self {
            DeliveryRead::Found(input) => Some(input),
            DeliveryRead::Missing | DeliveryRead::Larger => None,
        }
    }
}

/// The job's creation time, collect steps and records, and the endpoint's disabled entry, all
/// read in the caller's transaction so they come from one snapshot; [`DeliveryRead::Larger`],
/// before any record is read, when the sources hold more than `most_records`.
pub fn delivery_input(
    conn: &Connection,
    id: Uuid,
    endpoint: Option<&str>,
    most_records: Option<u64>,
) -> Result<DeliveryRead> {
    delivery_input_of(conn, &id.to_string(), endpoint, most_records)
}

/// The input of the deliver step just handed over in this transaction, when it can be read
/// here: no endpoint is disabled at all (so the step's own endpoint, which only its sink can
/// name, needs no lookup) and its sources hold at most `most_records` records. `None` leaves
/// the read to [`delivery_input`] before the send.
pub fn handed_delivery_input(
    conn: &Connection,
    job_id: &str,
    most_records: u64,
) -> Result<Option<DeliveryInput>> {
    if endpoints::any(conn)? {
        return Ok(None);
    }
    Ok(delivery_input_of(conn, job_id, None, Some(most_records))?.found())
}

fn delivery_input_of(
    conn: &Connection,
    key: &str,
    endpoint: Option<&str>,
    most_records: Option<u64>,
) -> Result<DeliveryRead> {
    let created_at: Option<Millis> = conn
        .prepare_cached("SELECT created_at FROM jobs WHERE id = ?1")?
        .query_row([key], |row| row.get(0))
        .optional()?;
    let Some(created_at) = created_at else {
        return Ok(DeliveryRead::Missing);
    };
    let sources = conn
        .prepare_cached(&format!(
            "SELECT {STEP_COLUMNS} FROM steps WHERE job_id = +?1 AND kind = 'collect' ORDER BY position"
        ))?
        .query_map([key], |row| rows::step(row).map(|(step, _)| step))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if most_records.is_some_and(|most| sources.iter().map(|step| step.records).sum::<u64>() > most)
    {
        return Ok(DeliveryRead::Larger);
    }
    let records = conn
        .prepare_cached("SELECT step_id, data FROM records WHERE job_id = +?1 ORDER BY id")?
        .query_map([key], |row| Ok((row.get(0)?, rows::json(row, 1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let disabled = match endpoint {
        Some(url) => endpoints::get(conn, url)?,
        None => None,
    };
    Ok(DeliveryRead::Found(DeliveryInput {
        created_at,
        sources,
        records,
        disabled,
    }))
}

/// A page of jobs, newest first. Only the conditions the filter asks for are written, so a
/// status is an index range and a cursor a bound on it, never a scan of every job.
pub fn list(conn: &Connection, filter: &JobFilter) -> Result<Vec<Job>> {
    let mut conditions = Vec::new();
    let mut values: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
    if let Some(status) = filter.status {
        conditions.push(rows::status_condition(status));
    }
    if let Some(before) = filter.before {
        values.push(Box::new(before.to_string()));
        conditions.push(format!("jobs.id < ?{}", values.len()));
    }
    if let Some(connector) = &filter.connector {
        // Probed job by job (a connector no job used: ~440 ms at 500 000 jobs). An index of
        // collect steps by name served it in 0.3 ms but cost bulk job creation about a
        // quarter in the engine bench (117–123k against 165–176k jobs/s), for a filter
        // seldom used without a status, which pages by index and probes here.
        values.push(Box::new(connector.clone()));
        conditions.push(format!(
            "EXISTS (SELECT 1 FROM steps WHERE steps.job_id = jobs.id
                     AND steps.kind = 'collect' AND steps.name = ?{})",
            values.len()
        ));
    }
    values.push(Box::new(filter.limit as i64));
    let limit = values.len();
    let condition = if conditions.is_empty() {
        "1".to_owned()
    } else {
        conditions.join(" AND ")
    };
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE {condition} ORDER BY jobs.id DESC LIMIT ?{limit} + 0"
    ))?;
    let jobs = statement
        .query_map(rusqlite::params_from_iter(values), rows::job)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(jobs)
}

pub fn cancel(conn: &Connection, id: Uuid, now: Millis) -> Result<Job> {
    let job = get(conn, id)?.ok_or(Error::NotFound)?;
    if job.status.is_terminal() {
        return Err(Error::Conflict(format!(
            "job already finished as {}",
            job.status.as_str()
        )));
    }
    let key = id.to_string();
    conn.prepare_cached(
        "INSERT INTO attempts (job_id, step_id, attempt, started_at, ended_at, outcome, error_kind, error)
         SELECT job_id, id, attempt, COALESCE(started_at, ?2), ?2, 'cancelled', 'cancelled', 'job cancelled'
         FROM steps WHERE job_id = ?1 AND state = 'running'",
    )?
    .execute(params![key, now])?;
    conn.prepare_cached(
        "UPDATE steps SET state = 'cancelled', run_at = NULL, lease_owner = NULL, lease_expires_at = NULL,
                updated_at = ?2, finished_at = ?2
         WHERE job_id = ?1 AND state IN ('waiting', 'queued', 'running', 'retrying')",
    )?
    .execute(params![key, now])?;
    steps::refresh_job(conn, &key, now)?;
    get(conn, id)?.ok_or(Error::NotFound)
}

pub fn records(
    conn: &Connection,
    id: Uuid,
    after: Option<i64>,
    limit: usize,
) -> Result<Vec<RecordRow>> {
    rows_of("records", conn, id, after, limit)
}

/// Records as collected, before processors (kept up to `engine.keep_original_records`).
pub fn original_records(
    conn: &Connection,
    id: Uuid,
    after: Option<i64>,
    limit: usize,
) -> Result<Vec<RecordRow>> {
    rows_of("original_records", conn, id, after, limit)
}

fn rows_of(
    table: &'static str,
    conn: &Connection,
    id: Uuid,
    after: Option<i64>,
    limit: usize,
) -> Result<Vec<RecordRow>> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT id, step_id, page, data FROM {table} WHERE job_id = +?1 AND id > ?2 ORDER BY id LIMIT ?3 + 0"
    ))?;
    let records = statement
        .query_map(
            params![id.to_string(), after.unwrap_or(0), limit as i64],
            |row| {
                let text: String = row.get(3)?;
                Ok(RecordRow {
                    id: row.get(0)?,
                    step_id: row.get(1)?,
                    page: row.get(2)?,
                    data: serde_json::from_str(&text).map_err(|_| {
                        rusqlite::Error::FromSqlConversionFailure(
                            3,
                            rusqlite::types::Type::Text,
                            "invalid json".into(),
                        )
                    })?,
                })
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(records)
}

pub fn dead_letters(conn: &Connection, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
    let ids = serde_json::to_string(&filter.ids).unwrap_or_else(|_| "[]".into());
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters
         WHERE (?1 = '[]' OR id IN (SELECT value FROM json_each(?1)))
           AND (?2 IS NULL OR job_id = ?2) AND (?3 IS NULL OR created_at >= ?3)
           AND (?4 OR replayed_at IS NULL) AND id > ?5
         ORDER BY id LIMIT ?6 + 0"
    ))?;
    let letters = statement
        .query_map(
            params![
                ids,
                filter.job_id.map(|id| id.to_string()),
                filter.since,
                filter.include_replayed,
                filter.after.unwrap_or(0),
                filter.limit as i64
            ],
            rows::dead_letter,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(letters)
}

/// Deletes up to 1 000 jobs finished before `before`, with all their rows.
pub fn prune(conn: &Connection, before: Millis, now: Millis) -> Result<u64> {
    let mut select = conn.prepare_cached(
        "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?1 LIMIT 1000",
    )?;
    let ids = select
        .query_map([before], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let list = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
    for table in [
        "records",
        "original_records",
        "attempts",
        "dead_letters",
        "steps",
        "idempotency_keys",
    ] {
        conn.prepare_cached(&format!(
            "DELETE FROM {table} WHERE job_id IN (SELECT value FROM json_each(?1))"
        ))?
        .execute([&list])?;
    }
    conn.prepare_cached("DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?1))")?
        .execute([&list])?;
    conn.prepare_cached("DELETE FROM idempotency_keys WHERE expires_at <= ?1")?
        .execute([now])?;
    Ok(ids.len() as u64)
}

pub fn snapshot(conn: &Connection, now: Millis) -> Result<Snapshot> {
    let grouped = |sql: &str| -> Result<Vec<(String, u64)>> {
        let mut statement = conn.prepare_cached(sql)?;
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    };
    let mut jobs_by_status = grouped("SELECT status, COUNT(*) FROM jobs GROUP BY status")?;
    // Jobs stored as queued whose first attempt is in flight are running (`rows::JOB_STATUS`):
    // counted from the running steps, not by probing every queued job.
    let in_flight: u64 = conn
        .prepare_cached(
            "SELECT COUNT(DISTINCT steps.job_id) FROM steps JOIN jobs ON jobs.id = steps.job_id
             WHERE steps.state = 'running' AND jobs.status = 'queued'",
        )?
        .query_row([], |row| row.get(0))?;
    if in_flight > 0 {
        move_count(&mut jobs_by_status, "queued", "running", in_flight);
    }
    let steps_by_state = grouped("SELECT state, COUNT(*) FROM steps GROUP BY state")?;
    let queue_depth = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM steps WHERE state IN ('queued', 'retrying') AND run_at <= ?1",
        )?
        .query_row([now], |row| row.get(0))?;
    let dead_letters = conn
        .prepare_cached("SELECT COUNT(*) FROM dead_letters WHERE replayed_at IS NULL")?
        .query_row([], |row| row.get(0))?;
    Ok(Snapshot {
        jobs_by_status,
        steps_by_state,
        queue_depth,
        dead_letters,
        breakers: Vec::new(),
        pipeline_stages: Vec::new(),
    })
}

/// Moves `count` from the `from` group to the `to` group of `groups`.
fn move_count(groups: &mut Vec<(String, u64)>, from: &str, to: &str, count: u64) {
    for (name, n) in groups.iter_mut() {
        if name == from {
            *n = n.saturating_sub(count);
        }
    }
    match groups.iter_mut().find(|(name, _)| name == to) {
        Some((_, n)) => *n += count,
        None => groups.push((to.to_owned(), count)),
    }
    groups.retain(|(_, n)| *n > 0);
}

/// SQLite's own check plus the domain's: orphan rows, leases on steps that are not running,
/// and job statuses that disagree with their steps.
pub fn integrity(conn: &Connection) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut check = conn.prepare("PRAGMA integrity_check")?;
    for line in check.query_map([], |row| row.get::<_, String>(0))? {
        let line = line?;
        if line != "ok" {
            problems.push(format!("sqlite: {line}"));
        }
    }
    let counts = [
        (
            "steps without a job",
            "SELECT COUNT(*) FROM steps WHERE job_id NOT IN (SELECT id FROM jobs)",
        ),
        (
            "records without a job",
            "SELECT COUNT(*) FROM records WHERE job_id NOT IN (SELECT id FROM jobs)",
        ),
        (
            "jobs without steps",
            "SELECT COUNT(*) FROM jobs WHERE id NOT IN (SELECT job_id FROM steps)",
        ),
        (
            "running steps without a lease",
            "SELECT COUNT(*) FROM steps WHERE state = 'running' AND (lease_owner IS NULL OR lease_expires_at IS NULL)",
        ),
        (
            "leases on steps that are not running",
            "SELECT COUNT(*) FROM steps WHERE state != 'running' AND lease_owner IS NOT NULL",
        ),
        (
            "due steps without a due time",
            "SELECT COUNT(*) FROM steps WHERE state IN ('queued', 'retrying') AND run_at IS NULL",
        ),
    ];
    for (what, sql) in counts {
        let count: i64 = conn.query_row(sql, [], |row| row.get(0))?;
        if count > 0 {
            problems.push(format!("{count} {what}"));
        }
    }
    let mut jobs = conn.prepare(&format!("SELECT id, {JOB_STATUS} FROM jobs"))?;
    let mut steps =
        conn.prepare_cached("SELECT kind, state, attempt FROM steps WHERE job_id = ?1")?;
    let mut mismatched = 0;
    for row in jobs.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })? {
        let (id, status) = row?;
        let facts = steps
            .query_map([&id], |row| {
                Ok((
                    rows::step_kind(row, 0)?,
                    rows::step_state(row, 1)?,
                    row.get::<_, u32>(2)? > 0,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if facts.is_empty() {
            continue;
        }
        if crate::job::JobStatus::derive(facts).as_str() != status {
            mismatched += 1;
        }
    }
    if mismatched > 0 {
        problems.push(format!(
            "{mismatched} jobs whose status disagrees with their steps"
        ));
    }
    Ok(problems)
}
