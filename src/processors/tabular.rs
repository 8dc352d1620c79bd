//! Tabular processors: records as rows (JSON objects) and their columns. `rename`, `set`,
//! `multiply`, `map`, `extract` and `drop_rows` see one row at a time; `group_by` sees the
//! whole page.
//!
//! Invariant: a step fails a row it cannot process as asked (a non-numeric value to multiply, a
//! row that is not an object) with a message naming the column; it never guesses.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Number, Value};

use super::Lookups;

mod group_by;
mod schema;
mod spec;

pub(super) use group_by::GroupBy;
pub(super) use schema::schemas;
pub use spec::{
    Condition, DropRowsSpec, ExtractSpec, GroupBySpec, MapSpec, MultiplySpec, RenameSpec, SetSpec,
};

/// Longest regex pattern accepted, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1_000;

/// Most bytes a compiled regex may take; bigger ones are refused at submission.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A compiled step that sees one row at a time; `None` drops the row.
#[derive(Debug, Clone)]
pub(super) enum RowStep {
    Rename(Vec<(String, String)>),
    Set(Map<String, Value>),
    Multiply(Multiply),
    Map(Mapping),
    Extract(Extract),
    DropRows(Test),
}

#[derive(Debug, Clone)]
pub(super) struct Multiply {
    column: String,
    factor: Factor,
    divide: bool,
}

#[derive(Debug, Clone)]
enum Factor {
    Constant(f64),
    Column(String),
}

#[derive(Debug, Clone)]
pub(super) struct Mapping {
    column: String,
    into: String,
    source: MapSource,
    lowercase: bool,
    default: Option<Value>,
}

#[derive(Debug, Clone)]
enum MapSource {
    /// Keys already lowercased when `lowercase` is set.
    Inline(HashMap<String, Value>),
    Table(String),
}

#[derive(Debug, Clone)]
pub(super) struct Extract {
    column: String,
    into: String,
    pattern: Regex,
    format: String,
    fallback: Option<Value>,
}

#[derive(Debug, Clone)]
pub(super) struct Test {
    column: String,
    operator: Operator,
}

#[derive(Debug, Clone)]
enum Operator {
    Equals(Value),
    NotEquals(Value),
    In(Vec<Value>),
    Matches(Regex),
    Missing(bool),
}

/// A `map` step's lookup, resolved once per page.
pub(super) enum Resolved<'a> {
    None,
    Inline(&'a HashMap<String, Value>),
    Table(Cow<'a, HashMap<String, String>>),
}

impl Resolved<'_> {
    fn get(&self, key: &str) -> Option<Value> {
        match self {
            Resolved::None => None,
            Resolved::Inline(values) => values.get(key).cloned(),
            Resolved::Table(entries) => entries.get(key).map(|value| Value::String(value.clone())),
        }
    }
}

fn require_column(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    Ok(())
}

/// Lookup table names: 1–100 of letters, digits, `_`, `-` and `.`.
pub fn check_table_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "table name {name:?} must be 1-100 letters, digits, `_`, `-` or `.`"
        ))
    }
}

fn compile_regex(pattern: &str) -> Result<Regex, String> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(format!("pattern is longer than {MAX_PATTERN_BYTES} bytes"));
    }
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|error| format!("invalid pattern: {error}"))
}

/// Checks that every group `format` names exists in `pattern`, as `Captures::expand` reads
/// them (an unknown group would silently expand to nothing).
fn check_format(format: &str, pattern: &Regex) -> Result<(), String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut rest = format;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            rest = after;
            continue;
        }
        let (name, after) = if let Some(braced) = rest.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => return Err("format has a `${` without its `}`".into()),
            }
        } else {
            let end = rest.find(|c: char| !is_name(c)).unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        if name.is_empty() {
            return Err("format has a `$` without a group; write `$$` for a dollar".into());
        }
        let exists = match name.parse::<usize>() {
            Ok(index) => index < pattern.captures_len(),
            Err(_) => pattern.capture_names().flatten().any(|group| group == name),
        };
        if !exists {
            return Err(format!(
                "format names group {name:?}, which the pattern does not have"
            ));
        }
        rest = after;
    }
    Ok(())
}

impl RowStep {
    pub(super) fn compile_rename(spec: &RenameSpec) -> Result<Self, String> {
        if spec.columns.is_empty() {
            return Err("columns must name at least one column".into());
        }
        let mut targets = HashSet::new();
        for (from, to) in &spec.columns {
            require_column("a source column", from)?;
            require_column("a target column", to)?;
            if !targets.insert(to.as_str()) {
                return Err(format!("two columns are renamed to {to:?}"));
            }
        }
        let pairs = spec.columns.iter().map(|(a, b)| (a.clone(), b.clone()));
        Ok(RowStep::Rename(pairs.collect()))
    }

    pub(super) fn compile_set(spec: &SetSpec) -> Result<Self, String> {
        if spec.values.is_empty() {
            return Err("values must set at least one column".into());
        }
        for column in spec.values.keys() {
            require_column("a column", column)?;
        }
        Ok(RowStep::Set(spec.values.clone()))
    }

    pub(super) fn compile_multiply(spec: &MultiplySpec) -> Result<Self, String> {
        require_column("column", &spec.column)?;
        let factor = match (spec.by, &spec.by_column) {
            (Some(by), None) if by.is_finite() => Factor::Constant(by),
            (Some(_), None) => return Err("by must be a finite number".into()),
            (None, Some(column)) => {
                require_column("by_column", column)?;
                Factor::Column(column.clone())
            }
            _ => return Err("give exactly one of by and by_column".into()),
        };
        if spec.divide && matches!(factor, Factor::Constant(by) if by == 0.0) {
            return Err("cannot divide by 0".into());
        }
        Ok(RowStep::Multiply(Multiply {
            column: spec.column.clone(),
            factor,
            divide: spec.divide,
        }))
    }

    pub(super) fn compile_map(spec: &MapSpec) -> Result<Self, String> {
        require_column("column", &spec.column)?;
        let source = match (&spec.values, &spec.table) {
            (Some(values), None) => {
                let key = |key: &String| match spec.lowercase {
                    true => key.to_lowercase(),
                    false => key.clone(),
                };
                let inline = values.iter().map(|(k, v)| (key(k), v.clone()));
                MapSource::Inline(inline.collect())
            }
            (None, Some(table)) => {
                check_table_name(table)?;
                MapSource::Table(table.clone())
            }
            _ => return Err("give exactly one of values and table".into()),
        };
        let into = spec.into.clone().unwrap_or_else(|| spec.column.clone());
        require_column("into", &into)?;
        Ok(RowStep::Map(Mapping {
            column: spec.column.clone(),
            into,
            source,
            lowercase: spec.lowercase,
            default: spec.default.clone(),
        }))
    }

    pub(super) fn compile_extract(spec: &ExtractSpec) -> Result<Self, String> {
        require_column("column", &spec.column)?;
        let pattern = compile_regex(&spec.pattern)?;
        let format = spec.format.clone().unwrap_or_else(|| "$1".into());
        check_format(&format, &pattern)?;
        let into = spec.into.clone().unwrap_or_else(|| spec.column.clone());
        require_column("into", &into)?;
        Ok(RowStep::Extract(Extract {
            column: spec.column.clone(),
            into,
            pattern,
            format,
            fallback: spec.fallback.clone(),
        }))
    }

    pub(super) fn compile_drop_rows(spec: &DropRowsSpec) -> Result<Self, String> {
        let condition = &spec.condition;
        require_column("where.column", &condition.column)?;
        let mut operators = Vec::new();
        if let Some(value) = &condition.equals {
            operators.push(Operator::Equals(value.clone()));
        }
        if let Some(value) = &condition.not_equals {
            operators.push(Operator::NotEquals(value.clone()));
        }
        if let Some(values) = &condition.one_of {
            operators.push(Operator::In(values.clone()));
        }
        if let Some(pattern) = &condition.matches {
            operators.push(Operator::Matches(compile_regex(pattern)?));
        }
        if let Some(missing) = condition.missing {
            operators.push(Operator::Missing(missing));
        }
        let Some(operator) = operators.pop().filter(|_| operators.is_empty()) else {
            return Err(
                "where needs exactly one of equals, not_equals, in, matches and missing".into(),
            );
        };
        Ok(RowStep::DropRows(Test {
            column: condition.column.clone(),
            operator,
        }))
    }

    /// The `type` tag, for messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            RowStep::Rename(_) => "rename",
            RowStep::Set(_) => "set",
            RowStep::Multiply(_) => "multiply",
            RowStep::Map(_) => "map",
            RowStep::Extract(_) => "extract",
            RowStep::DropRows(_) => "drop_rows",
        }
    }

    /// The lookup table this step reads, if any.
    pub(super) fn table(&self) -> Option<&str> {
        match self {
            RowStep::Map(Mapping {
                source: MapSource::Table(name),
                ..
            }) => Some(name),
            _ => None,
        }
    }

    /// Resolves the step's lookup table, once per page.
    pub(super) fn resolve<'a>(&'a self, lookups: &'a Lookups) -> Result<Resolved<'a>, String> {
        let RowStep::Map(mapping) = self else {
            return Ok(Resolved::None);
        };
        let name = match &mapping.source {
            MapSource::Inline(values) => return Ok(Resolved::Inline(values)),
            MapSource::Table(name) => name,
        };
        let entries = lookups.get(name).ok_or_else(|| missing_table(name))?;
        if !mapping.lowercase {
            return Ok(Resolved::Table(Cow::Borrowed(entries)));
        }
        if let Some(lowered) = lookups.get(&lowered_key(name)) {
            return Ok(Resolved::Table(Cow::Borrowed(lowered)));
        }
        Ok(Resolved::Table(Cow::Owned(lowered(entries))))
    }

    /// The table a `lowercase` map reads, whose keys it matches lowercased.
    pub(super) fn lowercase_table(&self) -> Option<&str> {
        match self {
            RowStep::Map(mapping) if mapping.lowercase => self.table(),
            _ => None,
        }
    }

    /// Processes one row; `Ok(None)` drops it.
    pub(super) fn apply(
        &self,
        record: Value,
        lookup: &Resolved<'_>,
    ) -> Result<Option<Value>, String> {
        let Value::Object(mut row) = record else {
            return Err(format!(
                "the record is {}, not an object",
                type_name(&record)
            ));
        };
        match self {
            RowStep::Rename(pairs) => rename(&mut row, pairs),
            RowStep::Set(values) => {
                row.extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            RowStep::Multiply(multiply) => multiply.apply(&mut row)?,
            RowStep::Map(mapping) => mapping.apply(&mut row, lookup),
            RowStep::Extract(extract) => extract.apply(&mut row),
            RowStep::DropRows(test) => {
                if test.holds(&row) {
                    return Ok(None);
                }
            }
        }
        Ok(Some(Value::Object(row)))
    }
}

/// The message for a table the store does not have.
/// Where [`super::ProcessorChain::lower_tables`] keeps table `name` with lowercased keys (a
/// key no table name can have: names are checked by [`check_table_name`]).
pub(super) fn lowered_key(name: &str) -> String {
    format!("{name}\u{0}lowercase")
}

/// `entries` with lowercased keys.
pub(super) fn lowered(entries: &HashMap<String, String>) -> HashMap<String, String> {
    entries
        .iter()
        .map(|(key, value)| (key.to_lowercase(), value.clone()))
        .collect()
}

pub fn missing_table(name: &str) -> String {
    format!("lookup table {name:?} does not exist; run the job that fills it first")
}

/// The JSON type of `value` with its article ("a string", "null"), for error messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A scalar's text: strings as they are, numbers and booleans as JSON writes them; `None` for
/// null, arrays and objects.
pub fn text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(text) => Some(Cow::Borrowed(text)),
        Value::Number(number) => Some(Cow::Owned(number.to_string())),
        Value::Bool(flag) => Some(Cow::Owned(flag.to_string())),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// A number, or a string holding one.
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

fn not_a_number(column: &str, value: &Value) -> String {
    let shown: String = value.to_string().chars().take(60).collect();
    format!("column {column:?} holds {shown}, which is not a number")
}

fn present<'a>(row: &'a Map<String, Value>, column: &str) -> Option<&'a Value> {
    row.get(column).filter(|value| !value.is_null())
}

fn rename(row: &mut Map<String, Value>, pairs: &[(String, String)]) {
    let moved: Vec<(&String, Value)> = pairs
        .iter()
        .filter_map(|(from, to)| row.remove(from).map(|value| (to, value)))
        .collect();
    for (to, value) in moved {
        row.insert(to.clone(), value);
    }
}

impl Multiply {
    fn apply(&self, row: &mut Map<String, Value>) -> Result<(), String> {
        // Nothing to scale: a missing or null value stays as it is.
        let Some(value) = present(row, &self.column) else {
            return Ok(());
        };
        let operand = number(value).ok_or_else(|| not_a_number(&self.column, value))?;
        let factor = match &self.factor {
            Factor::Constant(by) => *by,
            Factor::Column(column) => {
                let value = present(row, column)
                    .ok_or_else(|| format!("column {column:?} (by_column) is missing"))?;
                number(value).ok_or_else(|| not_a_number(column, value))?
            }
        };
        if self.divide && factor == 0.0 {
            return Err(format!("cannot divide column {:?} by 0", self.column));
        }
        let result = if self.divide {
            operand / factor
        } else {
            operand * factor
        };
        let result = Number::from_f64(result)
            .ok_or_else(|| format!("column {:?}: the result is not finite", self.column))?;
        row.insert(self.column.clone(), Value::Number(result));
        Ok(())
    }
}

fn lowercase_value(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(text.to_lowercase()),
        other => other,
    }
}

impl Mapping {
    fn apply(&self, row: &mut Map<String, Value>, lookup: &Resolved<'_>) {
        let key = present(row, &self.column)
            .and_then(text)
            .map(|key| match self.lowercase {
                true => key.to_lowercase(),
                false => key.into_owned(),
            });
        let found = key.as_deref().and_then(|key| lookup.get(key));
        let kept = || {
            // Not found: the value stays (lowercased when asked), copied when `into` differs.
            let value = row.get(&self.column)?.clone();
            Some(match self.lowercase {
                true => lowercase_value(value),
                false => value,
            })
        };
        let value = match (found, &self.default) {
            (Some(value), _) => Some(value),
            (None, Some(default)) => Some(default.clone()),
            (None, None) => kept(),
        };
        let Some(value) = value else { return };
        let value = match self.lowercase {
            true => lowercase_value(value),
            false => value,
        };
        row.insert(self.into.clone(), value);
    }
}

impl Extract {
    fn apply(&self, row: &mut Map<String, Value>) {
        let source = present(row, &self.column).and_then(text);
        let extracted = source.and_then(|text| {
            let captures = self.pattern.captures(&text)?;
            let mut out = String::new();
            captures.expand(&self.format, &mut out);
            Some(Value::String(out))
        });
        if let Some(value) = extracted.or_else(|| self.fallback.clone()) {
            row.insert(self.into.clone(), value);
        }
    }
}

/// Scalars are equal when their text is: `"5"` equals `5`.
fn same(value: &Value, operand: &Value) -> bool {
    if value == operand {
        return true;
    }
    matches!((text(value), text(operand)), (Some(a), Some(b)) if a == b)
}

impl Test {
    fn holds(&self, row: &Map<String, Value>) -> bool {
        let value = present(row, &self.column);
        match (&self.operator, value) {
            (Operator::Missing(missing), value) => value.is_none() == *missing,
            (Operator::NotEquals(operand), value) => !value.is_some_and(|v| same(v, operand)),
            (_, None) => false,
            (Operator::Equals(operand), Some(value)) => same(value, operand),
            (Operator::In(operands), Some(value)) => operands.iter().any(|o| same(value, o)),
            (Operator::Matches(pattern), Some(value)) => {
                text(value).is_some_and(|text| pattern.is_match(&text))
            }
        }
    }
}

#[cfg(test)]
mod tests;
