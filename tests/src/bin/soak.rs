//! `soak`: the fault suite's random-kill scenario for as long as asked (not run by CI). On one
//! system it places burst after burst down every saga path while SIGKILLing a random
//! replica of every service at random moments, then checks invariants I1–I6 over every order
//! and prints the suite's line: `random_kill_soak: N orders, K faults, 0 stuck, 0 violations
//! (I1..I6)`.
//!
//! Usage: `cargo build --workspace --bins && cargo run -p e2e --bin soak -- --duration 10m`.
//! Exits 0 when every invariant held, 1 when one did not (listed on stderr), 2 on an error.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use e2e::faults::{self, Burst, BurstRecord, Scenario};
use e2e::system::{System, SystemOptions};
use tokio::time::Instant;

const USAGE: &str = "\
usage: soak --duration <DURATION> [--replicas <N>]

Runs the random-kill fault scenario on one system for DURATION (e.g. 90s, 10m, 1h):
bursts of orders down every saga path while every service is SIGKILLed at random
moments and restarted, then checks invariants I1-I6 over all of it and prints one line.

  --duration   how long to keep placing orders and killing services
  --replicas   processes per service (default 1)
Needs the service binaries (`cargo build --workspace --bins`) and a nats-server >= 2.10
(NATS_SERVER_BIN, or on PATH).";

#[tokio::main]
async fn main() -> ExitCode {
    let (duration, replicas) = match parse_arguments(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(error) => {
            eprintln!("{error:#}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match soak(duration, replicas).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("soak failed: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the soak; `Ok(false)` when an invariant broke or an order got stuck.
async fn soak(duration: Duration, replicas: usize) -> Result<bool> {
    let options = SystemOptions {
        replicas,
        ..SystemOptions::default()
    };
    let mut system = System::start(options).await?;
    faults::stock_products(&system).await?;
    let started = Instant::now();
    let mut record = BurstRecord::default();
    let mut kills = 0;
    let mut rounds = 0;
    while started.elapsed() < duration {
        let burst = Burst {
            first_index: record.orders.len(),
            ..Burst::default()
        };
        let (round, round_kills) = faults::random_kills(&mut system, burst)
            .await
            .with_context(|| format!("round {} of the soak", rounds + 1))?;
        record.extend(round);
        kills += round_kills;
        rounds += 1;
        eprintln!(
            "after {:.0?}: {rounds} rounds, {} orders, {kills} kills",
            started.elapsed(),
            record.orders.len()
        );
    }
    let scenario = Scenario::new("random_kill_soak", kills, record);
    let verdict = faults::judge(&system, &scenario).await?;
    eprintln!("soak took {:.0?}", started.elapsed());
    let held = verdict.print_and_check();
    if let Err(error) = &held {
        eprintln!("{error:#}");
    }
    system.shutdown().await?;
    Ok(held.is_ok())
}

fn parse_arguments(mut arguments: impl Iterator<Item = String>) -> Result<(Duration, usize)> {
    let mut duration = None;
    let mut replicas = 1;
    while let Some(argument) = arguments.next() {
        match argument.as_str() {
            "--duration" => {
                let value = arguments.next().context("--duration needs a value")?;
                duration = Some(parse_duration(&value)?);
            }
            "--replicas" => {
                let value = arguments.next().context("--replicas needs a value")?;
                replicas = value
                    .parse()
                    .with_context(|| format!("--replicas {value:?} is not a number"))?;
                anyhow::ensure!(replicas >= 1, "--replicas must be at least 1");
            }
            "-h" | "--help" => anyhow::bail!("soak"),
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    Ok((duration.context("--duration is required")?, replicas))
}

/// `90s`, `10m`, `1h`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(split) => text.split_at(split),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .with_context(|| format!("{text:?} is not a duration like 90s, 10m or 1h"))?;
    let seconds = match unit {
        "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        _ => anyhow::bail!("{text:?} is not a duration like 90s, 10m or 1h"),
    };
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("ten minutes").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn the_duration_is_required() {
        assert!(parse_arguments(std::iter::empty()).is_err());
        let (duration, replicas) =
            parse_arguments(["--duration", "2m"].map(str::to_owned).into_iter()).unwrap();
        assert_eq!((duration, replicas), (Duration::from_secs(120), 1));
    }
}
