//! Platforms: named, ready-to-run collections — a connector with default settings, processors
//! and sinks — defined in `gleaner.toml` (`[[platform]]`) or over `POST /v1/platforms`. The
//! catalog lists every connector and every platform with its settings (type, default,
//! description, secret, required) and JSON Schema; running one with settings creates an
//! ordinary job, validated like any other.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::connectors::ConnectorRegistry;
use crate::job::spec::{Catalog, JobSpec, RetrySpec, SinkSpec, SourceSpec};
use crate::processors::ProcessorSpec;

/// A platform as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformSpec {
    /// Its id (1–100 letters, digits, `-`, `_`, `.`).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The connector it runs.
    pub connector: String,
    /// Defaults for the connector's settings; a run's settings override them key by key.
    #[serde(default = "empty_object")]
    pub settings: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processors: Vec<ProcessorSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sinks: Vec<SinkSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
}

fn empty_object() -> Value {
    json!({})
}

/// Why a platform definition or run was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PlatformError(pub String);

impl PlatformSpec {
    /// Checks what can be checked without a run's settings.
    pub fn validate(&self, connectors: &ConnectorRegistry) -> Result<(), PlatformError> {
        if !crate::schedule::is_valid_name(&self.name) {
            return Err(PlatformError(
                "name must be 1 to 100 characters of letters, digits, '-', '_' or '.'".into(),
            ));
        }
        if connectors.get(&self.connector).is_none() {
            return Err(PlatformError(format!(
                "unknown connector {:?}; see GET /v1/connectors",
                self.connector
            )));
        }
        if !self.settings.is_object() {
            return Err(PlatformError("settings must be an object".into()));
        }
        crate::processors::ProcessorChain::compile(&self.processors)
            .map_err(|error| PlatformError(format!("processors: {error}")))?;
        Ok(())
    }

    /// The platform as stored: the `writeOnly` fields of its default settings and of its
    /// sinks sealed (a run's job is planned, which opens them).
    pub fn sealed(&self, catalog: &Catalog<'_>) -> PlatformSpec {
        let mut spec = self.clone();
        if let Some(entry) = catalog.connectors.get(&spec.connector) {
            catalog
                .sealer
                .seal_secrets(entry.schema.raw(), &mut spec.settings);
        }
        for sink in &mut spec.sinks {
            sink.seal_secrets(catalog);
        }
        spec
    }

    /// The job a run with `settings` creates: the platform's defaults overridden key by key.
    pub fn job(&self, settings: &Value) -> Result<JobSpec, PlatformError> {
        let Value::Object(given) = settings else {
            return Err(PlatformError("settings must be an object".into()));
        };
        let mut merged = match &self.settings {
            Value::Object(defaults) => defaults.clone(),
            _ => Map::new(),
        };
        merged.extend(given.clone());
        Ok(JobSpec {
            sources: vec![SourceSpec {
                connector: self.connector.clone(),
                name: Some(self.name.clone()),
                settings: Value::Object(merged),
            }],
            processors: self.processors.clone(),
            sinks: self.sinks.clone(),
            retry: self.retry,
            ..JobSpec::default()
        })
    }
}

/// One setting as the catalog lists it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SettingView {
    pub name: String,
    /// The JSON Schema type (`string`, `integer`, `object`, …), with its `format` if any
    /// (`string/date`).
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = Option<Object>)]
    pub default: Option<Value>,
    pub description: Option<String>,
    /// Write-only: never shown back.
    pub secret: bool,
    pub required: bool,
}

/// The settings of `schema` (a connector's), with `defaults` applied over its own defaults; a
/// setting with a default is not required.
pub fn settings_of(schema: &Value, defaults: &Value) -> Vec<SettingView> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, property)| {
            let default = defaults
                .get(name)
                .cloned()
                .or_else(|| property.get("default").cloned());
            let kind = match (property.get("type"), property.get("format")) {
                (Some(Value::String(kind)), Some(Value::String(format))) => {
                    format!("{kind}/{format}")
                }
                (Some(Value::String(kind)), _) => kind.clone(),
                (Some(Value::Array(kinds)), _) => kinds
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("|"),
                _ => "any".into(),
            };
            SettingView {
                name: name.clone(),
                kind,
                required: required.contains(&name.as_str()) && default.is_none(),
                default,
                description: property["description"].as_str().map(str::to_owned),
                secret: property.get("writeOnly") == Some(&Value::Bool(true)),
            }
        })
        .collect()
}

/// `schema` with the platform's defaults written in and the settings they provide no longer
/// required, so a client can validate a run's settings against it.
pub fn schema_with_defaults(schema: &Value, defaults: &Value) -> Value {
    let mut schema = schema.clone();
    let Some(defaults) = defaults.as_object() else {
        return schema;
    };
    if let Some(properties) = schema["properties"].as_object_mut() {
        for (name, value) in defaults {
            if let Some(Value::Object(property)) = properties.get_mut(name) {
                property.insert("default".into(), value.clone());
            }
        }
    }
    if let Some(required) = schema["required"].as_array_mut() {
        required.retain(|name| {
            name.as_str()
                .is_none_or(|name| !defaults.contains_key(name))
        });
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_settings_carry_types_defaults_secrets_and_requirement() {
        let schema = json!({
            "type": "object",
            "required": ["username", "password", "start_date"],
            "properties": {
                "username": {"type": "string", "description": "Login name"},
                "password": {"type": "string", "writeOnly": true},
                "start_date": {"type": "string", "format": "date"},
                "page_size": {"type": "integer", "default": 1000},
            }
        });
        let settings = settings_of(&schema, &json!({"username": "reports"}));
        let find = |name: &str| {
            settings
                .iter()
                .find(|s| s.name == name)
                .expect(name)
                .clone()
        };
        assert_eq!(find("username").default, Some(json!("reports")));
        assert!(
            !find("username").required,
            "a platform default satisfies it"
        );
        assert!(find("password").secret && find("password").required);
        assert_eq!(find("start_date").kind, "string/date");
        assert_eq!(find("page_size").default, Some(json!(1000)));
        let with = schema_with_defaults(&schema, &json!({"username": "reports"}));
        assert_eq!(with["required"], json!(["password", "start_date"]));
        assert_eq!(with["properties"]["username"]["default"], "reports");
    }

    #[test]
    fn a_run_overrides_defaults_key_by_key() {
        let platform: PlatformSpec = serde_json::from_value(json!({
            "name": "p1", "connector": "noop", "settings": {"a": 1, "b": 2},
            "sinks": [{"type": "stdout"}]
        }))
        .expect("platform");
        let job = platform.job(&json!({"b": 3})).expect("job");
        assert_eq!(job.sources[0].settings, json!({"a": 1, "b": 3}));
        assert_eq!(job.sources[0].name.as_deref(), Some("p1"));
        assert!(platform.job(&json!([1])).is_err());
    }
}

/// A stored platform.
#[derive(Debug, Clone)]
pub struct Platform {
    pub spec: PlatformSpec,
    /// `api`, or `config` for `[[platform]]` entries (changed in the file).
    pub origin: crate::schedule::Origin,
    pub created_at: crate::clock::Millis,
    pub updated_at: crate::clock::Millis,
}

/// Stores the file's platforms (replacing their stored copies) and removes those the file no
/// longer has.
pub async fn sync_config(
    store: &crate::store::SharedStore,
    catalog: &Catalog<'_>,
    specs: &[PlatformSpec],
    now: crate::clock::Millis,
) -> Result<(), crate::server::Error> {
    let stored = store.list_platforms().await?;
    for spec in specs {
        spec.validate(catalog.connectors).map_err(|error| {
            crate::server::Error::Platform(format!("platform {:?}: {error}", spec.name))
        })?;
        let created_at = stored
            .iter()
            .find(|p| p.spec.name == spec.name)
            .map_or(now, |p| p.created_at);
        store
            .put_platform(&Platform {
                spec: spec.sealed(catalog),
                origin: crate::schedule::Origin::Config,
                created_at,
                updated_at: now,
            })
            .await?;
    }
    for old in stored
        .iter()
        .filter(|p| p.origin == crate::schedule::Origin::Config)
    {
        if !specs.iter().any(|spec| spec.name == old.spec.name) {
            store.delete_platform(&old.spec.name).await?;
        }
    }
    Ok(())
}
