//! The sink catalog: built-in sinks by type, each with its compiled settings schema.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::{SharedSink, SinkValidation};
use crate::config::SinksConfig;
use crate::connectors::registry::ValidationError;
use crate::connectors::schema::SettingsSchema;
use crate::store::SharedStore;

/// A registered sink with its compiled schema.
pub struct Registered {
    pub sink: SharedSink,
    pub schema: SettingsSchema,
}

/// Every sink this binary can deliver to, by type.
#[derive(Clone)]
pub struct SinkRegistry {
    entries: Arc<BTreeMap<&'static str, Registered>>,
}

impl SinkRegistry {
    /// The built-in sinks, with the operator's settings of each.
    pub fn builtin(config: &SinksConfig) -> Self {
        Self::with(vec![
            Arc::new(super::FileSink) as SharedSink,
            Arc::new(super::StdoutSink),
            Arc::new(super::CallbackSink::new(config.callback.clone())),
            Arc::new(super::DataboxSink::new(config.databox.clone())),
            Arc::new(super::sql::SqlJobSink::new()),
        ])
    }

    /// Adds the sinks that write to Gleaner's own store (`lookup`).
    pub fn with_store(self, store: SharedStore) -> Self {
        let mut sinks: Vec<SharedSink> = self
            .entries
            .values()
            .map(|entry| entry.sink.clone())
            .collect();
        sinks.push(Arc::new(super::LookupSink::new(store)));
        Self::with(sinks)
    }

    pub fn with(sinks: Vec<SharedSink>) -> Self {
        let entries = sinks
            .into_iter()
            .map(|sink| {
                let schema =
                    SettingsSchema::compile(sink.settings_schema()).unwrap_or_else(|error| {
                        panic!("sink {} ships an invalid schema: {error}", sink.kind())
                    });
                (sink.kind(), Registered { sink, schema })
            })
            .collect();
        Self {
            entries: Arc::new(entries),
        }
    }

    pub fn get(&self, kind: &str) -> Option<&Registered> {
        self.entries.get(kind)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Registered> {
        self.entries.values()
    }

    pub fn validate(
        &self,
        ctx: &SinkValidation,
        kind: &str,
        settings: &Value,
    ) -> Result<(), ValidationError> {
        let entry = self
            .get(kind)
            .ok_or_else(|| ValidationError::UnknownSink(kind.to_owned()))?;
        entry
            .schema
            .validate(settings)
            .map_err(ValidationError::Settings)?;
        entry
            .sink
            .validate(ctx, settings)
            .map_err(|error| ValidationError::Settings(vec![error.to_string()]))
    }
}
