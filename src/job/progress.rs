//! Named progress entries a running step reports (`login`, `pull`, `processing`, `storage`,
//! `warnings`, …), kept with the step and shown in `GET /v1/jobs/{id}`.
//!
//! Connectors and sinks call [`report`] or [`warn`] anywhere inside their work; the engine runs
//! that work inside [`Progress::scope`], so no trait signature carries a reporter, and a call
//! outside a scope (a one-shot `gleaner run`, a unit test) is simply ignored.

use std::future::Future;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

/// Most warnings kept per step; later ones are counted, not stored.
const MAX_WARNINGS: usize = 50;

tokio::task_local! {
    static CURRENT: Progress;
}

/// One step's progress entries; cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Progress {
    entries: Arc<Mutex<Map<String, Value>>>,
}

impl Progress {
    /// Starts from what the step stored before (an earlier attempt's entries).
    pub fn resume(stored: Option<&Value>) -> Self {
        let entries = match stored {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        };
        Self {
            entries: Arc::new(Mutex::new(entries)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map<String, Value>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn set(&self, key: &str, value: impl Into<Value>) {
        self.lock().insert(key.to_owned(), value.into());
    }

    pub fn warn(&self, message: impl Into<String>) {
        let mut entries = self.lock();
        let warnings = entries
            .entry("warnings")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = warnings
            && list.len() < MAX_WARNINGS
        {
            list.push(Value::String(message.into()));
        }
    }

    /// The entries as one JSON object.
    pub fn snapshot(&self) -> Value {
        Value::Object(self.lock().clone())
    }

    /// Runs `work` with this as the current step's progress.
    pub async fn scope<F: Future>(&self, work: F) -> F::Output {
        CURRENT.scope(self.clone(), work).await
    }
}

/// Sets the entry `key` of the running step's progress (ignored outside a step).
pub fn report(key: &str, value: impl Into<Value>) {
    let _ = CURRENT.try_with(|progress| progress.set(key, value));
}

/// Adds a warning to the running step's progress (ignored outside a step).
pub fn warn(message: impl Into<String>) {
    let _ = CURRENT.try_with(|progress| progress.warn(message));
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn reports_land_in_the_scope_that_runs_them_and_nowhere_else() {
        report("ignored", "outside any step");
        let progress = Progress::resume(Some(&json!({"login": "ok"})));
        progress
            .scope(async {
                report("pull", json!({"pages": 2}));
                warn("date 2026-11-03 has no report");
            })
            .await;
        assert_eq!(
            progress.snapshot(),
            json!({"login": "ok", "pull": {"pages": 2}, "warnings": ["date 2026-11-03 has no report"]})
        );
        let other = Progress::default();
        other.scope(async { report("x", 1) }).await;
        assert_eq!(progress.snapshot().get("x"), None);
    }
}
