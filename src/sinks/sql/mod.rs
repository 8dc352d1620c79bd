//! The `sql` sink: upserts records into a table of SQLite, PostgreSQL or MySQL/MariaDB on
//! declared key columns, so delivering a record again never stores it twice.

use serde::{Deserialize, Serialize};

/// Where and how records are upserted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSinkSpec {
    /// `sqlite://path` (relative paths under the data directory), `postgres://…`,
    /// `mysql://…` or `mariadb://…`. Its password is redacted in every view.
    pub url: String,
    /// Table name, optionally schema-qualified (`schema.table`).
    pub table: String,
    /// Columns of the table's unique key: a record with the same key replaces the stored row.
    pub key: Vec<String>,
    /// The columns written, each from a record field.
    pub columns: Vec<SqlColumn>,
    /// Create the table (with its primary key on `key`) when it does not exist.
    #[serde(default)]
    pub create_table: bool,
    /// Most records written in one statement (1–1000, default 100).
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
}

fn default_batch_size() -> u32 {
    100
}

/// One column and where its value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlColumn {
    pub name: String,
    /// Record field: a top-level key, or a JSON pointer (`/author/name`); default `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(rename = "type", default)]
    pub column_type: ColumnType,
}

/// How a column's value is typed (and declared when the table is created).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    #[default]
    Text,
    Integer,
    Real,
    Boolean,
    /// Any JSON value, stored as its text (`jsonb` on PostgreSQL, `json` on MySQL).
    Json,
    /// An RFC 3339 / ISO 8601 text, stored as given.
    Timestamp,
}
