//! Mapping between SQLite rows and the job vocabulary.

use rusqlite::Row;
use serde_json::Value;
use uuid::Uuid;

use crate::job::{Attempt, DeadLetter, Job, JobStatus, Step, StepKind, StepState};

/// The step columns, in the order `step` reads them.
pub const STEP_COLUMNS: &str = "id, job_id, position, kind, name, state, attempt, max_attempts, run_at, \
     deadline_at, lease_owner, lease_expires_at, checkpoint, pages, records, last_error, last_status, \
     config, created_at, updated_at, finished_at, started_at, deferrals, round_start, progress";

/// Whether the job has an attempt in flight.
macro_rules! running_step {
    () => {
        "EXISTS (SELECT 1 FROM steps AS started
                 WHERE started.job_id = jobs.id AND started.state = 'running')"
    };
}

/// A job's status as clients see it, from the `jobs` row and its steps.
///
/// The stored `status` is written when the job is created and whenever one of its steps ends
/// (or is cancelled or re-queued), not when a step is claimed: that spared every claim a write
/// of the job row and its status index, a fifth of the store's work per no-op job. So a job
/// stored as `queued` whose first attempt is in flight has a `running` step, and reads as
/// `running` here, as `JobStatus::derive` would have stored it.
macro_rules! job_status {
    () => {
        concat!(
            "CASE WHEN jobs.status = 'queued' AND ",
            running_step!(),
            " THEN 'running' ELSE jobs.status END"
        )
    };
}

pub const JOB_STATUS: &str = job_status!();

/// A condition on `jobs` that holds when the job reads as `status` ([`JOB_STATUS`]), written
/// on the stored status so the `(status, id)` index serves it: only `queued` and `running`
/// look at the job's steps.
pub fn status_condition(status: JobStatus) -> String {
    match status {
        JobStatus::Queued => concat!("jobs.status = 'queued' AND NOT ", running_step!()).into(),
        JobStatus::Running => concat!(
            "(jobs.status = 'running' OR (jobs.status = 'queued' AND ",
            running_step!(),
            "))"
        )
        .into(),
        settled => format!("jobs.status = '{}'", settled.as_str()),
    }
}

/// The job columns, in the order `job` reads them, from a query over `jobs`.
pub const JOB_COLUMNS: &str = concat!(
    "jobs.id, ",
    job_status!(),
    ", jobs.spec, jobs.created_at, jobs.updated_at, jobs.finished_at"
);

pub const DEAD_LETTER_COLUMNS: &str = "id, job_id, step_id, step_name, state, attempts, error, error_kind, \
     http_status, response, created_at, replayed_at";

pub fn corrupt(index: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        index,
        rusqlite::types::Type::Text,
        format!("invalid {what}").into(),
    )
}

pub fn uuid(row: &Row<'_>, index: usize) -> rusqlite::Result<Uuid> {
    let text: String = row.get(index)?;
    Uuid::parse_str(&text).map_err(|_| corrupt(index, "uuid"))
}

pub fn json(row: &Row<'_>, index: usize) -> rusqlite::Result<Value> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text).map_err(|_| corrupt(index, "json"))
}

fn optional_json(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Value>> {
    let text: Option<String> = row.get(index)?;
    text.map(|text| serde_json::from_str(&text).map_err(|_| corrupt(index, "json")))
        .transpose()
}

pub fn step_state(row: &Row<'_>, index: usize) -> rusqlite::Result<StepState> {
    let text: String = row.get(index)?;
    StepState::parse(&text).ok_or_else(|| corrupt(index, "step state"))
}

pub fn step_kind(row: &Row<'_>, index: usize) -> rusqlite::Result<StepKind> {
    let text: String = row.get(index)?;
    StepKind::parse(&text).ok_or_else(|| corrupt(index, "step kind"))
}

pub fn job(row: &Row<'_>) -> rusqlite::Result<Job> {
    let status: String = row.get(1)?;
    Ok(Job {
        id: uuid(row, 0)?,
        status: JobStatus::parse(&status).ok_or_else(|| corrupt(1, "job status"))?,
        spec: json(row, 2)?,
        created_at: row.get(3)?,
        updated_at: row.get(4)?,
        finished_at: row.get(5)?,
    })
}

/// A step's columns as stored, in `STEP_COLUMNS` order: read by the writer thread with no
/// parsing (no UUID, no JSON), and turned into a [`Step`] by [`RawStep::parse`] on the caller's
/// thread, so the single writer spends no time decoding claimed steps.
pub struct RawStep {
    id: i64,
    job_id: String,
    position: u32,
    kind: String,
    name: String,
    state: String,
    attempt: u32,
    max_attempts: u32,
    run_at: Option<i64>,
    deadline_at: i64,
    lease_owner: Option<String>,
    lease_expires_at: Option<i64>,
    checkpoint: Option<String>,
    pages: u64,
    records: u64,
    last_error: Option<String>,
    last_status: Option<u16>,
    config: String,
    created_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
    deferrals: u32,
    round_start: u32,
    progress: Option<String>,
}

impl RawStep {
    pub fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            job_id: row.get(1)?,
            position: row.get(2)?,
            kind: row.get(3)?,
            name: row.get(4)?,
            state: row.get(5)?,
            attempt: row.get(6)?,
            max_attempts: row.get(7)?,
            run_at: row.get(8)?,
            deadline_at: row.get(9)?,
            lease_owner: row.get(10)?,
            lease_expires_at: row.get(11)?,
            checkpoint: row.get(12)?,
            pages: row.get(13)?,
            records: row.get(14)?,
            last_error: row.get(15)?,
            last_status: row.get(16)?,
            config: row.get(17)?,
            created_at: row.get(18)?,
            updated_at: row.get(19)?,
            finished_at: row.get(20)?,
            deferrals: row.get(22)?,
            round_start: row.get(23)?,
            progress: row.get(24)?,
        })
    }

    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    pub fn id(&self) -> i64 {
        self.id
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The row as a claim leaves it: running its next attempt under `owner`'s lease.
    pub fn lease(&mut self, owner: &str, until: i64, now: i64) {
        "running".clone_into(&mut self.state);
        self.attempt += 1;
        self.lease_owner = Some(owner.to_owned());
        self.lease_expires_at = Some(until);
        self.updated_at = now;
    }

    pub fn parse(self) -> rusqlite::Result<Step> {
        let json = |index: usize, text: &str| -> rusqlite::Result<Value> {
            serde_json::from_str(text).map_err(|_| corrupt(index, "json"))
        };
        Ok(Step {
            id: self.id,
            job_id: Uuid::parse_str(&self.job_id).map_err(|_| corrupt(1, "uuid"))?,
            position: self.position,
            kind: StepKind::parse(&self.kind).ok_or_else(|| corrupt(3, "step kind"))?,
            state: StepState::parse(&self.state).ok_or_else(|| corrupt(5, "step state"))?,
            name: self.name,
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            run_at: self.run_at,
            deadline_at: self.deadline_at,
            lease_owner: self.lease_owner,
            lease_expires_at: self.lease_expires_at,
            checkpoint: self
                .checkpoint
                .as_deref()
                .map(|text| json(12, text))
                .transpose()?,
            pages: self.pages,
            records: self.records,
            deferrals: self.deferrals,
            round_start: self.round_start,
            last_error: self.last_error,
            last_status: self.last_status,
            config: json(17, &self.config)?,
            created_at: self.created_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
            progress: self
                .progress
                .as_deref()
                .map(|text| json(24, text))
                .transpose()?,
        })
    }
}

/// A step and the start time of its current attempt.
pub fn step(row: &Row<'_>) -> rusqlite::Result<(Step, Option<i64>)> {
    let step = Step {
        id: row.get(0)?,
        job_id: uuid(row, 1)?,
        position: row.get(2)?,
        kind: step_kind(row, 3)?,
        name: row.get(4)?,
        state: step_state(row, 5)?,
        attempt: row.get(6)?,
        max_attempts: row.get(7)?,
        run_at: row.get(8)?,
        deadline_at: row.get(9)?,
        lease_owner: row.get(10)?,
        lease_expires_at: row.get(11)?,
        checkpoint: optional_json(row, 12)?,
        pages: row.get(13)?,
        records: row.get(14)?,
        deferrals: row.get(22)?,
        round_start: row.get(23)?,
        last_error: row.get(15)?,
        last_status: row.get(16)?,
        config: json(row, 17)?,
        created_at: row.get(18)?,
        updated_at: row.get(19)?,
        finished_at: row.get(20)?,
        progress: optional_json(row, 24)?,
    };
    Ok((step, row.get(21)?))
}

pub fn attempt(row: &Row<'_>) -> rusqlite::Result<Attempt> {
    let started_at: i64 = row.get(2)?;
    let ended_at: i64 = row.get(3)?;
    Ok(Attempt {
        step_id: row.get(0)?,
        attempt: row.get(1)?,
        started_at,
        ended_at,
        outcome: row.get(4)?,
        error_kind: row.get(5)?,
        http_status: row.get(6)?,
        error: row.get(7)?,
        response: row.get(8)?,
        latency_ms: ended_at - started_at,
    })
}

pub fn dead_letter(row: &Row<'_>) -> rusqlite::Result<DeadLetter> {
    Ok(DeadLetter {
        id: row.get(0)?,
        job_id: uuid(row, 1)?,
        step_id: row.get(2)?,
        step_name: row.get(3)?,
        state: step_state(row, 4)?,
        attempts: row.get(5)?,
        error: row.get(6)?,
        error_kind: row.get(7)?,
        http_status: row.get(8)?,
        response: row.get(9)?,
        created_at: row.get(10)?,
        replayed_at: row.get(11)?,
    })
}
