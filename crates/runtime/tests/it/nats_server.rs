//! A private `nats-server` with JetStream for one test: the server picks a free port and
//! writes it to a ports file, its store lives in a temporary directory, and it is killed when
//! dropped.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::time::Instant;

/// How long a fresh server may take to answer a JetStream request.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `nats-server -js` owned by the current test.
#[derive(Debug)]
pub struct NatsServer {
    process: Child,
    url: String,
    directory: TempDir,
}

impl NatsServer {
    /// Starts a server on a port of 127.0.0.1 it picks itself (no race for a free port), and
    /// returns once it answers a JetStream request.
    pub async fn start() -> NatsServer {
        let binary = std::env::var_os("NATS_SERVER_BIN").unwrap_or_else(|| "nats-server".into());
        let directory = tempfile::Builder::new()
            .prefix("runtime-nats-")
            .tempdir()
            .expect("failed to create a temporary directory");
        let log = File::create(directory.path().join("nats-server.log"))
            .expect("failed to create the server's log");
        let process = Command::new(&binary)
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(directory.path().join("jetstream"))
            .arg("--ports_file_dir")
            .arg(directory.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("failed to share the log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("failed to start {binary:?} (set NATS_SERVER_BIN to a nats-server >= 2.10): {error}")
            });
        // Owned from here on, so a failure below still kills the process.
        let mut server = NatsServer {
            process,
            url: String::new(),
            directory,
        };
        server.wait_until_ready().await;
        server
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    /// A JetStream context on this server with `streams` created.
    pub async fn jetstream(
        &self,
        streams: Vec<async_nats::jetstream::stream::Config>,
    ) -> async_nats::jetstream::Context {
        let client = async_nats::connect(self.url())
            .await
            .expect("failed to connect to nats-server");
        let jetstream = async_nats::jetstream::new(client);
        runtime::jetstream::ensure_streams(&jetstream, streams)
            .await
            .expect("failed to create the streams");
        jetstream
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.process.try_wait().expect("failed to poll nats-server") {
                panic!(
                    "nats-server exited at start ({status}); its log:\n{}",
                    self.log()
                );
            }
            if self.url.is_empty()
                && let Some(url) = read_ports_file(self.directory.path())
            {
                self.url = url;
            }
            if !self.url.is_empty() && jetstream_answers(&self.url).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not serve JetStream within {START_TIMEOUT:?}; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.directory.path().join("nats-server.log")).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // An error means it already exited; either way it is gone afterwards.
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The client URL from the `<executable>_<pid>.ports` file the server writes once it listens,
/// `{"nats":["nats://127.0.0.1:<port>"],...}`; `None` until it is there and complete.
fn read_ports_file(directory: &Path) -> Option<String> {
    let path = std::fs::read_dir(directory)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.extension()
                .is_some_and(|extension| extension == "ports")
        })?;
    let ports: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(ports["nats"][0].as_str()?.to_owned())
}

async fn jetstream_answers(url: &str) -> bool {
    let Ok(client) = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(1))
        .connect(url)
        .await
    else {
        return false;
    };
    async_nats::jetstream::new(client)
        .query_account()
        .await
        .is_ok()
}
