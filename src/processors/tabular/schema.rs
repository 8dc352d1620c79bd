//! JSON Schemas of the tabular processors.

use serde_json::{Value, json};

use super::MAX_PATTERN_BYTES;

/// JSON Schemas of the tabular processors, for [`crate::processors::processors_schema`].
pub(in crate::processors) fn schemas() -> Vec<Value> {
    let column = json!({"type": "string", "minLength": 1});
    let columns = json!({"type": "array", "items": column});
    let table = json!({"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,100}$",
                       "description": "A lookup table filled by a job's `lookup` sink."});
    let pattern = json!({"type": "string", "minLength": 1, "maxLength": MAX_PATTERN_BYTES,
                         "description": "Regular expression (Rust `regex` syntax)."});
    let object = |title: &str, description: &str, required: &[&str], properties: Value| {
        let mut properties = properties;
        properties["type"] = json!({"const": title});
        let mut required = required.to_vec();
        required.insert(0, "type");
        json!({"type": "object", "title": title, "description": description,
               "additionalProperties": false, "required": required, "properties": properties})
    };
    vec![
        object(
            "rename",
            "Renames columns (source → target); missing sources are skipped.",
            &["columns"],
            json!({"columns": {"type": "object", "minProperties": 1, "additionalProperties": column}}),
        ),
        object(
            "set",
            "Sets columns to constants, overwriting.",
            &["values"],
            json!({"values": {"type": "object", "minProperties": 1}}),
        ),
        object(
            "multiply",
            "Multiplies (or with `divide`, divides) a numeric column by `by` or by another column. \
             Numeric strings are parsed; a non-numeric value fails the record; missing or null is kept.",
            &["column"],
            json!({"column": column, "by": {"type": "number"}, "by_column": column,
                   "divide": {"type": "boolean", "default": false}}),
        ),
        object(
            "map",
            "Maps a column's value through inline `values` or a lookup `table`. Not found: `default` \
             if given, else the value is kept. `lowercase` matches keys lowercased and lowercases the result.",
            &["column"],
            json!({"column": column, "values": {"type": "object"}, "table": table,
                   "lowercase": {"type": "boolean", "default": false}, "default": {}, "into": column}),
        ),
        object(
            "extract",
            "Replaces a column (or writes `into`) with `format` expanded from the pattern's capture \
             groups (`$1`, `${1}`, `$name`; default `$1`). No match: `fallback` if given, else unchanged.",
            &["column", "pattern"],
            json!({"column": column, "pattern": pattern, "format": {"type": "string"},
                   "fallback": {}, "into": column}),
        ),
        object(
            "drop_rows",
            "Drops the rows where the condition holds.",
            &["where"],
            json!({"where": {
                "type": "object", "additionalProperties": false, "required": ["column"],
                "minProperties": 2, "maxProperties": 2,
                "properties": {"column": column, "equals": {}, "not_equals": {},
                               "in": {"type": "array"}, "matches": pattern,
                               "missing": {"type": "boolean"}}}}),
        ),
        object(
            "group_by",
            "One row per combination of `keys` within each page of records: `sum` columns summed, \
             `first`/`last` the first/last non-null value, every other column from the group's first row.",
            &["keys"],
            json!({"keys": {"type": "array", "minItems": 1, "items": column}, "sum": columns,
                   "first": columns, "last": columns, "count_as": column}),
        ),
    ]
}
