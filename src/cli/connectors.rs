//! `gleaner connectors list|spec|check`: the built-in catalog, read without a server.

use std::sync::Arc;

use clap::Subcommand;

use super::run::settings_from;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::connectors::{ConnectorContext, ConnectorRegistry};
use crate::net::HttpClientFactory;

#[derive(Debug, Subcommand)]
pub enum ConnectorsCommand {
    /// List connectors.
    List,
    /// Print a connector's settings schema.
    Spec { name: String },
    /// Check settings against the connector's upstream.
    Check {
        name: String,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long)]
        settings: Option<String>,
    },
}

pub async fn run(config: &Config, command: ConnectorsCommand) -> anyhow::Result<()> {
    let registry = ConnectorRegistry::builtin(config);
    match command {
        ConnectorsCommand::List => {
            for entry in registry.iter() {
                println!(
                    "{:<20} {}",
                    entry.connector.name(),
                    entry.connector.description()
                );
            }
        }
        ConnectorsCommand::Spec { name } => {
            let entry = registry
                .get(&name)
                .ok_or_else(|| anyhow::anyhow!("unknown connector {name:?}"))?;
            println!("{}", serde_json::to_string_pretty(entry.schema.raw())?);
        }
        ConnectorsCommand::Check {
            name,
            set,
            settings,
        } => {
            let settings = settings_from(settings.as_deref(), &set)?;
            registry.validate(&name, &settings)?;
            let entry = registry
                .get(&name)
                .ok_or_else(|| anyhow::anyhow!("unknown connector {name:?}"))?;
            let context = ConnectorContext {
                http: HttpClientFactory::new(&config.net)?,
                clock: Arc::new(SystemClock),
                telemetry: crate::observability::Telemetry::new(),
            };
            entry.connector.check(&context, &settings).await?;
            println!("ok");
        }
    }
    Ok(())
}
