//! The Databox wire formats: which records are metrics, the push body, dataset rows, and what
//! counts as Databox accepting a request.
//!
//! Invariant: every data point of one delivery carries the same `date`, the job's
//! `collected_at` (the seed stamped each metric with its own `new Date()`, bug 8), so a retried
//! delivery sends exactly the same rows.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Number, Value};

use super::super::{Delivery, Error};
use crate::net::CappedResponse;

/// Most rows in one dataset ingestion request (Databox's limit).
pub const DATASET_BATCH: usize = 100;
/// The status word of an accepted push (what the seed's `databox` library checked).
pub const PUSH_OK: &str = "OK";
/// The status word of an accepted dataset ingestion.
pub const DATASET_OK: &str = "success";
/// Problems named in one error; the rest are only counted.
const NAMED_PROBLEMS: usize = 10;

/// A record that is a metric: a name and a numeric value, with all the record's fields.
#[derive(Debug)]
pub struct Metric<'a> {
    pub name: &'a str,
    pub value: &'a Number,
    pub fields: &'a Map<String, Value>,
}

/// The delivery's records as metrics. If any record is not one, all are refused and each bad
/// record is named by source and position: sending the rest would hide the gap.
pub fn metrics(delivery: &Delivery) -> Result<Vec<Metric<'_>>, Error> {
    let mut metrics = Vec::with_capacity(delivery.records.len());
    let mut problems = Vec::new();
    let mut positions: HashMap<i64, usize> = HashMap::new();
    for (step_id, record) in &delivery.records {
        let position = positions.entry(*step_id).or_default();
        *position += 1;
        match metric(record) {
            Ok(metric) => metrics.push(metric),
            Err(why) => problems.push(format!(
                "record {position} of source `{}` {why}",
                source_name(delivery, *step_id)
            )),
        }
    }
    if problems.is_empty() {
        Ok(metrics)
    } else {
        Err(Error::Records(summary(&problems)))
    }
}

fn metric(record: &Value) -> Result<Metric<'_>, String> {
    let fields = record.as_object().ok_or("is not a JSON object")?;
    let name = fields
        .get("metric")
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty())
        .ok_or("has no `metric` name")?;
    match fields.get("value") {
        Some(Value::Number(value)) => Ok(Metric {
            name,
            value,
            fields,
        }),
        _ => Err(format!("(metric `{name}`) has no numeric `value`")),
    }
}

fn source_name(delivery: &Delivery, step_id: i64) -> &str {
    delivery
        .sources
        .iter()
        .find(|source| source.step_id == step_id)
        .map_or("?", |source| source.name.as_str())
}

/// The first problems, then how many more there were.
fn summary(problems: &[String]) -> String {
    let mut text = problems[..problems.len().min(NAMED_PROBLEMS)].join("; ");
    if problems.len() > NAMED_PROBLEMS {
        text.push_str(&format!("; and {} more", problems.len() - NAMED_PROBLEMS));
    }
    text
}

/// The push body: `{"data": [{"$<metric>": <value>, "date": <date>}, …]}`.
pub fn push_body(metrics: &[Metric<'_>], date: &str) -> Value {
    let data = metrics
        .iter()
        .map(|metric| {
            let mut point = Map::with_capacity(2);
            point.insert(
                format!("${}", metric.name),
                Value::Number(metric.value.clone()),
            );
            point.insert("date".into(), Value::String(date.to_owned()));
            Value::Object(point)
        })
        .collect();
    Value::Object(Map::from_iter([("data".to_owned(), Value::Array(data))]))
}

/// The dataset rows: each record's fields with `date` set to the batch's. Refused when a row
/// lacks a primary key column, or two rows share a key (Databox would keep only the last).
pub fn dataset_rows(
    metrics: &[Metric<'_>],
    date: &str,
    primary_keys: &[String],
) -> Result<Vec<Value>, Error> {
    let mut rows = Vec::with_capacity(metrics.len());
    let mut keys = HashSet::with_capacity(metrics.len());
    let mut problems = Vec::new();
    for metric in metrics {
        let mut row = metric.fields.clone();
        row.insert("date".into(), Value::String(date.to_owned()));
        let missing: Vec<&str> = primary_keys
            .iter()
            .filter(|column| row.get(*column).is_none_or(Value::is_null))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            let key: Vec<&Value> = primary_keys.iter().map(|column| &row[column]).collect();
            let key = Value::from_iter(key.into_iter().cloned()).to_string();
            if !keys.insert(key.clone()) {
                problems.push(format!(
                    "metric `{}` repeats the primary key {key}",
                    metric.name
                ));
            }
        } else {
            problems.push(format!(
                "metric `{}` has no primary key column {}",
                metric.name,
                missing.join(", ")
            ));
        }
        rows.push(Value::Object(row));
    }
    if problems.is_empty() {
        Ok(rows)
    } else {
        Err(Error::Records(summary(&problems)))
    }
}

/// A 2xx answer is Databox's acceptance only if its JSON `status` is `expected`; another word,
/// no status or a body that is not JSON leave the delivery unconfirmed.
pub fn confirm(response: &CappedResponse, expected: &str) -> Result<(), Error> {
    let reason = match response.json::<Value>() {
        Err(_) => "its answer is not JSON".to_owned(),
        Ok(body) => match body.get("status").and_then(Value::as_str) {
            Some(word) if word == expected => return Ok(()),
            Some(word) => format!("its answer's status is {word:?}, not {expected:?}"),
            None => format!("its answer has no status (expected {expected:?})"),
        },
    };
    Err(Error::Unconfirmed {
        reason,
        http_status: response.status,
        response: response.excerpt().unwrap_or_default(),
    })
}
