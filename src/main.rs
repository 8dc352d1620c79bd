//! The `gleaner` binary: parses the command line and hands over to the library.

use clap::Parser;

/// mimalloc instead of the system allocator: the engine, the HTTP stack and the metric
/// aggregator allocate small short-lived objects on every request, and glibc's malloc (with
/// its arena locks and consolidation) was a sixth of the CPU of a callback delivery.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
