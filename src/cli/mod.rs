//! The command line: `serve` runs the service; the other subcommands run a connector once,
//! inspect the catalog, talk to a running server (jobs, metrics), or check the store.

mod client;
mod connectors;
mod lookups;
mod metrics;
mod pipeline;
mod run;
mod schedules;
mod settings;
mod store;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, Overrides, ServerOverrides};

/// Durable data collection from third-party APIs.
#[derive(Debug, Parser)]
#[command(name = "gleaner", version, about)]
pub struct Cli {
    /// Configuration file (default: ./gleaner.toml when it exists).
    #[arg(long, global = true, env = "GLEANER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (store, logs, admin token); overrides the file and the environment.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API and the workers.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free one).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// What this process runs (repeat or comma-separate; default: all three), so the
        /// scheduler or the workers can run apart from the API on one shared store.
        #[arg(long, value_enum, value_delimiter = ',')]
        role: Vec<crate::server::Role>,
    },
    /// Collect once with a connector and print the records as NDJSON on stdout.
    Run(run::RunArgs),
    /// The connector catalog.
    #[command(subcommand)]
    Connectors(connectors::ConnectorsCommand),
    /// Jobs on a running server.
    #[command(subcommand)]
    Jobs(client::JobsCommand),
    /// Lookup tables on a running server.
    #[command(subcommand)]
    Lookups(lookups::LookupsCommand),
    /// Cron schedules on a running server.
    #[command(subcommand)]
    Schedules(schedules::SchedulesCommand),
    /// Pipeline definitions.
    #[command(subcommand)]
    Pipeline(pipeline::PipelineCommand),
    /// Metric events and series on a running server.
    #[command(subcommand)]
    Metrics(metrics::MetricsCommand),
    /// Verify the store's integrity.
    CheckStore,
    /// API tokens.
    #[command(subcommand)]
    Token(store::TokenCommand),
    /// Print the OpenAPI document.
    Openapi,
}

impl Cli {
    /// Loads the configuration with this command line's overrides.
    pub fn load_config(&self) -> Result<Config, crate::config::Error> {
        let listen = match &self.command {
            Command::Serve { listen, .. } => *listen,
            _ => None,
        };
        let overrides = Overrides {
            data_dir: self.data_dir.clone(),
            server: listen.map(|listen| ServerOverrides {
                listen: Some(listen),
            }),
        };
        Config::load(self.config.as_deref(), &overrides)
    }
}

/// Runs the parsed command line; the process exit code follows from the result.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    let config = cli.load_config()?;
    match cli.command {
        Command::Serve { role, .. } => {
            let _guard = crate::observability::logging::init(&config.log, &config.data_dir)?;
            let roles = if role.is_empty() {
                crate::server::Role::ALL.to_vec()
            } else {
                role
            };
            crate::server::serve(config, &roles).await?;
        }
        Command::Run(args) => run::run(&config, args).await?,
        Command::Connectors(command) => connectors::run(&config, command).await?,
        Command::Jobs(command) => client::run(&config, command).await?,
        Command::Lookups(command) => lookups::run(&config, command).await?,
        Command::Schedules(command) => schedules::run(&config, command).await?,
        Command::Pipeline(command) => pipeline::run(&config, command).await?,
        Command::Metrics(command) => metrics::run(&config, command).await?,
        Command::CheckStore => store::check(&config).await?,
        Command::Token(command) => store::token(&config, command).await?,
        Command::Openapi => {
            let document = crate::api::openapi().to_pretty_json()?;
            println!("{document}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};
    use crate::server::Role;

    #[test]
    fn serve_takes_roles_comma_separated_or_repeated() {
        let roles = |args: &[&str]| match Cli::try_parse_from(args).expect("parses").command {
            Command::Serve { role, .. } => role,
            other => panic!("not serve: {other:?}"),
        };
        assert_eq!(roles(&["gleaner", "serve"]), Vec::<Role>::new());
        assert_eq!(
            roles(&["gleaner", "serve", "--role", "api,worker"]),
            vec![Role::Api, Role::Worker]
        );
        assert_eq!(
            roles(&["gleaner", "serve", "--role", "scheduler", "--role", "api"]),
            vec![Role::Scheduler, Role::Api]
        );
        assert!(Cli::try_parse_from(["gleaner", "serve", "--role", "cron"]).is_err());
    }
}
