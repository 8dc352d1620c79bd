//! What both benchmarks print with: rates, durations, percentiles and the result table.
//!
//! Included by each bench as `#[path = "common/mod.rs"] mod common;` (benches are separate
//! crates); each uses only part of it.
#![allow(dead_code)]

use std::time::Duration;

use gleaner::clock::{Clock, SystemClock};
use gleaner::store::SharedStore;

pub fn now_ms() -> i64 {
    SystemClock.now()
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

pub fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

pub fn fmt_ms(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1000.0)
}

pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

pub struct Percentiles {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

pub fn percentiles(mut sample: Vec<Duration>) -> Percentiles {
    assert!(!sample.is_empty(), "empty latency sample");
    sample.sort_unstable();
    let at =
        |q: f64| sample[((sample.len() as f64 * q).ceil() as usize).clamp(1, sample.len()) - 1];
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
    }
}

/// The printed table: section, measure, value, note.
#[derive(Default)]
pub struct Table {
    rows: Vec<[String; 4]>,
}

impl Table {
    pub fn row(&mut self, section: &str, measure: &str, value: String, note: String) {
        eprintln!("  {section} | {measure}: {value} {note}");
        self.rows
            .push([section.into(), measure.into(), value, note]);
    }

    pub fn print(&self) {
        let widths: Vec<usize> = (0..4)
            .map(|column| {
                self.rows
                    .iter()
                    .map(|row| row[column].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let rule: String = widths
            .iter()
            .map(|width| "-".repeat(width + 2))
            .collect::<Vec<_>>()
            .join("+");
        println!("{rule}");
        let mut last_section = "";
        for row in &self.rows {
            if !last_section.is_empty() && row[0] != last_section {
                println!("{rule}");
            }
            last_section = &row[0];
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(column, (cell, width))| {
                    let pad = width - cell.chars().count();
                    if column == 2 {
                        format!(" {}{} ", " ".repeat(pad), cell)
                    } else {
                        format!(" {}{} ", cell, " ".repeat(pad))
                    }
                })
                .collect();
            println!("{}", cells.join("|"));
        }
        println!("{rule}");
    }
}

/// Jobs per status, from the store's snapshot: (with `status`, failed or dead or cancelled).
pub async fn jobs_with_status(store: &SharedStore, status: &str) -> (u64, u64) {
    let snapshot = store.snapshot(now_ms()).await.expect("snapshot");
    let count = |wanted: &[&str]| {
        snapshot
            .jobs_by_status
            .iter()
            .filter(|(status, _)| wanted.contains(&status.as_str()))
            .map(|(_, count)| count)
            .sum::<u64>()
    };
    (count(&[status]), count(&["failed", "dead", "cancelled"]))
}
