//! Private `nats-server` processes with JetStream, on free ports and temporary stores, killed
//! and their files removed when dropped: one server ([`NatsServer`]) or a JetStream cluster of
//! several, routed to each other ([`NatsCluster`]), whose servers can be killed and restarted.
//! Either runs open, or with the users and permissions of `deploy/nats/users.conf` and
//! passwords made up for the run ([`NatsUsers`]), as every [`crate::system::System`] does.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use events::participants::Participant;
use futures::TryStreamExt;
use runtime::jetstream::{NatsAuth, inbox_prefix};
use tempfile::TempDir;
use tokio::time::Instant;

use crate::logs;
use crate::ports::free_port;

/// The oldest server the system supports: the services rely on JetStream features of 2.10
/// (multiple consumer filter subjects, and the consumer create API they use).
pub const MINIMUM_VERSION: (u32, u32) = (2, 10);

/// How long a fresh server may take to accept a JetStream client.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a fresh cluster may take until every server has joined it (an R3 stream can be
/// created).
const CLUSTER_START_TIMEOUT: Duration = Duration::from_secs(45);

/// The users and permissions the system is deployed with, included as they are.
const USERS_CONF: &str = include_str!("../../deploy/nats/users.conf");

/// The configuration file a server with users is started with, in its directory.
const CONFIG_FILE: &str = "nats-server.conf";

/// The user of operators and tools, allowed everything.
pub const ADMIN_USER: &str = "admin";

/// The users of `deploy/nats/users.conf` (`admin` and one per service), each with a password
/// made up for one run. A server started with them refuses clients without a user, and
/// allows each user what the deployed configuration allows it.
#[derive(Debug, Clone)]
pub struct NatsUsers {
    /// `(user, password)`.
    passwords: Vec<(String, String)>,
    /// JetStream's `sync_interval` in the server's configuration; the server's default (2
    /// minutes) when `None`.
    sync_interval: Option<String>,
}

impl NatsUsers {
    /// `admin` and every service, with fresh random passwords.
    pub fn generate() -> NatsUsers {
        let users = std::iter::once(ADMIN_USER).chain(Participant::ALL.map(Participant::name));
        NatsUsers {
            passwords: users
                .map(|user| (user.to_owned(), uuid::Uuid::new_v4().simple().to_string()))
                .collect(),
            sync_interval: None,
        }
    }

    /// The server configuration with JetStream's `sync_interval` set, e.g. `always` as the
    /// deploy files set it.
    pub fn with_sync_interval(mut self, interval: &str) -> NatsUsers {
        self.sync_interval = Some(interval.to_owned());
        self
    }

    /// The password of `user`.
    ///
    /// # Panics
    ///
    /// If `user` is none of the configured users.
    pub fn password(&self, user: &str) -> &str {
        self.passwords
            .iter()
            .find(|(name, _)| name == user)
            .map(|(_, password)| password.as_str())
            .unwrap_or_else(|| panic!("no NATS user {user} in deploy/nats/users.conf"))
    }

    /// How `user` authenticates, as the services and sagactl take it.
    pub fn auth(&self, user: &str) -> NatsAuth {
        NatsAuth::user(user, self.password(user))
    }

    /// The environment a service or sagactl needs to connect as `user`.
    pub fn client_environment(&self, user: &str) -> Vec<(String, String)> {
        vec![
            ("NATS_USER".to_owned(), user.to_owned()),
            ("NATS_PASSWORD".to_owned(), self.password(user).to_owned()),
        ]
    }

    /// Connect options of `user`: a service's user with the service's own inbox prefix, as
    /// the service connects (any other inbox is not its to subscribe to).
    pub fn connect_options(&self, user: &str) -> async_nats::ConnectOptions {
        let options = async_nats::ConnectOptions::new()
            .user_and_password(user.to_owned(), self.password(user).to_owned());
        if user == ADMIN_USER {
            options
        } else {
            options.custom_inbox_prefix(inbox_prefix(user))
        }
    }

    /// The server's environment: `NATS_<USER>_PASSWORD`, which the configuration reads.
    fn server_environment(&self) -> impl Iterator<Item = (String, &str)> {
        self.passwords.iter().map(|(user, password)| {
            (
                format!("NATS_{}_PASSWORD", user.to_uppercase()),
                password.as_str(),
            )
        })
    }

    /// Writes the server configuration into `directory`: `deploy/nats/users.conf` beside
    /// [`CONFIG_FILE`], which includes it (nats-server includes relative to the including
    /// file only).
    fn write_config(&self, directory: &Path) -> Result<()> {
        std::fs::write(directory.join("users.conf"), USERS_CONF)
            .context("failed to write the NATS users")?;
        let mut config = "# The e2e harness's server: the deployed users and permissions \
                          (ports, store and cluster are flags).\ninclude ./users.conf\n"
            .to_owned();
        if let Some(interval) = &self.sync_interval {
            config.push_str(&format!("jetstream {{\n  sync_interval: {interval}\n}}\n"));
        }
        std::fs::write(directory.join(CONFIG_FILE), config)
            .context("failed to write the nats-server configuration")?;
        Ok(())
    }
}

/// Connect options for the harness's own clients: as `admin` when the server has users.
fn harness_options(users: Option<&NatsUsers>) -> async_nats::ConnectOptions {
    match users {
        Some(users) => users.connect_options(ADMIN_USER),
        None => async_nats::ConnectOptions::new(),
    }
}

/// A running `nats-server -js` owned by the current test.
#[derive(Debug)]
pub struct NatsServer {
    process: Option<Child>,
    port: u16,
    directory: TempDir,
    /// Its users, when it is not open to everyone.
    users: Option<NatsUsers>,
}

impl NatsServer {
    /// Starts a server on a free port of 127.0.0.1 with its JetStream store in a new
    /// temporary directory, open to any client, and returns once it answers a JetStream
    /// request.
    pub async fn start() -> Result<NatsServer> {
        Self::start_with(None).await
    }

    /// Starts a server like [`NatsServer::start`] that admits only `users`, each with the
    /// permissions of `deploy/nats/users.conf`.
    pub async fn start_with_users(users: NatsUsers) -> Result<NatsServer> {
        Self::start_with(Some(users)).await
    }

    async fn start_with(users: Option<NatsUsers>) -> Result<NatsServer> {
        let binary = nats_server_binary()?;
        // Another process may take the port between our probe and the server's bind; that is
        // the one failure worth another try.
        let mut attempts_left = 3;
        loop {
            attempts_left -= 1;
            match Self::start_once(&binary, users.clone()).await {
                Ok(server) => return Ok(server),
                Err(StartError::PortTaken(message)) if attempts_left > 0 => {
                    eprintln!("nats-server could not bind its port, trying another: {message}");
                }
                Err(StartError::PortTaken(message)) => anyhow::bail!(message),
                Err(StartError::Other(error)) => return Err(error),
            }
        }
    }

    async fn start_once(binary: &Path, users: Option<NatsUsers>) -> Result<NatsServer, StartError> {
        let directory = tempfile::Builder::new()
            .prefix("e2e-nats-")
            .tempdir()
            .context("failed to create a temporary directory for nats-server")?;
        if let Some(users) = &users {
            users.write_config(directory.path())?;
        }
        let port = free_port()?;
        let mut server = NatsServer {
            process: None,
            port,
            directory,
            users,
        };
        server.spawn(binary, "nats-server")?;
        server.wait_until_ready().await?;
        Ok(server)
    }

    /// Starts the server process on this server's port and store, appending to its log.
    fn spawn(&mut self, binary: &Path, banner: &str) -> Result<()> {
        let store = self.directory.path().join("jetstream");
        let (stdout, stderr) = logs::open_for_child(&self.log_path(), banner)?;
        let mut command = Command::new(binary);
        if let Some(users) = &self.users {
            command
                .arg("-c")
                .arg(self.directory.path().join(CONFIG_FILE))
                .envs(users.server_environment());
        }
        let process = command
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("failed to start {}", binary.display()))?;
        self.process = Some(process);
        Ok(())
    }

    /// Kills the server with SIGKILL, as a crash would, and starts it again on the same port
    /// with the same store; returns once it answers a JetStream request again.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop();
        self.start_again().await
    }

    /// Starts a stopped server again on the same port with the same store; returns once it
    /// answers a JetStream request.
    pub async fn start_again(&mut self) -> Result<()> {
        let binary = nats_server_binary()?;
        self.spawn(&binary, "nats-server (restarted on the same store)")?;
        self.wait_until_ready().await.map_err(|error| match error {
            StartError::PortTaken(message) => anyhow::anyhow!(message),
            StartError::Other(error) => error,
        })
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
            let last_error = match jetstream_answers(&self.url(), self.users.as_ref()).await {
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

    /// Its users, unless it is open to every client.
    pub fn users(&self) -> Option<&NatsUsers> {
        self.users.as_ref()
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

/// One server of a [`NatsCluster`]: its name, ports and store stay the same across restarts,
/// so a restarted server rejoins as the same JetStream peer with the data it had.
#[derive(Debug)]
struct ClusterNode {
    /// The server name (`-n`), which JetStream uses to tell peers apart.
    name: String,
    port: u16,
    cluster_port: u16,
    process: Option<Child>,
}

/// A JetStream cluster of `nats-server` processes on loopback: each with `-js`, the same
/// `--cluster_name`, its own cluster port, routes to the others, its own store and log.
#[derive(Debug)]
pub struct NatsCluster {
    binary: PathBuf,
    cluster_name: String,
    nodes: Vec<ClusterNode>,
    directory: TempDir,
    /// Its users, when it is not open to everyone (every server has the same).
    users: Option<NatsUsers>,
}

impl NatsCluster {
    /// Starts `size` servers open to any client and returns once every one of them serves
    /// JetStream and the cluster can place a stream with a replica on each.
    pub async fn start(size: usize) -> Result<NatsCluster> {
        Self::start_with(size, None).await
    }

    /// Starts a cluster like [`NatsCluster::start`] whose servers admit only `users`, each
    /// with the permissions of `deploy/nats/users.conf`.
    pub async fn start_with_users(size: usize, users: NatsUsers) -> Result<NatsCluster> {
        Self::start_with(size, Some(users)).await
    }

    async fn start_with(size: usize, users: Option<NatsUsers>) -> Result<NatsCluster> {
        anyhow::ensure!(size >= 1, "a cluster needs at least one server");
        let binary = nats_server_binary()?;
        let directory = tempfile::Builder::new()
            .prefix("e2e-nats-cluster-")
            .tempdir()
            .context("failed to create a temporary directory for the nats cluster")?;
        if let Some(users) = &users {
            users.write_config(directory.path())?;
        }
        let mut nodes = Vec::with_capacity(size);
        for index in 0..size {
            nodes.push(ClusterNode {
                name: format!("n{}", index + 1),
                port: free_port()?,
                cluster_port: free_port()?,
                process: None,
            });
        }
        let mut cluster = NatsCluster {
            binary,
            cluster_name: "e2e".to_owned(),
            nodes,
            directory,
            users,
        };
        for index in 0..size {
            cluster.spawn(index)?;
        }
        for index in 0..size {
            cluster.wait_until_serving(index).await?;
        }
        cluster.wait_until_formed().await?;
        Ok(cluster)
    }

    fn spawn(&mut self, index: usize) -> Result<()> {
        let node = &self.nodes[index];
        let store = self.directory.path().join(&node.name);
        let log_path = self.log_path(index);
        let routes: Vec<String> = self
            .nodes
            .iter()
            .filter(|other| other.name != node.name)
            .map(|other| format!("nats://127.0.0.1:{}", other.cluster_port))
            .collect();
        let (stdout, stderr) =
            logs::open_for_child(&log_path, &format!("nats-server {}", node.name))?;
        let mut command = Command::new(&self.binary);
        if let Some(users) = &self.users {
            command
                .arg("-c")
                .arg(self.directory.path().join(CONFIG_FILE))
                .envs(users.server_environment());
        }
        let process = command
            .args(["-js", "-a", "127.0.0.1", "-p", &node.port.to_string()])
            .args(["-n", &node.name, "--cluster_name", &self.cluster_name])
            .args([
                "-cluster",
                &format!("nats://127.0.0.1:{}", node.cluster_port),
            ])
            .args(["-routes", &routes.join(",")])
            .arg("-sd")
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("failed to start {}", self.binary.display()))?;
        self.nodes[index].process = Some(process);
        Ok(())
    }

    /// Waits until one server serves JetStream as a member of the cluster: it knows the
    /// cluster's leader and can list the streams.
    async fn wait_until_serving(&mut self, index: usize) -> Result<()> {
        let deadline = Instant::now() + CLUSTER_START_TIMEOUT;
        loop {
            let url = self.url(index);
            let name = self.nodes[index].name.clone();
            if let Some(process) = self.nodes[index].process.as_mut()
                && let Some(status) = process
                    .try_wait()
                    .with_context(|| format!("failed to poll nats-server {name}"))?
            {
                anyhow::bail!(
                    "nats-server {name} exited at start ({status}); its log:\n{}",
                    logs::tail(&self.log_path(index), logs::TAIL_LINES)
                );
            }
            let last_error = match cluster_member_answers(&url, self.users.as_ref()).await {
                Ok(()) => return Ok(()),
                Err(error) => format!("{error:#}"),
            };
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "nats-server {name} on {url} did not serve JetStream within \
                     {CLUSTER_START_TIMEOUT:?} (last error: {last_error}); its log:\n{}",
                    logs::tail(&self.log_path(index), logs::TAIL_LINES)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until a stream with one replica per server can be created: every server has
    /// joined. The probe stream is deleted again.
    async fn wait_until_formed(&self) -> Result<()> {
        let client = harness_options(self.users.as_ref())
            .connection_timeout(Duration::from_secs(2))
            .connect(self.urls().as_slice())
            .await
            .context("failed to connect to the nats cluster")?;
        let jetstream = async_nats::jetstream::new(client);
        let config = async_nats::jetstream::stream::Config {
            name: "E2E_CLUSTER_PROBE".to_owned(),
            subjects: vec!["e2e.cluster.probe".to_owned()],
            storage: async_nats::jetstream::stream::StorageType::Memory,
            num_replicas: self.nodes.len(),
            ..Default::default()
        };
        let deadline = Instant::now() + CLUSTER_START_TIMEOUT;
        loop {
            let last_error = match jetstream.create_stream(config.clone()).await {
                Ok(_) => break,
                Err(error) => error.to_string(),
            };
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "the nats cluster did not accept an R{} stream within \
                     {CLUSTER_START_TIMEOUT:?} (last error: {last_error}); the log of {}:\n{}",
                    self.nodes.len(),
                    self.nodes[0].name,
                    logs::tail(&self.log_path(0), logs::TAIL_LINES)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        jetstream
            .delete_stream("E2E_CLUSTER_PROBE")
            .await
            .context("failed to delete the cluster probe stream")?;
        Ok(())
    }

    /// How many servers the cluster has.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Its users, unless it is open to every client.
    pub fn users(&self) -> Option<&NatsUsers> {
        self.users.as_ref()
    }

    /// The client URL of one server, `nats://127.0.0.1:<port>`.
    pub fn url(&self, index: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[index].port)
    }

    /// The client URLs of every server.
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|index| self.url(index)).collect()
    }

    /// The server name of one server (`n1`, `n2`, ...), as JetStream reports leaders.
    pub fn name(&self, index: usize) -> &str {
        &self.nodes[index].name
    }

    /// The index of the server with this name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
    }

    /// Where one server's log goes.
    pub fn log_path(&self, index: usize) -> PathBuf {
        self.directory
            .path()
            .join(format!("{}.log", self.nodes[index].name))
    }

    /// True while the server's process runs (as far as the harness knows).
    pub fn is_running(&self, index: usize) -> bool {
        self.nodes[index].process.is_some()
    }

    /// Kills one server with SIGKILL, as a crash would, and waits until it is gone. Its store
    /// stays, for [`NatsCluster::restart`].
    pub fn kill(&mut self, index: usize) {
        if let Some(mut process) = self.nodes[index].process.take() {
            // An error means it already exited; either way it is gone afterwards.
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts a killed server again with the same name, ports and store, and waits until it
    /// serves JetStream.
    pub async fn restart(&mut self, index: usize) -> Result<()> {
        self.kill(index);
        self.spawn(index)?;
        self.wait_until_serving(index).await
    }

    /// Keeps the stores and logs after drop, so a failing test can be investigated.
    pub fn keep_files(&mut self) {
        self.directory.disable_cleanup(true);
    }

    /// The directory holding every server's store and log.
    pub fn directory(&self) -> &Path {
        self.directory.path()
    }

    /// Kills every server.
    pub fn stop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(index);
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            self.keep_files();
            eprintln!(
                "kept the nats cluster's stores and logs of the failed test in {}",
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

/// Connects (as admin, if the server has users) and asks the JetStream API for the account
/// info: proof the server is serving.
async fn jetstream_answers(url: &str, users: Option<&NatsUsers>) -> Result<()> {
    let client = harness_options(users)
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

/// Connects to one server only and lists the streams: a clustered server answers that only
/// once it is in contact with the cluster's meta leader (an account info request, which
/// [`jetstream_answers`] makes, it answers before).
async fn cluster_member_answers(url: &str, users: Option<&NatsUsers>) -> Result<()> {
    let client = harness_options(users)
        .connection_timeout(Duration::from_secs(1))
        .ignore_discovered_servers()
        .connect(url)
        .await
        .context("failed to connect")?;
    let mut jetstream = async_nats::jetstream::new(client);
    jetstream.set_timeout(Duration::from_secs(2));
    jetstream
        .query_account()
        .await
        .context("JetStream did not answer an account info request")?;
    let names: Vec<String> = jetstream
        .stream_names()
        .try_collect()
        .await
        .context("JetStream did not list the streams")?;
    drop(names);
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
