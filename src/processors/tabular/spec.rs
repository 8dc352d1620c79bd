//! The tabular processors as jobs write them; each is one variant of `ProcessorSpec`, tagged by
//! `type`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `{"type": "rename", "columns": {"Searches": "impressions"}}`: moves each source column to its
/// new name; missing sources are skipped. All renames happen at once, so swaps work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameSpec {
    pub columns: BTreeMap<String, String>,
}

/// `{"type": "set", "values": {"revenue_type": "search"}}`: writes constants, overwriting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSpec {
    pub values: Map<String, Value>,
}

/// `{"type": "multiply", "column": "gross", "by": 0.95}` or `"by_column": "rate"`, optionally
/// `"divide": true`. Numeric strings are parsed; the result is a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiplySpec {
    pub column: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_column: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub divide: bool,
}

/// `{"type": "map", "column": "country", "values": {"UK": "GB"}}` or `"table": "country"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapSpec {
    pub column: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Lowercase the value before the lookup (keys are matched lowercased) and the result.
    #[serde(default, skip_serializing_if = "is_false")]
    pub lowercase: bool,
    /// The value when the key is not found; otherwise the value is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// The column written; by default `column` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub into: Option<String>,
}

/// `{"type": "extract", "column": "channel", "pattern": "^.*(\\d{4})(\\d{4})_\\d{2}$",
/// "format": "$1-$2", "fallback": "unknown"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractSpec {
    pub column: String,
    pub pattern: String,
    /// Capture groups as `$1`, `${1}`, `$name` or `${name}` (`$$` is a dollar); default `$1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The value when the pattern does not match (or the column is missing); otherwise the row
    /// is left as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub into: Option<String>,
}

/// `{"type": "drop_rows", "where": {"column": "channel", "equals": "ORGANIC"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropRowsSpec {
    #[serde(rename = "where")]
    pub condition: Condition,
}

/// A test on one column; exactly one operator is given. Scalars compare by their text, so
/// `"5"` equals `5`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub column: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    /// True for rows where the column is missing, too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_equals: Option<Value>,
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
    /// `true`: the column is missing or null; `false`: it has a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<bool>,
}

/// `{"type": "group_by", "keys": ["date"], "sum": ["gross"]}`: one row per key combination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupBySpec {
    pub keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sum: Vec<String>,
    /// The first non-null value of the group (other columns come from the group's first row).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first: Vec<String>,
    /// The last non-null value of the group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last: Vec<String>,
    /// A column receiving the number of rows in the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_as: Option<String>,
}

fn is_false(value: &bool) -> bool {
    !*value
}
