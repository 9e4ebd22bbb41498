//! A whole running system for one test: a private `nats-server`, the five service binaries
//! as child processes on free ports and fresh databases, and control over their lifecycle
//! (kill, wait for a self-inflicted crash, restart on the same port and database).

use std::env;
use std::fmt;
use std::net::TcpListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use rustix::process::{Pid, Signal, kill_process};
use tempfile::TempDir;
use tokio::sync::OnceCell;
use tokio::time::Instant;
use uuid::Uuid;

use crate::databases;
use crate::invariants::Ledger;
use crate::logs;
use crate::nats_server::NatsServer;
use crate::ports::free_port;

/// How long a service may take from spawn to `GET /readyz` answering 200 (it creates and
/// migrates its database and declares its streams and consumers first).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a service may take to exit after SIGTERM (it finishes in-flight messages).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Each HTTP request of the harness; generous because 200 orders may be placed at once.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The five services of the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    Order,
    Inventory,
    Payment,
    Fulfillment,
    Notification,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Service::Order,
        Service::Inventory,
        Service::Payment,
        Service::Fulfillment,
        Service::Notification,
    ];

    /// The short name, used in database names and log file names: `order`.
    pub fn name(self) -> &'static str {
        match self {
            Service::Order => "order",
            Service::Inventory => "inventory",
            Service::Payment => "payment",
            Service::Fulfillment => "fulfillment",
            Service::Notification => "notification",
        }
    }

    /// The binary's file name: `order-service`.
    pub fn binary_name(self) -> &'static str {
        match self {
            Service::Order => "order-service",
            Service::Inventory => "inventory-service",
            Service::Payment => "payment-service",
            Service::Fulfillment => "fulfillment-service",
            Service::Notification => "notification-service",
        }
    }

    /// The service's default HTTP port (DESIGN §6), used by the demo.
    pub fn default_port(self) -> u16 {
        match self {
            Service::Order => 8080,
            Service::Inventory => 8081,
            Service::Payment => 8082,
            Service::Fulfillment => 8083,
            Service::Notification => 8084,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.binary_name())
    }
}

/// How to start a [`System`]. `Default` is what a test wants: free ports, unique databases
/// dropped at the end, logs in a temporary directory.
#[derive(Debug, Clone)]
pub struct SystemOptions {
    /// Extra environment for one service, e.g. a fault to inject; applied at start only, not
    /// on [`System::restart`].
    pub extra_env: Vec<(Service, String, String)>,
    /// `RUST_LOG` of the services: `E2E_RUST_LOG` if set, else `info`.
    pub rust_log: String,
    /// Listen on [`Service::default_port`] instead of free ports.
    pub fixed_http_ports: bool,
    /// Databases are named `<prefix>_<service>`; by default `e2e_<8 random hex>`.
    pub database_prefix: Option<String>,
    /// Drop the databases before starting, for a clean start under a fixed prefix.
    pub drop_databases_first: bool,
    /// Drop the databases at shutdown (and on drop).
    pub drop_databases_at_end: bool,
    /// Write logs here and keep them, instead of a temporary directory.
    pub log_directory: Option<PathBuf>,
    /// Start the services in their own process group, so a Ctrl-C in the terminal reaches
    /// only the harness, which then shuts them down in order. Tests leave this off so that an
    /// interrupted `cargo test` takes the services down with it.
    pub own_process_group: bool,
}

impl Default for SystemOptions {
    fn default() -> Self {
        SystemOptions {
            extra_env: Vec::new(),
            rust_log: env::var("E2E_RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
            fixed_http_ports: false,
            database_prefix: None,
            drop_databases_first: false,
            drop_databases_at_end: true,
            log_directory: None,
            own_process_group: false,
        }
    }
}

impl SystemOptions {
    /// Adds one environment variable for one service.
    pub fn with_env(mut self, service: Service, key: &str, value: &str) -> Self {
        self.extra_env
            .push((service, key.to_owned(), value.to_owned()));
        self
    }
}

/// One service's child process and everything needed to start it again the same way.
#[derive(Debug)]
struct ServiceProcess {
    service: Service,
    binary: PathBuf,
    process: Option<Child>,
    http_port: u16,
    database: String,
    log_path: PathBuf,
    /// The environment every start of this service gets (without per-start extras).
    environment: Vec<(String, String)>,
}

impl ServiceProcess {
    fn spawn(&mut self, extra_env: &[(String, String)], own_process_group: bool) -> Result<()> {
        let extras: Vec<String> = extra_env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let banner = format!("starting {} {}", self.service, extras.join(" "));
        let (stdout, stderr) = logs::open_for_child(&self.log_path, banner.trim_end())?;
        let mut command = Command::new(&self.binary);
        // Faults are only ever injected on purpose, through `extra_env`: never inherit one
        // from the shell that runs the suite.
        for (key, _) in env::vars_os() {
            if key.to_string_lossy().starts_with("FAULT_") {
                command.env_remove(key);
            }
        }
        command
            .envs(self.environment.iter().map(|(k, v)| (k, v)))
            .envs(extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        if own_process_group {
            command.process_group(0);
        }
        let child = command
            .spawn()
            .with_context(|| format!("failed to start {}", self.binary.display()))?;
        self.process = Some(child);
        Ok(())
    }

    /// `Some(status)` once the process has exited (and then forgets it), `None` while it runs.
    fn exited(&mut self) -> Result<Option<ExitStatus>> {
        let Some(process) = self.process.as_mut() else {
            return Ok(None);
        };
        let status = process
            .try_wait()
            .with_context(|| format!("failed to poll {}", self.service))?;
        if status.is_some() {
            self.process = None;
        }
        Ok(status)
    }

    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            // An error means it already exited; either way it is gone afterwards.
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    fn log_tail(&self) -> String {
        logs::tail(&self.log_path, logs::TAIL_LINES)
    }
}

/// Where the service logs go.
#[derive(Debug)]
enum LogDirectory {
    /// Removed at a clean shutdown, kept otherwise.
    Temporary(TempDir),
    /// Chosen by the caller and always kept.
    Chosen(PathBuf),
}

impl LogDirectory {
    fn path(&self) -> &Path {
        match self {
            LogDirectory::Temporary(directory) => directory.path(),
            LogDirectory::Chosen(path) => path,
        }
    }

    fn keep(&mut self) {
        if let LogDirectory::Temporary(directory) = self {
            directory.disable_cleanup(true);
        }
    }
}

/// A running system: NATS, the five services, their databases and logs. Killed and cleaned
/// up on drop; a test ends with [`System::shutdown`], which also checks that every service
/// exits 0 on SIGTERM. A system dropped without a clean shutdown (a failing test) keeps its
/// logs and prints where they are and how they end.
#[derive(Debug)]
pub struct System {
    nats: NatsServer,
    services: Vec<ServiceProcess>,
    database_prefix: String,
    drop_databases_at_end: bool,
    own_process_group: bool,
    logs: LogDirectory,
    http: reqwest::Client,
    pub(crate) nats_client: OnceCell<async_nats::Client>,
    /// What the test did (stock set, orders placed, messages injected), for the invariants.
    pub(crate) ledger: Mutex<Ledger>,
    /// Set by a completed `shutdown`, so that `Drop` has nothing left to do.
    shut_down: bool,
}

impl System {
    /// Starts NATS and the five services and returns once every service is ready.
    pub async fn start(options: SystemOptions) -> Result<System> {
        let binary_directory = service_binary_directory()?;
        let mut binaries = Vec::new();
        for service in Service::ALL {
            binaries.push((service, service_binary(&binary_directory, service)?));
        }
        let database_prefix = options
            .database_prefix
            .clone()
            .unwrap_or_else(unique_database_prefix);
        let database_names: Vec<String> = Service::ALL
            .iter()
            .map(|service| format!("{database_prefix}_{}", service.name()))
            .collect();
        if options.drop_databases_first {
            databases::drop_databases(&database_names).await?;
        }
        let logs = match &options.log_directory {
            Some(path) => {
                std::fs::create_dir_all(path)
                    .with_context(|| format!("failed to create {}", path.display()))?;
                LogDirectory::Chosen(path.clone())
            }
            None => LogDirectory::Temporary(
                tempfile::Builder::new()
                    .prefix("e2e-logs-")
                    .tempdir()
                    .context("failed to create a temporary directory for service logs")?,
            ),
        };
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            // A proxy from the environment must never see requests to our own 127.0.0.1.
            .no_proxy()
            .build()
            .context("failed to build the HTTP client")?;
        let nats = NatsServer::start().await?;
        let mut system = System {
            nats,
            services: Vec::new(),
            database_prefix,
            drop_databases_at_end: options.drop_databases_at_end,
            own_process_group: options.own_process_group,
            logs,
            http,
            nats_client: OnceCell::new(),
            ledger: Mutex::new(Ledger::default()),
            shut_down: false,
        };
        // From here on, an error drops `system`, which kills whatever was started.
        for (service, binary) in binaries {
            let http_port = if options.fixed_http_ports {
                let port = service.default_port();
                TcpListener::bind(("127.0.0.1", port)).with_context(|| {
                    format!("port {port} for {service} is taken (is another demo running?)")
                })?;
                port
            } else {
                free_port()?
            };
            let database = format!("{}_{}", system.database_prefix, service.name());
            let log_path = system.logs.path().join(format!("{}.log", service.name()));
            logs::touch(&log_path)?;
            let environment = vec![
                ("NATS_URL".to_owned(), system.nats.url()),
                (
                    "DATABASE_URL".to_owned(),
                    databases::database_url(&database),
                ),
                ("HTTP_ADDR".to_owned(), format!("127.0.0.1:{http_port}")),
                ("RUST_LOG".to_owned(), options.rust_log.clone()),
                ("LOG_FORMAT".to_owned(), "pretty".to_owned()),
                // The logs go to files: colour codes would only make them hard to read.
                ("NO_COLOR".to_owned(), "1".to_owned()),
                ("DB_MAX_CONNECTIONS".to_owned(), "4".to_owned()),
                // Redeliveries after a crash come quickly, so the crash test is quick.
                ("CONSUMER_ACK_WAIT".to_owned(), "2s".to_owned()),
                // Far beyond any test's own timeouts on a busy machine: only the deadline
                // tests, which set their own, should ever see an order run out of time.
                ("ORDER_DEADLINE".to_owned(), "120s".to_owned()),
            ];
            let extra_env: Vec<(String, String)> = options
                .extra_env
                .iter()
                .filter(|(target, _, _)| *target == service)
                .map(|(_, key, value)| (key.clone(), value.clone()))
                .collect();
            let mut process = ServiceProcess {
                service,
                binary,
                process: None,
                http_port,
                database,
                log_path,
                environment,
            };
            process.spawn(&extra_env, system.own_process_group)?;
            system.services.push(process);
        }
        system.wait_until_ready(&Service::ALL).await?;
        Ok(system)
    }

    /// Polls `GET /readyz` of each service until it answers 200; fails at once, with the end
    /// of its log, if a service exits first.
    async fn wait_until_ready(&mut self, services: &[Service]) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut waiting: Vec<Service> = services.to_vec();
        let mut last_seen: Vec<(Service, String)> = Vec::new();
        while !waiting.is_empty() {
            last_seen.clear();
            let mut still_waiting = Vec::new();
            for service in waiting {
                let process = self.process_mut(service);
                if let Some(status) = process.exited()? {
                    anyhow::bail!(
                        "{service} exited before it was ready ({}); the end of its log ({}):\n{}",
                        describe_exit(status),
                        process.log_path.display(),
                        process.log_tail()
                    );
                }
                let url = format!("{}/readyz", self.base_url(service));
                match self
                    .http
                    .get(&url)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                {
                    Ok(response) if response.status() == reqwest::StatusCode::OK => {}
                    Ok(response) => {
                        last_seen.push((service, format!("HTTP {}", response.status())));
                        still_waiting.push(service);
                    }
                    Err(error) => {
                        last_seen.push((service, error.to_string()));
                        still_waiting.push(service);
                    }
                }
            }
            waiting = still_waiting;
            if waiting.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let mut message = format!("services not ready within {READY_TIMEOUT:?}:");
                for (service, seen) in &last_seen {
                    let process = self.process(*service);
                    message.push_str(&format!(
                        "\n--- {service}: GET /readyz gave {seen}; the end of its log ({}):\n{}",
                        process.log_path.display(),
                        process.log_tail()
                    ));
                }
                anyhow::bail!(message);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    fn process(&self, service: Service) -> &ServiceProcess {
        // Every service is pushed at start, in `Service::ALL` order.
        &self.services[service as usize]
    }

    fn process_mut(&mut self, service: Service) -> &mut ServiceProcess {
        &mut self.services[service as usize]
    }

    /// `http://127.0.0.1:<port>` of a service.
    pub fn base_url(&self, service: Service) -> String {
        format!("http://127.0.0.1:{}", self.process(service).http_port)
    }

    /// The HTTP port a service listens on.
    pub fn http_port(&self, service: Service) -> u16 {
        self.process(service).http_port
    }

    /// The URL of this system's NATS server.
    pub fn nats_url(&self) -> String {
        self.nats.url()
    }

    /// The NATS server's own log.
    pub fn nats_log_path(&self) -> PathBuf {
        self.nats.log_path()
    }

    /// The name of a service's database.
    pub fn database_name(&self, service: Service) -> &str {
        &self.process(service).database
    }

    /// Where a service's stdout and stderr go.
    pub fn log_path(&self, service: Service) -> &Path {
        &self.process(service).log_path
    }

    /// The directory holding every service log.
    pub fn log_directory(&self) -> &Path {
        self.logs.path()
    }

    /// The HTTP client the helpers use (no proxy, with a timeout).
    pub fn http_client(&self) -> &reqwest::Client {
        &self.http
    }

    /// True while the service's process runs.
    pub fn is_running(&mut self, service: Service) -> Result<bool> {
        let process = self.process_mut(service);
        Ok(process.process.is_some() && process.exited()?.is_none())
    }

    /// Kills a service with SIGKILL, as a crash would, and waits until it is gone.
    pub fn kill(&mut self, service: Service) {
        self.process_mut(service).kill();
    }

    /// Freezes a service with SIGSTOP: it keeps its connections but does nothing, as a
    /// process stuck in a long pause would. [`System::resume`] lets it go on.
    pub fn pause(&mut self, service: Service) -> Result<()> {
        self.signal(service, Signal::STOP)
    }

    /// Lets a paused service go on (SIGCONT).
    pub fn resume(&mut self, service: Service) -> Result<()> {
        self.signal(service, Signal::CONT)
    }

    fn signal(&mut self, service: Service, signal: Signal) -> Result<()> {
        let process = self
            .process_mut(service)
            .process
            .as_ref()
            .with_context(|| format!("{service} is not running"))?;
        let pid = i32::try_from(process.id())
            .ok()
            .and_then(Pid::from_raw)
            .with_context(|| format!("{service} has no usable pid"))?;
        kill_process(pid, signal).with_context(|| format!("failed to signal {service}"))?;
        Ok(())
    }

    /// Waits for a service to exit on its own (a fault that kills the process) and returns
    /// how it ended.
    pub async fn wait_exit(&mut self, service: Service, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let process = self.process_mut(service);
            anyhow::ensure!(
                process.process.is_some(),
                "{service} is not running, so it cannot be waited for"
            );
            if let Some(status) = process.exited()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{service} still runs after {timeout:?}; the end of its log:\n{}",
                    process.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts a service again on the same port and database, with its usual environment plus
    /// `extra_env` (the extras given at [`System::start`] are not repeated), and waits until
    /// it is ready. A service still running is killed first.
    pub async fn restart(&mut self, service: Service, extra_env: &[(&str, &str)]) -> Result<()> {
        let own_process_group = self.own_process_group;
        let extra_env: Vec<(String, String)> = extra_env
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        let process = self.process_mut(service);
        process.kill();
        process.spawn(&extra_env, own_process_group)?;
        self.wait_until_ready(&[service]).await
    }

    /// Stops everything in order: SIGTERM to every service (each must exit 0 within
    /// [`SHUTDOWN_GRACE`], DESIGN §5), then NATS, then drops the databases. Logs are removed
    /// only if all of that went well.
    pub async fn shutdown(mut self) -> Result<()> {
        let mut problems = Vec::new();
        for process in &self.services {
            if let Some(child) = &process.process {
                let signalled = i32::try_from(child.id())
                    .ok()
                    .and_then(Pid::from_raw)
                    .map(|pid| kill_process(pid, Signal::TERM));
                if let Some(Err(error)) = signalled {
                    problems.push(format!(
                        "failed to send SIGTERM to {}: {error}",
                        process.service
                    ));
                }
            }
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        for process in &mut self.services {
            if process.process.is_none() {
                continue;
            }
            loop {
                if let Some(status) = process.exited()? {
                    if !status.success() {
                        problems.push(format!(
                            "{} {} after SIGTERM instead of exiting 0; the end of its log ({}):\n{}",
                            process.service,
                            describe_exit(status),
                            process.log_path.display(),
                            process.log_tail()
                        ));
                    }
                    break;
                }
                if Instant::now() >= deadline {
                    process.kill();
                    problems.push(format!(
                        "{} did not exit within {SHUTDOWN_GRACE:?} of SIGTERM and was killed; \
                         the end of its log ({}):\n{}",
                        process.service,
                        process.log_path.display(),
                        process.log_tail()
                    ));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        self.nats.stop();
        if self.drop_databases_at_end
            && let Err(error) = databases::drop_databases(&self.database_names()).await
        {
            problems.push(format!("{error:#}"));
        }
        self.shut_down = true;
        if problems.is_empty() {
            return Ok(());
        }
        self.logs.keep();
        self.nats.keep_files();
        anyhow::bail!(
            "shutdown was not clean (logs kept in {}):\n{}",
            self.logs.path().display(),
            problems.join("\n")
        )
    }

    fn database_names(&self) -> Vec<String> {
        self.services
            .iter()
            .map(|process| process.database.clone())
            .collect()
    }
}

impl Drop for System {
    fn drop(&mut self) {
        if self.shut_down {
            return;
        }
        for process in &mut self.services {
            process.kill();
        }
        self.nats.stop();
        if self.drop_databases_at_end
            && let Err(error) = databases::drop_databases_blocking(self.database_names())
        {
            eprintln!("could not drop the test databases: {error:#}");
        }
        // Without a clean shutdown the test failed (or returned an error): keep what helps
        // to understand why.
        self.logs.keep();
        self.nats.keep_files();
        eprintln!(
            "\nservice logs kept in {} (nats-server log: {})",
            self.logs.path().display(),
            self.nats.log_path().display()
        );
        for process in &self.services {
            eprintln!(
                "--- the end of {} ({}):\n{}",
                process.service,
                process.log_path.display(),
                logs::tail(&process.log_path, 25)
            );
        }
    }
}

/// Where the service binaries are: `SERVICE_BIN_DIR`, else the directory of the running
/// executable (a test binary lives in `<target>/debug/deps`, the services one level up).
pub fn service_binary_directory() -> Result<PathBuf> {
    if let Some(directory) = env::var_os("SERVICE_BIN_DIR") {
        return Ok(PathBuf::from(directory));
    }
    let executable = env::current_exe().context("failed to find the running executable")?;
    let directory = executable
        .parent()
        .context("the running executable has no parent directory")?;
    if directory.file_name().is_some_and(|name| name == "deps") {
        Ok(directory.parent().unwrap_or(directory).to_path_buf())
    } else {
        Ok(directory.to_path_buf())
    }
}

fn service_binary(directory: &Path, service: Service) -> Result<PathBuf> {
    let path = directory.join(service.binary_name());
    anyhow::ensure!(
        path.is_file(),
        "{} does not exist: run `cargo build --workspace --bins` first (with the same \
         CARGO_TARGET_DIR and profile as the tests), or set SERVICE_BIN_DIR to the directory \
         holding the service binaries",
        path.display()
    );
    Ok(path)
}

/// `e2e_` and 8 hex digits. They come from the random tail of a UUIDv7: its head is a
/// timestamp, the same for every test started in the same minute.
fn unique_database_prefix() -> String {
    let random = Uuid::now_v7().simple().to_string();
    format!("e2e_{}", &random[random.len() - 8..])
}

/// "exited with code 1" or "was killed by signal 9".
pub fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("ended ({status})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_prefixes_are_distinct_identifiers() {
        let first = unique_database_prefix();
        let second = unique_database_prefix();
        assert_ne!(first, second);
        assert_eq!(first.len(), "e2e_".len() + 8);
        assert!(
            first
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        );
    }

    #[test]
    fn a_missing_binary_says_how_to_build_it() {
        let directory = tempfile::tempdir().unwrap();
        let message = format!(
            "{:#}",
            service_binary(directory.path(), Service::Order).unwrap_err()
        );
        assert!(message.contains("order-service"), "{message}");
        assert!(
            message.contains("cargo build --workspace --bins"),
            "{message}"
        );
    }

    #[test]
    fn services_index_in_their_declaration_order() {
        for (index, service) in Service::ALL.iter().enumerate() {
            assert_eq!(*service as usize, index);
        }
    }
}
