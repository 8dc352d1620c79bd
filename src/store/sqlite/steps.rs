//! Step transitions in SQL. Each runs inside the writer's transaction; every write to a claimed
//! step is guarded by its fence (`lease_owner` and `attempt`), so a worker that lost its lease
//! changes nothing.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use uuid::Uuid;

use super::rows::{self, RawStep, STEP_COLUMNS};
use crate::clock::Millis;
use crate::job::{
    Claimed, Fence, JobStatus, Outcome, PageWrite, Receipt, RetryBudget, StepError, StepKind,
    StepState,
};
use crate::store::{Error, Result};

/// Leases up to `limit` due steps to `owner`, oldest due first. Their jobs' rows are not
/// written: a job reads as running from its running step (`rows::JOB_STATUS`).
/// The steps come back as stored ([`RawStep`]): [`claimed`] parses them on the caller's
/// thread, not on the writer's.
///
/// The due steps are read, then leased one by one by rowid: an `UPDATE … WHERE id IN (…)
/// RETURNING` did the same in one statement but buffered every row in two ephemeral tables
/// (the id list and the returned rows), 11 % more instructions per claimed step under
/// callgrind. The writer is the only one writing, so nothing changes between the two.
///
/// The limit is bound as `?2 + 0`, not `?2`: SQLite plans with the value of a bare `LIMIT ?`,
/// so every claim with a different limit (most of them: the dispatcher claims its free slots)
/// re-prepared the whole statement.
pub fn claim(
    conn: &Connection,
    owner: &str,
    limit: usize,
    now: Millis,
    lease_until: Millis,
) -> Result<Vec<RawStep>> {
    let sql = format!(
        "SELECT {STEP_COLUMNS} FROM steps WHERE state IN ('queued', 'retrying') AND run_at <= ?1
         ORDER BY run_at LIMIT ?2 + 0"
    );
    let mut due = conn.prepare_cached(&sql)?;
    let mut claimed = due
        .query_map(params![now, limit as i64], RawStep::read)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut lease = conn.prepare_cached(
        "UPDATE steps SET state = 'running', attempt = ?2, lease_owner = ?3, lease_expires_at = ?4,
                started_at = ?5, updated_at = ?5
         WHERE id = ?1",
    )?;
    for step in &mut claimed {
        step.lease(owner, lease_until, now);
        lease.execute(params![step.id(), step.attempt(), owner, lease_until, now])?;
    }
    Ok(claimed)
}

/// Parses claimed steps into what a worker runs. A step whose stored row cannot be parsed is
/// left out (and logged): its lease expires and the rescue ends it like any abandoned attempt.
pub fn claimed(raw: Vec<RawStep>, owner: &str, now: Millis) -> Vec<Claimed> {
    raw.into_iter()
        .filter_map(|raw| {
            let id = raw.id();
            match raw.parse() {
                Ok(step) => Some(Claimed {
                    fence: Fence {
                        step_id: step.id,
                        owner: owner.to_owned(),
                        attempt: step.attempt,
                    },
                    step,
                    started_at: now,
                }),
                Err(error) => {
                    tracing::error!(step_id = id, %error, "claimed step is corrupt; leaving it to lease expiry");
                    None
                }
            }
        })
        .collect()
}

pub fn next_due(conn: &Connection) -> Result<Option<Millis>> {
    let mut statement =
        conn.prepare_cached("SELECT MIN(run_at) FROM steps WHERE state IN ('queued', 'retrying')")?;
    Ok(statement.query_row([], |row| row.get(0))?)
}

pub fn extend_lease(conn: &Connection, fence: &Fence, until: Millis) -> Result<()> {
    let mut statement = conn.prepare_cached(
        "UPDATE steps SET lease_expires_at = ?4
         WHERE id = ?1 AND lease_owner = ?2 AND attempt = ?3 AND state = 'running'",
    )?;
    match statement.execute(params![fence.step_id, fence.owner, fence.attempt, until])? {
        0 => Err(Error::Fenced),
        _ => Ok(()),
    }
}

/// Stores a page's records and advances the checkpoint, if the fence still holds.
pub fn save_page(conn: &Connection, fence: &Fence, page: &PageWrite, now: Millis) -> Result<()> {
    let checkpoint = page.checkpoint.as_ref().map(Value::to_string);
    let mut advance = conn.prepare_cached(
        "UPDATE steps SET checkpoint = COALESCE(?4, checkpoint), pages = pages + 1, records = records + ?5,
                updated_at = ?6, progress = COALESCE(?7, progress)
         WHERE id = ?1 AND lease_owner = ?2 AND attempt = ?3 AND state = 'running'
         RETURNING job_id, pages - 1",
    )?;
    let advanced: Option<(String, i64)> = advance
        .query_row(
            params![
                fence.step_id,
                fence.owner,
                fence.attempt,
                checkpoint,
                page.records.len() as i64,
                now,
                page.progress.as_ref().map(Value::to_string),
            ],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let Some((job_id, page_number)) = advanced else {
        return Err(Error::Fenced);
    };
    insert_records(conn, &job_id, fence.step_id, page_number, page)
}

/// Inserts a page's records under its page number.
fn insert_records(
    conn: &Connection,
    job_id: &str,
    step_id: i64,
    page_number: i64,
    page: &PageWrite,
) -> Result<()> {
    for (table, records) in [
        ("records", &page.records),
        ("original_records", &page.originals),
    ] {
        if records.is_empty() {
            continue;
        }
        let mut insert = conn.prepare_cached(&format!(
            "INSERT INTO {table} (job_id, step_id, page, seq, data) VALUES (?1, ?2, ?3, ?4, ?5)"
        ))?;
        for (seq, record) in records.iter().enumerate() {
            insert.execute(params![
                job_id,
                step_id,
                page_number,
                seq as i64,
                record.to_string()
            ])?;
        }
    }
    Ok(())
}

/// The step row facts needed to end an attempt.
struct Ending {
    step_id: i64,
    job_id: String,
    kind: StepKind,
    name: String,
    attempt: u32,
    started_at: Millis,
    /// Every step of the job, this one in the state the attempt leaves it in: what the job
    /// status is derived from.
    job_steps: StepFacts,
}

/// A worker's offer to run, at once and under its own lease, the deliver step the end of its
/// collect step releases.
#[derive(Clone, Copy)]
pub struct Handoff<'a> {
    pub owner: &'a str,
    pub lease_until: Millis,
}

/// What ending an attempt did besides recording it.
pub struct Finished {
    /// Work became runnable for the dispatcher.
    pub woke: bool,
    /// A released deliver step leased to the handoff's owner, as stored.
    pub handed: Option<RawStep>,
}

/// Ends the fenced attempt with `outcome`. `last_page`, when given, is stored by the same
/// update of the step row (counters and checkpoint) as `save_page` would, so a collect step's
/// final page costs no second write of that row. With `handoff`, the first deliver step this
/// releases is leased to its owner in the same transaction instead of queued.
///
/// One read of the job's steps checks the fence and gives the facts the job status is derived
/// from; the update then goes by rowid. An `UPDATE … RETURNING` instead buffers its row in an
/// ephemeral table (a temporary b-tree with its own pager), which cost more than the read.
pub fn finish(
    conn: &Connection,
    fence: &Fence,
    outcome: &Outcome,
    last_page: Option<&PageWrite>,
    now: Millis,
    handoff: Option<Handoff<'_>>,
) -> Result<Finished> {
    let (state, run_at) = placement(outcome);
    let error = error_of(outcome);
    let answer = answer_of(outcome);
    let deferred = i64::from(matches!(outcome, Outcome::Deferred { .. }));
    let finished_at = state.is_terminal().then_some(now);
    let checkpoint = last_page
        .and_then(|page| page.checkpoint.as_ref())
        .map(Value::to_string);
    let mut read = conn.prepare_cached(
        "SELECT id, job_id, kind, name, state, attempt, lease_owner, started_at, pages FROM steps
         WHERE job_id = (SELECT job_id FROM steps WHERE id = ?1)",
    )?;
    let mut ending = None;
    let mut facts = StepFacts::new();
    let mut rows = read.query([fence.step_id])?;
    while let Some(row) = rows.next()? {
        let kind = rows::step_kind(row, 2)?;
        let mut step_state = rows::step_state(row, 4)?;
        let attempt: u32 = row.get(5)?;
        if row.get::<_, i64>(0)? == fence.step_id {
            let owner: Option<String> = row.get(6)?;
            if step_state != StepState::Running
                || attempt != fence.attempt
                || owner.as_deref() != Some(fence.owner.as_str())
            {
                return Err(Error::Fenced);
            }
            step_state = state;
            ending = Some((
                Ending {
                    step_id: fence.step_id,
                    job_id: row.get(1)?,
                    kind,
                    name: row.get(3)?,
                    attempt,
                    started_at: row.get::<_, Option<i64>>(7)?.unwrap_or(now),
                    job_steps: StepFacts::new(),
                },
                row.get::<_, i64>(8)?,
            ));
        }
        facts.push((row.get(0)?, (kind, step_state, attempt > 0)));
    }
    drop(rows);
    let Some((mut ending, pages)) = ending else {
        return Err(Error::Fenced);
    };
    ending.job_steps = facts;
    let mut update = conn.prepare_cached(
        "UPDATE steps SET state = ?2, run_at = ?3, lease_owner = NULL, lease_expires_at = NULL,
                last_error = ?4, last_status = ?5, updated_at = ?6, finished_at = ?7,
                checkpoint = COALESCE(?8, checkpoint), pages = pages + ?9, records = records + ?10,
                max_attempts = max_attempts + ?11, deferrals = deferrals + ?11,
                progress = COALESCE(?12, progress)
         WHERE id = ?1",
    )?;
    update.execute(params![
        fence.step_id,
        state.as_str(),
        run_at,
        error.map(|e| e.message.as_str()),
        answer.http_status,
        now,
        finished_at,
        checkpoint,
        i64::from(last_page.is_some()),
        last_page.map_or(0, |page| page.records.len() as i64),
        deferred,
        last_page
            .and_then(|page| page.progress.as_ref())
            .map(Value::to_string),
    ])?;
    if let Some(page) = last_page {
        insert_records(conn, &ending.job_id, fence.step_id, pages, page)?;
    }
    after_attempt(
        conn,
        ending,
        outcome.word(),
        state,
        error,
        &answer,
        now,
        handoff,
    )
}

fn placement(outcome: &Outcome) -> (StepState, Option<Millis>) {
    match outcome {
        Outcome::Succeeded | Outcome::Delivered { .. } => (StepState::Succeeded, None),
        Outcome::Retry { at, .. } | Outcome::Deferred { at, .. } => {
            (StepState::Retrying, Some(*at))
        }
        Outcome::Failed { .. } => (StepState::Failed, None),
        Outcome::Dead { .. } => (StepState::Dead, None),
    }
}

fn error_of(outcome: &Outcome) -> Option<&StepError> {
    match outcome {
        Outcome::Succeeded | Outcome::Delivered { .. } => None,
        Outcome::Retry { error, .. }
        | Outcome::Deferred { error, .. }
        | Outcome::Failed { error }
        | Outcome::Dead { error } => Some(error),
    }
}

/// What the other side answered, success or not, for the attempt log.
fn answer_of(outcome: &Outcome) -> Receipt {
    match outcome {
        Outcome::Succeeded => Receipt::default(),
        Outcome::Delivered { receipt } => receipt.clone(),
        other => error_of(other)
            .map(|error| Receipt {
                http_status: error.http_status,
                response: error.response.clone(),
            })
            .unwrap_or_default(),
    }
}

/// The attempt log row, the dead letter, unblocking deliveries and the job status: everything
/// that follows the end of an attempt, in the same transaction.
#[allow(clippy::too_many_arguments)]
fn after_attempt(
    conn: &Connection,
    mut ending: Ending,
    outcome_word: &str,
    state: StepState,
    error: Option<&StepError>,
    answer: &Receipt,
    now: Millis,
    handoff: Option<Handoff<'_>>,
) -> Result<Finished> {
    let mut log = conn.prepare_cached(
        "INSERT INTO attempts (job_id, step_id, attempt, started_at, ended_at, outcome, error_kind, http_status,
                               error, response)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    log.execute(params![
        ending.job_id,
        ending.step_id,
        ending.attempt,
        ending.started_at,
        now,
        outcome_word,
        error.map(|e| e.kind.as_str()),
        answer.http_status,
        error.map(|e| e.message.as_str()),
        answer.response,
    ])?;
    if matches!(state, StepState::Failed | StepState::Dead) {
        let error = error.ok_or_else(|| Error::Database("a failed step needs an error".into()))?;
        let mut dead = conn.prepare_cached(
            "INSERT INTO dead_letters (job_id, step_id, step_name, state, attempts, error, error_kind, http_status,
                                       response, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        dead.execute(params![
            ending.job_id,
            ending.step_id,
            ending.name,
            state.as_str(),
            ending.attempt,
            error.message,
            error.kind,
            error.http_status,
            error.response,
            now,
        ])?;
    }
    let mut released = Released::default();
    if ending.kind == StepKind::Collect && state.is_terminal() {
        released = release_deliveries(conn, &ending.job_id, &mut ending.job_steps, now, handoff)?;
    }
    store_status(conn, &ending.job_id, ending.job_steps, now)?;
    Ok(Finished {
        woke: released.queued || state == StepState::Retrying,
        handed: released.handed,
    })
}

/// Each of a job's steps: its id and what `JobStatus::derive` needs of it.
type StepFacts = Vec<(i64, (StepKind, StepState, bool))>;

fn job_steps(conn: &Connection, job_id: &str) -> Result<StepFacts> {
    let mut steps =
        conn.prepare_cached("SELECT id, kind, state, attempt FROM steps WHERE job_id = ?1")?;
    let facts = steps
        .query_map([job_id], |row| {
            Ok((
                row.get(0)?,
                (
                    rows::step_kind(row, 1)?,
                    rows::step_state(row, 2)?,
                    row.get::<_, u32>(3)? > 0,
                ),
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(facts)
}

/// What releasing a job's deliver steps did.
#[derive(Default)]
struct Released {
    /// Some were queued for the dispatcher.
    queued: bool,
    /// One was leased to the handoff's owner.
    handed: Option<RawStep>,
}

/// Queues the job's waiting deliver steps once no collect step is left unfinished, and updates
/// `facts` (the job's steps, just read in this transaction by the one writer) to match. With
/// `handoff`, the first of them is leased to its owner instead, as a claim would lease it: the
/// worker that ended the last source delivers at once, with no claim round trip and no wait
/// behind older due steps. Each is updated by its id: a one-row update needs no statement
/// journal and no temporary table, which a multi-row update checking the job's other steps in a
/// subquery does.
fn release_deliveries(
    conn: &Connection,
    job_id: &str,
    facts: &mut StepFacts,
    now: Millis,
    mut handoff: Option<Handoff<'_>>,
) -> Result<Released> {
    let mut released = Released::default();
    let open_source = facts
        .iter()
        .any(|(_, (kind, state, _))| *kind == StepKind::Collect && !state.is_terminal());
    if open_source {
        return Ok(released);
    }
    let mut release = conn.prepare_cached(
        "UPDATE steps SET state = 'queued', run_at = ?3, deadline_at = ?3 + budget_ms, updated_at = ?3
         WHERE id = ?1 AND job_id = ?2 AND state = 'waiting'",
    )?;
    for (id, (_, state, started)) in facts.iter_mut() {
        if *state != StepState::Waiting {
            continue;
        }
        if let Some(Handoff { owner, lease_until }) = handoff.take() {
            released.handed = hand_off(conn, *id, owner, lease_until, now)?;
            if released.handed.is_some() {
                *state = StepState::Running;
                *started = true;
                continue;
            }
        }
        released.queued |= release.execute(params![*id, job_id, now])? > 0;
        *state = StepState::Queued;
    }
    Ok(released)
}

/// Leases waiting step `id` to `owner` as released and claimed in one: its budget starts now,
/// its next attempt runs under the lease. `None` when the step was not waiting.
fn hand_off(
    conn: &Connection,
    id: i64,
    owner: &str,
    lease_until: Millis,
    now: Millis,
) -> Result<Option<RawStep>> {
    let mut lease = conn.prepare_cached(
        "UPDATE steps SET state = 'running', run_at = ?4, deadline_at = ?4 + budget_ms,
                attempt = attempt + 1, lease_owner = ?2, lease_expires_at = ?3, started_at = ?4,
                updated_at = ?4
         WHERE id = ?1 AND state = 'waiting'",
    )?;
    if lease.execute(params![id, owner, lease_until, now])? == 0 {
        return Ok(None);
    }
    let mut read =
        conn.prepare_cached(&format!("SELECT {STEP_COLUMNS} FROM steps WHERE id = ?1"))?;
    Ok(Some(read.query_row([id], RawStep::read)?))
}

/// Re-derives and stores the job's status from its steps.
pub fn refresh_job(conn: &Connection, job_id: &str, now: Millis) -> Result<JobStatus> {
    let facts = job_steps(conn, job_id)?;
    store_status(conn, job_id, facts, now)
}

/// Derives the job's status from `facts` (all its steps, as they are now) and stores it.
fn store_status(
    conn: &Connection,
    job_id: &str,
    facts: StepFacts,
    now: Millis,
) -> Result<JobStatus> {
    let status = JobStatus::derive(facts.into_iter().map(|(_, fact)| fact));
    let finished_at = status.is_terminal().then_some(now);
    let mut update = conn.prepare_cached(
        "UPDATE jobs SET status = ?2, updated_at = ?3, finished_at = ?4 WHERE id = ?1 AND status != ?2",
    )?;
    update.execute(params![job_id, status.as_str(), now, finished_at])?;
    Ok(status)
}

/// Ends every attempt whose lease expired before `now` (every running one when `all`): the step
/// is retried at once, or dead when out of attempts or budget.
pub fn rescue(conn: &Connection, now: Millis, all: bool) -> Result<u64> {
    let mut expired = conn.prepare_cached(
        "SELECT id, job_id, kind, name, attempt, max_attempts, deadline_at, started_at FROM steps
         WHERE state = 'running' AND (?2 OR lease_expires_at < ?1)",
    )?;
    let candidates = expired
        .query_map(params![now, all], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                Ending {
                    step_id: row.get(0)?,
                    job_id: row.get(1)?,
                    kind: rows::step_kind(row, 2)?,
                    name: row.get(3)?,
                    attempt: row.get(4)?,
                    started_at: row.get::<_, Option<i64>>(7)?.unwrap_or(now),
                    job_steps: StepFacts::new(),
                },
                row.get::<_, u32>(5)?,
                row.get::<_, i64>(6)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut rescued = 0;
    for (step_id, mut ending, max_attempts, deadline_at) in candidates {
        let exhausted = ending.attempt >= max_attempts || now >= deadline_at;
        let error = StepError {
            kind: "lease_expired".into(),
            message: "the worker running this attempt stopped or lost its lease".into(),
            http_status: None,
            response: None,
        };
        let (state, run_at) = if exhausted {
            (StepState::Dead, None)
        } else {
            (StepState::Retrying, Some(now))
        };
        let mut update = conn.prepare_cached(
            "UPDATE steps SET state = ?3, run_at = ?4, lease_owner = NULL, lease_expires_at = NULL,
                    last_error = ?5, updated_at = ?6, finished_at = ?7
             WHERE id = ?1 AND attempt = ?2 AND state = 'running'",
        )?;
        let finished_at = state.is_terminal().then_some(now);
        if update.execute(params![
            step_id,
            ending.attempt,
            state.as_str(),
            run_at,
            error.message,
            now,
            finished_at
        ])? == 0
        {
            continue;
        }
        ending.job_steps = job_steps(conn, &ending.job_id)?;
        after_attempt(
            conn,
            ending,
            "lease_expired",
            state,
            Some(&error),
            &Receipt::default(),
            now,
            None,
        )?;
        rescued += 1;
    }
    Ok(rescued)
}

/// Which steps of a job to put back in the queue.
pub enum Requeue<'a> {
    /// Every failed, dead or cancelled step.
    Unfinished,
    /// These steps, if they are failed, dead or cancelled.
    Steps(&'a [i64]),
    /// Every finished deliver step, succeeded ones included: send the result again.
    Deliveries,
}

/// Puts failed, dead or cancelled steps back in the queue with a fresh budget. When a collect
/// step is re-queued, every deliver step waits again, so the re-run delivers the whole result.
pub fn requeue(
    conn: &Connection,
    job_id: Uuid,
    which: Requeue<'_>,
    now: Millis,
    budget: RetryBudget,
) -> Result<u64> {
    let job = job_id.to_string();
    let mut select = conn.prepare_cached(&format!(
        "SELECT {STEP_COLUMNS} FROM steps WHERE job_id = ?1"
    ))?;
    let steps = select
        .query_map([&job], rows::step)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let chosen: Vec<_> = steps
        .iter()
        .map(|(step, _)| step)
        .filter(|step| match &which {
            Requeue::Deliveries => step.kind == StepKind::Deliver && step.state.is_terminal(),
            _ => matches!(
                step.state,
                StepState::Failed | StepState::Dead | StepState::Cancelled
            ),
        })
        .filter(|step| match &which {
            Requeue::Unfinished | Requeue::Deliveries => true,
            Requeue::Steps(ids) => ids.contains(&step.id),
        })
        .collect();
    let collect_requeued = chosen.iter().any(|step| step.kind == StepKind::Collect);
    let mut update = conn.prepare_cached(
        "UPDATE steps SET state = ?2, run_at = ?3, max_attempts = attempt + ?4, budget_ms = ?5,
                deadline_at = ?6, updated_at = ?7, finished_at = NULL, round_start = attempt, deferrals = 0
         WHERE id = ?1",
    )?;
    let mut count = 0;
    for step in &chosen {
        let waits = step.kind == StepKind::Deliver && collect_requeued;
        let (state, run_at) = if waits {
            (StepState::Waiting, None)
        } else {
            (StepState::Queued, Some(now))
        };
        update.execute(params![
            step.id,
            state.as_str(),
            run_at,
            budget.max_attempts,
            budget.budget_ms,
            now.saturating_add(budget.budget_ms),
            now
        ])?;
        count += 1;
    }
    if collect_requeued {
        let mut wait = conn.prepare_cached(
            "UPDATE steps SET state = 'waiting', run_at = NULL, max_attempts = attempt + ?2, budget_ms = ?3,
                    updated_at = ?4, finished_at = NULL, round_start = attempt, deferrals = 0
             WHERE job_id = ?1 AND kind = 'deliver' AND state != 'running'",
        )?;
        wait.execute(params![job, budget.max_attempts, budget.budget_ms, now])?;
    }
    let mut replayed = conn.prepare_cached(
        "UPDATE dead_letters SET replayed_at = ?2 WHERE step_id = ?1 AND replayed_at IS NULL",
    )?;
    for step in &chosen {
        replayed.execute(params![step.id, now])?;
    }
    if count > 0 {
        refresh_job(conn, &job, now)?;
    }
    Ok(count)
}
