//! The embedded SQLite store: WAL, `synchronous=FULL`, one writer thread that group-commits
//! concurrent writes, and a small pool of read connections.
//!
//! Invariant: only the writer thread writes; readers never hold a write transaction.
//!
//! Statements keep their plan between uses only if SQLite does not think the plan depends on a
//! bound value: a bound equality in a statement with `ORDER BY` is written `= +?N` and a bound
//! limit `LIMIT ?N + 0`. Written plainly, every new value made `sqlite3_step` prepare the
//! statement again (a delivery's read of its job's steps did, on every call: a seventh of the
//! CPU of a callback delivery).

mod checkpoint;
mod endpoints;
mod jobs;
mod lookups;
mod metrics;
mod pipelines;
mod platforms;
mod rows;
mod schedules;
mod schema;
mod steps;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, ffi};
use tokio::sync::{Notify, Semaphore};
use uuid::Uuid;

use super::{
    Created, DeliveryInput, DisabledEndpoint, Error, Handed, LogEntry, LookupTable,
    LookupTableInfo, NewLogEntry, Result, Snapshot, Store,
};
use crate::clock::Millis;
use crate::job::{
    Claimed, DeadLetter, DeadLetterFilter, Fence, Job, JobDetail, JobFilter, NewJob, Outcome,
    PageWrite, RecordRow, RetryBudget,
};
use crate::pipelines::model::{
    DeadMessage, Pipeline, PipelineDeadLetter, PipelineLease, PipelineState, QueuedMessage,
    SourcePage, StageCounters,
};
use crate::schedule::{Schedule, TickFire, TickResult, TickRow};
use jobs::DeliveryRead;
use writer::{Lane, Wake, Writer};

/// A delivery whose sources hold at most this many records reads its input on the writer's
/// connection, in a group transaction: that connection's page cache is never invalidated by
/// another writer and the read pool's thread hop is saved (together a quarter of a callback
/// delivery's CPU). A larger input is read from the pool, so no large read holds up writes.
const WRITER_READ_MOST_RECORDS: u64 = 100;

/// Maps SQLite's errors onto the store's.
pub(crate) fn map_error(error: rusqlite::Error) -> Error {
    match &error {
        rusqlite::Error::SqliteFailure(code, _)
            if matches!(
                code.code,
                ffi::ErrorCode::DatabaseBusy | ffi::ErrorCode::DatabaseLocked
            ) =>
        {
            Error::Busy
        }
        rusqlite::Error::SqliteFailure(code, _) if code.code == ffi::ErrorCode::DatabaseCorrupt => {
            Error::Corrupt(error.to_string())
        }
        rusqlite::Error::FromSqlConversionFailure(..) | rusqlite::Error::InvalidColumnType(..) => {
            Error::Corrupt(error.to_string())
        }
        _ => Error::Database(error.to_string()),
    }
}

impl From<rusqlite::Error> for Error {
    fn from(error: rusqlite::Error) -> Self {
        map_error(error)
    }
}

/// Read connections, opened on demand up to the pool size.
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl ReadPool {
    fn open(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        conn.set_prepared_statement_cache_capacity(schema::STATEMENT_CACHE);
        Ok(conn)
    }

    fn take(&self) -> Result<Connection> {
        let idle = self
            .idle
            .lock()
            .map_err(|_| Error::Database("read pool poisoned".into()))?
            .pop();
        match idle {
            Some(conn) => Ok(conn),
            None => self.open(),
        }
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
    }
}

/// The SQLite implementation of [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    writer: Writer,
    reads: Arc<ReadPool>,
    work: Arc<Notify>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: &Path, read_connections: usize) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|error| Error::Database(format!("{}: {error}", parent.display())))?;
        }
        let mut conn = Connection::open(path)?;
        schema::configure(&conn)?;
        schema::migrate(&mut conn)?;
        checkpoint::Checkpointer::attach(&mut conn, path)?;
        let work = Arc::new(Notify::new());
        let writer = Writer::start(conn, work.clone())
            .map_err(|error| Error::Database(error.to_string()))?;
        Ok(Self {
            writer,
            reads: Arc::new(ReadPool {
                path: path.to_owned(),
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(read_connections.max(1)),
            }),
            work,
        })
    }

    /// Runs `read` on a pooled read connection, off the async threads.
    async fn read<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let _permit = self
            .reads
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Closed)?;
        let pool = self.reads.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let result = read(&conn);
            pool.give_back(conn);
            result
        })
        .await
        .map_err(|error| Error::Database(format!("read task failed: {error}")))?
    }

    async fn write<T, F>(&self, operation: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<(T, Wake)> + Send + 'static,
    {
        self.writer.write(Lane::Foreground, operation).await
    }

    /// [`Self::write`] for the engine's own bookkeeping, which no client waits on (see
    /// [`writer`] on lanes).
    async fn write_background<T, F>(&self, operation: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<(T, Wake)> + Send + 'static,
    {
        self.writer.write(Lane::Background, operation).await
    }
}

fn wake_if(condition: bool) -> Wake {
    if condition { Wake::Yes } else { Wake::No }
}

#[async_trait]
impl Store for SqliteStore {
    fn work_available(&self) -> Arc<Notify> {
        self.work.clone()
    }

    async fn create_job(&self, job: NewJob) -> Result<Created> {
        self.create_jobs(vec![job])
            .await?
            .pop()
            .ok_or_else(|| Error::Database("a created job went missing".into()))
    }

    async fn create_jobs(&self, new: Vec<NewJob>) -> Result<Vec<Created>> {
        let rows: Vec<_> = new.iter().map(jobs::JobRows::new).collect();
        let replayed = self
            .write(move |conn| {
                let replayed = jobs::insert_all(conn, &rows)?;
                let wake = wake_if(replayed.iter().any(Option::is_none));
                Ok((replayed, wake))
            })
            .await?;
        Ok(new
            .into_iter()
            .zip(replayed)
            .map(|(job, replayed)| jobs::created(job, replayed))
            .collect())
    }

    async fn get_job(&self, id: Uuid) -> Result<Option<JobDetail>> {
        self.read(move |conn| {
            // One read transaction, so the job row, its steps and its attempts come from the
            // same snapshot (in WAL mode each bare statement sees the latest commit: a job
            // could read `running` while its steps, read a moment later, have all finished).
            let snapshot = conn.unchecked_transaction()?;
            jobs::detail(&snapshot, id)
        })
        .await
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let filter = filter.clone();
        self.read(move |conn| jobs::list(conn, &filter)).await
    }

    async fn cancel_job(&self, id: Uuid, now: Millis) -> Result<Job> {
        self.write(move |conn| Ok((jobs::cancel(conn, id, now)?, Wake::No)))
            .await
    }

    async fn retry_job(&self, id: Uuid, now: Millis, budget: RetryBudget) -> Result<Job> {
        self.write(move |conn| {
            jobs::get(conn, id)?.ok_or(Error::NotFound)?;
            let count = steps::requeue(conn, id, steps::Requeue::Unfinished, now, budget)?;
            if count == 0 {
                return Err(Error::Conflict(
                    "the job has no failed, dead or cancelled step to retry".into(),
                ));
            }
            Ok((jobs::get(conn, id)?.ok_or(Error::NotFound)?, Wake::Yes))
        })
        .await
    }

    async fn job_records(
        &self,
        id: Uuid,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<RecordRow>> {
        self.read(move |conn| jobs::records(conn, id, after, limit))
            .await
    }

    async fn delivery_input(
        &self,
        id: Uuid,
        endpoint: Option<String>,
    ) -> Result<Option<DeliveryInput>> {
        let small = {
            let endpoint = endpoint.clone();
            self.write_background(move |conn| {
                let read = jobs::delivery_input(
                    conn,
                    id,
                    endpoint.as_deref(),
                    Some(WRITER_READ_MOST_RECORDS),
                )?;
                Ok((read, Wake::No))
            })
            .await?
        };
        let read = match small {
            DeliveryRead::Larger => {
                self.read(move |conn| {
                    let snapshot = conn.unchecked_transaction()?;
                    jobs::delivery_input(&snapshot, id, endpoint.as_deref(), None)
                })
                .await?
            }
            read => read,
        };
        Ok(read.found())
    }

    async fn original_records(
        &self,
        id: Uuid,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<RecordRow>> {
        self.read(move |conn| jobs::original_records(conn, id, after, limit))
            .await
    }

    async fn claim(
        &self,
        owner: &str,
        limit: usize,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<Claimed>> {
        let owned = owner.to_owned();
        let raw = self
            .write_background(move |conn| {
                Ok((
                    steps::claim(conn, &owned, limit, now, lease_until)?,
                    Wake::No,
                ))
            })
            .await?;
        Ok(steps::claimed(raw, owner, now))
    }

    async fn next_due(&self) -> Result<Option<Millis>> {
        self.read(steps::next_due).await
    }

    async fn extend_lease(&self, fence: &Fence, until: Millis) -> Result<()> {
        let fence = fence.clone();
        self.write_background(move |conn| Ok((steps::extend_lease(conn, &fence, until)?, Wake::No)))
            .await
    }

    async fn save_page(&self, fence: &Fence, page: PageWrite, now: Millis) -> Result<()> {
        let fence = fence.clone();
        self.write_background(move |conn| {
            Ok((steps::save_page(conn, &fence, &page, now)?, Wake::No))
        })
        .await
    }

    async fn finish_and_continue(
        &self,
        fence: &Fence,
        outcome: Outcome,
        last_page: Option<PageWrite>,
        now: Millis,
        lease_until: Option<Millis>,
    ) -> Result<Option<Handed>> {
        let owned = fence.clone();
        let (handed, input) = self
            .write_background(move |conn| {
                let handoff = lease_until.map(|lease_until| steps::Handoff {
                    owner: &owned.owner,
                    lease_until,
                });
                let finished =
                    steps::finish(conn, &owned, &outcome, last_page.as_ref(), now, handoff)?;
                let input = match &finished.handed {
                    Some(raw) => {
                        jobs::handed_delivery_input(conn, raw.job_id(), WRITER_READ_MOST_RECORDS)?
                    }
                    None => None,
                };
                Ok(((finished.handed, input), wake_if(finished.woke)))
            })
            .await?;
        Ok(handed
            .and_then(|raw| steps::claimed(vec![raw], &fence.owner, now).pop())
            .map(|claimed| Handed { claimed, input }))
    }

    async fn rescue(&self, now: Millis, all: bool) -> Result<u64> {
        self.write_background(move |conn| {
            let rescued = steps::rescue(conn, now, all)?;
            Ok((rescued, wake_if(rescued > 0)))
        })
        .await
    }

    async fn list_dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        let filter = filter.clone();
        self.read(move |conn| jobs::dead_letters(conn, &filter))
            .await
    }

    async fn replay_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        now: Millis,
        budget: RetryBudget,
    ) -> Result<u64> {
        let mut filter = filter.clone();
        filter.include_replayed = false;
        self.write(move |conn| {
            let letters = jobs::dead_letters(conn, &filter)?;
            let mut by_job: std::collections::BTreeMap<Uuid, Vec<i64>> = Default::default();
            for letter in &letters {
                by_job
                    .entry(letter.job_id)
                    .or_default()
                    .push(letter.step_id);
            }
            let mut count = 0;
            for (job_id, step_ids) in by_job {
                count +=
                    steps::requeue(conn, job_id, steps::Requeue::Steps(&step_ids), now, budget)?;
            }
            Ok((count, wake_if(count > 0)))
        })
        .await
    }

    async fn prune(&self, before: Millis, now: Millis) -> Result<u64> {
        let mut total = 0;
        loop {
            let deleted = self
                .write(move |conn| Ok((jobs::prune(conn, before, now)?, Wake::No)))
                .await?;
            total += deleted;
            if deleted < 1000 {
                return Ok(total);
            }
        }
    }

    async fn snapshot(&self, now: Millis) -> Result<Snapshot> {
        self.read(move |conn| jobs::snapshot(conn, now)).await
    }

    async fn check_integrity(&self) -> Result<Vec<String>> {
        self.read(jobs::integrity).await
    }

    async fn ping(&self) -> Result<()> {
        self.write(|conn| {
            conn.prepare_cached("SELECT 1")?.query_row([], |_| Ok(()))?;
            Ok(((), Wake::No))
        })
        .await
    }

    async fn redeliver(&self, id: Uuid, now: Millis, budget: RetryBudget) -> Result<Job> {
        self.write(move |conn| {
            let detail = jobs::detail(conn, id)?.ok_or(Error::NotFound)?;
            let open_source = detail.steps.iter().any(|step| {
                step.kind == crate::job::StepKind::Collect && !step.state.is_terminal()
            });
            if open_source {
                return Err(Error::Conflict(
                    "the job's sources are still being collected; it delivers when they finish"
                        .into(),
                ));
            }
            let count = steps::requeue(conn, id, steps::Requeue::Deliveries, now, budget)?;
            if count == 0 {
                return Err(Error::Conflict(
                    "the job has no finished delivery to send again".into(),
                ));
            }
            Ok((jobs::get(conn, id)?.ok_or(Error::NotFound)?, Wake::Yes))
        })
        .await
    }

    async fn disable_endpoint(&self, endpoint: &DisabledEndpoint) -> Result<()> {
        let endpoint = endpoint.clone();
        self.write(move |conn| Ok((endpoints::disable(conn, &endpoint)?, Wake::No)))
            .await
    }

    async fn list_disabled_endpoints(&self) -> Result<Vec<DisabledEndpoint>> {
        self.read(endpoints::list).await
    }

    async fn enable_endpoint(&self, url: &str) -> Result<bool> {
        let url = url.to_owned();
        self.write(move |conn| Ok((endpoints::enable(conn, &url)?, Wake::No)))
            .await
    }

    async fn replace_lookup_table(
        &self,
        name: &str,
        entries: Vec<(String, String)>,
        now: Millis,
    ) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |conn| Ok((lookups::replace(conn, &name, &entries, now)?, Wake::No)))
            .await
    }

    async fn lookup_table(&self, name: &str) -> Result<Option<LookupTable>> {
        let name = name.to_owned();
        self.read(move |conn| lookups::get(conn, &name)).await
    }

    async fn list_lookup_tables(&self) -> Result<Vec<LookupTableInfo>> {
        self.read(lookups::list).await
    }

    async fn create_schedule(&self, schedule: &Schedule) -> Result<()> {
        let schedule = schedule.clone();
        self.write(move |conn| Ok((schedules::create(conn, &schedule)?, Wake::No)))
            .await
    }

    async fn replace_schedule(&self, schedule: &Schedule) -> Result<()> {
        let schedule = schedule.clone();
        self.write(move |conn| Ok((schedules::replace(conn, &schedule)?, Wake::No)))
            .await
    }

    async fn delete_schedule(&self, id: Uuid) -> Result<bool> {
        self.write(move |conn| Ok((schedules::delete(conn, id)?, Wake::No)))
            .await
    }

    async fn get_schedule(&self, key: &str) -> Result<Option<Schedule>> {
        let key = key.to_owned();
        self.read(move |conn| schedules::get(conn, &key)).await
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>> {
        self.read(schedules::list).await
    }

    async fn due_schedules(&self, now: Millis) -> Result<Vec<Schedule>> {
        self.read(move |conn| schedules::due(conn, now)).await
    }

    async fn next_schedule_at(&self) -> Result<Option<Millis>> {
        self.read(schedules::next_at).await
    }

    async fn skip_ticks(
        &self,
        id: Uuid,
        version: Millis,
        from: Millis,
        to: Option<Millis>,
    ) -> Result<bool> {
        self.write_background(move |conn| {
            Ok((schedules::advance(conn, id, version, from, to)?, Wake::No))
        })
        .await
    }

    async fn fire_tick(&self, fire: TickFire) -> Result<TickResult> {
        self.write_background(move |conn| {
            let result = schedules::fire(conn, &fire)?;
            let wake = wake_if(matches!(result, TickResult::Created(_)));
            Ok((result, wake))
        })
        .await
    }

    async fn schedule_ticks(&self, id: Uuid, limit: usize) -> Result<Vec<TickRow>> {
        self.read(move |conn| schedules::ticks(conn, id, limit))
            .await
    }

    async fn insert_token(&self, id: &str, name: &str, hash: &str, now: Millis) -> Result<()> {
        let (id, name, hash) = (id.to_owned(), name.to_owned(), hash.to_owned());
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO api_tokens (id, name, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(rusqlite::params![id, name, hash, now])?;
            Ok(((), Wake::No))
        })
        .await
    }

    async fn token_exists(&self, hash: &str) -> Result<bool> {
        let hash = hash.to_owned();
        self.read(move |conn| {
            let found: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM api_tokens WHERE hash = ?1")?
                .query_row([hash], |row| row.get(0))?;
            Ok(found > 0)
        })
        .await
    }

    async fn token_count(&self) -> Result<u64> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT COUNT(*) FROM api_tokens")?
                .query_row([], |row| row.get(0))?)
        })
        .await
    }

    async fn create_pipeline(&self, pipeline: &Pipeline) -> Result<()> {
        let pipeline = pipeline.clone();
        self.write(move |conn| Ok((pipelines::create(conn, &pipeline)?, Wake::No)))
            .await
    }

    async fn replace_pipeline(&self, pipeline: &Pipeline) -> Result<()> {
        let pipeline = pipeline.clone();
        self.write(move |conn| Ok((pipelines::replace(conn, &pipeline)?, Wake::No)))
            .await
    }

    async fn delete_pipeline(&self, id: Uuid) -> Result<bool> {
        self.write(move |conn| Ok((pipelines::delete(conn, id)?, Wake::No)))
            .await
    }

    async fn get_pipeline(&self, key: &str) -> Result<Option<Pipeline>> {
        let key = key.to_owned();
        self.read(move |conn| pipelines::get(conn, &key)).await
    }

    async fn list_pipelines(&self) -> Result<Vec<Pipeline>> {
        self.read(pipelines::list).await
    }

    async fn set_pipeline_state(&self, id: Uuid, state: PipelineState, now: Millis) -> Result<()> {
        self.write(move |conn| Ok((pipelines::set_state(conn, id, state, now)?, Wake::No)))
            .await
    }

    async fn lease_pipelines(
        &self,
        owner: String,
        ids: Vec<Uuid>,
        now: Millis,
        until: Millis,
    ) -> Result<Vec<Uuid>> {
        self.write_background(move |conn| {
            Ok((pipelines::lease(conn, &owner, &ids, now, until)?, Wake::No))
        })
        .await
    }

    async fn pipeline_lease(&self, id: Uuid) -> Result<Option<PipelineLease>> {
        self.read(move |conn| pipelines::lease_of(conn, id)).await
    }

    async fn pipeline_leases(&self) -> Result<HashMap<Uuid, PipelineLease>> {
        self.read(pipelines::leases).await
    }

    async fn release_pipelines(&self, owner: String, ids: Vec<Uuid>) -> Result<()> {
        self.write_background(move |conn| Ok((pipelines::release(conn, &owner, &ids)?, Wake::No)))
            .await
    }

    async fn commit_source_page(
        &self,
        id: Uuid,
        page: SourcePage,
        now: Millis,
    ) -> Result<Vec<QueuedMessage>> {
        self.write_background(move |conn| {
            Ok((pipelines::commit_page(conn, id, &page, now)?, Wake::No))
        })
        .await
    }

    async fn advance_messages(
        &self,
        id: Uuid,
        stage: u32,
        moves: Vec<(i64, Vec<serde_json::Value>)>,
        to: Vec<u32>,
        now: Millis,
    ) -> Result<Vec<QueuedMessage>> {
        self.write_background(move |conn| {
            Ok((
                pipelines::advance_all(conn, id, stage, &moves, &to, now)?,
                Wake::No,
            ))
        })
        .await
    }

    async fn complete_messages(&self, id: Uuid, stage: u32, messages: Vec<i64>) -> Result<u64> {
        self.write_background(move |conn| {
            Ok((pipelines::complete(conn, id, stage, &messages)?, Wake::No))
        })
        .await
    }

    async fn retry_message(
        &self,
        id: Uuid,
        message: i64,
        stage: u32,
        attempts: u32,
        next_at: Millis,
        error: String,
    ) -> Result<()> {
        self.write_background(move |conn| {
            Ok((
                pipelines::retry(conn, id, message, stage, attempts, next_at, &error)?,
                Wake::No,
            ))
        })
        .await
    }

    async fn dead_letter_message(
        &self,
        id: Uuid,
        message: QueuedMessage,
        dead: DeadMessage,
        now: Millis,
    ) -> Result<()> {
        self.write_background(move |conn| {
            Ok((pipelines::dead(conn, id, &message, &dead, now)?, Wake::No))
        })
        .await
    }

    async fn pipeline_messages(&self, id: Uuid) -> Result<Vec<QueuedMessage>> {
        self.read(move |conn| pipelines::messages(conn, id)).await
    }

    async fn pipeline_counters(&self, id: Uuid) -> Result<Vec<(u32, StageCounters)>> {
        self.read(move |conn| pipelines::counters(conn, id)).await
    }

    async fn pipeline_dead_letters(
        &self,
        id: Uuid,
        after: i64,
        limit: usize,
        pending: bool,
    ) -> Result<Vec<PipelineDeadLetter>> {
        self.read(move |conn| pipelines::dead_letters(conn, id, after, limit, pending))
            .await
    }

    async fn put_platform(&self, platform: &crate::platforms::Platform) -> Result<()> {
        let platform = platform.clone();
        self.write(move |conn| Ok((platforms::put(conn, &platform)?, Wake::No)))
            .await
    }

    async fn delete_platform(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |conn| Ok((platforms::delete(conn, &name)?, Wake::No)))
            .await
    }

    async fn get_platform(&self, name: &str) -> Result<Option<crate::platforms::Platform>> {
        let name = name.to_owned();
        self.read(move |conn| platforms::get(conn, &name)).await
    }

    async fn list_platforms(&self) -> Result<Vec<crate::platforms::Platform>> {
        self.read(platforms::list).await
    }

    async fn append_metric_log(
        &self,
        entries: Vec<NewLogEntry>,
        now: Millis,
    ) -> Result<Vec<Option<i64>>> {
        self.write(move |conn| {
            let seqs = entries
                .iter()
                .map(|entry| {
                    metrics::append(
                        conn,
                        entry.batch_id.as_deref(),
                        entry.kind,
                        &entry.payload,
                        now,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((seqs, Wake::No))
        })
        .await
    }

    async fn metric_snapshot(&self) -> Result<Option<(i64, Vec<Vec<u8>>)>> {
        self.read(metrics::snapshot).await
    }

    async fn metric_log_after(&self, seq: i64) -> Result<Vec<LogEntry>> {
        self.read(move |conn| metrics::entries_after(conn, seq))
            .await
    }

    async fn save_metric_snapshot(
        &self,
        through_seq: i64,
        parts: Vec<Vec<u8>>,
        keep_ids_after: Millis,
        now: Millis,
    ) -> Result<()> {
        self.write(move |conn| {
            Ok((
                metrics::save_snapshot(conn, through_seq, &parts, keep_ids_after, now)?,
                Wake::No,
            ))
        })
        .await
    }

    async fn prune_metric_ids(&self, before: Millis) -> Result<u64> {
        self.write(move |conn| Ok((metrics::prune_ids(conn, before)?, Wake::No)))
            .await
    }

    async fn replay_pipeline_dead_letters(
        &self,
        id: Uuid,
        ids: Option<Vec<i64>>,
        stages: u32,
        now: Millis,
    ) -> Result<Vec<QueuedMessage>> {
        self.write(move |conn| {
            Ok((
                pipelines::replay(conn, id, ids.as_deref(), stages, now)?,
                Wake::No,
            ))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::SqliteStore;
    use crate::store::conformance::hand_over_after;

    crate::store_conformance!(
        |dir: &std::path::Path| SqliteStore::open(&dir.join("test.db"), 2).expect("open store")
    );

    /// SQLite reads a small handed delivery's input on the writer, in the handing
    /// transaction; past `WRITER_READ_MOST_RECORDS` records it leaves it to the read pool.
    #[tokio::test]
    async fn a_small_handed_delivery_is_read_with_its_handoff() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("test.db"), 2).expect("open store");
        for records in [2, super::WRITER_READ_MOST_RECORDS as usize + 1] {
            let handed = hand_over_after(&store, records, 1_000).await;
            let small = records <= super::WRITER_READ_MOST_RECORDS as usize;
            assert_eq!(
                handed.input.map(|input| input.records.len()),
                small.then_some(records),
                "{records} records"
            );
        }
    }
}
