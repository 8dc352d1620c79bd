//! The step state machine and the job status derived from its steps.
//!
//! Invariant: a job's status is never set directly; it is `derive`d from its steps in the same
//! transaction that changes one of them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a step is in its life. `waiting` is a deliver step whose sources are not all terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Waiting,
    Queued,
    Running,
    Retrying,
    Succeeded,
    /// A non-retryable error (e.g. a 4xx): the response is kept in the dead letters.
    Failed,
    /// Retries exhausted (attempt count or time budget): dead-lettered, replayable.
    Dead,
    Cancelled,
}

impl StepState {
    pub const ALL: [StepState; 8] = [
        StepState::Waiting,
        StepState::Queued,
        StepState::Running,
        StepState::Retrying,
        StepState::Succeeded,
        StepState::Failed,
        StepState::Dead,
        StepState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Waiting => "waiting",
            StepState::Queued => "queued",
            StepState::Running => "running",
            StepState::Retrying => "retrying",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Dead => "dead",
            StepState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }

    /// No further transition happens without an explicit retry or replay.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepState::Succeeded | StepState::Failed | StepState::Dead | StepState::Cancelled
        )
    }
}

/// What a step does: collect from a source, or deliver the job's records to a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Collect,
    Deliver,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Collect => "collect",
            StepKind::Deliver => "deliver",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "collect" => Some(StepKind::Collect),
            "deliver" => Some(StepKind::Deliver),
            _ => None,
        }
    }
}

/// A job's status, derived from its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    /// Some sources failed past their budget, the rest was collected and delivered.
    PartiallySucceeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::PartiallySucceeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::PartiallySucceeded => "partially_succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }

    /// The status of a job whose steps are in these (kind, state) pairs.
    ///
    /// Rules: while any step is not terminal the job is `queued` (nothing started yet) or
    /// `running`; a cancelled step makes it `cancelled`; a failed delivery makes it `failed`;
    /// otherwise it is `succeeded` when every source succeeded, `failed` when none did, and
    /// `partially_succeeded` in between.
    pub fn derive(steps: impl IntoIterator<Item = (StepKind, StepState, bool)>) -> JobStatus {
        let mut any_started = false;
        let mut any_open = false;
        let mut any_cancelled = false;
        let mut delivery_failed = false;
        let (mut sources, mut sources_ok) = (0usize, 0usize);
        for (kind, state, ever_attempted) in steps {
            any_started |= ever_attempted || state.is_terminal();
            any_open |= !state.is_terminal();
            any_cancelled |= state == StepState::Cancelled;
            match kind {
                StepKind::Collect => {
                    sources += 1;
                    sources_ok += usize::from(state == StepState::Succeeded);
                }
                StepKind::Deliver => {
                    delivery_failed |= matches!(state, StepState::Failed | StepState::Dead);
                }
            }
        }
        if any_open {
            return if any_started {
                JobStatus::Running
            } else {
                JobStatus::Queued
            };
        }
        if any_cancelled {
            return JobStatus::Cancelled;
        }
        if delivery_failed || sources_ok == 0 && sources > 0 {
            return JobStatus::Failed;
        }
        if sources_ok == sources {
            JobStatus::Succeeded
        } else {
            JobStatus::PartiallySucceeded
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StepKind::*;
    use super::StepState::*;
    use super::*;

    #[test]
    fn fresh_job_is_queued_then_running() {
        assert_eq!(
            JobStatus::derive([(Collect, Queued, false), (Deliver, Waiting, false)]),
            JobStatus::Queued
        );
        assert_eq!(
            JobStatus::derive([(Collect, Running, true), (Deliver, Waiting, false)]),
            JobStatus::Running
        );
        assert_eq!(
            JobStatus::derive([(Collect, Retrying, true)]),
            JobStatus::Running
        );
    }

    #[test]
    fn outcomes_of_finished_jobs() {
        assert_eq!(
            JobStatus::derive([(Collect, Succeeded, true), (Deliver, Succeeded, true)]),
            JobStatus::Succeeded
        );
        assert_eq!(
            JobStatus::derive([
                (Collect, Succeeded, true),
                (Collect, Dead, true),
                (Deliver, Succeeded, true)
            ]),
            JobStatus::PartiallySucceeded
        );
        assert_eq!(
            JobStatus::derive([(Collect, Dead, true), (Deliver, Succeeded, true)]),
            JobStatus::Failed
        );
        assert_eq!(
            JobStatus::derive([(Collect, Succeeded, true), (Deliver, Failed, true)]),
            JobStatus::Failed
        );
        assert_eq!(
            JobStatus::derive([(Collect, Cancelled, false), (Deliver, Cancelled, false)]),
            JobStatus::Cancelled
        );
    }

    #[test]
    fn names_round_trip() {
        for state in StepState::ALL {
            assert_eq!(StepState::parse(state.as_str()), Some(state));
        }
        for status in JobStatus::ALL {
            assert_eq!(JobStatus::parse(status.as_str()), Some(status));
        }
    }
}
