//! Settings validation against a component's JSON Schema, and redaction of its secret fields.
//!
//! Schemas are compiled once per component; remote `$ref`s are never fetched (the validator is
//! built without its network features).

use serde_json::Value;

/// A compiled settings schema.
pub struct SettingsSchema {
    raw: Value,
    validator: jsonschema::Validator,
}

impl SettingsSchema {
    /// Compiles `raw`; a component shipping a broken schema is a programming error caught by tests.
    pub fn compile(raw: Value) -> Result<Self, String> {
        let validator = jsonschema::validator_for(&raw).map_err(|error| error.to_string())?;
        Ok(Self { raw, validator })
    }

    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// Every violation as `"/path: message"`, at most 10, or `Ok` when the settings fit.
    pub fn validate(&self, settings: &Value) -> Result<(), Vec<String>> {
        let errors: Vec<String> = self
            .validator
            .iter_errors(settings)
            .take(10)
            .map(|error| {
                let path = error.instance_path().to_string();
                let path = if path.is_empty() {
                    "/".to_owned()
                } else {
                    path
                };
                format!("{path}: {error}")
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// A copy of `settings` with every `writeOnly` property replaced by `"********"`.
    pub fn redact(&self, settings: &Value) -> Value {
        redact_with(&self.raw, settings)
    }
}

fn redact_with(schema: &Value, value: &Value) -> Value {
    match (schema.get("properties"), value) {
        (Some(Value::Object(properties)), Value::Object(fields)) => {
            let mut out = serde_json::Map::with_capacity(fields.len());
            for (key, field) in fields {
                let redacted = match properties.get(key) {
                    Some(sub) if sub.get("writeOnly") == Some(&Value::Bool(true)) => {
                        Value::String("********".into())
                    }
                    Some(sub) => redact_with(sub, field),
                    None => field.clone(),
                };
                out.insert(key.clone(), redacted);
            }
            Value::Object(out)
        }
        _ => value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reports_paths_of_violations() {
        let schema = SettingsSchema::compile(json!({
            "type": "object", "additionalProperties": false,
            "properties": {"url": {"type": "string"}}, "required": ["url"]
        }))
        .expect("valid schema");
        assert!(schema.validate(&json!({"url": "x"})).is_ok());
        let errors = schema
            .validate(&json!({"url": 3, "extra": 1}))
            .expect_err("invalid");
        assert!(errors.iter().any(|e| e.starts_with("/url")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("extra")), "{errors:?}");
    }

    #[test]
    fn redacts_write_only_fields_at_any_depth() {
        let schema = SettingsSchema::compile(json!({
            "type": "object",
            "properties": {
                "auth": {"type": "object", "properties": {"token": {"type": "string", "writeOnly": true}}},
                "url": {"type": "string"}
            }
        }))
        .expect("valid schema");
        let redacted = schema.redact(&json!({"auth": {"token": "s3cret"}, "url": "u"}));
        assert_eq!(redacted, json!({"auth": {"token": "********"}, "url": "u"}));
    }
}
