//! `group_by`: one row per key combination over a whole page of records.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Number, Value, json};

use super::{GroupBySpec, not_a_number, number, present, require_column, type_name};

/// A compiled `group_by`; sees the whole page.
#[derive(Debug, Clone)]
pub(in crate::processors) struct GroupBy {
    keys: Vec<String>,
    sum: Vec<String>,
    first: Vec<String>,
    last: Vec<String>,
    count_as: Option<String>,
}

/// A column's running sum: integers stay integers while they fit.
#[derive(Default)]
struct Sum {
    integer: Option<i64>,
    float: f64,
    seen: bool,
}

impl Sum {
    fn add(&mut self, value: &Value) -> bool {
        let Some(float) = number(value) else {
            return false;
        };
        let integer = match value {
            Value::Number(number) => number.as_i64(),
            Value::String(text) => text.trim().parse::<i64>().ok(),
            _ => None,
        };
        self.integer = match (self.seen, self.integer, integer) {
            (false, _, Some(n)) => Some(n),
            (true, Some(total), Some(n)) => total.checked_add(n),
            _ => None,
        };
        self.float += float;
        self.seen = true;
        true
    }

    fn value(&self) -> Option<Value> {
        if !self.seen {
            return None;
        }
        match self.integer {
            Some(total) => Some(json!(total)),
            None => Number::from_f64(self.float).map(Value::Number),
        }
    }
}

struct Group {
    row: Map<String, Value>,
    sums: Vec<Sum>,
    count: u64,
}

impl GroupBy {
    pub(in crate::processors) fn compile(spec: &GroupBySpec) -> Result<Self, String> {
        if spec.keys.is_empty() {
            return Err("keys must name at least one column".into());
        }
        let mut seen = HashSet::new();
        let named = spec.keys.iter().chain(&spec.sum).chain(&spec.first);
        for column in named.chain(&spec.last).chain(&spec.count_as) {
            require_column("a column", column)?;
            if !seen.insert(column.as_str()) {
                return Err(format!("column {column:?} is named twice"));
            }
        }
        Ok(Self {
            keys: spec.keys.clone(),
            sum: spec.sum.clone(),
            first: spec.first.clone(),
            last: spec.last.clone(),
            count_as: spec.count_as.clone(),
        })
    }

    /// Groups the page's rows in order of first appearance; the error names the row.
    pub(in crate::processors) fn apply(
        &self,
        records: Vec<Value>,
    ) -> Result<Vec<Value>, (usize, String)> {
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (position, record) in records.into_iter().enumerate() {
            let Value::Object(row) = record else {
                let message = format!("the record is {}, not an object", type_name(&record));
                return Err((position, message));
            };
            let key_values: Vec<&Value> = self
                .keys
                .iter()
                .map(|key| row.get(key).unwrap_or(&Value::Null))
                .collect();
            let key = serde_json::to_string(&key_values).unwrap_or_default();
            let slot = match index.get(&key) {
                Some(slot) => *slot,
                None => {
                    index.insert(key, groups.len());
                    let sums = self.sum.iter().map(|_| Sum::default()).collect();
                    groups.push(Group {
                        row: row.clone(),
                        sums,
                        count: 0,
                    });
                    groups.len() - 1
                }
            };
            let group = &mut groups[slot];
            self.add(group, &row)
                .map_err(|message| (position, message))?;
        }
        Ok(groups.into_iter().map(|group| self.finish(group)).collect())
    }

    fn add(&self, group: &mut Group, row: &Map<String, Value>) -> Result<(), String> {
        group.count += 1;
        for (column, sum) in self.sum.iter().zip(&mut group.sums) {
            if let Some(value) = present(row, column)
                && !sum.add(value)
            {
                return Err(not_a_number(column, value));
            }
        }
        for column in &self.first {
            if present(&group.row, column).is_none()
                && let Some(value) = present(row, column)
            {
                group.row.insert(column.clone(), value.clone());
            }
        }
        for column in &self.last {
            if let Some(value) = present(row, column) {
                group.row.insert(column.clone(), value.clone());
            }
        }
        Ok(())
    }

    fn finish(&self, group: Group) -> Value {
        let mut row = group.row;
        for (column, sum) in self.sum.iter().zip(&group.sums) {
            if let Some(total) = sum.value() {
                row.insert(column.clone(), total);
            }
        }
        if let Some(column) = &self.count_as {
            row.insert(column.clone(), json!(group.count));
        }
        Value::Object(row)
    }
}
