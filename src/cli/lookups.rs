//! `gleaner lookups …`: the lookup tables of a running server, through its API (the address
//! and token as for `gleaner jobs`).

use std::path::PathBuf;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::client::{Api, Target};
use crate::config::Config;
use crate::processors::tabular::check_table_name;

#[derive(Debug, Subcommand)]
pub enum LookupsCommand {
    /// List lookup tables: name, entries, last change.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Print a table's entries as one JSON object.
    Show {
        #[command(flatten)]
        target: Target,
        name: String,
    },
    /// Put a whole table from a JSON object of string keys and values in a file (`-`: stdin).
    Put {
        #[command(flatten)]
        target: Target,
        name: String,
        entries: PathBuf,
    },
    /// Delete a table.
    Delete {
        #[command(flatten)]
        target: Target,
        name: String,
    },
}

pub async fn run(config: &Config, command: LookupsCommand) -> anyhow::Result<()> {
    match command {
        LookupsCommand::List { target } => {
            Api::new(config, target)?
                .print_items("/v1/lookups", &[], "tables", |table| {
                    format!(
                        "{:<40} {:>10} {}",
                        table.get("name").and_then(Value::as_str).unwrap_or("?"),
                        table.get("entries").and_then(Value::as_u64).unwrap_or(0),
                        table
                            .get("updated_at")
                            .and_then(Value::as_str)
                            .unwrap_or("?"),
                    )
                })
                .await?;
        }
        LookupsCommand::Show { target, name } => {
            let table = Api::new(config, target)?
                .call(Method::GET, &path(&name)?, &[])
                .await?;
            let entries = table.get("entries").cloned().unwrap_or(Value::Null);
            println!("{}", serde_json::to_string_pretty(&entries)?);
        }
        LookupsCommand::Put {
            target,
            name,
            entries,
        } => {
            let path = path(&name)?;
            let entries = super::client::read_json(&entries)?;
            let table = Api::new(config, target)?
                .send_json(Method::PUT, &path, &json!({ "entries": entries }))
                .await?;
            let count = table
                .get("entries")
                .and_then(Value::as_object)
                .map_or(0, serde_json::Map::len);
            println!("lookup table {name:?}: {count} entries");
        }
        LookupsCommand::Delete { target, name } => {
            Api::new(config, target)?
                .call(Method::DELETE, &path(&name)?, &[])
                .await?;
            println!("lookup table {name:?} deleted");
        }
    }
    Ok(())
}

/// The API path of table `name`, refused here when no table can have that name.
fn path(name: &str) -> anyhow::Result<String> {
    check_table_name(name).map_err(|error| anyhow::anyhow!(error))?;
    Ok(format!("/v1/lookups/{name}"))
}
