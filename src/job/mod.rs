//! The job vocabulary shared by the API, the engine and the store: jobs, steps, attempts,
//! dead letters, and the fencing token that guards every step transition.
//!
//! Invariant: these are plain data; no I/O happens here.

pub mod progress;
pub mod spec;
mod state;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::clock::Millis;

pub use state::{JobStatus, StepKind, StepState};

/// A job as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: Uuid,
    pub status: JobStatus,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub finished_at: Option<Millis>,
    /// The accepted spec, with secrets as submitted (redact before showing).
    pub spec: Value,
}

/// A step as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub id: i64,
    pub job_id: Uuid,
    /// Position within the job (sources first, then sinks).
    pub position: u32,
    pub kind: StepKind,
    /// Connector name for collect steps, sink type for deliver steps.
    pub name: String,
    pub state: StepState,
    /// Attempts started so far (the running attempt included).
    pub attempt: u32,
    pub max_attempts: u32,
    /// When a queued or retrying step may run next.
    pub run_at: Option<Millis>,
    /// The end of the step's time budget: no attempt starts after it.
    pub deadline_at: Millis,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<Millis>,
    /// Resume state of a collect step, written with each page.
    pub checkpoint: Option<Value>,
    pub pages: u64,
    pub records: u64,
    /// Attempts that only waited on an open circuit breaker; they count neither against
    /// `max_attempts` (which grew by one for each) nor in the backoff exponent.
    pub deferrals: u32,
    /// The attempt number when the step was last re-queued (retry, replay, redelivery).
    pub round_start: u32,
    pub last_error: Option<String>,
    pub last_status: Option<u16>,
    /// What the step runs: `{connector, settings, processors}` or `{sink}`.
    pub config: Value,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub finished_at: Option<Millis>,
    /// Named progress entries the step reported (`login`, `pull`, `processing`, `warnings`…).
    pub progress: Option<Value>,
}

impl Step {
    /// Attempts of the current round that count: `attempt` (the one running included) minus
    /// those of earlier rounds and those deferred by an open circuit breaker.
    pub fn tries(&self, attempt: u32) -> u32 {
        attempt
            .saturating_sub(self.round_start)
            .saturating_sub(self.deferrals)
    }
}

/// One row of the attempt log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Attempt {
    pub step_id: i64,
    pub attempt: u32,
    pub started_at: Millis,
    pub ended_at: Millis,
    /// `succeeded`, `retrying`, `failed`, `dead`, or `lease_expired`.
    pub outcome: String,
    pub error_kind: Option<String>,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    /// The first KiB of the answer, when there was one.
    pub response: Option<String>,
    pub latency_ms: i64,
}

/// A job with its steps and attempt log.
#[derive(Debug, Clone)]
pub struct JobDetail {
    pub job: Job,
    pub steps: Vec<Step>,
    pub attempts: Vec<Attempt>,
}

/// A step that failed for good, kept with its last error for inspection and replay.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetter {
    pub id: i64,
    #[schema(value_type = String, format = Uuid)]
    pub job_id: Uuid,
    pub step_id: i64,
    pub step_name: String,
    pub state: StepState,
    pub attempts: u32,
    pub error: String,
    pub error_kind: Option<String>,
    pub http_status: Option<u16>,
    /// The first KiB of the last response, when there was one.
    pub response: Option<String>,
    pub created_at: Millis,
    pub replayed_at: Option<Millis>,
}

/// A stored record of a job.
#[derive(Debug, Clone, Serialize)]
pub struct RecordRow {
    pub id: i64,
    pub step_id: i64,
    pub page: u64,
    pub data: Value,
}

/// The fencing token of a claimed step: only the holder of the current lease and attempt may
/// write the step. A worker whose lease was taken over finds every write refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub step_id: i64,
    pub owner: String,
    pub attempt: u32,
}

/// A step handed to a worker, with the fence it must present.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub step: Step,
    pub fence: Fence,
    pub started_at: Millis,
}

/// Why an attempt did not succeed, as the attempt log and dead letters record it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepError {
    /// A short machine word: `transport`, `timeout`, `status`, `decode`, `settings`, `refused`,
    /// `processing`, `budget`, `lease_expired`, …
    pub kind: String,
    pub message: String,
    pub http_status: Option<u16>,
    pub response: Option<String>,
}

/// What the other side answered to a successful attempt, for the attempt log.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Receipt {
    pub http_status: Option<u16>,
    /// The first KiB of the answer.
    pub response: Option<String>,
}

impl Receipt {
    /// What an HTTP answer leaves in the attempt log: its status and first KiB.
    pub fn from_response(response: &crate::net::CappedResponse) -> Self {
        Self {
            http_status: Some(response.status),
            response: response.excerpt(),
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded,
    /// Succeeded, with the answer kept in the attempt log (deliveries).
    Delivered {
        receipt: Receipt,
    },
    /// Retry at the given time.
    Retry {
        at: Millis,
        error: StepError,
    },
    /// Not retryable.
    Failed {
        error: StepError,
    },
    /// Retryable, but out of attempts or time budget.
    Dead {
        error: StepError,
    },
    /// Not attempted: the upstream's circuit breaker is open. Run again at `at` without
    /// using up an attempt.
    Deferred {
        at: Millis,
        error: StepError,
    },
}

impl Outcome {
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Succeeded | Outcome::Delivered { .. } => "succeeded",
            Outcome::Retry { .. } => "retrying",
            Outcome::Failed { .. } => "failed",
            Outcome::Dead { .. } => "dead",
            Outcome::Deferred { .. } => "deferred",
        }
    }
}

/// A page of a collect step to persist with its checkpoint, atomically.
#[derive(Debug, Clone, Default)]
pub struct PageWrite {
    pub records: Vec<Value>,
    pub checkpoint: Option<Value>,
    /// The step's progress entries so far, stored with the page.
    pub progress: Option<Value>,
    /// The page's records as collected, before processors (empty when not kept).
    pub originals: Vec<Value>,
}

/// A step to create with a new job.
#[derive(Debug, Clone)]
pub struct NewStep {
    pub kind: StepKind,
    pub name: String,
    pub config: Value,
    pub max_attempts: u32,
    pub deadline_at: Millis,
}

/// An idempotency key presented at creation, with the hash of the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    pub key: String,
    pub request_hash: String,
    pub expires_at: Millis,
}

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    pub created_at: Millis,
    pub spec: Value,
    pub steps: Vec<NewStep>,
    pub idempotency: Option<IdempotencyClaim>,
    /// Signing secrets generated for sinks that named none: shown once, in the answer to the
    /// request that created the job (they are stored in the spec, never shown again).
    pub generated_secrets: Vec<GeneratedSecret>,
}

/// A secret generated for a sink of a new job.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct GeneratedSecret {
    /// Index of the sink in the job's `sinks`.
    pub sink: usize,
    pub secret: String,
}

/// Which jobs to list; paging goes backwards in time from `before`.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub connector: Option<String>,
    pub before: Option<Uuid>,
    pub limit: usize,
}

/// Which dead letters to replay (or list).
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    pub ids: Vec<i64>,
    pub job_id: Option<Uuid>,
    pub since: Option<Millis>,
    /// Include ones already replayed.
    pub include_replayed: bool,
    pub after: Option<i64>,
    pub limit: usize,
}

/// A fresh attempt budget for a retried or replayed step.
#[derive(Debug, Clone, Copy)]
pub struct RetryBudget {
    pub max_attempts: u32,
    pub budget_ms: i64,
}
