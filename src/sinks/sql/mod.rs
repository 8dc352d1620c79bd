//! The `sql` sink: upserts records into a table of SQLite, PostgreSQL or MySQL/MariaDB on
//! declared key columns, so delivering a record again never stores it twice.
//!
//! - `spec.rs`: the declaration ([`SqlSinkSpec`]) and its validation; only identifiers that pass
//!   it are ever quoted into SQL.
//! - `row.rs`: records to typed rows, the last record of each key kept.
//! - `statement.rs`: the SQL text of each dialect; every value is a bound parameter.
//! - `client.rs`: [`SqlSink`], the connection and the transactional upsert.
//! - `job.rs`: [`SqlJobSink`], the `sql` type of a job's sinks.
//! - `error.rs`: [`Error`] and the one retry classification of database failures.

mod client;
mod error;
mod job;
mod row;
mod spec;
mod statement;
#[cfg(test)]
mod tests;

pub use client::SqlSink;
pub use error::Error;
pub use job::SqlJobSink;
pub use spec::{ColumnType, Dialect, SqlColumn, SqlSinkSpec, redact_url, validate_identifier};
