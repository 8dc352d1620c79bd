//! `gleaner pipeline …`: `import <config.yaml>` turns a collection-engine seed configuration
//! into a pipeline definition, printed as a `[[pipeline]]` table (or JSON), or created on a
//! server; the other commands list, show, create, start, pause, stop and delete the pipelines
//! of a running server and read and replay their dead letters, through its API (the address
//! and token as for `gleaner jobs`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};

use super::client::{Api, Target, read_json, resource_path};
use crate::config::Config;
use crate::pipelines::PipelineSpec;
use crate::pipelines::import::from_collection_engine_yaml;

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Convert a collection-engine `config.yaml` into a pipeline definition.
    Import(ImportArgs),
    /// List pipelines: name, state, origin (and why one cannot start).
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Show a pipeline (by name or id): its definition, cursor and each stage's counters.
    Show {
        #[command(flatten)]
        target: Target,
        key: String,
    },
    /// Create a pipeline from its JSON definition in a file (`-`: stdin).
    Create {
        #[command(flatten)]
        target: Target,
        spec: PathBuf,
    },
    /// Start a stopped or paused pipeline.
    Start {
        #[command(flatten)]
        target: Target,
        key: String,
    },
    /// Pause a pipeline: its source stops fetching; queued messages still flow.
    Pause {
        #[command(flatten)]
        target: Target,
        key: String,
    },
    /// Stop a pipeline: no stage runs; queued messages are kept.
    Stop {
        #[command(flatten)]
        target: Target,
        key: String,
    },
    /// Delete a pipeline with its queued messages, counters and dead letters.
    Delete {
        #[command(flatten)]
        target: Target,
        key: String,
    },
    /// Print a pipeline's dead letters as NDJSON, every page.
    DeadLetters {
        #[command(flatten)]
        target: Target,
        key: String,
        /// Also those already replayed.
        #[arg(long)]
        all: bool,
    },
    /// Queue dead letters again at the stage where they failed: those given with `--id`, or
    /// every pending one.
    Replay {
        #[command(flatten)]
        target: Target,
        key: String,
        #[arg(long = "id")]
        ids: Vec<i64>,
    },
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The collection-engine configuration (YAML, as mounted at /etc/config/config.yaml).
    file: PathBuf,
    /// The pipeline's name.
    #[arg(long, default_value = "collection-engine")]
    name: String,
    /// Print JSON (the `POST /v1/pipelines` body) instead of TOML.
    #[arg(long, conflicts_with = "create")]
    json: bool,
    /// Create the pipeline on a running server instead of printing it.
    #[arg(long)]
    create: bool,
    #[command(flatten)]
    target: Target,
}

/// The shape of `gleaner.toml` holding one pipeline: a `[[pipeline]]` table.
#[derive(Serialize)]
struct TomlFile<'a> {
    pipeline: [&'a PipelineSpec; 1],
}

/// The pipeline as a `[[pipeline]]` table ready to paste into `gleaner.toml`.
fn to_toml(spec: &PipelineSpec) -> anyhow::Result<String> {
    toml::to_string(&TomlFile { pipeline: [spec] }).context("cannot write the pipeline as TOML")
}

pub async fn run(config: &Config, command: PipelineCommand) -> anyhow::Result<()> {
    let output = match command {
        PipelineCommand::Import(args) => return import(config, args).await,
        PipelineCommand::List { target } => {
            return Api::new(config, target)?
                .print_items("/v1/pipelines", &[], "pipelines", list_line)
                .await;
        }
        PipelineCommand::Show { target, key } => {
            Api::new(config, target)?
                .call(Method::GET, &path(&key)?, &[])
                .await?
        }
        PipelineCommand::Create { target, spec } => {
            let body = read_json(&spec)?;
            Api::new(config, target)?
                .send_json(Method::POST, "/v1/pipelines", &body)
                .await?
        }
        PipelineCommand::Start { target, key } => act(config, target, &key, "start").await?,
        PipelineCommand::Pause { target, key } => act(config, target, &key, "pause").await?,
        PipelineCommand::Stop { target, key } => act(config, target, &key, "stop").await?,
        PipelineCommand::Delete { target, key } => {
            Api::new(config, target)?
                .call(Method::DELETE, &path(&key)?, &[])
                .await?;
            println!("pipeline {key:?} deleted");
            return Ok(());
        }
        PipelineCommand::DeadLetters { target, key, all } => {
            return dead_letters(config, target, &key, all).await;
        }
        PipelineCommand::Replay { target, key, ids } => {
            let body = if ids.is_empty() {
                json!({})
            } else {
                json!({ "ids": ids })
            };
            Api::new(config, target)?
                .send_json(
                    Method::POST,
                    &format!("{}/dead-letters/replay", path(&key)?),
                    &body,
                )
                .await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}

/// The API path of pipeline `key`.
fn path(key: &str) -> anyhow::Result<String> {
    resource_path("pipelines", "pipeline", key)
}

/// `POST /v1/pipelines/{key}/{action}`.
async fn act(config: &Config, target: Target, key: &str, action: &str) -> anyhow::Result<Value> {
    Api::new(config, target)?
        .call(Method::POST, &format!("{}/{action}", path(key)?), &[])
        .await
}

/// Prints every dead letter of pipeline `key` as a line of JSON, page after page.
async fn dead_letters(config: &Config, target: Target, key: &str, all: bool) -> anyhow::Result<()> {
    let query = vec![
        ("limit", "1000".to_owned()),
        ("pending", (!all).to_string()),
    ];
    Api::new(config, target)?
        .print_pages(
            &format!("{}/dead-letters", path(key)?),
            query,
            "dead_letters",
            ("next_after", "after"),
            Value::to_string,
        )
        .await
}

/// One pipeline as a line of `pipeline list`.
fn list_line(pipeline: &Value) -> String {
    let text = |field: &str| pipeline.get(field).and_then(Value::as_str).unwrap_or("?");
    let mut line = format!(
        "{:<30} {:<8} {:<6}",
        text("name"),
        text("state"),
        text("origin")
    );
    if let Some(owner) = pipeline.pointer("/runner/owner").and_then(Value::as_str) {
        line.push_str(&format!(" runs in {owner}"));
    }
    if let Some(error) = pipeline.get("start_error").and_then(Value::as_str) {
        line.push_str(&format!("  cannot start: {error}"));
    }
    line
}

async fn import(config: &Config, args: ImportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let spec = from_collection_engine_yaml(&text, &args.name)
        .with_context(|| format!("{} cannot be imported", args.file.display()))?;
    if args.create {
        let created = Api::new(config, args.target)?
            .send_json(
                reqwest::Method::POST,
                "/v1/pipelines",
                &serde_json::to_value(&spec)?,
            )
            .await?;
        println!("{}", serde_json::to_string_pretty(&created)?);
    } else if args.json {
        println!("{}", serde_json::to_string_pretty(&spec)?);
    } else {
        print!("{}", to_toml(&spec)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct Read {
        pipeline: Vec<PipelineSpec>,
    }

    #[test]
    fn the_toml_reads_back_as_the_same_pipeline() {
        let yaml = r#"
sourceApiBaseUrl: "http://source.example.com"
sourceApiAuthToken: "t"
sourceApiRateLimit: "5"
processingApiBaseUrl: "http://processing.example.com"
processingWorkersCount: "2"
storageApiBaseUrl: "http://storage.example.com"
"#;
        let spec = from_collection_engine_yaml(yaml, "imported").expect("converts");
        let text = to_toml(&spec).expect("toml");
        assert!(text.starts_with("[[pipeline]]\n"), "{text}");
        let read: Read = toml::from_str(&text).expect("reads back");
        assert_eq!(read.pipeline, vec![spec]);
        let untyped: BTreeMap<String, toml::Value> = toml::from_str(&text).expect("toml");
        assert_eq!(untyped.len(), 1);
    }

    #[test]
    fn import_takes_a_file_and_one_output() {
        use clap::Parser;

        use crate::cli::{Cli, Command};

        let parsed = Cli::try_parse_from(["gleaner", "pipeline", "import", "c.yaml", "--json"])
            .expect("parses");
        let Command::Pipeline(PipelineCommand::Import(args)) = parsed.command else {
            panic!("not pipeline import");
        };
        assert_eq!(args.file, PathBuf::from("c.yaml"));
        assert_eq!(args.name, "collection-engine");
        assert!(args.json && !args.create);
        let both = [
            "gleaner", "pipeline", "import", "c.yaml", "--json", "--create",
        ];
        assert!(Cli::try_parse_from(both).is_err());
    }
}
