//! A private `nats-server` process with JetStream, on a free port and a temporary store,
//! killed and its files removed when dropped.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use tempfile::TempDir;
use tokio::time::Instant;

use crate::logs;
use crate::ports::free_port;

/// The oldest server the system supports: the services rely on JetStream features of 2.10
/// (multiple consumer filter subjects, and the consumer create API they use).
pub const MINIMUM_VERSION: (u32, u32) = (2, 10);

/// How long a fresh server may take to accept a JetStream client.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `nats-server -js` owned by the current test.
#[derive(Debug)]
pub struct NatsServer {
    process: Option<Child>,
    port: u16,
    directory: TempDir,
}

impl NatsServer {
    /// Starts a server on a free port of 127.0.0.1 with its JetStream store in a new
    /// temporary directory, and returns once it answers a JetStream request.
    pub async fn start() -> Result<NatsServer> {
        let binary = nats_server_binary()?;
        // Another process may take the port between our probe and the server's bind; that is
        // the one failure worth another try.
        let mut attempts_left = 3;
        loop {
            attempts_left -= 1;
            match Self::start_once(&binary).await {
                Ok(server) => return Ok(server),
                Err(StartError::PortTaken(message)) if attempts_left > 0 => {
                    eprintln!("nats-server could not bind its port, trying another: {message}");
                }
                Err(StartError::PortTaken(message)) => anyhow::bail!(message),
                Err(StartError::Other(error)) => return Err(error),
            }
        }
    }

    async fn start_once(binary: &Path) -> Result<NatsServer, StartError> {
        let directory = tempfile::Builder::new()
            .prefix("e2e-nats-")
            .tempdir()
            .context("failed to create a temporary directory for nats-server")?;
        let port = free_port()?;
        let store = directory.path().join("jetstream");
        let log_path = directory.path().join("nats-server.log");
        let (stdout, stderr) = logs::open_for_child(&log_path, "nats-server")?;
        let process = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("failed to start {}", binary.display()))?;
        let mut server = NatsServer {
            process: Some(process),
            port,
            directory,
        };
        server.wait_until_ready().await?;
        Ok(server)
    }

    async fn wait_until_ready(&mut self) -> Result<(), StartError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(process) = self.process.as_mut()
                && let Some(status) = process.try_wait().context("failed to poll nats-server")?
            {
                let tail = logs::tail(&self.log_path(), logs::TAIL_LINES);
                let message = format!("nats-server exited at start ({status}); its log:\n{tail}");
                return Err(if tail.contains("address already in use") {
                    StartError::PortTaken(message)
                } else {
                    StartError::Other(anyhow::anyhow!(message))
                });
            }
            let last_error = match jetstream_answers(&self.url()).await {
                Ok(()) => return Ok(()),
                Err(error) => format!("{error:#}"),
            };
            if Instant::now() >= deadline {
                let tail = logs::tail(&self.log_path(), logs::TAIL_LINES);
                return Err(StartError::Other(anyhow::anyhow!(
                    "nats-server on port {} did not accept a JetStream client within \
                     {START_TIMEOUT:?} (last error: {last_error}); its log:\n{tail}",
                    self.port
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the server's own log goes.
    pub fn log_path(&self) -> PathBuf {
        self.directory.path().join("nats-server.log")
    }

    /// Keeps the store and log after drop, so a failing test can be investigated.
    pub fn keep_files(&mut self) {
        self.directory.disable_cleanup(true);
    }

    /// Kills the server (SIGKILL; its store is thrown away anyway) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            // Errors mean it has already exited; either way it is gone afterwards.
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            self.keep_files();
            eprintln!(
                "kept the nats-server store and log of the failed test in {}",
                self.directory.path().display()
            );
        }
    }
}

enum StartError {
    PortTaken(String),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for StartError {
    fn from(error: anyhow::Error) -> Self {
        StartError::Other(error)
    }
}

/// Connects and asks the JetStream API for the account info: proof the server is serving.
async fn jetstream_answers(url: &str) -> Result<()> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(1))
        .connect(url)
        .await
        .context("failed to connect")?;
    let jetstream = async_nats::jetstream::new(client);
    jetstream
        .query_account()
        .await
        .context("JetStream did not answer an account info request")?;
    Ok(())
}

/// The `nats-server` binary to run: `NATS_SERVER_BIN`, else the first `nats-server` on
/// `PATH`; refused unless `--version` says it is at least [`MINIMUM_VERSION`].
pub fn nats_server_binary() -> Result<PathBuf> {
    let binary = match env::var_os("NATS_SERVER_BIN") {
        Some(path) => PathBuf::from(path),
        None => find_on_path("nats-server").context(
            "no nats-server binary: set NATS_SERVER_BIN to a nats-server >= 2.10, or put one on PATH",
        )?,
    };
    check_version(&binary)?;
    Ok(binary)
}

/// Fails unless `<binary> --version` reports at least [`MINIMUM_VERSION`].
pub fn check_version(binary: &Path) -> Result<()> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("failed to run `{} --version`", binary.display()))?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let version = parse_version(&printed).with_context(|| {
        format!(
            "cannot read a version from `{} --version`, which printed {printed:?}",
            binary.display()
        )
    })?;
    let (major, minor) = MINIMUM_VERSION;
    if (version.0, version.1) < MINIMUM_VERSION {
        anyhow::bail!(
            "{} is nats-server v{}.{}.{}, but the suite needs >= {major}.{minor}; set \
             NATS_SERVER_BIN to a newer nats-server (the one on PATH may be a distribution's old \
             package)",
            binary.display(),
            version.0,
            version.1,
            version.2
        );
    }
    Ok(())
}

/// Reads `(major, minor, patch)` from output such as `nats-server: v2.15.1`.
pub fn parse_version(printed: &str) -> Option<(u32, u32, u32)> {
    // The number follows the first `v` that is followed by a digit ("server" has a `v` too).
    let start = printed
        .char_indices()
        .zip(printed.chars().skip(1))
        .find(|((_, letter), next)| *letter == 'v' && next.is_ascii_digit())
        .map(|((index, _), _)| index)?;
    let mut numbers = printed[start + 1..]
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|part| part.parse::<u32>().ok());
    Some((numbers.next()??, numbers.next()??, numbers.next()??))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_version_line() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15, 1)));
        assert_eq!(parse_version("nats-server: v2.9.10"), Some((2, 9, 10)));
        assert_eq!(parse_version("nats-server: v2.11.0-RC.2"), Some((2, 11, 0)));
        assert_eq!(parse_version("no version here"), None);
    }

    fn fake_server(directory: &Path, version_line: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = directory.join("nats-server");
        std::fs::write(&path, format!("#!/bin/sh\necho '{version_line}'\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    // One test, not two: writing an executable while another test thread forks can make
    // the exec fail with "text file busy".
    #[test]
    fn old_servers_are_refused_with_a_clear_message_and_current_ones_accepted() {
        let old_directory = tempfile::tempdir().unwrap();
        let old = fake_server(old_directory.path(), "nats-server: v2.9.10");
        let message = format!("{:#}", check_version(&old).unwrap_err());
        assert!(
            message.contains("v2.9.10") && message.contains(">= 2.10"),
            "{message}"
        );
        assert!(message.contains("NATS_SERVER_BIN"), "{message}");

        let current_directory = tempfile::tempdir().unwrap();
        let current = fake_server(current_directory.path(), "nats-server: v2.15.1");
        check_version(&current).unwrap();
    }

    #[test]
    fn versions_compare_by_major_then_minor() {
        assert!((2, 9) < MINIMUM_VERSION);
        assert!((2, 10) >= MINIMUM_VERSION);
        assert!((2, 15) >= MINIMUM_VERSION);
    }
}
