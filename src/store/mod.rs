//! The `Store` trait: one transactional log holding jobs, steps, the attempt log, records,
//! dead letters, idempotency keys and API tokens. `sqlite` is the embedded implementation.
//!
//! Invariant: every method is one transaction; a caller that got `Ok` for a write may tell its
//! client the data is durable. Step writes take a `Fence` and fail with `Error::Fenced` when the
//! caller no longer holds the step's lease.

#[cfg(test)]
pub mod conformance;
pub mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::clock::Millis;
use crate::job::{
    Claimed, DeadLetter, DeadLetterFilter, Fence, Job, JobDetail, JobFilter, NewJob, Outcome,
    PageWrite, RecordRow, RetryBudget, Step,
};
use crate::pipelines::model::{
    DeadMessage, Pipeline, PipelineDeadLetter, PipelineLease, PipelineState, QueuedMessage,
    SourcePage, StageCounters,
};
use crate::schedule::{Schedule, TickFire, TickResult, TickRow};

/// Store errors, mapped from the database's own.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("not found")]
    NotFound,
    /// The request contradicts stored state (an idempotency key reused with another body, a
    /// retry of a job with nothing to retry).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller's lease on the step was taken over or revoked.
    #[error("lease lost: the step was taken over or cancelled")]
    Fenced,
    #[error("database busy")]
    Busy,
    #[error("store closed")]
    Closed,
    #[error("database error: {0}")]
    Database(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The outcome of creating a job.
#[derive(Debug, Clone)]
pub struct Created {
    pub job: Job,
    /// The idempotency key matched an existing job, which is returned instead.
    pub replayed: bool,
}

/// Counts for `/metrics`: jobs by status, steps by state, queue depth, open dead letters.
pub use crate::observability::StoreSnapshot as Snapshot;

/// The durable state of Gleaner. Claims map onto `FOR UPDATE SKIP LOCKED` on PostgreSQL.
#[async_trait]
pub trait Store: Send + Sync {
    /// Signalled after a commit that made work runnable; workers wait on it instead of polling.
    fn work_available(&self) -> Arc<Notify>;

    async fn create_job(&self, job: NewJob) -> Result<Created>;
    /// Stores several jobs in one transaction, all or none; each comes back as `create_job`
    /// would return it. A conflicting idempotency key refuses the whole batch.
    async fn create_jobs(&self, jobs: Vec<NewJob>) -> Result<Vec<Created>>;
    async fn get_job(&self, id: Uuid) -> Result<Option<JobDetail>>;
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>>;
    /// Cancels every unfinished step; `Conflict` when the job already finished.
    async fn cancel_job(&self, id: Uuid, now: Millis) -> Result<Job>;
    /// Re-queues the failed, dead and cancelled steps of a job with a fresh budget.
    async fn retry_job(&self, id: Uuid, now: Millis, budget: RetryBudget) -> Result<Job>;
    /// Records of a job in collection order, after record id `after`.
    async fn job_records(
        &self,
        id: Uuid,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<RecordRow>>;

    /// Everything a delivery of job `id` sends, read in one snapshot (one round trip, where
    /// the job, its records and the endpoint used to be three reads, each starting a read
    /// transaction on a cold page cache). `None` when the job does not exist.
    async fn delivery_input(
        &self,
        id: Uuid,
        endpoint: Option<String>,
    ) -> Result<Option<DeliveryInput>>;

    /// A job's records as collected, before processors (capped per step).
    async fn original_records(
        &self,
        id: Uuid,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<RecordRow>>;

    /// Leases up to `limit` steps that are due, for `owner` until `lease_until`.
    async fn claim(
        &self,
        owner: &str,
        limit: usize,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<Claimed>>;
    /// The earliest time a queued or retrying step becomes due.
    async fn next_due(&self) -> Result<Option<Millis>>;
    async fn extend_lease(&self, fence: &Fence, until: Millis) -> Result<()>;
    /// Stores one page's records with the checkpoint that follows it, atomically.
    async fn save_page(&self, fence: &Fence, page: PageWrite, now: Millis) -> Result<()>;
    /// Ends the current attempt; `last_page` is saved in the same transaction.
    async fn finish(
        &self,
        fence: &Fence,
        outcome: Outcome,
        last_page: Option<PageWrite>,
        now: Millis,
    ) -> Result<()> {
        self.finish_and_continue(fence, outcome, last_page, now, None)
            .await
            .map(drop)
    }
    /// [`Store::finish`], and when `lease_until` is given and the attempt ends its job's last
    /// unfinished source, the first deliver step that releases comes back leased to the
    /// fence's owner until then (claimed in the same transaction), with its input when the
    /// store could read it there too; the others are queued.
    async fn finish_and_continue(
        &self,
        fence: &Fence,
        outcome: Outcome,
        last_page: Option<PageWrite>,
        now: Millis,
        lease_until: Option<Millis>,
    ) -> Result<Option<Handed>>;
    /// Ends attempts whose lease expired (or every running one, when `all`), as `lease_expired`.
    async fn rescue(&self, now: Millis, all: bool) -> Result<u64>;

    async fn list_dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>>;
    /// Re-queues the steps of matching, not yet replayed dead letters; returns how many.
    async fn replay_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        now: Millis,
        budget: RetryBudget,
    ) -> Result<u64>;

    /// Deletes finished jobs (and all their rows) that finished before `before`, and expired
    /// idempotency keys. Returns the number of jobs deleted.
    async fn prune(&self, before: Millis, now: Millis) -> Result<u64>;
    async fn snapshot(&self, now: Millis) -> Result<Snapshot>;
    /// Problems found by the database's and the domain's integrity checks (empty: healthy).
    async fn check_integrity(&self) -> Result<Vec<String>>;
    /// A write round trip, for readiness.
    async fn ping(&self) -> Result<()>;

    /// Re-queues every finished deliver step of a job, succeeded ones included, with
    /// `budget`; `Conflict` while a source is still unfinished or when the job has no sink.
    async fn redeliver(&self, id: Uuid, now: Millis, budget: RetryBudget) -> Result<Job>;

    /// Marks a callback endpoint disabled (it answered `410 Gone`); deliveries to it stop.
    async fn disable_endpoint(&self, endpoint: &DisabledEndpoint) -> Result<()>;
    async fn list_disabled_endpoints(&self) -> Result<Vec<DisabledEndpoint>>;
    /// Enables `url` again; returns whether it was disabled.
    async fn enable_endpoint(&self, url: &str) -> Result<bool>;

    /// Replaces every entry of lookup table `name` (later duplicates of a key win); an empty
    /// list deletes the table. Returns whether the table existed before.
    async fn replace_lookup_table(
        &self,
        name: &str,
        entries: Vec<(String, String)>,
        now: Millis,
    ) -> Result<bool>;
    /// A lookup table with its entries; `None` when no job filled it.
    async fn lookup_table(&self, name: &str) -> Result<Option<LookupTable>>;
    /// Every lookup table without its entries, by name.
    async fn list_lookup_tables(&self) -> Result<Vec<LookupTableInfo>>;

    /// Stores a new schedule; `Conflict` when its name is taken.
    async fn create_schedule(&self, schedule: &Schedule) -> Result<()>;
    /// Replaces a schedule's definition and next tick (by id).
    async fn replace_schedule(&self, schedule: &Schedule) -> Result<()>;
    /// Deletes a schedule and its tick history; its jobs stay.
    async fn delete_schedule(&self, id: Uuid) -> Result<bool>;
    /// A schedule by id or name.
    async fn get_schedule(&self, key: &str) -> Result<Option<Schedule>>;
    async fn list_schedules(&self) -> Result<Vec<Schedule>>;
    /// Schedules with a tick at or before `now`.
    async fn due_schedules(&self, now: Millis) -> Result<Vec<Schedule>>;
    /// The earliest next tick of any schedule.
    async fn next_schedule_at(&self) -> Result<Option<Millis>>;
    /// Moves a schedule's next tick past missed ones without firing them; false when the
    /// schedule changed or another scheduler moved it first.
    async fn skip_ticks(
        &self,
        id: Uuid,
        version: Millis,
        from: Millis,
        to: Option<Millis>,
    ) -> Result<bool>;
    /// Fires one tick in one transaction: at most once per (schedule, tick), ever.
    async fn fire_tick(&self, fire: TickFire) -> Result<TickResult>;
    /// The most recent fired ticks of a schedule, newest first.
    async fn schedule_ticks(&self, id: Uuid, limit: usize) -> Result<Vec<TickRow>>;

    async fn insert_token(&self, id: &str, name: &str, hash: &str, now: Millis) -> Result<()>;
    async fn token_exists(&self, hash: &str) -> Result<bool>;
    async fn token_count(&self) -> Result<u64>;

    /// Inserts a pipeline; `Conflict` when its name is taken.
    async fn create_pipeline(&self, pipeline: &Pipeline) -> Result<()>;
    /// Replaces a pipeline's definition and state, keeping its checkpoint and queues;
    /// `Conflict` when the name is taken or removed stages still hold messages.
    async fn replace_pipeline(&self, pipeline: &Pipeline) -> Result<()>;
    /// Deletes a pipeline with its queued messages, counters and dead letters.
    async fn delete_pipeline(&self, id: Uuid) -> Result<bool>;
    /// A pipeline by id or name.
    async fn get_pipeline(&self, key: &str) -> Result<Option<Pipeline>>;
    async fn list_pipelines(&self) -> Result<Vec<Pipeline>>;
    async fn set_pipeline_state(&self, id: Uuid, state: PipelineState, now: Millis) -> Result<()>;
    /// Takes or renews `owner`'s lease on each pipeline of `ids` until `until`: a lease that
    /// is free, expired at `now` or already `owner`'s is taken. Returns the ids `owner` now
    /// holds. A pipeline runs only in the process holding its lease (`FOR UPDATE SKIP LOCKED`
    /// or an upsert with a condition elsewhere).
    async fn lease_pipelines(
        &self,
        owner: String,
        ids: Vec<Uuid>,
        now: Millis,
        until: Millis,
    ) -> Result<Vec<Uuid>>;
    /// The lease on a pipeline, if a process holds one (expired or not).
    async fn pipeline_lease(&self, id: Uuid) -> Result<Option<PipelineLease>>;
    /// Every pipeline lease held (expired or not), by pipeline: one read for a whole list.
    async fn pipeline_leases(&self) -> Result<HashMap<Uuid, PipelineLease>>;
    /// Gives up `owner`'s leases on `ids`, so another process may run them at once.
    async fn release_pipelines(&self, owner: String, ids: Vec<Uuid>) -> Result<()>;
    /// Commits a source page's messages and the source's new checkpoint together; `Fenced`
    /// when the page's owner no longer holds the pipeline's lease.
    async fn commit_source_page(
        &self,
        id: Uuid,
        page: SourcePage,
        now: Millis,
    ) -> Result<Vec<QueuedMessage>>;
    /// Processors finished these messages (id, outputs): each leaves `stage` and its outputs
    /// enter `to`, in one transaction; a message no longer at `stage` is skipped.
    async fn advance_messages(
        &self,
        id: Uuid,
        stage: u32,
        moves: Vec<(i64, Vec<serde_json::Value>)>,
        to: Vec<u32>,
        now: Millis,
    ) -> Result<Vec<QueuedMessage>>;
    /// A sink stored these messages; returns how many were still queued.
    async fn complete_messages(&self, id: Uuid, stage: u32, messages: Vec<i64>) -> Result<u64>;
    /// Records a failed attempt of a message, to be retried at `next_at`.
    async fn retry_message(
        &self,
        id: Uuid,
        message: i64,
        stage: u32,
        attempts: u32,
        next_at: Millis,
        error: String,
    ) -> Result<()>;
    /// Moves a message into the pipeline's dead letters.
    async fn dead_letter_message(
        &self,
        id: Uuid,
        message: QueuedMessage,
        dead: DeadMessage,
        now: Millis,
    ) -> Result<()>;
    /// Every message queued in a pipeline, oldest first.
    async fn pipeline_messages(&self, id: Uuid) -> Result<Vec<QueuedMessage>>;
    /// The durable counters of each stage, by stage index (0 is the source).
    async fn pipeline_counters(&self, id: Uuid) -> Result<Vec<(u32, StageCounters)>>;
    /// Dead letters with an id above `after`, oldest first.
    async fn pipeline_dead_letters(
        &self,
        id: Uuid,
        after: i64,
        limit: usize,
        pending: bool,
    ) -> Result<Vec<PipelineDeadLetter>>;
    /// Inserts or replaces a platform by name.
    async fn put_platform(&self, platform: &crate::platforms::Platform) -> Result<()>;
    async fn delete_platform(&self, name: &str) -> Result<bool>;
    async fn get_platform(&self, name: &str) -> Result<Option<crate::platforms::Platform>>;
    async fn list_platforms(&self) -> Result<Vec<crate::platforms::Platform>>;

    /// Appends metric log entries in one transaction, in order; each answer is the entry's
    /// sequence number, or `None` when its batch id was seen before (then nothing is written
    /// for it).
    async fn append_metric_log(
        &self,
        entries: Vec<NewLogEntry>,
        now: Millis,
    ) -> Result<Vec<Option<i64>>>;
    /// The metric snapshot, if any: `(through_seq, parts)`, each part a JSON array of series.
    async fn metric_snapshot(&self) -> Result<Option<(i64, Vec<Vec<u8>>)>>;
    /// Metric log entries after `seq`, in order.
    async fn metric_log_after(&self, seq: i64) -> Result<Vec<LogEntry>>;
    /// Replaces the metric snapshot and drops the log payloads it covers; batch ids received
    /// after `keep_ids_after` stay recognisable.
    async fn save_metric_snapshot(
        &self,
        through_seq: i64,
        parts: Vec<Vec<u8>>,
        keep_ids_after: Millis,
        now: Millis,
    ) -> Result<()>;
    /// Forgets covered batch ids received before `before`.
    async fn prune_metric_ids(&self, before: Millis) -> Result<u64>;

    /// Queues dead letters again at their stage (all pending ones when `ids` is `None`).
    async fn replay_pipeline_dead_letters(
        &self,
        id: Uuid,
        ids: Option<Vec<i64>>,
        stages: u32,
        now: Millis,
    ) -> Result<Vec<QueuedMessage>>;
}

/// An entry to append to the metric ingest log.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLogEntry {
    /// A client's batch id: an entry whose id was seen before is not written again.
    pub batch_id: Option<String>,
    /// `series` (a grouped batch), `events` (the first batch form) or `delete`.
    pub kind: &'static str,
    pub payload: String,
}

/// One entry of the metric ingest log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub seq: i64,
    pub kind: String,
    pub payload: String,
    pub received_at: Millis,
}

/// A lookup table: key → value, as the last job with a `lookup` sink for it left it.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupTable {
    pub name: String,
    pub entries: HashMap<String, String>,
    pub updated_at: Millis,
}

/// A lookup table's name, size and age.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupTableInfo {
    pub name: String,
    pub entries: u64,
    pub updated_at: Millis,
}

/// A deliver step handed over by [`Store::finish_and_continue`].
#[derive(Debug)]
pub struct Handed {
    pub claimed: Claimed,
    /// What [`Store::delivery_input`] would answer for it, read in the handing transaction
    /// (so one store round trip fewer per delivery); `None` when it was not read there (a
    /// large input, or some endpoint disabled) and the worker reads it before the send.
    pub input: Option<DeliveryInput>,
}

/// What a deliver step reads before it sends: see [`Store::delivery_input`].
#[derive(Debug, Clone)]
pub struct DeliveryInput {
    pub created_at: Millis,
    /// The job's collect steps, in position order.
    pub sources: Vec<Step>,
    /// Every record of the job in collection order, with the step that collected it.
    pub records: Vec<(i64, serde_json::Value)>,
    /// The entry that disables the sink's endpoint, when it is disabled.
    pub disabled: Option<DisabledEndpoint>,
}

/// A callback endpoint that answered `410 Gone`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct DisabledEndpoint {
    pub url: String,
    pub reason: String,
    /// The job whose delivery got the `410`.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub job_id: Option<Uuid>,
    pub disabled_at: Millis,
}

/// Shared handle to the store.
pub type SharedStore = Arc<dyn Store>;
