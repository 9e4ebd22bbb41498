//! A private Postgres server for a test that restarts Postgres itself: `initdb` in a
//! temporary directory and `pg_ctl` on a free port of 127.0.0.1, stopped and removed on drop.
//! The shared server on 5432 is never touched.
//!
//! `initdb` refuses to run as root, so when the suite runs as root the binaries run as the
//! `postgres` OS user (`runuser -u postgres --`), in a directory that user owns.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};
use tempfile::TempDir;
use tokio::process::Command;

use crate::logs;
use crate::ports::free_port;

/// Where Debian puts the Postgres binaries; `E2E_POSTGRES_BIN` overrides it.
const DEFAULT_BINARIES: &str = "/usr/lib/postgresql/15/bin";

/// The directory of the Postgres binaries (`initdb`, `pg_ctl`, `psql`): `E2E_POSTGRES_BIN`,
/// else Debian's.
pub fn binaries() -> PathBuf {
    env::var_os("E2E_POSTGRES_BIN").map_or_else(|| PathBuf::from(DEFAULT_BINARIES), PathBuf::from)
}

/// The OS user the server runs as when the suite runs as root.
const POSTGRES_OS_USER: &str = "postgres";

/// A Postgres cluster owned by one test.
#[derive(Debug)]
pub struct PostgresServer {
    binaries: PathBuf,
    directory: TempDir,
    port: u16,
    as_postgres_user: bool,
    running: bool,
}

impl PostgresServer {
    /// Creates a cluster (trust authentication, superuser `postgres`) and starts it.
    pub async fn start() -> Result<PostgresServer> {
        let binaries = binaries();
        anyhow::ensure!(
            binaries.join("initdb").is_file(),
            "no initdb in {}: set E2E_POSTGRES_BIN to the directory of the Postgres server \
             binaries",
            binaries.display()
        );
        let directory = tempfile::Builder::new()
            .prefix("e2e-postgres-")
            .tempdir()
            .context("failed to create a temporary directory for Postgres")?;
        let as_postgres_user = rustix::process::geteuid().is_root();
        if as_postgres_user {
            let status = Command::new("chown")
                .arg(format!("{POSTGRES_OS_USER}:"))
                .arg(directory.path())
                .status()
                .await
                .context("failed to run chown")?;
            anyhow::ensure!(
                status.success(),
                "chown of {} failed",
                directory.path().display()
            );
        }
        let mut server = PostgresServer {
            binaries,
            directory,
            port: free_port()?,
            as_postgres_user,
            running: false,
        };
        let data = server.data_directory();
        server
            .run(
                "initdb",
                &[
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-U".as_ref(),
                    "postgres".as_ref(),
                    "-A".as_ref(),
                    "trust".as_ref(),
                    "--no-sync".as_ref(),
                ],
            )
            .await?;
        server.start_server().await?;
        Ok(server)
    }

    /// `postgres://postgres@127.0.0.1:<port>`, without a database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// The URL of one database on this server.
    pub fn database_url(&self, database: &str) -> String {
        format!("{}/{database}", self.url())
    }

    /// Stops the server as a crash would (`pg_ctl -m immediate`: no checkpoint, every
    /// connection cut, crash recovery at the next start) and starts it again on the same
    /// port and data.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop_server().await?;
        self.start_server().await
    }

    /// Stops the server as [`PostgresServer::restart`] does, and leaves it stopped.
    pub async fn stop(&mut self) -> Result<()> {
        self.stop_server().await
    }

    /// Starts a stopped server again on the same port and data.
    pub async fn start_again(&mut self) -> Result<()> {
        self.start_server().await
    }

    fn data_directory(&self) -> PathBuf {
        self.directory.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.directory.path().join("postgres.log")
    }

    async fn start_server(&mut self) -> Result<()> {
        let data = self.data_directory();
        let log = self.log_path();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200 -c fsync=off",
            self.port,
            self.directory.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
                "-w".as_ref(),
                "start".as_ref(),
            ],
        )
        .await?;
        self.running = true;
        Ok(())
    }

    async fn stop_server(&mut self) -> Result<()> {
        let data = self.data_directory();
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        )
        .await?;
        self.running = false;
        Ok(())
    }

    /// Runs one of the server's binaries to completion (as the `postgres` user when root).
    async fn run(&self, binary: &str, args: &[&std::ffi::OsStr]) -> Result<()> {
        let program = self.binaries.join(binary);
        let mut command = self.command(&program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let output = command
            .output()
            .await
            .with_context(|| format!("failed to run {}", program.display()))?;
        anyhow::ensure!(
            output.status.success(),
            "{} {:?} failed ({}): {}\nthe server log ends:\n{}",
            program.display(),
            args,
            output.status,
            String::from_utf8_lossy(&output.stderr),
            logs::tail(&self.log_path(), logs::TAIL_LINES)
        );
        Ok(())
    }

    fn command(&self, program: &Path) -> Command {
        if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", POSTGRES_OS_USER, "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        let program = self.binaries.join("pg_ctl");
        let mut command = if self.as_postgres_user {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", POSTGRES_OS_USER, "--"]).arg(&program);
            command
        } else {
            std::process::Command::new(&program)
        };
        // Best effort: the directory goes away with the TempDir either way.
        let _ = command
            .arg("-D")
            .arg(self.data_directory())
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
