//! The sink's declaration: where records go, which columns they fill, and the checks that make
//! every identifier safe to quote into SQL.

use serde::{Deserialize, Serialize};

use super::Error;

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
    /// An RFC 3339 / ISO 8601 text: stored as given on SQLite and MySQL, as `timestamptz` on
    /// PostgreSQL (which parses it).
    Timestamp,
}

/// The database family a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

pub const MAX_IDENTIFIER_LEN: usize = 63;
pub const MAX_BATCH_SIZE: u32 = 1000;
pub const MAX_COLUMNS: usize = 200;

impl SqlSinkSpec {
    /// Checks everything that can be checked without a database; the message says what is
    /// wrong, for a 422 answer.
    pub fn validate(&self) -> Result<(), Error> {
        self.dialect()?;
        validate_table(&self.table)?;
        if self.columns.is_empty() || self.columns.len() > MAX_COLUMNS {
            return Err(spec_error(format!(
                "`columns` must list 1 to {MAX_COLUMNS} columns, not {}",
                self.columns.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for column in &self.columns {
            validate_identifier("column name", &column.name)?;
            if !seen.insert(column.name.as_str()) {
                return Err(spec_error(format!(
                    "column `{}` is declared twice",
                    column.name
                )));
            }
            if column.field.as_deref() == Some("") {
                return Err(spec_error(format!(
                    "column `{}` has an empty `field`; leave it out to read the field `{}`",
                    column.name, column.name
                )));
            }
        }
        if self.key.is_empty() {
            return Err(spec_error(
                "`key` must name at least one column (the table's unique key)".to_owned(),
            ));
        }
        let mut seen_keys = std::collections::HashSet::new();
        for key in &self.key {
            let Some(column) = self.column(key) else {
                return Err(spec_error(format!(
                    "key column `{key}` is not among `columns`"
                )));
            };
            if !seen_keys.insert(key.as_str()) {
                return Err(spec_error(format!("key column `{key}` is listed twice")));
            }
            if column.column_type == ColumnType::Json {
                return Err(spec_error(format!(
                    "key column `{key}` has type json; a key column must be text, integer, real, boolean or timestamp"
                )));
            }
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(spec_error(format!(
                "`batch_size` must be between 1 and {MAX_BATCH_SIZE}, not {}",
                self.batch_size
            )));
        }
        Ok(())
    }

    /// The URL with its password replaced by `***`, for views and logs.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The database family of `url`.
    pub fn dialect(&self) -> Result<Dialect, Error> {
        let scheme = self
            .url
            .split_once(':')
            .map(|(scheme, _)| scheme.to_ascii_lowercase())
            .unwrap_or_default();
        match scheme.as_str() {
            "sqlite" => Ok(Dialect::Sqlite),
            "postgres" | "postgresql" => Ok(Dialect::Postgres),
            "mysql" | "mariadb" => Ok(Dialect::MySql),
            _ => Err(spec_error(format!(
                "url `{}` must start with sqlite:, postgres:, postgresql:, mysql: or mariadb:",
                self.redacted_url()
            ))),
        }
    }

    /// The declared column called `name`.
    pub fn column(&self, name: &str) -> Option<&SqlColumn> {
        self.columns.iter().find(|column| column.name == name)
    }

    /// Whether `name` is one of the key columns.
    pub fn is_key(&self, name: &str) -> bool {
        self.key.iter().any(|key| key == name)
    }

    /// The SQLite file path as written in the URL (`sqlite://data/x.db`, `sqlite:///abs/x.db`,
    /// `sqlite:x.db`), without any `?options`; `None` for other databases.
    pub fn sqlite_path(&self) -> Option<&str> {
        let rest = self.url.get(.."sqlite:".len()).and_then(|scheme| {
            scheme
                .eq_ignore_ascii_case("sqlite:")
                .then(|| &self.url["sqlite:".len()..])
        })?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        Some(rest.split_once('?').map_or(rest, |(path, _)| path))
    }
}

impl SqlColumn {
    /// The record field the value comes from.
    pub fn source(&self) -> &str {
        self.field.as_deref().unwrap_or(&self.name)
    }
}

fn spec_error(message: String) -> Error {
    Error::Spec(message)
}

/// A table name, or `schema.table`, each part a plain identifier.
fn validate_table(table: &str) -> Result<(), Error> {
    let mut parts = table.split('.');
    let (first, second, extra) = (parts.next(), parts.next(), parts.next());
    if extra.is_some() {
        return Err(spec_error(format!(
            "table `{table}` has more than one `.`; write `table` or `schema.table`"
        )));
    }
    match (first, second) {
        (Some(table_name), None) => validate_identifier("table name", table_name),
        (Some(schema), Some(table_name)) => {
            validate_identifier("schema name", schema)?;
            validate_identifier("table name", table_name)
        }
        (None, _) => validate_identifier("table name", ""),
    }
}

/// 1–63 characters of `[A-Za-z_][A-Za-z0-9_]*`: safe to quote in every dialect, and within
/// PostgreSQL's identifier length.
pub fn validate_identifier(what: &str, name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > MAX_IDENTIFIER_LEN {
        return Err(spec_error(format!(
            "{what} `{name}` must be 1 to {MAX_IDENTIFIER_LEN} characters long"
        )));
    }
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !(first_ok && rest_ok) {
        return Err(spec_error(format!(
            "{what} {name:?} may only hold ASCII letters, digits and `_`, and must not start with a digit"
        )));
    }
    Ok(())
}

/// Replaces the password of a `scheme://user:password@host/…` URL, and any `password=` query
/// option, with `***`.
pub fn redact_url(raw: &str) -> String {
    let with_userinfo_redacted = redact_userinfo(raw);
    let Some((base, query)) = with_userinfo_redacted.split_once('?') else {
        return with_userinfo_redacted;
    };
    let options: Vec<String> = query
        .split('&')
        .map(|option| match option.split_once('=') {
            Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
            _ => option.to_owned(),
        })
        .collect();
    format!("{base}?{}", options.join("&"))
}

fn redact_userinfo(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some(at) = authority.rfind('@') else {
        return raw.to_owned();
    };
    let (userinfo, host) = authority.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{host}{tail}"),
        None => raw.to_owned(),
    }
}
