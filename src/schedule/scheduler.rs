//! The scheduler loop: wakes at the next tick (or when a schedule changes), decides which ticks
//! to fire under each schedule's catch-up and overlap policies, and has the store fire them.
//!
//! Several scheduler processes may run on one store: each decision is carried out by
//! `Store::fire_tick`, which refuses a tick that was already fired or a schedule that changed
//! since the decision, so a tick never makes two jobs.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    CatchUp, MISFIRE_GRACE_MS, Origin, Overlap, Schedule, ScheduleSpec, TickFire, TickResult,
};
use crate::clock::{Millis, SharedClock};
use crate::connectors::ConnectorRegistry;
use crate::job::spec::{Catalog, StepDefaults};
use crate::sinks::{SinkRegistry, SinkValidation};
use crate::store::{self, SharedStore};

/// Longest the loop sleeps without looking at the store again: other processes may have
/// changed schedules, and `overlap = "queue"` waits on jobs finishing.
const RECHECK: Duration = Duration::from_secs(2);
/// Most ticks fired for one schedule in one pass (a per-second schedule after a pause).
const MAX_PER_PASS: usize = 1000;

/// What the scheduler needs to turn a schedule's template into a job.
#[derive(Clone)]
pub struct SchedulerContext {
    pub store: SharedStore,
    pub clock: SharedClock,
    pub connectors: ConnectorRegistry,
    pub sinks: SinkRegistry,
    pub sink_validation: SinkValidation,
    pub defaults: StepDefaults,
    /// The zone relative dates in job settings are resolved in (`timezone` in the config).
    pub timezone: jiff::tz::TimeZone,
    /// Seals the secrets of job templates and jobs; opens them to plan a tick's job.
    pub sealer: crate::secrets::Sealer,
    /// Signalled by the API when a schedule is created, changed or deleted.
    pub changed: Arc<Notify>,
}

impl SchedulerContext {
    pub fn catalog(&self) -> Catalog<'_> {
        Catalog {
            connectors: &self.connectors,
            sinks: &self.sinks,
            sink_validation: &self.sink_validation,
            timezone: &self.timezone,
            sealer: &self.sealer,
            dates_at: None,
        }
    }
}

/// Why a schedule could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error(transparent)]
    Invalid(#[from] super::ScheduleError),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// A schedule checked and made ready to store: its job template planned once (so secrets a
/// sink generates are fixed for every run) with its secrets sealed, its next tick computed
/// from `now`.
pub fn accept(
    context: &SchedulerContext,
    id: Uuid,
    origin: Origin,
    mut spec: ScheduleSpec,
    now: Millis,
    created_at: Millis,
) -> Result<(Schedule, Vec<crate::job::GeneratedSecret>), super::ScheduleError> {
    if spec.timezone.is_empty() {
        spec.timezone = context.timezone.iana_name().unwrap_or("UTC").to_owned();
    }
    let ticks = spec.check()?;
    let catalog = context.catalog().dated(ticks.zone(), None);
    let planned = spec
        .job
        .plan(&catalog, context.defaults, now, None)
        .map_err(|error| super::ScheduleError::Job(error.to_string()))?;
    spec.job = serde_json::from_value(planned.spec)
        .map_err(|error| super::ScheduleError::Job(error.to_string()))?;
    // "yesterday" means the day before each run, not the day before the schedule was made.
    spec.job.restore_date_phrases();
    let next_at = if spec.paused {
        None
    } else {
        ticks.next_after(now)
    };
    let schedule = Schedule {
        id,
        origin,
        spec,
        next_at,
        last_tick: None,
        last_job_id: None,
        created_at,
        updated_at: now,
    };
    Ok((schedule, planned.generated_secrets))
}

/// Makes the stored `[[schedule]]` entries match the configuration: new ones are created,
/// changed ones replaced (their next tick computed from now), removed ones deleted.
pub async fn sync_config(
    context: &SchedulerContext,
    specs: &[ScheduleSpec],
) -> Result<(), AcceptError> {
    let now = context.clock.now();
    let stored = context.store.list_schedules().await?;
    for spec in specs {
        match stored.iter().find(|s| s.spec.name == spec.name) {
            Some(existing)
                if existing.origin == Origin::Config && same(&context.sealer, existing, spec) => {}
            Some(existing) => {
                let (mut schedule, _) = accept(
                    context,
                    existing.id,
                    Origin::Config,
                    spec.clone(),
                    now,
                    existing.created_at,
                )?;
                schedule.last_tick = existing.last_tick;
                context.store.replace_schedule(&schedule).await?;
            }
            None => {
                let (schedule, _) = accept(
                    context,
                    Uuid::now_v7(),
                    Origin::Config,
                    spec.clone(),
                    now,
                    now,
                )?;
                context.store.create_schedule(&schedule).await?;
            }
        }
    }
    for old in stored.iter().filter(|s| s.origin == Origin::Config) {
        if !specs.iter().any(|spec| spec.name == old.spec.name) {
            context.store.delete_schedule(old.id).await?;
        }
    }
    context.changed.notify_one();
    Ok(())
}

/// Whether a stored config schedule still says what the file says. Planning added fields the
/// file leaves out (source names, generated secrets); they are dropped before comparing.
fn same(sealer: &crate::secrets::Sealer, stored: &Schedule, spec: &ScheduleSpec) -> bool {
    let (Ok(mut stored), Ok(file)) = (
        serde_json::to_value(&stored.spec),
        serde_json::to_value(spec),
    ) else {
        return false;
    };
    // The stored template's secrets are sealed; one that no longer opens is replaced.
    if sealer.unseal_all(&mut stored).is_err() {
        return false;
    }
    for (list, field) in [("sources", "name"), ("sinks", "secret")] {
        let file_items = file["job"][list].as_array().cloned().unwrap_or_default();
        if let Some(items) = stored["job"][list].as_array_mut() {
            for (item, file_item) in items.iter_mut().zip(file_items) {
                if file_item.get(field).is_none()
                    && let Some(object) = item.as_object_mut()
                {
                    object.remove(field);
                }
            }
        }
    }
    stored == file
}

/// The scheduler of one process.
pub struct Scheduler {
    context: SchedulerContext,
}

impl Scheduler {
    pub fn new(context: SchedulerContext) -> Self {
        Self { context }
    }

    /// Fires due ticks until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        loop {
            let wake_at = match self.pass().await {
                Ok(wake_at) => wake_at,
                Err(error) => {
                    tracing::error!(%error, "scheduler pass failed; retrying");
                    None
                }
            };
            let clock = self.context.clock.clone();
            let sleep = async move {
                match wake_at {
                    Some(at) => clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.context.changed.notified() => {}
                _ = sleep => {}
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    /// One pass over the due schedules; returns when the next run is due (jitter included).
    pub async fn pass(&self) -> Result<Option<Millis>, store::Error> {
        let now = self.context.clock.now();
        for schedule in self.context.store.due_schedules(now).await? {
            if let Err(error) = self.run_schedule(&schedule, now).await {
                tracing::error!(schedule = %schedule.spec.name, %error, "schedule pass failed");
            }
        }
        let wake = self
            .context
            .store
            .list_schedules()
            .await?
            .iter()
            .filter_map(|s| s.next_at.map(|next| next + s.spec.jitter_for(s.id, next)))
            .min();
        Ok(wake)
    }

    async fn run_schedule(&self, schedule: &Schedule, now: Millis) -> Result<(), store::Error> {
        let Some(next) = schedule.next_at else {
            return Ok(());
        };
        let Ok(ticks) = super::Ticks::parse(&schedule.spec.cron, &schedule.spec.timezone) else {
            return Ok(());
        };
        let spec = &schedule.spec;
        // Due ticks, oldest first: those still within the grace period always run; of the
        // missed ones, the catch-up policy chooses.
        let mut due = Vec::new();
        let mut tick = Some(next);
        while let Some(at) = tick
            && at <= now
            && due.len() < MAX_PER_PASS
        {
            due.push(at);
            tick = ticks.next_after(at);
        }
        let (missed, on_time): (Vec<Millis>, Vec<Millis>) =
            due.into_iter().partition(|at| now - at > MISFIRE_GRACE_MS);
        let mut chosen: Vec<Millis> = match spec.catch_up {
            CatchUp::None => Vec::new(),
            CatchUp::One if on_time.is_empty() => missed.last().copied().into_iter().collect(),
            CatchUp::One => Vec::new(),
            CatchUp::All => {
                let keep = spec.catch_up_max as usize;
                missed[missed.len().saturating_sub(keep)..].to_vec()
            }
        };
        chosen.extend(on_time);
        // A run starts at its tick plus the schedule's jitter; later ticks wait behind it.
        let ready = chosen
            .iter()
            .position(|at| now < at + spec.jitter_for(schedule.id, *at))
            .unwrap_or(chosen.len());
        chosen.truncate(ready);
        let Some(first) = chosen.first().copied() else {
            if let Some(skip_to) = missed.last().and_then(|last| ticks.next_after(*last))
                && !missed.is_empty()
                && spec.catch_up == CatchUp::None
            {
                self.context
                    .store
                    .skip_ticks(schedule.id, schedule.updated_at, next, Some(skip_to))
                    .await?;
            }
            return Ok(());
        };
        if first != next
            && !self
                .context
                .store
                .skip_ticks(schedule.id, schedule.updated_at, next, Some(first))
                .await?
        {
            return Ok(());
        }
        for (index, at) in chosen.into_iter().enumerate() {
            // Relative dates read as of the tick, in the schedule's zone.
            let catalog = self.context.catalog().dated(ticks.zone(), Some(at));
            let job = match spec.job.plan(
                &catalog,
                self.context.defaults,
                self.context.clock.now(),
                None,
            ) {
                Ok(job) => job,
                Err(error) => {
                    tracing::error!(schedule = %spec.name, %error, "the schedule's job no longer plans; tick skipped");
                    let after = ticks.next_after(at);
                    self.context
                        .store
                        .skip_ticks(schedule.id, schedule.updated_at, at, after)
                        .await?;
                    continue;
                }
            };
            let fire = TickFire {
                schedule_id: schedule.id,
                tick: at,
                next_at: ticks.next_after(at),
                // Runs caught up in one pass were all asked for together: they do not skip each
                // other (only the first is checked against a run from before).
                overlap: if index == 0 {
                    spec.overlap
                } else {
                    Overlap::Allow
                },
                job,
                now: self.context.clock.now(),
                version: schedule.updated_at,
            };
            match self.context.store.fire_tick(fire).await? {
                TickResult::Created(job_id) => {
                    tracing::info!(schedule = %spec.name, tick = %crate::clock::rfc3339(at), %job_id, "schedule fired")
                }
                TickResult::SkippedOverlap => {
                    tracing::info!(schedule = %spec.name, tick = %crate::clock::rfc3339(at), "previous run still going; tick skipped")
                }
                TickResult::Waiting | TickResult::AlreadyFired => return Ok(()),
            }
        }
        Ok(())
    }
}
