//! `gleaner schedules …`: list, show, run now, pause and resume the cron schedules of a running
//! server, through its API (the address and token as for `gleaner jobs`).

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::client::{Api, Target, resource_path};
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// List schedules: name, cron and zone, next run (or `paused`).
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Show a schedule (by name or id) with its next run times and recent ticks.
    Show {
        #[command(flatten)]
        target: Target,
        key: String,
    },
    /// Run a schedule's job now, outside its ticks; prints the job.
    Run {
        #[command(flatten)]
        target: Target,
        key: String,
    },
    /// Pause a schedule: no tick fires until it is resumed.
    Pause {
        #[command(flatten)]
        target: Target,
        key: String,
    },
    /// Resume a paused schedule from its next tick after now.
    Resume {
        #[command(flatten)]
        target: Target,
        key: String,
    },
}

pub async fn run(config: &Config, command: SchedulesCommand) -> anyhow::Result<()> {
    let output = match command {
        SchedulesCommand::List { target } => {
            return Api::new(config, target)?
                .print_items("/v1/schedules", &[], "schedules", list_line)
                .await;
        }
        SchedulesCommand::Show { target, key } => {
            Api::new(config, target)?
                .call(Method::GET, &path(&key)?, &[])
                .await?
        }
        SchedulesCommand::Run { target, key } => {
            Api::new(config, target)?
                .call(Method::POST, &format!("{}/run", path(&key)?), &[])
                .await?
        }
        SchedulesCommand::Pause { target, key } => set_paused(config, target, &key, true).await?,
        SchedulesCommand::Resume { target, key } => set_paused(config, target, &key, false).await?,
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}

/// The API path of schedule `key`.
fn path(key: &str) -> anyhow::Result<String> {
    resource_path("schedules", "schedule", key)
}

async fn set_paused(
    config: &Config,
    target: Target,
    key: &str,
    paused: bool,
) -> anyhow::Result<Value> {
    Api::new(config, target)?
        .send_json(Method::PATCH, &path(key)?, &json!({ "paused": paused }))
        .await
}

/// One schedule as a line of `schedules list`.
fn list_line(schedule: &Value) -> String {
    let text = |field: &str| schedule.get(field).and_then(Value::as_str).unwrap_or("?");
    let next = if schedule.get("paused").and_then(Value::as_bool) == Some(true) {
        "paused"
    } else {
        schedule
            .get("next_runs")
            .and_then(|runs| runs.get(0))
            .and_then(Value::as_str)
            .unwrap_or("-")
    };
    format!(
        "{:<30} {:<20} {:<20} {}",
        text("name"),
        text("cron"),
        text("timezone"),
        next
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_line_shows_the_next_run_or_paused() {
        let running = json!({"name": "orders", "cron": "0 * * * *", "timezone": "UTC",
                             "paused": false, "next_runs": ["2026-12-07T16:00:00Z"]});
        let line = list_line(&running);
        assert!(line.starts_with("orders "), "{line}");
        assert!(line.ends_with(" 2026-12-07T16:00:00Z"), "{line}");
        let paused = json!({"name": "orders", "cron": "0 * * * *", "timezone": "UTC",
                            "paused": true, "next_runs": []});
        assert!(list_line(&paused).ends_with(" paused"));
    }

    #[test]
    fn a_key_that_cannot_name_a_schedule_is_refused_before_sending() {
        assert_eq!(
            path("hourly-orders.v2").expect("valid"),
            "/v1/schedules/hourly-orders.v2"
        );
        for bad in ["", "a/b", "../jobs", "a b", "x?y"] {
            assert!(path(bad).is_err(), "{bad:?}");
        }
    }
}
