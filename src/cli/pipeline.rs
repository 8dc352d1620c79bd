//! `gleaner pipeline import <config.yaml>`: turns a collection-engine seed configuration into a
//! pipeline definition, printed as a `[[pipeline]]` table (or JSON), or created on a server.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::client::{Api, Target};
use crate::config::Config;
use crate::pipelines::PipelineSpec;
use crate::pipelines::import::from_collection_engine_yaml;

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Convert a collection-engine `config.yaml` into a pipeline definition.
    Import(ImportArgs),
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
    let PipelineCommand::Import(args) = command;
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
