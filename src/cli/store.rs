//! `gleaner check-store` and `gleaner token create`: direct access to the store in the data
//! directory (the server may be running; SQLite's WAL lets both use it).

use clap::Subcommand;

use crate::config::Config;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token and print it (it is shown only this once).
    Create {
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

fn open(config: &Config) -> anyhow::Result<SqliteStore> {
    Ok(SqliteStore::open(&config.store_path(), 2)?)
}

pub async fn check(config: &Config) -> anyhow::Result<()> {
    let store = open(config)?;
    let problems = store.check_integrity().await?;
    if problems.is_empty() {
        println!(
            "ok: {} passed the integrity checks",
            config.store_path().display()
        );
        return Ok(());
    }
    for problem in &problems {
        println!("problem: {problem}");
    }
    anyhow::bail!("{} problems found", problems.len())
}

pub async fn token(config: &Config, command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Create { name } = command;
    let store = open(config)?;
    let token =
        crate::api::auth::create_token(&store, &name, jiff::Timestamp::now().as_millisecond())
            .await?;
    println!("{token}");
    Ok(())
}
