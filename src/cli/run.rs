//! `gleaner run <connector> --set k=v`: one collection straight to stdout as NDJSON, with a
//! progress bar on stderr when it is a terminal. Nothing is stored.

use std::io::Write;
use std::sync::Arc;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::settings;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::connectors::{ConnectorContext, ConnectorRegistry};
use crate::net::HttpClientFactory;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The connector to run (see `gleaner connectors list`).
    pub connector: String,
    /// A setting as key=value; dotted keys nest, JSON values are parsed.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The whole settings object as JSON (merged under --set).
    #[arg(long)]
    pub settings: Option<String>,
}

/// Merges `--settings` JSON with `--set` pairs (the pairs win).
pub fn settings_from(json: Option<&str>, pairs: &[String]) -> anyhow::Result<serde_json::Value> {
    let mut base = match json {
        Some(text) => serde_json::from_str(text)
            .map_err(|error| anyhow::anyhow!("--settings is not JSON: {error}"))?,
        None => serde_json::Value::Object(Default::default()),
    };
    let overlay = settings::from_pairs(pairs).map_err(anyhow::Error::msg)?;
    if let (serde_json::Value::Object(base), serde_json::Value::Object(overlay)) =
        (&mut base, overlay)
    {
        base.extend(overlay);
    }
    Ok(base)
}

pub async fn run(config: &Config, args: RunArgs) -> anyhow::Result<()> {
    let registry = ConnectorRegistry::builtin(config);
    let settings = settings_from(args.settings.as_deref(), &args.set)?;
    registry.validate(&args.connector, &settings)?;
    let entry = registry
        .get(&args.connector)
        .ok_or_else(|| anyhow::anyhow!("unknown connector {:?}", args.connector))?;
    let context = ConnectorContext {
        http: HttpClientFactory::new(&config.net)?,
        clock: Arc::new(SystemClock),
        telemetry: crate::observability::Telemetry::new(),
    };
    let progress = ProgressBar::new_spinner();
    progress.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")?);
    let stdout = std::io::stdout();
    let (mut pages, mut records) = (0u64, 0u64);
    let mut checkpoint = None;
    loop {
        let page = entry
            .connector
            .collect_page(&context, &settings, checkpoint.as_ref())
            .await?;
        let mut out = stdout.lock();
        for record in &page.records {
            serde_json::to_writer(&mut out, record)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        pages += 1;
        records += page.records.len() as u64;
        progress.set_message(format!("{pages} pages, {records} records"));
        progress.tick();
        if page.done {
            break;
        }
        if page.checkpoint.is_some() {
            checkpoint = page.checkpoint;
        }
    }
    progress.finish_with_message(format!("{pages} pages, {records} records"));
    Ok(())
}
