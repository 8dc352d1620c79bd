//! CSV files as records: one JSON object of strings per row, keyed by the header row, plus
//! fields the connector adds (the report's date, the attachment's name). Shared by the
//! connectors that download CSV (`web-report`, `email-attachment`).

use serde_json::{Map, Value};

use super::Error;

/// The rows of `text` (a UTF-8 BOM is skipped) as records with `extra` fields added; `what`
/// names the file in errors. A header that repeats, or that an extra field would overwrite,
/// is refused.
pub fn records(
    text: &[u8],
    delimiter: u8,
    extra: &[(&str, &str)],
    what: &str,
) -> Result<Vec<Value>, Error> {
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .from_reader(text);
    let invalid = |error: csv::Error| Error::Response(format!("{what}: invalid CSV: {error}"));
    let headers = reader.headers().map_err(invalid)?.clone();
    for (index, column) in headers.iter().enumerate() {
        if extra.iter().any(|(field, _)| *field == column)
            || headers.iter().take(index).any(|other| other == column)
        {
            return Err(Error::Response(format!(
                "{what}: column {column:?} appears twice"
            )));
        }
    }
    let mut records = Vec::new();
    for row in reader.records() {
        let row = row.map_err(invalid)?;
        let mut record = Map::with_capacity(headers.len() + extra.len());
        for (column, value) in headers.iter().zip(row.iter()) {
            record.insert(column.to_owned(), Value::String(value.to_owned()));
        }
        for (field, value) in extra {
            record.insert((*field).to_owned(), Value::String((*value).to_owned()));
        }
        records.push(Value::Object(record));
    }
    Ok(records)
}
