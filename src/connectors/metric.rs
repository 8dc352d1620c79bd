//! The record shape of the metric connectors (`stackoverflow`, `reddit`): one
//! `{"metric": <name>, "value": <integer>, …}` record per source, which the databox sink and the
//! `/api/v1/integration` route read.
//!
//! Invariant: a metric record carries no `date`; the sink stamps one timestamp per batch (the
//! seed stamped each metric separately).

use serde_json::{Map, Value, json};

/// Longest metric name accepted in settings.
const MAX_METRIC_CHARS: usize = 128;

/// JSON Schema of the optional `metric` setting; `default` is shown to the reader.
pub fn metric_property(default: &str) -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_METRIC_CHARS,
        "description": format!("The metric name the value is reported under (default {default}).")
    })
}

/// A metric record: `metric` and `value` first, then the source's own fields.
pub fn record(
    metric: &str,
    value: u64,
    extra: impl IntoIterator<Item = (&'static str, Value)>,
) -> Value {
    let mut fields = Map::new();
    fields.insert("metric".into(), Value::from(metric));
    fields.insert("value".into(), Value::from(value));
    for (name, field) in extra {
        fields.insert(name.into(), field);
    }
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_name_value_and_extras_but_no_date() {
        let shown = record("rust_question_count", 7, [("tag", json!("rust"))]);
        assert_eq!(
            shown,
            json!({"metric": "rust_question_count", "value": 7, "tag": "rust"})
        );
        assert!(shown.get("date").is_none());
    }
}
