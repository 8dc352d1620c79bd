//! `gleaner metrics`: send events to a running server and read series back, for quick manual
//! checks.

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::client::{Api, Target};
use crate::config::Config;
use crate::metrics::MetricType;

#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// Send one event: `gleaner metrics send app.hits 1 --type counter --tag region=eu`.
    Send(SendArgs),
    /// Show one series with its aggregate (`name` or `name{k=v,…}`).
    Show {
        series: String,
        #[command(flatten)]
        target: Target,
    },
    /// List series, optionally by name prefix.
    List {
        #[arg(long)]
        prefix: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Series name.
    name: String,
    /// The event's value (a counter's delta, a gauge's reading, a timer's duration…).
    #[arg(allow_hyphen_values = true)]
    value: f64,
    /// counter, gauge, meter or timer.
    #[arg(long = "type", default_value = "counter", value_parser = parse_type)]
    kind: MetricType,
    /// Tags, as key=value (repeatable).
    #[arg(long = "tag", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    #[command(flatten)]
    target: Target,
}

fn parse_type(text: &str) -> Result<MetricType, String> {
    MetricType::from_name(text)
        .ok_or_else(|| format!("unknown type {text:?}: use counter, gauge, meter or timer"))
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("tag {text:?} must be key=value"))
}

/// The event body `send` posts.
fn event(args: &SendArgs) -> Value {
    let tags: Map<String, Value> = args
        .tags
        .iter()
        .map(|(key, value)| (key.clone(), json!(value)))
        .collect();
    json!({"name": args.name, "type": args.kind.as_str(), "value": args.value, "tags": tags})
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

pub async fn run(config: &Config, command: MetricsCommand) -> anyhow::Result<()> {
    let answer = match command {
        MetricsCommand::Send(args) => {
            let body = event(&args);
            Api::new(config, args.target)?
                .send_json(reqwest::Method::POST, "/v1/metrics", &body)
                .await?
        }
        MetricsCommand::Show { series, target } => {
            let path = format!("/v1/metrics/{}", encode(&series));
            Api::new(config, target)?
                .call(reqwest::Method::GET, &path, &[])
                .await?
        }
        MetricsCommand::List { prefix, target } => {
            let query: Vec<(&str, String)> = prefix
                .into_iter()
                .map(|prefix| ("prefix", prefix))
                .collect();
            Api::new(config, target)?
                .call(reqwest::Method::GET, "/v1/metrics", &query)
                .await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: MetricsCommand,
    }

    #[test]
    fn send_builds_the_event_with_type_and_tags() {
        let cli = Cli::try_parse_from([
            "metrics",
            "send",
            "app.latency",
            "-12.5",
            "--type",
            "TIMER",
            "--tag",
            "route=home",
        ])
        .expect("parses");
        let MetricsCommand::Send(args) = cli.command else {
            panic!("send");
        };
        assert_eq!(
            event(&args),
            json!({"name": "app.latency", "type": "timer", "value": -12.5, "tags": {"route": "home"}})
        );
        assert!(Cli::try_parse_from(["metrics", "send", "x", "1", "--type", "sum"]).is_err());
        assert!(Cli::try_parse_from(["metrics", "send", "x", "1", "--tag", "novalue"]).is_err());
    }
}
