//! The `gleaner` binary: parses the command line and hands over to the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = gleaner::cli::Cli::parse();
    match gleaner::cli::main(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gleaner: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
