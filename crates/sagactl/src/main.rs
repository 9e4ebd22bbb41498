//! The `sagactl` binary: parses the command line, runs it, and prints a failure with its
//! causes on stderr (exit code 1).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = sagactl::cli::Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match sagactl::cli::run(cli, &mut stdout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
