//! `saga-bench`: see the library's documentation, or `saga-bench --help`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let options = match bench::Options::parse_from(std::env::args_os()) {
        Ok(options) => options,
        Err(error) => error.exit(),
    };
    match bench::run(options).await {
        Ok(report) => {
            print!("{}", bench::summary(&report));
            if report.phases.iter().all(|phase| phase.figures.ended == 0) {
                eprintln!("no saga ended: is the system running?");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("saga-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}
