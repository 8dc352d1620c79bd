//! The shape of a job as clients submit it, and its checked conversion into steps.
//!
//! Invariant: a spec that `plan` accepts can run: every connector and sink exists and every
//! settings object matches its schema. Nothing is stored for a spec that fails here.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{GeneratedSecret, IdempotencyClaim, NewJob, NewStep, StepKind};
use crate::clock::Millis;
use crate::connectors::ConnectorRegistry;
use crate::connectors::registry::ValidationError;
use crate::dates::{DateError, resolve_dates};
use crate::processors::{ProcessorChain, ProcessorSpec};
use crate::secrets::{SealError, Sealer, mask_sealed};
use crate::sinks::{SinkRegistry, SinkValidation};

/// Most sources one job may name.
pub const MAX_SOURCES: usize = 100;
/// Most sinks one job may name.
pub const MAX_SINKS: usize = 16;

/// A job as submitted to `POST /v1/jobs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Where the records come from: one collect step per source.
    pub sources: Vec<SourceSpec>,
    /// Applied to every page of records, in order, before they are stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub processors: Vec<ProcessorSpec>,
    /// Where the records go once every source is done: one deliver step per sink.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sinks: Vec<SinkSpec>,
    /// Overrides of the engine's retry limits for this job's steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// The relative dates the settings held when the job was accepted (`"4 days back"`) and
    /// what they were resolved to. Written by the server: a value sent by a client is
    /// replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolved_dates: Vec<ResolvedDate>,
}

/// A source setting given as a phrase and resolved when the job was planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolvedDate {
    /// The index of the source in `sources`.
    pub source: usize,
    /// The settings key.
    pub setting: String,
    /// What the client sent, e.g. `"4 days back"`.
    pub phrase: String,
    /// What the settings hold instead: `YYYY-MM-DD` or RFC 3339 with an offset.
    pub value: String,
}

/// One source of a job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// A connector name from `GET /v1/connectors`.
    pub connector: String,
    /// The source's name in results (1–100 characters); by default what the connector calls
    /// it (e.g. the provider id), else the connector name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Settings matching the connector's schema.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub settings: Value,
}

/// One sink of a job: its `type` plus that sink's settings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SinkSpec {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub settings: Map<String, Value>,
}

impl SinkSpec {
    /// Seals the settings the sink's schema marks `writeOnly`.
    pub fn seal_secrets(&mut self, catalog: &Catalog<'_>) {
        let Some(entry) = catalog.sinks.get(&self.kind) else {
            return;
        };
        let mut settings = Value::Object(std::mem::take(&mut self.settings));
        catalog
            .sealer
            .seal_secrets(entry.schema.raw(), &mut settings);
        if let Value::Object(sealed) = settings {
            self.settings = sealed;
        }
    }
}

/// Per-job retry limits.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Most attempts per step (1–1000).
    pub max_attempts: Option<u32>,
    /// Time budget per step in seconds (1 s – 30 days).
    pub budget_seconds: Option<u64>,
}

fn empty_object() -> Value {
    json!({})
}

/// Defaults applied to steps whose spec does not override them.
#[derive(Debug, Clone, Copy)]
pub struct StepDefaults {
    pub max_attempts: u32,
    pub budget_ms: i64,
}

/// Why a spec was refused; every variant is the client's mistake.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpecError {
    #[error("a job needs at least one source")]
    NoSources,
    #[error("a job may have at most {MAX_SOURCES} sources and {MAX_SINKS} sinks")]
    TooMany,
    #[error("sources[{index}]: {error}")]
    Source {
        index: usize,
        error: ValidationError,
    },
    #[error("sinks[{index}]: {error}")]
    Sink {
        index: usize,
        error: ValidationError,
    },
    #[error("processors: {0}")]
    Processors(String),
    #[error("retry: {0}")]
    Retry(&'static str),
    #[error("sources[{index}].name must be 1 to 100 characters")]
    SourceName { index: usize },
    #[error("sources[{index}] repeats sources[{first}] (same connector and settings)")]
    DuplicateSource { index: usize, first: usize },
    #[error("sources[{index}].settings.{setting}: {error}")]
    Date {
        index: usize,
        setting: String,
        error: DateError,
    },
    /// A stored template (a schedule's job) holds a secret sealed under another key.
    #[error("{0}")]
    Sealed(#[from] SealError),
}

/// Everything `plan` checks against.
pub struct Catalog<'a> {
    pub connectors: &'a ConnectorRegistry,
    pub sinks: &'a SinkRegistry,
    pub sink_validation: &'a SinkValidation,
    /// The zone relative dates in settings are resolved in (`timezone` in the config, or a
    /// schedule's own).
    pub timezone: &'a TimeZone,
    /// The moment relative dates are resolved at: `None` for the job's creation (`now` of
    /// `plan`), a schedule's tick for its runs (so a caught-up run's "yesterday" is the day
    /// before its tick, not before the day it ran late).
    pub dates_at: Option<Millis>,
    /// Opens the secrets of a stored template and seals those of the planned job.
    pub sealer: &'a Sealer,
}

impl<'a> Catalog<'a> {
    /// The same catalog resolving relative dates in `zone` (a schedule's), at `at` when given.
    pub fn dated<'b>(self, zone: &'b TimeZone, at: Option<Millis>) -> Catalog<'b>
    where
        'a: 'b,
    {
        Catalog {
            timezone: zone,
            dates_at: at,
            ..self
        }
    }
}

impl JobSpec {
    /// Validates the spec and turns it into a job with one step per source and per sink.
    ///
    /// Relative dates in source settings (`"format": "date"` or `"date-time"` in the
    /// connector's schema) are resolved at `now` first; the stored spec holds the resolved
    /// values and lists the phrases in `resolved_dates`.
    ///
    /// Sealed settings (a stored template planned again) are opened before validation, and
    /// every `writeOnly` setting of a source or sink is sealed in the stored spec and steps.
    pub fn plan(
        &self,
        catalog: &Catalog<'_>,
        defaults: StepDefaults,
        now: Millis,
        idempotency: Option<IdempotencyClaim>,
    ) -> Result<NewJob, SpecError> {
        if self.sources.is_empty() {
            return Err(SpecError::NoSources);
        }
        if self.sources.len() > MAX_SOURCES || self.sinks.len() > MAX_SINKS {
            return Err(SpecError::TooMany);
        }
        let (max_attempts, budget_ms) = self.retry_limits(defaults)?;
        let mut accepted = self.clone();
        accepted.unseal(catalog.sealer)?;
        accepted.resolved_dates =
            accepted.resolve_dates(catalog, catalog.dates_at.unwrap_or(now))?;
        for (index, source) in accepted.sources.iter().enumerate() {
            catalog
                .connectors
                .validate(&source.connector, &source.settings)
                .map_err(|error| SpecError::Source { index, error })?;
            if source
                .name
                .as_ref()
                .is_some_and(|name| name.is_empty() || name.chars().count() > 100)
            {
                return Err(SpecError::SourceName { index });
            }
            // The same collection twice would deliver its records twice.
            if let Some(first) = accepted.sources[..index].iter().position(|earlier| {
                earlier.connector == source.connector && earlier.settings == source.settings
            }) {
                return Err(SpecError::DuplicateSource { index, first });
            }
        }
        ProcessorChain::compile(&self.processors)
            .map_err(|error| SpecError::Processors(error.to_string()))?;
        for (index, sink) in accepted.sinks.iter().enumerate() {
            let settings = Value::Object(sink.settings.clone());
            catalog
                .sinks
                .validate(catalog.sink_validation, &sink.kind, &settings)
                .map_err(|error| SpecError::Sink { index, error })?;
        }

        let deadline_at = now.saturating_add(budget_ms);
        let processors = serde_json::to_value(&self.processors).unwrap_or(Value::Array(Vec::new()));
        let collect = accepted.sources.iter_mut().map(|source| {
            if source.name.is_none() {
                source.name = catalog
                    .connectors
                    .get(&source.connector)
                    .and_then(|entry| entry.connector.label(&source.settings));
            }
            if let Some(entry) = catalog.connectors.get(&source.connector) {
                catalog
                    .sealer
                    .seal_secrets(entry.schema.raw(), &mut source.settings);
            }
            let name = source.name.as_deref().unwrap_or(&source.connector);
            NewStep {
                kind: StepKind::Collect,
                name: source.connector.clone(),
                config: json!({"connector": source.connector, "name": name,
                               "settings": source.settings, "processors": processors}),
                max_attempts,
                deadline_at,
            }
        });
        let mut steps: Vec<NewStep> = collect.collect();
        let mut generated_secrets = Vec::new();
        for (index, sink) in accepted.sinks.iter_mut().enumerate() {
            let Some(entry) = catalog.sinks.get(&sink.kind) else {
                continue;
            };
            if let Some(secret) = entry.sink.prepare(&mut sink.settings) {
                generated_secrets.push(GeneratedSecret {
                    sink: index,
                    secret,
                });
            }
            sink.seal_secrets(catalog);
            // A sink with its own schedule gets as many attempts as it has entries, and the
            // time to go through all of them.
            let (attempts, deadline) = match entry.sink.retry_schedule() {
                Some(schedule) => {
                    let span = i64::try_from(schedule.span().as_millis()).unwrap_or(i64::MAX);
                    (
                        schedule.delays.len() as u32,
                        now.saturating_add(span.max(budget_ms)),
                    )
                }
                None => (max_attempts, deadline_at),
            };
            steps.push(NewStep {
                kind: StepKind::Deliver,
                name: sink.kind.clone(),
                config: json!({"sink": sink.kind, "settings": Value::Object(sink.settings.clone())}),
                max_attempts: attempts,
                deadline_at: deadline,
            });
        }
        Ok(NewJob {
            id: Uuid::now_v7(),
            created_at: now,
            spec: serde_json::to_value(&accepted).unwrap_or(Value::Null),
            steps,
            idempotency,
            generated_secrets,
        })
    }

    /// Opens every sealed setting of the sources and sinks in place.
    fn unseal(&mut self, sealer: &Sealer) -> Result<(), SealError> {
        for source in &mut self.sources {
            sealer.unseal_all(&mut source.settings)?;
        }
        for sink in &mut self.sinks {
            for value in sink.settings.values_mut() {
                sealer.unseal_all(value)?;
            }
        }
        Ok(())
    }

    /// Resolves the relative dates of every source's settings in place.
    fn resolve_dates(
        &mut self,
        catalog: &Catalog<'_>,
        now: Millis,
    ) -> Result<Vec<ResolvedDate>, SpecError> {
        let now =
            Timestamp::from_millisecond(now).expect("the clock's time is within jiff's range");
        let mut resolved = Vec::new();
        for (index, source) in self.sources.iter_mut().enumerate() {
            // An unknown connector is reported by validation.
            let Some(entry) = catalog.connectors.get(&source.connector) else {
                continue;
            };
            let settings = resolve_dates(
                entry.schema.raw(),
                &mut source.settings,
                now,
                catalog.timezone,
            )
            .map_err(|refused| SpecError::Date {
                index,
                setting: refused.setting,
                error: refused.error,
            })?;
            resolved.extend(settings.into_iter().map(|setting| ResolvedDate {
                source: index,
                setting: setting.setting,
                phrase: setting.phrase,
                value: setting.value.to_string(),
            }));
        }
        Ok(resolved)
    }

    /// Puts back the phrases `plan` resolved, so that a template planned once (a schedule's
    /// job) resolves them anew each time it is planned.
    pub fn restore_date_phrases(&mut self) {
        for date in std::mem::take(&mut self.resolved_dates) {
            let settings = self
                .sources
                .get_mut(date.source)
                .and_then(|source| source.settings.as_object_mut());
            if let Some(settings) = settings {
                settings.insert(date.setting, Value::String(date.phrase));
            }
        }
    }

    fn retry_limits(&self, defaults: StepDefaults) -> Result<(u32, i64), SpecError> {
        let Some(retry) = self.retry else {
            return Ok((defaults.max_attempts, defaults.budget_ms));
        };
        let max_attempts = retry.max_attempts.unwrap_or(defaults.max_attempts);
        if !(1..=1000).contains(&max_attempts) {
            return Err(SpecError::Retry("max_attempts must be between 1 and 1000"));
        }
        let budget_ms = match retry.budget_seconds {
            None => defaults.budget_ms,
            Some(seconds) if (1..=30 * 86_400).contains(&seconds) => seconds as i64 * 1000,
            Some(_) => {
                return Err(SpecError::Retry(
                    "budget_seconds must be between 1 and 2592000",
                ));
            }
        };
        Ok((max_attempts, budget_ms))
    }

    /// A copy of the spec with every secret setting, and any other sealed value, replaced by
    /// `"********"`.
    pub fn redacted(spec: &Value, catalog: &Catalog<'_>) -> Value {
        let Ok(mut parsed) = serde_json::from_value::<JobSpec>(spec.clone()) else {
            let mut copy = spec.clone();
            mask_sealed(&mut copy);
            return copy;
        };
        for source in &mut parsed.sources {
            if let Some(entry) = catalog.connectors.get(&source.connector) {
                source.settings = entry.schema.redact(&source.settings);
            }
        }
        for sink in &mut parsed.sinks {
            if let Some(entry) = catalog.sinks.get(&sink.kind)
                && let Value::Object(settings) =
                    entry.schema.redact(&Value::Object(sink.settings.clone()))
            {
                sink.settings = settings;
            }
        }
        let mut redacted = serde_json::to_value(parsed).unwrap_or_else(|_| spec.clone());
        mask_sealed(&mut redacted);
        redacted
    }
}
