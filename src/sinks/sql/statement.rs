//! SQL text for each dialect. Only validated identifiers are written into it, quoted; every
//! value is a bound parameter.

use super::spec::Dialect;
use super::{ColumnType, SqlColumn, SqlSinkSpec};

/// Most bound parameters in one statement: SQLite's default `SQLITE_MAX_VARIABLE_NUMBER`
/// (32766), and the 16-bit parameter count of the PostgreSQL and MySQL protocols.
fn max_parameters(dialect: Dialect) -> usize {
    match dialect {
        Dialect::Sqlite => 32_766,
        Dialect::Postgres | Dialect::MySql => 65_535,
    }
}

/// Rows per statement: the spec's batch size, lowered when its columns would overflow the
/// parameter limit.
pub fn rows_per_statement(spec: &SqlSinkSpec, dialect: Dialect) -> usize {
    let by_parameters = max_parameters(dialect) / spec.columns.len().max(1);
    (spec.batch_size as usize).min(by_parameters).max(1)
}

/// `"name"` (SQLite, PostgreSQL) or `` `name` `` (MySQL), the quote character doubled inside.
pub fn quote_identifier(dialect: Dialect, name: &str) -> String {
    match dialect {
        Dialect::Sqlite | Dialect::Postgres => format!("\"{}\"", name.replace('"', "\"\"")),
        Dialect::MySql => format!("`{}`", name.replace('`', "``")),
    }
}

/// A table name, each part of `schema.table` quoted on its own.
pub fn quote_table(dialect: Dialect, table: &str) -> String {
    table
        .split('.')
        .map(|part| quote_identifier(dialect, part))
        .collect::<Vec<_>>()
        .join(".")
}

fn column_type_sql(dialect: Dialect, column: &SqlColumn, is_key: bool) -> &'static str {
    match (dialect, column.column_type) {
        (Dialect::Sqlite, ColumnType::Integer | ColumnType::Boolean) => "INTEGER",
        (Dialect::Sqlite, ColumnType::Real) => "REAL",
        (Dialect::Sqlite, ColumnType::Text | ColumnType::Json | ColumnType::Timestamp) => "TEXT",
        (Dialect::Postgres, ColumnType::Text) => "text",
        (Dialect::Postgres, ColumnType::Integer) => "bigint",
        (Dialect::Postgres, ColumnType::Real) => "double precision",
        (Dialect::Postgres, ColumnType::Boolean) => "boolean",
        (Dialect::Postgres, ColumnType::Json) => "jsonb",
        (Dialect::Postgres, ColumnType::Timestamp) => "timestamptz",
        // MySQL cannot index a TEXT column without a prefix length.
        (Dialect::MySql, ColumnType::Text) if is_key => "VARCHAR(255)",
        (Dialect::MySql, ColumnType::Text) => "TEXT",
        (Dialect::MySql, ColumnType::Integer) => "BIGINT",
        (Dialect::MySql, ColumnType::Real) => "DOUBLE",
        (Dialect::MySql, ColumnType::Boolean) => "BOOLEAN",
        (Dialect::MySql, ColumnType::Json) => "JSON",
        (Dialect::MySql, ColumnType::Timestamp) => "VARCHAR(64)",
    }
}

/// `CREATE TABLE IF NOT EXISTS` with every column, key columns `NOT NULL`, and the primary key.
pub fn create_table(spec: &SqlSinkSpec, dialect: Dialect) -> String {
    let mut definitions: Vec<String> = spec
        .columns
        .iter()
        .map(|column| {
            let is_key = spec.is_key(&column.name);
            let not_null = if is_key { " NOT NULL" } else { "" };
            format!(
                "{} {}{not_null}",
                quote_identifier(dialect, &column.name),
                column_type_sql(dialect, column, is_key)
            )
        })
        .collect();
    definitions.push(format!("PRIMARY KEY ({})", quoted_list(dialect, &spec.key)));
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({})",
        quote_table(dialect, &spec.table),
        definitions.join(", ")
    )
}

fn quoted_list(dialect: Dialect, names: &[String]) -> String {
    names
        .iter()
        .map(|name| quote_identifier(dialect, name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The placeholder of parameter `number` (1-based) for `column`.
fn placeholder(dialect: Dialect, column: &SqlColumn, number: usize) -> String {
    match (dialect, column.column_type) {
        (Dialect::Postgres, ColumnType::Timestamp) => format!("CAST(${number} AS timestamptz)"),
        (Dialect::Postgres, _) => format!("${number}"),
        (Dialect::Sqlite | Dialect::MySql, _) => "?".to_owned(),
    }
}

/// A multi-row insert of `rows` rows that updates every non-key column on a key conflict.
pub fn upsert(spec: &SqlSinkSpec, dialect: Dialect, rows: usize) -> String {
    let column_names: Vec<String> = spec.columns.iter().map(|c| c.name.clone()).collect();
    let mut values = Vec::with_capacity(rows);
    let mut number = 0;
    for _ in 0..rows {
        let row: Vec<String> = spec
            .columns
            .iter()
            .map(|column| {
                number += 1;
                placeholder(dialect, column, number)
            })
            .collect();
        values.push(format!("({})", row.join(", ")));
    }
    let updated: Vec<String> = column_names
        .iter()
        .filter(|name| !spec.is_key(name))
        .map(|name| quote_identifier(dialect, name))
        .collect();
    let on_conflict = match dialect {
        Dialect::Sqlite | Dialect::Postgres => {
            let target = quoted_list(dialect, &spec.key);
            if updated.is_empty() {
                format!("ON CONFLICT ({target}) DO NOTHING")
            } else {
                let assignments: Vec<String> = updated
                    .iter()
                    .map(|column| format!("{column} = excluded.{column}"))
                    .collect();
                format!(
                    "ON CONFLICT ({target}) DO UPDATE SET {}",
                    assignments.join(", ")
                )
            }
        }
        Dialect::MySql => {
            let assignments: Vec<String> = if updated.is_empty() {
                let first_key = quote_identifier(dialect, &spec.key[0]);
                vec![format!("{first_key} = {first_key}")]
            } else {
                updated
                    .iter()
                    .map(|column| format!("{column} = VALUES({column})"))
                    .collect()
            };
            format!("ON DUPLICATE KEY UPDATE {}", assignments.join(", "))
        }
    };
    format!(
        "INSERT INTO {} ({}) VALUES {} {on_conflict}",
        quote_table(dialect, &spec.table),
        quoted_list(dialect, &column_names),
        values.join(", ")
    )
}
