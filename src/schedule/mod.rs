//! Schedules: a cron expression in a time zone, and the job to create at each tick.
//!
//! Invariants: a (schedule, tick) pair creates at most one job, whatever the number of
//! scheduler processes and restarts — the store keeps one row per fired tick and refuses a
//! second; a tick in the past is never fired because a schedule changed (the next tick is
//! always computed forward from now).

pub mod scheduler;

use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::clock::Millis;
use crate::config::duration;
use crate::job::spec::JobSpec;

/// Most missed ticks `catch_up = "all"` may fire at once.
pub const MAX_CATCH_UP: u32 = 100;
/// A tick fired later than this after its time counts as missed (downtime, a paused process).
pub const MISFIRE_GRACE_MS: Millis = 60_000;

/// What to do at a tick while the previous run of the schedule is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Do not start a run; the tick is recorded as skipped.
    #[default]
    Skip,
    /// Start the run once the previous one has finished (late ticks then follow `catch_up`).
    Queue,
    /// Start the run anyway.
    Allow,
}

/// What to do with ticks missed while no scheduler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Run once for the most recent missed tick.
    #[default]
    One,
    /// Run none of them; wait for the next tick.
    None,
    /// Run each missed tick, at most `catch_up_max` of the most recent.
    All,
}

/// A schedule as submitted (`POST /v1/schedules`, `[[schedule]]` in `gleaner.toml`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Unique name (1–100 characters: letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Cron expression, five fields or six with seconds first (`0 */5 * * * *`).
    pub cron: String,
    /// IANA time zone the expression is read in, and the relative dates of the job's settings
    /// (default: the configured `timezone`, which is UTC unless set).
    #[serde(default)]
    pub timezone: String,
    /// The job created at each tick.
    pub job: JobSpec,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub catch_up: CatchUp,
    /// Cap of `catch_up = "all"` (1–100, default 10).
    #[serde(default = "default_catch_up_max")]
    pub catch_up_max: u32,
    /// Each run starts up to this much after its tick, at a spread but stable offset.
    #[serde(default, with = "duration", skip_serializing_if = "Duration::is_zero")]
    #[schema(value_type = Option<String>, example = "30s")]
    pub jitter: Duration,
    #[serde(default)]
    pub paused: bool,
}

/// Whether `name` is a valid schedule or pipeline name: 1–100 letters, digits, `-`, `_`, `.`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn default_catch_up_max() -> u32 {
    10
}

/// Why a schedule was refused; all are the client's mistakes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScheduleError {
    #[error("name must be 1 to 100 characters of letters, digits, '-', '_' or '.'")]
    Name,
    #[error("cron: {0}")]
    Cron(String),
    #[error("timezone: unknown time zone {0:?} (use an IANA name such as Europe/Berlin)")]
    TimeZone(String),
    #[error("catch_up_max must be between 1 and {MAX_CATCH_UP}")]
    CatchUpMax,
    #[error("jitter must be shorter than one hour")]
    Jitter,
    #[error("job: {0}")]
    Job(String),
}

/// A parsed cron expression in its time zone.
#[derive(Debug, Clone)]
pub struct Ticks {
    cron: Cron,
    zone: TimeZone,
}

impl Ticks {
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|error| ScheduleError::Cron(error.to_string()))?;
        let zone =
            TimeZone::get(timezone).map_err(|_| ScheduleError::TimeZone(timezone.to_owned()))?;
        Ok(Self { cron, zone })
    }

    /// The zone the ticks are read in, which the schedule's relative dates resolve in too.
    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: Millis) -> Option<Millis> {
        let start = Timestamp::from_millisecond(after)
            .ok()?
            .to_zoned(self.zone.clone());
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|zoned| zoned.timestamp().as_millisecond())
    }

    /// The last tick at or before `at`.
    pub fn at_or_before(&self, at: Millis) -> Option<Millis> {
        let start = Timestamp::from_millisecond(at)
            .ok()?
            .to_zoned(self.zone.clone());
        self.cron
            .find_previous_occurrence(&start, true)
            .ok()
            .map(|zoned| zoned.timestamp().as_millisecond())
    }

    /// Up to `limit` ticks strictly after `after`.
    pub fn upcoming(&self, after: Millis, limit: usize) -> Vec<Millis> {
        let mut ticks = Vec::with_capacity(limit);
        let mut from = after;
        while ticks.len() < limit {
            let Some(next) = self.next_after(from) else {
                break;
            };
            ticks.push(next);
            from = next;
        }
        ticks
    }
}

impl ScheduleSpec {
    /// Checks everything but the job template (which the caller plans against the catalog).
    pub fn check(&self) -> Result<Ticks, ScheduleError> {
        if !is_valid_name(&self.name) {
            return Err(ScheduleError::Name);
        }
        if !(1..=MAX_CATCH_UP).contains(&self.catch_up_max) {
            return Err(ScheduleError::CatchUpMax);
        }
        if self.jitter >= Duration::from_secs(3600) {
            return Err(ScheduleError::Jitter);
        }
        Ticks::parse(&self.cron, &self.timezone)
    }

    /// The delay of the run of `tick` after the tick itself: stable for a (schedule, tick) so
    /// every scheduler process agrees, spread over `[0, jitter)`.
    pub fn jitter_for(&self, id: Uuid, tick: Millis) -> Millis {
        let span = self.jitter.as_millis() as u64;
        if span == 0 {
            return 0;
        }
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for byte in id.as_bytes().iter().chain(tick.to_le_bytes().iter()) {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        (hash % span) as Millis
    }
}

/// Who defined a schedule: the API, or `gleaner.toml` (which wins at every start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Api,
    Config,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Api => "api",
            Origin::Config => "config",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "api" => Some(Origin::Api),
            "config" => Some(Origin::Config),
            _ => None,
        }
    }
}

/// A schedule as stored.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub id: Uuid,
    pub origin: Origin,
    pub spec: ScheduleSpec,
    /// The next tick to fire; `None` while paused or when the expression has no future tick.
    pub next_at: Option<Millis>,
    /// The last tick fired or skipped.
    pub last_tick: Option<Millis>,
    pub last_job_id: Option<Uuid>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What happened at one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TickOutcome {
    /// A job was created.
    Created,
    /// The previous run was still going (`overlap = "skip"`).
    SkippedOverlap,
}

impl TickOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            TickOutcome::Created => "created",
            TickOutcome::SkippedOverlap => "skipped_overlap",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "created" => Some(TickOutcome::Created),
            "skipped_overlap" => Some(TickOutcome::SkippedOverlap),
            _ => None,
        }
    }
}

/// One fired tick.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TickRow {
    pub tick: Millis,
    pub outcome: TickOutcome,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub job_id: Option<Uuid>,
    pub fired_at: Millis,
}

/// A request to fire one tick, decided by the scheduler and carried out by the store in one
/// transaction.
#[derive(Debug, Clone)]
pub struct TickFire {
    pub schedule_id: Uuid,
    pub tick: Millis,
    /// The schedule's next tick once this one is done.
    pub next_at: Option<Millis>,
    pub overlap: Overlap,
    /// The job to create (its id is recorded with the tick).
    pub job: crate::job::NewJob,
    pub now: Millis,
    /// The schedule's `updated_at` the decision was made on: a schedule changed since is not
    /// fired from the stale decision.
    pub version: Millis,
}

/// What the store did with a [`TickFire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickResult {
    Created(Uuid),
    SkippedOverlap,
    /// `overlap = "queue"` and the previous run is still going: nothing changed, try later.
    Waiting,
    /// Another scheduler fired this tick already, or the schedule changed or went away since
    /// the decision: reload and decide again.
    AlreadyFired,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Millis {
        text.parse::<Timestamp>()
            .expect("timestamp")
            .as_millisecond()
    }

    #[test]
    fn five_and_six_field_expressions_tick_in_their_zone() {
        let every_minute = Ticks::parse("* * * * *", "UTC").expect("parse");
        assert_eq!(
            every_minute.next_after(at("2026-01-01T00:00:30Z")),
            Some(at("2026-01-01T00:01:00Z"))
        );
        assert_eq!(
            every_minute.next_after(at("2026-01-01T00:01:00Z")),
            Some(at("2026-01-01T00:02:00Z")),
            "strictly after"
        );
        let seconds = Ticks::parse("*/10 * * * * *", "UTC").expect("parse");
        assert_eq!(
            seconds.upcoming(at("2026-01-01T00:00:00Z"), 3),
            vec![
                at("2026-01-01T00:00:10Z"),
                at("2026-01-01T00:00:20Z"),
                at("2026-01-01T00:00:30Z")
            ]
        );
        let berlin = Ticks::parse("0 9 * * *", "Europe/Berlin").expect("parse");
        assert_eq!(
            berlin.next_after(at("2026-07-01T00:00:00Z")),
            Some(at("2026-07-01T07:00:00Z")),
            "09:00 CEST"
        );
        assert_eq!(
            berlin.next_after(at("2026-12-01T00:00:00Z")),
            Some(at("2026-12-01T08:00:00Z")),
            "09:00 CET"
        );
    }

    #[test]
    fn daylight_saving_gaps_fire_once_and_repeats_once() {
        // 02:30 does not exist on 2026-03-29 in Berlin: the tick fires at the first valid
        // instant after the gap, once.
        let gap = Ticks::parse("30 2 * * *", "Europe/Berlin").expect("parse");
        let first = gap.next_after(at("2026-03-28T12:00:00Z")).expect("tick");
        let second = gap.next_after(first).expect("tick");
        assert!(second - first >= 20 * 3_600_000, "{first} {second}");
        // 02:30 happens twice on 2026-10-25: one run.
        let fold = Ticks::parse("30 2 * * *", "Europe/Berlin").expect("parse");
        let first = fold.next_after(at("2026-10-24T12:00:00Z")).expect("tick");
        let second = fold.next_after(first).expect("tick");
        assert!(second - first >= 23 * 3_600_000, "{first} {second}");
    }

    #[test]
    fn bad_expressions_zones_and_names_are_refused() {
        assert!(Ticks::parse("61 * * * *", "UTC").is_err());
        assert!(Ticks::parse("* * *", "UTC").is_err());
        assert!(Ticks::parse("* * * * *", "Mars/Olympus").is_err());
        let spec: ScheduleSpec = serde_json::from_value(serde_json::json!({
            "name": "bad name!", "cron": "* * * * *", "job": {"sources": [{"connector": "noop"}]}
        }))
        .expect("spec");
        assert!(matches!(spec.check(), Err(ScheduleError::Name)));
    }

    #[test]
    fn jitter_is_stable_per_tick_and_within_bounds() {
        let spec: ScheduleSpec = serde_json::from_value(serde_json::json!({
            "name": "j", "cron": "* * * * *", "jitter": "30s",
            "job": {"sources": [{"connector": "noop"}]}
        }))
        .expect("spec");
        let id = Uuid::now_v7();
        let a = spec.jitter_for(id, 60_000);
        assert_eq!(a, spec.jitter_for(id, 60_000));
        let offsets: Vec<_> = (0..50).map(|n| spec.jitter_for(id, n * 60_000)).collect();
        assert!(offsets.iter().all(|offset| (0..30_000).contains(offset)));
        assert!(offsets.iter().any(|offset| *offset != offsets[0]), "spread");
    }
}
