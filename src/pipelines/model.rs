//! What the store keeps of a pipeline: its definition and state, the messages queued at its
//! stages, per-stage counters and dead letters.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::spec::PipelineSpec;
use crate::clock::Millis;
use crate::schedule::Origin;

/// Whether a pipeline's stages run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineState {
    /// Source and stages run.
    Running,
    /// The source stops fetching; messages already queued still flow to the sinks.
    Paused,
    /// Nothing runs; queued messages wait in the store for the next start.
    Stopped,
}

impl PipelineState {
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineState::Running => "running",
            PipelineState::Paused => "paused",
            PipelineState::Stopped => "stopped",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "running" => Some(PipelineState::Running),
            "paused" => Some(PipelineState::Paused),
            "stopped" => Some(PipelineState::Stopped),
            _ => None,
        }
    }
}

/// A stored pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub id: Uuid,
    pub origin: Origin,
    pub spec: PipelineSpec,
    pub state: PipelineState,
    /// The source connector's checkpoint after the last committed page.
    pub checkpoint: Option<Value>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// Which process runs a pipeline: the holder of its lease, until the lease expires unrenewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineLease {
    pub owner: String,
    pub expires_at: Millis,
}

/// A message waiting at (or being handled by) a stage.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedMessage {
    pub id: i64,
    pub stage: u32,
    pub payload: Value,
    /// Failed attempts so far at this stage.
    pub attempts: u32,
    /// Not before this time (a retry's backoff).
    pub next_at: Millis,
    pub last_error: Option<String>,
}

/// Durable counters of one stage; `entered = done + dead + queued` for every stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StageCounters {
    pub entered: u64,
    /// Messages the stage finished (stored, for a sink).
    pub done: u64,
    /// Records the stage emitted (a jq filter may drop or split).
    pub produced: u64,
    pub retried: u64,
    pub dead: u64,
    /// Pages fetched (source only).
    pub pages: u64,
}

/// A message that failed every attempt at a stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineDeadLetter {
    pub id: i64,
    pub stage: u32,
    pub stage_name: String,
    pub payload: Value,
    pub attempts: u32,
    pub error: String,
    pub http_status: Option<u16>,
    pub response: Option<String>,
    pub failed_at: Millis,
    pub replayed_at: Option<Millis>,
}

/// Why a message is dead-lettered, as the store records it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadMessage {
    pub stage_name: String,
    pub attempts: u32,
    pub error: String,
    pub http_status: Option<u16>,
    pub response: Option<String>,
}

/// A source page to commit: its records go to `stages` (every first stage), with the new
/// checkpoint, in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcePage {
    /// The process that fetched it: the page commits only while that process holds the
    /// pipeline's lease.
    pub owner: String,
    pub records: Vec<Value>,
    pub checkpoint: Option<Value>,
    pub stages: Vec<u32>,
}
