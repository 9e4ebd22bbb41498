//! The command line: `sagactl dlq show | redrive | advisories` and `sagactl audit`, parsed
//! with clap (flags or environment), and [`run`], which executes it and writes what it found
//! or did.

use std::io::Write;

use anyhow::Context as _;
use async_nats::jetstream;
use clap::{Parser, Subcommand};
use runtime::jetstream::NatsAuth;

use crate::dead_letters::{self, DeadLetter, Selection};
use crate::{advisories, audit, connect, render};

/// Inspect and redrive the order saga's dead letters, and list the messages JetStream gave up
/// on.
#[derive(Debug, Parser)]
#[command(name = "sagactl", version)]
pub struct Cli {
    /// NATS server URL (2.10 or newer, with JetStream enabled).
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    pub nats_url: String,

    /// Who sagactl is to NATS: the `admin` user of deploy/nats/users.conf (it reads every
    /// stream and deletes redriven letters, which no service may).
    #[command(flatten)]
    pub nats_auth: NatsAuth,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The dead-letter stream (DLQ) and the max-deliveries advisories (ADVISORIES).
    #[command(subcommand)]
    Dlq(DlqCommand),

    /// Every event published about an order, oldest first, read from the streams (not from
    /// any service's database): the order's history, rebuilt for an audit.
    Audit {
        /// The order id.
        order_id: uuid::Uuid,

        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },

    /// Prints a bearer token signed with a shared HS256 secret, for trying the API of a
    /// system configured with AUTH_JWT_SECRET_FILE (needs no NATS).
    Token {
        /// The customer the token names (`sub`).
        subject: String,

        /// Grant the admin role as well.
        #[arg(long)]
        admin: bool,

        /// The file holding the secret, as the services read it.
        #[arg(long, env = "AUTH_JWT_SECRET_FILE")]
        secret_file: std::path::PathBuf,

        /// The `iss` the services expect.
        #[arg(long, env = "AUTH_JWT_ISSUER")]
        issuer: String,

        /// The `aud` the services expect.
        #[arg(long, env = "AUTH_JWT_AUDIENCE")]
        audience: String,

        /// How long the token is valid.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        valid_for: std::time::Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Lists dead letters, oldest first.
    ///
    /// Each with its DLQ sequence and time, the reason, the consumer that gave up, the
    /// original subject, the deliveries, the other headers, and the event's type and id (or
    /// the first bytes of a payload that is no event).
    Show {
        /// Show at most this many letters.
        #[arg(long)]
        limit: Option<usize>,

        /// Only the letters of this durable consumer, e.g. `payment-inventory`.
        #[arg(long)]
        consumer: Option<String>,

        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },

    /// Publishes dead letters back to their original subject, then deletes them from DLQ.
    ///
    /// Each letter is published with its original headers and `Nats-Msg-Id:
    /// redrive:<DLQ sequence>`, and deleted only once the stream has acknowledged it: after an
    /// interruption, redriving it again is dropped as a duplicate. The event keeps its id, so
    /// consumers that already applied it drop it. Fix the cause first.
    Redrive {
        /// DLQ sequences of the letters to redrive, as `show` prints them.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        sequences: Vec<u64>,

        /// Every letter DLQ holds when the command starts.
        #[arg(long)]
        all: bool,

        /// With --all: only the letters of this durable consumer.
        #[arg(long, conflicts_with = "sequences")]
        consumer: Option<String>,
    },

    /// Lists captured MAX_DELIVERIES advisories, oldest first.
    ///
    /// Each names the stream, consumer and stream sequence of a message JetStream stopped
    /// delivering, and how often it had delivered it. The message is still in its stream.
    Advisories {
        /// Show at most this many advisories.
        #[arg(long)]
        limit: Option<usize>,

        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Connects to NATS and runs the command, writing its report to `out`. Fails if anything it
/// was asked to do was not done (after doing all the rest).
pub async fn run(cli: Cli, out: &mut impl Write) -> anyhow::Result<()> {
    let nats = || connect(&cli.nats_url, &cli.nats_auth);
    match cli.command {
        Command::Dlq(DlqCommand::Show {
            limit,
            consumer,
            json,
        }) => show(&nats().await?, Selection { consumer, limit }, json, out).await,
        Command::Dlq(DlqCommand::Redrive {
            sequences,
            all,
            consumer,
        }) => redrive(&nats().await?, sequences, all, consumer, out).await,
        Command::Dlq(DlqCommand::Advisories { limit, json }) => {
            list_advisories(&nats().await?, limit, json, out).await
        }
        Command::Audit { order_id, json } => audit(&nats().await?, order_id, json, out).await,
        Command::Token {
            subject,
            admin,
            secret_file,
            issuer,
            audience,
            valid_for,
        } => {
            let secret = std::fs::read(&secret_file)
                .with_context(|| format!("failed to read {}", secret_file.display()))?;
            let roles: &[&str] = if admin { &["admin"] } else { &[] };
            let expires_at =
                jsonwebtoken::get_current_timestamp().saturating_add(valid_for.as_secs());
            let token = runtime::auth::sign_hs256(
                secret.trim_ascii_end(),
                &runtime::auth::TokenClaims {
                    sub: &subject,
                    iss: &issuer,
                    aud: &audience,
                    exp: expires_at,
                    roles,
                },
            )?;
            writeln!(out, "{token}")?;
            Ok(())
        }
    }
}

async fn audit(
    jetstream: &jetstream::Context,
    order_id: uuid::Uuid,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let trail = audit::trail(jetstream, order_id)
        .await
        .with_context(|| format!("failed to read the events of order {order_id}"))?;
    for entry in &trail {
        if json {
            writeln!(out, "{}", render::audit_json(entry))?;
        } else {
            writeln!(out, "{}", render::audit_text(entry))?;
        }
    }
    if !json {
        writeln!(out, "{} event(s) about order {order_id}", trail.len())?;
    }
    Ok(())
}

async fn show(
    jetstream: &jetstream::Context,
    selection: Selection,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let listing = dead_letters::list(jetstream, &selection)
        .await
        .context("failed to read the dead letters")?;
    for letter in &listing.items {
        if json {
            writeln!(out, "{}", render::dead_letter_json(letter))?;
        } else {
            writeln!(out, "{}", render::dead_letter_text(letter))?;
        }
    }
    if !json {
        writeln!(
            out,
            "{} dead letter(s) shown; DLQ holds {}",
            listing.items.len(),
            listing.stored
        )?;
    }
    Ok(())
}

async fn redrive(
    jetstream: &jetstream::Context,
    sequences: Vec<u64>,
    all: bool,
    consumer: Option<String>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    // With --all, the letters as they are now: letters that this redrive causes (an event that
    // fails again) wait for the next command instead of being chased.
    let mut failures = Vec::new();
    let letters: Vec<DeadLetter> = if all {
        let selection = Selection {
            consumer,
            limit: None,
        };
        dead_letters::list(jetstream, &selection)
            .await
            .context("failed to read the dead letters")?
            .items
    } else {
        let mut letters: Vec<DeadLetter> = Vec::new();
        for sequence in sequences {
            // A sequence given twice is redriven once.
            if letters.iter().any(|letter| letter.sequence == sequence) {
                continue;
            }
            match dead_letters::get(jetstream, sequence).await {
                Ok(letter) => letters.push(letter),
                Err(error) => {
                    failures.push(format!("#{sequence}: {:#}", anyhow::Error::from(error)))
                }
            }
        }
        letters
    };
    if all && letters.is_empty() {
        writeln!(out, "no dead letters to redrive")?;
    }
    let attempted = letters.len() + failures.len();
    for letter in &letters {
        match dead_letters::redrive(jetstream, letter).await {
            Ok(redriven) => {
                writeln!(
                    out,
                    "{}",
                    render::redriven_text(&redriven, letter.consumer())
                )?;
            }
            Err(error) => failures.push(format!(
                "#{}: {:#}",
                letter.sequence,
                anyhow::Error::from(error)
            )),
        }
    }
    if failures.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "{} of {attempted} dead letter(s) not redriven:\n  {}",
        failures.len(),
        failures.join("\n  ")
    )
}

async fn list_advisories(
    jetstream: &jetstream::Context,
    limit: Option<usize>,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let listing = advisories::list(jetstream, limit)
        .await
        .context("failed to read the advisories")?;
    for advisory in &listing.items {
        if json {
            writeln!(out, "{}", render::advisory_json(advisory))?;
        } else {
            writeln!(out, "{}", render::advisory_text(advisory))?;
        }
    }
    if !json {
        writeln!(
            out,
            "{} advisory(ies) shown; ADVISORIES holds {}",
            listing.items.len(),
            listing.stored
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("sagactl").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn redrive_takes_sequences_or_all_but_not_both_nor_neither() {
        let Command::Dlq(DlqCommand::Redrive { sequences, all, .. }) =
            parse(&["dlq", "redrive", "3", "5"]).unwrap().command
        else {
            panic!("not a redrive");
        };
        assert_eq!((sequences, all), (vec![3, 5], false));
        assert!(parse(&["dlq", "redrive", "--all"]).is_ok());
        assert!(parse(&["dlq", "redrive"]).is_err());
        assert!(parse(&["dlq", "redrive", "3", "--all"]).is_err());
    }

    #[test]
    fn the_consumer_filter_of_redrive_needs_all() {
        assert!(parse(&["dlq", "redrive", "--all", "--consumer", "payment-inventory"]).is_ok());
        assert!(parse(&["dlq", "redrive", "3", "--consumer", "payment-inventory"]).is_err());
    }

    #[test]
    fn the_nats_url_is_a_flag_anywhere_on_the_line() {
        let cli = parse(&[
            "dlq",
            "show",
            "--nats-url",
            "nats://10.0.0.1:4222",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.nats_url, "nats://10.0.0.1:4222");
        assert!(matches!(
            cli.command,
            Command::Dlq(DlqCommand::Show {
                json: true,
                limit: None,
                ..
            })
        ));
    }

    #[test]
    fn the_nats_user_is_a_flag_anywhere_on_the_line_and_needs_its_password() {
        let cli = parse(&[
            "dlq",
            "advisories",
            "--nats-user",
            "admin",
            "--nats-password",
            "pw",
        ])
        .unwrap();
        assert_eq!(cli.nats_auth.describe(), "user admin");
        assert!(!format!("{cli:?}").contains("\"pw\""));
        assert!(parse(&["--nats-user", "admin", "dlq", "show"]).is_err());
    }
}
