//! Checks a pipeline definition before anything is stored, and brings the `[[pipeline]]`
//! entries of `gleaner.toml` into the store at start.

use uuid::Uuid;

use super::model::{Pipeline, PipelineState};
use super::spec::{MAX_STAGES, MAX_WORKERS, PipelineSpec, ProcessorKind, RateWindow, SinkKind};
use super::stage::Handler;
use crate::clock::Millis;
use crate::connectors::ConnectorRegistry;
use crate::schedule::{Origin, is_valid_name};
use crate::secrets::Sealer;
use crate::store::SharedStore;

/// Most messages one stage's queue may be configured to hold.
pub const MAX_QUEUE_CAPACITY: u32 = 100_000;
/// Most attempts per message and stage.
pub const MAX_ATTEMPTS: u32 = 100;

/// Why a definition was refused; the message names the part at fault.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

fn windows(what: &str, windows: &[RateWindow]) -> Result<(), SpecError> {
    if windows.len() > 8 {
        return Err(SpecError(format!("{what}: at most 8 rate limit windows")));
    }
    for window in windows {
        window
            .validate()
            .map_err(|error| SpecError(format!("{what}: {error}")))?;
    }
    Ok(())
}

/// Checks everything that can be checked without running the pipeline.
pub fn validate(spec: &PipelineSpec, connectors: &ConnectorRegistry) -> Result<(), SpecError> {
    if !is_valid_name(&spec.name) {
        return Err(SpecError(
            "name must be 1 to 100 characters of letters, digits, '-', '_' or '.'".into(),
        ));
    }
    connectors
        .validate(&spec.source.connector, &spec.source.settings)
        .map_err(|error| SpecError(format!("source: {error}")))?;
    windows("source", &spec.source.rate_limit)?;
    if spec.sinks.is_empty() || spec.sinks.len() > MAX_STAGES {
        return Err(SpecError(format!("sinks: 1 to {MAX_STAGES} are needed")));
    }
    if spec.processors.len() > MAX_STAGES {
        return Err(SpecError(format!(
            "processors: at most {MAX_STAGES} are allowed"
        )));
    }
    if !(1..=MAX_QUEUE_CAPACITY).contains(&spec.queue_capacity) {
        return Err(SpecError(format!(
            "queue_capacity must be between 1 and {MAX_QUEUE_CAPACITY}"
        )));
    }
    if !(1..=MAX_ATTEMPTS).contains(&spec.retry.max_attempts) {
        return Err(SpecError(format!(
            "retry.max_attempts must be between 1 and {MAX_ATTEMPTS}"
        )));
    }
    let stages = spec
        .processors
        .iter()
        .map(|stage| (&stage.options, Handler::processor(&stage.kind)))
        .chain(spec.sinks.iter().map(|stage| {
            (
                &stage.options,
                Handler::sink(&stage.kind, std::path::PathBuf::new()),
            )
        }));
    for (position, (options, handler)) in stages.enumerate() {
        let index = position as u32 + 1;
        let what = format!(
            "stage {index} ({})",
            super::runtime::stage_name(spec, index)
        );
        handler.map_err(|error| SpecError(format!("{what}: {error}")))?;
        if !(1..=MAX_WORKERS).contains(&options.workers) {
            return Err(SpecError(format!(
                "{what}: workers must be between 1 and {MAX_WORKERS}"
            )));
        }
        if options.timeout.is_zero() || options.timeout.as_secs() > 3600 {
            return Err(SpecError(format!(
                "{what}: timeout must be between 1ms and 1h"
            )));
        }
        if options
            .max_attempts
            .is_some_and(|attempts| !(1..=MAX_ATTEMPTS).contains(&attempts))
        {
            return Err(SpecError(format!(
                "{what}: max_attempts must be between 1 and {MAX_ATTEMPTS}"
            )));
        }
        windows(&what, &options.rate_limit)?;
    }
    Ok(())
}

/// `spec` as it is stored: the source's `writeOnly` settings, every HTTP stage's header values
/// and every SQL stage's URL sealed (values already sealed are kept). Call after [`validate`],
/// which needs them in clear.
pub fn seal_secrets(
    spec: &PipelineSpec,
    connectors: &ConnectorRegistry,
    sealer: &Sealer,
) -> PipelineSpec {
    let mut spec = spec.clone();
    if let Some(entry) = connectors.get(&spec.source.connector) {
        sealer.seal_secrets(entry.schema.raw(), &mut spec.source.settings);
    }
    let seal_headers = |headers: &mut std::collections::BTreeMap<String, String>| {
        for value in headers.values_mut() {
            *value = sealer.seal_once(value);
        }
    };
    for stage in &mut spec.processors {
        if let ProcessorKind::Http(call) = &mut stage.kind {
            seal_headers(&mut call.headers);
        }
    }
    for stage in &mut spec.sinks {
        match &mut stage.kind {
            SinkKind::Http(call) => seal_headers(&mut call.headers),
            SinkKind::Sql(sql) => sql.url = sealer.seal_once(&sql.url),
        }
    }
    spec
}

/// Error of [`sync_config`].
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("pipeline {name:?}: {error}")]
    Spec { name: String, error: SpecError },
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// Stores the file's pipelines (keeping each one's checkpoint, queues and state); one removed
/// from the file is stopped, not deleted, so its queued messages are not lost.
pub async fn sync_config(
    store: &SharedStore,
    connectors: &ConnectorRegistry,
    sealer: &Sealer,
    specs: &[PipelineSpec],
    now: Millis,
) -> Result<(), SyncError> {
    let stored = store.list_pipelines().await?;
    for spec in specs {
        validate(spec, connectors).map_err(|error| SyncError::Spec {
            name: spec.name.clone(),
            error,
        })?;
        // Stored secrets are sealed; one that no longer opens counts as a change.
        let unchanged = |existing: &Pipeline| {
            sealer
                .unseal_typed(&existing.spec)
                .is_ok_and(|opened| opened == *spec)
        };
        match stored.iter().find(|p| p.spec.name == spec.name) {
            Some(existing) if existing.origin == Origin::Config && unchanged(existing) => {}
            Some(existing) => {
                store
                    .replace_pipeline(&Pipeline {
                        origin: Origin::Config,
                        spec: seal_secrets(spec, connectors, sealer),
                        updated_at: now.max(existing.updated_at + 1),
                        ..existing.clone()
                    })
                    .await?;
            }
            None => {
                store
                    .create_pipeline(&Pipeline {
                        id: Uuid::now_v7(),
                        origin: Origin::Config,
                        spec: seal_secrets(spec, connectors, sealer),
                        state: PipelineState::Running,
                        checkpoint: None,
                        created_at: now,
                        updated_at: now,
                    })
                    .await?;
            }
        }
    }
    for old in stored.iter().filter(|p| p.origin == Origin::Config) {
        if !specs.iter().any(|spec| spec.name == old.spec.name)
            && old.state != PipelineState::Stopped
        {
            tracing::warn!(pipeline = %old.spec.name,
                "pipeline removed from the configuration file; stopped, its queued messages kept");
            store
                .set_pipeline_state(old.id, PipelineState::Stopped, now.max(old.updated_at + 1))
                .await?;
        }
    }
    Ok(())
}
