//! Records to rows: each column's value taken from its field and converted to its declared
//! type, before any database is touched, so a bad record fails the upsert without writing.

use std::collections::HashMap;

use serde_json::Value;

use super::{ColumnType, Error, SqlColumn, SqlSinkSpec};
use crate::processors::tabular::type_name;

/// One typed value, bound as a statement parameter; `None` is SQL `NULL` of that type.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(Option<String>),
    Integer(Option<i64>),
    Real(Option<f64>),
    Boolean(Option<bool>),
    Json(Option<Value>),
    Timestamp(Option<String>),
}

impl Cell {
    fn null(column_type: ColumnType) -> Self {
        match column_type {
            ColumnType::Text => Cell::Text(None),
            ColumnType::Integer => Cell::Integer(None),
            ColumnType::Real => Cell::Real(None),
            ColumnType::Boolean => Cell::Boolean(None),
            ColumnType::Json => Cell::Json(None),
            ColumnType::Timestamp => Cell::Timestamp(None),
        }
    }
}

/// The cells of one record, in the order of the spec's `columns`.
pub type Row = Vec<Cell>;

/// Converts `records` into rows, keeping only the last record of each key (a statement may not
/// touch the same row twice on PostgreSQL); the first occurrence's place is kept, which does
/// not matter since rows of different keys are independent.
pub fn rows_from<'a>(
    spec: &SqlSinkSpec,
    records: impl IntoIterator<Item = &'a Value>,
) -> Result<Vec<Row>, Error> {
    let key_positions: Vec<usize> = spec
        .key
        .iter()
        .filter_map(|key| spec.columns.iter().position(|column| &column.name == key))
        .collect();
    debug_assert_eq!(key_positions.len(), spec.key.len(), "validated spec");
    let mut rows: Vec<Row> = Vec::new();
    let mut position_of_key: HashMap<String, usize> = HashMap::new();
    for (index, record) in records.into_iter().enumerate() {
        let row = row_from(spec, index, record)?;
        let key = format!(
            "{:?}",
            key_positions
                .iter()
                .map(|&position| &row[position])
                .collect::<Vec<_>>()
        );
        match position_of_key.get(&key) {
            Some(&position) => rows[position] = row,
            None => {
                position_of_key.insert(key, rows.len());
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

fn row_from(spec: &SqlSinkSpec, index: usize, record: &Value) -> Result<Row, Error> {
    spec.columns
        .iter()
        .map(|column| {
            let cell =
                cell_from(column, field_value(record, column.source())).map_err(|message| {
                    Error::Record {
                        index,
                        column: column.name.clone(),
                        message,
                    }
                })?;
            let is_null_key = spec.is_key(&column.name) && cell == Cell::null(column.column_type);
            if is_null_key {
                return Err(Error::Record {
                    index,
                    column: column.name.clone(),
                    message: format!(
                        "key column has no value (field `{}` is missing or null)",
                        column.source()
                    ),
                });
            }
            Ok(cell)
        })
        .collect()
}

/// A top-level key, or a JSON pointer when the field starts with `/`.
fn field_value<'a>(record: &'a Value, field: &str) -> Option<&'a Value> {
    if field.starts_with('/') {
        record.pointer(field)
    } else {
        record.get(field)
    }
}

fn cell_from(column: &SqlColumn, value: Option<&Value>) -> Result<Cell, String> {
    let value = match value {
        None | Some(Value::Null) => return Ok(Cell::null(column.column_type)),
        Some(value) => value,
    };
    match column.column_type {
        ColumnType::Text => Ok(Cell::Text(Some(text_of(value)))),
        ColumnType::Timestamp => Ok(Cell::Timestamp(Some(text_of(value)))),
        ColumnType::Integer => integer_of(value).map(|number| Cell::Integer(Some(number))),
        ColumnType::Real => real_of(value).map(|number| Cell::Real(Some(number))),
        ColumnType::Boolean => boolean_of(value).map(|flag| Cell::Boolean(Some(flag))),
        ColumnType::Json => Ok(Cell::Json(Some(value.clone()))),
    }
}

/// A string as it is; anything else as its JSON text.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn integer_of(value: &Value) -> Result<i64, String> {
    match value {
        Value::Number(number) => {
            if let Some(integer) = number.as_i64() {
                return Ok(integer);
            }
            let whole = number
                .as_f64()
                .filter(|float| float.fract() == 0.0 && float.abs() < 9.2e18);
            match whole {
                // In range and without a fraction: the conversion is exact.
                Some(float) => Ok(float as i64),
                None => Err(format!("expected an integer, got {number}")),
            }
        }
        Value::String(text) => text
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("expected an integer, got the string {text:?}")),
        other => Err(format!("expected an integer, got {}", type_name(other))),
    }
}

fn real_of(value: &Value) -> Result<f64, String> {
    match value {
        Value::Number(number) => number
            .as_f64()
            .ok_or_else(|| format!("expected a number, got {number}")),
        Value::String(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|float| float.is_finite())
            .ok_or_else(|| format!("expected a number, got the string {text:?}")),
        other => Err(format!("expected a number, got {}", type_name(other))),
    }
}

fn boolean_of(value: &Value) -> Result<bool, String> {
    match value {
        Value::Bool(flag) => Ok(*flag),
        Value::Number(number) if number.as_i64() == Some(0) => Ok(false),
        Value::Number(number) if number.as_i64() == Some(1) => Ok(true),
        Value::String(text) if text.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(text) if text.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(format!(
            "expected a boolean (true, false, 1, 0, \"true\" or \"false\"), got {other}"
        )),
    }
}
