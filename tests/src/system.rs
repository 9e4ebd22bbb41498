//! A whole running system for one test: a private `nats-server` (or a JetStream cluster of
//! several), the five service binaries as child processes on free ports and fresh databases
//! (one process each, or several replicas sharing a database), and control over their
//! lifecycle (kill, wait for a self-inflicted crash, restart on the same port and database).

use std::env;
use std::fmt;
use std::net::TcpListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use rustix::process::{Pid, Signal, kill_process};
use tempfile::TempDir;
use tokio::sync::OnceCell;
use tokio::time::Instant;
use uuid::Uuid;

use crate::databases::{self, ServiceDatabase};
use crate::gateway::GatewaySimulator;
use crate::invariants::Ledger;
use crate::logs;
use crate::nats_server::{ADMIN_USER, NatsCluster, NatsServer, NatsUsers};
use crate::ports::free_port;
use crate::tokens::TokenIssuer;

/// How many times one wait for readiness (at [`System::start`], per group of processes
/// started together, or at a restart) moves services whose port another program took to
/// another port before it gives up.
const PORT_CHANGES: usize = 3;

/// How long a service may take from spawn to `GET /readyz` answering 200 (it creates and
/// migrates its database and declares its streams and consumers first).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a service may take to exit after SIGTERM (it finishes in-flight messages).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// The consumers' ack wait the harness gives every service (`CONSUMER_ACK_WAIT`): short, so
/// redeliveries after a crash or a pause come quickly.
pub const CONSUMER_ACK_WAIT: Duration = Duration::from_secs(2);

/// The saga deadline the harness gives the order service (`ORDER_DEADLINE`): far beyond any
/// test's own timeouts on a busy machine, so only the deadline tests, which set their own,
/// should ever see an order run out of time.
pub const ORDER_DEADLINE: Duration = Duration::from_secs(120);

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
    /// The Postgres server (a superuser's URL, without a database) the databases and their
    /// roles are created on and dropped from; by default [`databases::server_url`].
    pub postgres_url: Option<String>,
    /// The port the services reach that server on, when not its own: a proxy in front of it
    /// on the same host.
    pub postgres_port_for_services: Option<u16>,
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
    /// `nats-server` processes: 1 starts one server; more start a JetStream cluster of that
    /// many, and the services create their streams with one replica per server
    /// (`STREAM_REPLICAS`).
    pub nats_servers: usize,
    /// Processes per service, each on its own HTTP port, all on the service's one database.
    pub replicas: usize,
    /// How the services' APIs authenticate callers.
    pub api_auth: ApiAuth,
    /// JetStream's `sync_interval` (`always` in the deploy files); nats-server's default
    /// (2 minutes) when `None`.
    pub nats_sync_interval: Option<String>,
    /// Where the service binaries are; [`service_binary_directory`] when `None`.
    pub service_binary_directory: Option<PathBuf>,
}

/// How a test system's APIs authenticate callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiAuth {
    /// `INSECURE_DEV_AUTH=1`: no tokens; the customer comes from the body.
    #[default]
    InsecureDev,
    /// Bearer JWTs from a [`TokenIssuer`] of the system's own; the harness's helpers send an
    /// admin token unless a request carries its own.
    Tokens,
}

impl Default for SystemOptions {
    fn default() -> Self {
        SystemOptions {
            extra_env: Vec::new(),
            rust_log: env::var("E2E_RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
            fixed_http_ports: false,
            database_prefix: None,
            postgres_url: None,
            postgres_port_for_services: None,
            drop_databases_first: false,
            drop_databases_at_end: true,
            log_directory: None,
            own_process_group: false,
            nats_servers: 1,
            replicas: 1,
            api_auth: ApiAuth::InsecureDev,
            nats_sync_interval: None,
            service_binary_directory: None,
        }
    }
}

impl SystemOptions {
    /// Every consumer but payment's with one transaction slot, as `deploy/compose.yaml` runs
    /// the services on one host (payment's handler waits on the gateway and keeps its
    /// default).
    pub fn with_consumer_slots_as_compose(mut self) -> Self {
        for service in Service::ALL {
            if service != Service::Payment {
                self = self.with_env(service, "CONSUMER_CONCURRENCY", "1");
            }
        }
        self
    }

    /// Adds one environment variable for one service.
    pub fn with_env(mut self, service: Service, key: &str, value: &str) -> Self {
        self.extra_env
            .push((service, key.to_owned(), value.to_owned()));
        self
    }
}

/// One service process (one replica of a service) and everything needed to start it again
/// the same way.
#[derive(Debug)]
struct ServiceProcess {
    service: Service,
    /// 0 for the first (or only) process of the service.
    replica: usize,
    /// How many processes the service has, for naming.
    replicas: usize,
    binary: PathBuf,
    process: Option<Child>,
    http_port: u16,
    /// The port was asked for (`fixed_http_ports`): it is never swapped for another.
    fixed_port: bool,
    database: String,
    log_path: PathBuf,
    /// The environment every start of this service gets (without per-start extras).
    environment: Vec<(String, String)>,
    /// The extras of the latest start, to start it the same way on another port.
    latest_extra_env: Vec<(String, String)>,
    /// Where the latest start's output begins in the log, which every start appends to.
    latest_log_offset: u64,
}

impl ServiceProcess {
    /// `order-service`, or `order-service#2` for the second of several replicas.
    fn label(&self) -> String {
        if self.replicas == 1 {
            self.service.to_string()
        } else {
            format!("{}#{}", self.service, self.replica + 1)
        }
    }

    fn spawn(&mut self, extra_env: &[(String, String)], own_process_group: bool) -> Result<()> {
        self.latest_extra_env = extra_env.to_vec();
        self.latest_log_offset = logs::length(&self.log_path);
        let extras: Vec<String> = extra_env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let banner = format!("starting {} {}", self.label(), extras.join(" "));
        let (stdout, stderr) = logs::open_for_child(&self.log_path, banner.trim_end())?;
        let mut command = service_command(&self.binary);
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
            .with_context(|| format!("failed to poll {}", self.label()))?;
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

    /// True when the process ended because its HTTP port was taken: `free_port` probes a
    /// port and lets it go, and another program on the machine may bind it before the
    /// service does.
    fn lost_its_port(&self) -> bool {
        // This start's output only, all of it: an earlier start's lost port is no reason, and
        // a backtrace after the error must not hide it.
        let output = logs::since(&self.log_path, self.latest_log_offset);
        !self.fixed_port
            && output.contains("failed to listen on")
            && output.contains("Address already in use")
    }

    /// Starts the process again as it was started last, on another free port.
    fn spawn_on_another_port(&mut self, own_process_group: bool) -> Result<()> {
        self.http_port = free_port()?;
        let address = format!("127.0.0.1:{}", self.http_port);
        for (key, value) in &mut self.environment {
            if key == "HTTP_ADDR" {
                value.clone_from(&address);
            }
        }
        let extra_env = std::mem::take(&mut self.latest_extra_env);
        self.spawn(&extra_env, own_process_group)
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

/// The system's NATS: one server, or a JetStream cluster.
#[derive(Debug)]
enum Nats {
    Single(NatsServer),
    Cluster(NatsCluster),
}

impl Nats {
    /// Starts with the deployed users and permissions (`deploy/nats/users.conf`), so that
    /// every test runs the services as they run in production: each as its own user.
    async fn start(servers: usize, sync_interval: Option<&str>) -> Result<Nats> {
        let mut users = NatsUsers::generate();
        if let Some(interval) = sync_interval {
            users = users.with_sync_interval(interval);
        }
        Ok(if servers <= 1 {
            Nats::Single(NatsServer::start_with_users(users).await?)
        } else {
            Nats::Cluster(NatsCluster::start_with_users(servers, users).await?)
        })
    }

    fn users(&self) -> &NatsUsers {
        let users = match self {
            Nats::Single(server) => server.users(),
            Nats::Cluster(cluster) => cluster.users(),
        };
        users.expect("the system's NATS is started with users")
    }

    fn urls(&self) -> Vec<String> {
        match self {
            Nats::Single(server) => vec![server.url()],
            Nats::Cluster(cluster) => cluster.urls(),
        }
    }

    fn log_paths(&self) -> Vec<PathBuf> {
        match self {
            Nats::Single(server) => vec![server.log_path()],
            Nats::Cluster(cluster) => (0..cluster.size())
                .map(|index| cluster.log_path(index))
                .collect(),
        }
    }

    fn keep_files(&mut self) {
        match self {
            Nats::Single(server) => server.keep_files(),
            Nats::Cluster(cluster) => cluster.keep_files(),
        }
    }

    fn stop(&mut self) {
        match self {
            Nats::Single(server) => server.stop(),
            Nats::Cluster(cluster) => cluster.stop(),
        }
    }
}

/// A running system: NATS, the five services, their databases and logs. Killed and cleaned
/// up on drop; a test ends with [`System::shutdown`], which also checks that every service
/// exits 0 on SIGTERM. A system dropped without a clean shutdown (a failing test) keeps its
/// logs and prints where they are and how they end.
#[derive(Debug)]
pub struct System {
    nats: Nats,
    /// Every service process: the replicas of `Service::ALL[0]` first, then of the next.
    services: Vec<ServiceProcess>,
    /// Processes per service.
    replicas: usize,
    /// Spreads the helpers' requests over a service's replicas, as a load balancer would.
    next_replica: AtomicUsize,
    database_prefix: String,
    /// Where the databases and roles are created and dropped (a superuser's URL).
    postgres_url: String,
    /// Each service's database and roles, in `Service::ALL` order.
    databases: Vec<ServiceDatabase>,
    drop_databases_at_end: bool,
    own_process_group: bool,
    logs: LogDirectory,
    http: reqwest::Client,
    /// The payment gateway the payment service calls, simulated in this process.
    gateway: GatewaySimulator,
    pub(crate) nats_client: OnceCell<async_nats::Client>,
    /// What the test did (stock set, orders placed, messages injected), for the invariants.
    pub(crate) ledger: Mutex<Ledger>,
    /// Set by a completed `shutdown`, so that `Drop` has nothing left to do.
    shut_down: bool,
    /// Signs the bearer tokens the APIs check, under [`ApiAuth::Tokens`].
    tokens: Option<TokenIssuer>,
}

impl System {
    /// Starts NATS and the five services (each with `options.replicas` processes) and
    /// returns once every process is ready.
    pub async fn start(options: SystemOptions) -> Result<System> {
        anyhow::ensure!(
            options.replicas >= 1,
            "every service needs at least one process"
        );
        let binary_directory = match &options.service_binary_directory {
            Some(directory) => directory.clone(),
            None => service_binary_directory()?,
        };
        let binaries = service_binaries(&binary_directory)?;
        let database_prefix = options
            .database_prefix
            .clone()
            .unwrap_or_else(unique_database_prefix);
        let postgres_url = options
            .postgres_url
            .clone()
            .unwrap_or_else(databases::server_url);
        let services_postgres_url = match options.postgres_port_for_services {
            Some(port) => databases::with_port(&postgres_url, port)?,
            None => postgres_url.clone(),
        };
        let service_databases: Vec<ServiceDatabase> = Service::ALL
            .iter()
            .map(|service| ServiceDatabase::new(&format!("{database_prefix}_{}", service.name())))
            .collect();
        if options.drop_databases_first {
            databases::drop_service_databases(&postgres_url, &service_databases).await?;
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
        let tokens = match options.api_auth {
            ApiAuth::InsecureDev => None,
            ApiAuth::Tokens => Some(TokenIssuer::create(logs.path())?),
        };
        let nats = Nats::start(options.nats_servers, options.nats_sync_interval.as_deref()).await?;
        let gateway = GatewaySimulator::start().await?;
        let mut system = System {
            nats,
            services: Vec::new(),
            replicas: options.replicas,
            next_replica: AtomicUsize::new(0),
            database_prefix,
            postgres_url,
            databases: service_databases,
            drop_databases_at_end: options.drop_databases_at_end,
            own_process_group: options.own_process_group,
            logs,
            http,
            gateway,
            nats_client: OnceCell::new(),
            ledger: Mutex::new(Ledger::default()),
            shut_down: false,
            tokens,
        };
        // Each service's database and roles, before any service starts: it migrates as the
        // owner role and runs as the app role.
        databases::provision(&system.postgres_url, &system.databases).await?;
        let nats_urls = system.nats.urls();
        // Per process (in `services` order), the extras it starts with.
        let mut extra_envs: Vec<Vec<(String, String)>> = Vec::new();
        // From here on, an error drops `system`, which kills whatever was started.
        for (service_index, (service, binary)) in binaries.into_iter().enumerate() {
            for replica in 0..options.replicas {
                let http_port = if options.fixed_http_ports && replica == 0 {
                    let port = service.default_port();
                    TcpListener::bind(("127.0.0.1", port)).with_context(|| {
                        format!("port {port} for {service} is taken (is another demo running?)")
                    })?;
                    port
                } else {
                    free_port()?
                };
                let database = format!("{}_{}", system.database_prefix, service.name());
                let log_name = if options.replicas == 1 {
                    format!("{}.log", service.name())
                } else {
                    format!("{}-{}.log", service.name(), replica + 1)
                };
                let log_path = system.logs.path().join(log_name);
                logs::touch(&log_path)?;
                // On a cluster each process gets every server, starting from a different one
                // per replica, so that replicas spread over the servers and fail over between
                // them.
                let first = (service_index + replica) % nats_urls.len();
                let nats_url = nats_urls[first..]
                    .iter()
                    .chain(&nats_urls[..first])
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",");
                let mut environment = vec![
                    ("NATS_URL".to_owned(), nats_url),
                    (
                        "DATABASE_URL".to_owned(),
                        system.databases[service_index].app_url(&services_postgres_url)?,
                    ),
                    (
                        "DATABASE_MIGRATION_URL".to_owned(),
                        system.databases[service_index].owner_url(&services_postgres_url)?,
                    ),
                    ("HTTP_ADDR".to_owned(), format!("127.0.0.1:{http_port}")),
                    ("RUST_LOG".to_owned(), options.rust_log.clone()),
                    ("LOG_FORMAT".to_owned(), "pretty".to_owned()),
                    // The logs go to files: colour codes would only make them hard to read.
                    ("NO_COLOR".to_owned(), "1".to_owned()),
                    ("DB_MAX_CONNECTIONS".to_owned(), "4".to_owned()),
                    (
                        "CONSUMER_ACK_WAIT".to_owned(),
                        format!("{}s", CONSUMER_ACK_WAIT.as_secs()),
                    ),
                    (
                        "ORDER_DEADLINE".to_owned(),
                        format!("{}s", ORDER_DEADLINE.as_secs()),
                    ),
                    (
                        "PAYMENT_GATEWAY_URL".to_owned(),
                        system.gateway.url().to_owned(),
                    ),
                    // A gateway test turns faults off again: probe again soon after.
                    (
                        "PAYMENT_GATEWAY_BREAKER_OPEN_FOR".to_owned(),
                        "1s".to_owned(),
                    ),
                ];
                if nats_urls.len() > 1 {
                    environment.push(("STREAM_REPLICAS".to_owned(), nats_urls.len().to_string()));
                }
                // Each service as its own NATS user.
                environment.extend(system.nats.users().client_environment(service.name()));
                match &system.tokens {
                    Some(tokens) => environment.extend(tokens.service_env()),
                    None => environment.push(("INSECURE_DEV_AUTH".to_owned(), "1".to_owned())),
                }
                // Tests send bursts from one address; the rate-limit test turns it on.
                environment.push(("RATE_LIMIT_PER_SECOND".to_owned(), "0".to_owned()));
                let extra_env: Vec<(String, String)> = options
                    .extra_env
                    .iter()
                    .filter(|(target, _, _)| *target == service)
                    .map(|(_, key, value)| (key.clone(), value.clone()))
                    .collect();
                system.services.push(ServiceProcess {
                    service,
                    replica,
                    replicas: options.replicas,
                    binary: binary.clone(),
                    process: None,
                    http_port,
                    fixed_port: options.fixed_http_ports && replica == 0,
                    database,
                    log_path,
                    environment,
                    latest_extra_env: Vec::new(),
                    latest_log_offset: 0,
                });
                extra_envs.push(extra_env);
            }
        }
        // On one server every process starts at once. On a cluster they start one after the
        // other: a service declares its streams at start and exits if JetStream does not
        // answer in time, and several services creating the same R3 streams at once on a
        // fresh cluster (on two busy cores) regularly time out. A supervisor would start
        // such a service again; the harness would fail instead. The first process creates
        // the streams, the later ones find them.
        let groups: Vec<Vec<usize>> = if nats_urls.len() > 1 {
            (0..system.services.len())
                .map(|index| vec![index])
                .collect()
        } else {
            vec![(0..system.services.len()).collect()]
        };
        for starting in groups {
            for index in &starting {
                let own_process_group = system.own_process_group;
                system.services[*index].spawn(&extra_envs[*index], own_process_group)?;
            }
            system.wait_until_ready(&starting).await?;
        }
        Ok(system)
    }

    /// Polls `GET /readyz` of each process (an index into `services`) until it answers 200;
    /// fails at once, with the end of its log, if a process exits first, unless it exited
    /// because another program took its port: then it starts again on another.
    async fn wait_until_ready(&mut self, processes: &[usize]) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut waiting: Vec<usize> = processes.to_vec();
        let mut last_seen: Vec<(usize, String)> = Vec::new();
        let mut port_changes_left = PORT_CHANGES;
        while !waiting.is_empty() {
            last_seen.clear();
            let mut still_waiting = Vec::new();
            for index in waiting {
                let own_process_group = self.own_process_group;
                let process = &mut self.services[index];
                if let Some(status) = process.exited()? {
                    if port_changes_left > 0 && process.lost_its_port() {
                        port_changes_left -= 1;
                        eprintln!(
                            "{} could not bind port {}, starting it on another",
                            process.label(),
                            process.http_port
                        );
                        process.spawn_on_another_port(own_process_group)?;
                        still_waiting.push(index);
                        continue;
                    }
                    anyhow::bail!(
                        "{} exited before it was ready ({}); the end of its log ({}):\n{}",
                        process.label(),
                        describe_exit(status),
                        process.log_path.display(),
                        process.log_tail()
                    );
                }
                let url = format!("http://127.0.0.1:{}/readyz", process.http_port);
                match self
                    .http
                    .get(&url)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                {
                    Ok(response) if response.status() == reqwest::StatusCode::OK => {}
                    Ok(response) => {
                        last_seen.push((index, format!("HTTP {}", response.status())));
                        still_waiting.push(index);
                    }
                    Err(error) => {
                        last_seen.push((index, error.to_string()));
                        still_waiting.push(index);
                    }
                }
            }
            waiting = still_waiting;
            if waiting.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let mut message = format!("services not ready within {READY_TIMEOUT:?}:");
                for (index, seen) in &last_seen {
                    let process = &self.services[*index];
                    message.push_str(&format!(
                        "\n--- {}: GET /readyz gave {seen}; the end of its log ({}):\n{}",
                        process.label(),
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

    /// Where a replica of a service is in `services`.
    fn process_index(&self, service: Service, replica: usize) -> usize {
        assert!(
            replica < self.replicas,
            "{service} has {} replicas, not {}",
            self.replicas,
            replica + 1
        );
        // Pushed at start in `Service::ALL` order, the replicas of each service together.
        service as usize * self.replicas + replica
    }

    /// The first (or only) process of a service.
    fn process(&self, service: Service) -> &ServiceProcess {
        &self.services[self.process_index(service, 0)]
    }

    fn process_mut(&mut self, service: Service) -> &mut ServiceProcess {
        let index = self.process_index(service, 0);
        &mut self.services[index]
    }

    /// `http://127.0.0.1:<port>` of a service. With several replicas, successive calls take
    /// turns among the replicas the harness has not killed, as a load balancer would.
    pub fn base_url(&self, service: Service) -> String {
        let start = self.process_index(service, 0);
        let replicas = &self.services[start..start + self.replicas];
        let running: Vec<&ServiceProcess> = replicas
            .iter()
            .filter(|process| process.process.is_some())
            .collect();
        let process = if running.is_empty() {
            &replicas[0]
        } else {
            running[self.next_replica.fetch_add(1, Ordering::Relaxed) % running.len()]
        };
        format!("http://127.0.0.1:{}", process.http_port)
    }

    /// `http://127.0.0.1:<port>` of one replica of a service.
    pub fn replica_base_url(&self, service: Service, replica: usize) -> String {
        let index = self.process_index(service, replica);
        format!("http://127.0.0.1:{}", self.services[index].http_port)
    }

    /// The HTTP port a service (its first replica) listens on.
    pub fn http_port(&self, service: Service) -> u16 {
        self.process(service).http_port
    }

    /// Processes per service.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// A URL of this system's NATS (the first server of a cluster).
    pub fn nats_url(&self) -> String {
        self.nats.urls().swap_remove(0)
    }

    /// The URL of every NATS server of this system.
    pub fn nats_urls(&self) -> Vec<String> {
        self.nats.urls()
    }

    /// What NATS refused the services, from its log. Every test runs the services with the
    /// deployed permissions, so a refusal is a permission they need in production too, and
    /// one the service may not notice (a refused publish or request just gets no answer).
    /// Refusals of other clients (a test's own, on purpose) are not the services'.
    fn nats_refusals(&self) -> Vec<String> {
        let mut refused = Vec::new();
        for path in self.nats.log_paths() {
            let Ok(log) = std::fs::read_to_string(&path) else {
                continue;
            };
            // `[ERR] <address> - cid:7 - "v0.51.0:rust:order-service" - "$G/user:order" -
            // Publish Violation - Subject "..."`: the client's name is `<service>-service`.
            refused.extend(
                log.lines()
                    .filter(|line| line.contains(" Violation - ") && line.contains("-service\""))
                    .map(str::to_owned),
            );
        }
        refused
    }

    /// The users of this system's NATS and their passwords.
    pub fn nats_users(&self) -> &NatsUsers {
        self.nats.users()
    }

    /// The environment a process needs to reach this system's NATS as `user` (`admin` or a
    /// service's name): `NATS_URL` (every server) and the user's credentials.
    pub fn nats_environment(&self, user: &str) -> Vec<(String, String)> {
        let mut environment = vec![("NATS_URL".to_owned(), self.nats.urls().join(","))];
        environment.extend(self.nats.users().client_environment(user));
        environment
    }

    /// The environment `sagactl` needs against this system: its NATS as `admin`.
    pub fn admin_nats_environment(&self) -> Vec<(String, String)> {
        self.nats_environment(ADMIN_USER)
    }

    /// The NATS server's own log (the first server's, on a cluster).
    pub fn nats_log_path(&self) -> PathBuf {
        self.nats.log_paths().swap_remove(0)
    }

    /// The NATS cluster, when the system runs on one (`SystemOptions::nats_servers` > 1), to
    /// kill and restart its servers.
    pub fn nats_cluster(&mut self) -> Option<&mut NatsCluster> {
        match &mut self.nats {
            Nats::Single(_) => None,
            Nats::Cluster(cluster) => Some(cluster),
        }
    }

    /// Kills the (single) NATS server with SIGKILL and starts it again on the same port and
    /// store, returning once it serves JetStream. On a cluster use [`System::nats_cluster`].
    pub async fn restart_nats(&mut self) -> Result<()> {
        match &mut self.nats {
            Nats::Single(server) => server.restart().await,
            Nats::Cluster(_) => {
                anyhow::bail!("restart_nats is for one server; restart cluster nodes instead")
            }
        }
    }

    /// Kills the (single) NATS server, leaving it down until [`System::start_nats`]: an
    /// outage of the broker alone.
    pub fn stop_nats(&mut self) -> Result<()> {
        match &mut self.nats {
            Nats::Single(server) => {
                server.stop();
                Ok(())
            }
            Nats::Cluster(_) => {
                anyhow::bail!("stop_nats is for one server; kill cluster nodes instead")
            }
        }
    }

    /// Starts the NATS server stopped by [`System::stop_nats`] on the same port and store.
    pub async fn start_nats(&mut self) -> Result<()> {
        match &mut self.nats {
            Nats::Single(server) => server.start_again().await,
            Nats::Cluster(_) => {
                anyhow::bail!("start_nats is for one server; restart cluster nodes instead")
            }
        }
    }

    /// The base URL of the payment gateway simulator.
    pub fn gateway_url(&self) -> &str {
        self.gateway.url()
    }

    /// The name of a service's database.
    pub fn database_name(&self, service: Service) -> &str {
        &self.process(service).database
    }

    /// A service's database and its roles.
    pub fn database(&self, service: Service) -> &ServiceDatabase {
        &self.databases[service as usize]
    }

    /// The environment a process needs to reach a service's database with the service's
    /// roles (on the server itself, never through a proxy): `DATABASE_URL` (the app role) and
    /// `DATABASE_MIGRATION_URL` (the owner role).
    pub fn database_environment(&self, service: Service) -> Result<Vec<(String, String)>> {
        Ok(vec![
            ("DATABASE_URL".to_owned(), self.app_database_url(service)?),
            (
                "DATABASE_MIGRATION_URL".to_owned(),
                self.owner_database_url(service)?,
            ),
        ])
    }

    /// A service's database as the role the service runs as (DML only).
    pub fn app_database_url(&self, service: Service) -> Result<String> {
        self.database(service).app_url(&self.postgres_url)
    }

    /// A service's database as its owner role, which migrates it.
    pub fn owner_database_url(&self, service: Service) -> Result<String> {
        self.database(service).owner_url(&self.postgres_url)
    }

    /// Every service's database as its owner role, in [`Service::ALL`]'s order (what
    /// `saga-bench --vacuum` takes).
    pub fn owner_database_urls(&self) -> Result<Vec<String>> {
        Service::ALL
            .into_iter()
            .map(|service| self.owner_database_url(service))
            .collect()
    }

    /// Where a service's (first replica's) stdout and stderr go.
    pub fn log_path(&self, service: Service) -> &Path {
        &self.process(service).log_path
    }

    /// The directory holding every service log.
    pub fn log_directory(&self) -> &Path {
        self.logs.path()
    }

    /// The issuer of the tokens the APIs accept, under [`ApiAuth::Tokens`].
    pub fn tokens(&self) -> Option<&TokenIssuer> {
        self.tokens.as_ref()
    }

    /// The HTTP client the helpers use (no proxy, with a timeout).
    pub fn http_client(&self) -> &reqwest::Client {
        &self.http
    }

    /// True while the service's (first replica's) process runs.
    pub fn is_running(&mut self, service: Service) -> Result<bool> {
        let process = self.process_mut(service);
        Ok(process.process.is_some() && process.exited()?.is_none())
    }

    /// Kills a service (its first replica) with SIGKILL, as a crash would, and waits until it
    /// is gone.
    pub fn kill(&mut self, service: Service) {
        self.process_mut(service).kill();
    }

    /// Kills one replica of a service with SIGKILL and waits until it is gone.
    pub fn kill_replica(&mut self, service: Service, replica: usize) {
        let index = self.process_index(service, replica);
        self.services[index].kill();
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

    /// Starts a service (its first replica) again on the same port (another if that one was
    /// taken meanwhile) and database, with its usual environment plus `extra_env` (the extras
    /// given at [`System::start`] are not repeated), and waits until it is ready. A service
    /// still running is killed first.
    pub async fn restart(&mut self, service: Service, extra_env: &[(&str, &str)]) -> Result<()> {
        self.restart_replica(service, 0, extra_env).await
    }

    /// [`System::restart`] for one replica of a service.
    pub async fn restart_replica(
        &mut self,
        service: Service,
        replica: usize,
        extra_env: &[(&str, &str)],
    ) -> Result<()> {
        let own_process_group = self.own_process_group;
        let extra_env: Vec<(String, String)> = extra_env
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        let index = self.process_index(service, replica);
        let process = &mut self.services[index];
        process.kill();
        process.spawn(&extra_env, own_process_group)?;
        self.wait_until_ready(&[index]).await
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
                        process.label()
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
                            process.label(),
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
                        process.label(),
                        process.log_path.display(),
                        process.log_tail()
                    ));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        let refused = self.nats_refusals();
        if !refused.is_empty() {
            problems.push(format!(
                "NATS refused the services what deploy/nats/users.conf does not allow them (a \
                 permission a service needs is missing there):\n{}",
                refused.join("\n")
            ));
        }
        self.nats.stop();
        if self.drop_databases_at_end
            && let Err(error) =
                databases::drop_service_databases(&self.postgres_url, &self.databases).await
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
            && let Err(error) = databases::drop_service_databases_blocking(
                self.postgres_url.clone(),
                self.databases.clone(),
            )
        {
            eprintln!("could not drop the test databases: {error:#}");
        }
        // Without a clean shutdown the test failed (or returned an error): keep what helps
        // to understand why.
        self.logs.keep();
        self.nats.keep_files();
        let nats_logs: Vec<String> = self
            .nats
            .log_paths()
            .iter()
            .map(|path| path.display().to_string())
            .collect();
        eprintln!(
            "\nservice logs kept in {} (nats-server logs: {})",
            self.logs.path().display(),
            nats_logs.join(", ")
        );
        for process in &self.services {
            eprintln!(
                "--- the end of {} ({}):\n{}",
                process.label(),
                process.log_path.display(),
                logs::tail(&process.log_path, 25)
            );
        }
    }
}

/// A command to run a service binary. Faults are only ever injected on purpose, through the
/// environment a test gives: the command inherits none from the shell that runs the suite.
pub fn service_command(binary: &Path) -> Command {
    let mut command = Command::new(binary);
    for (key, _) in env::vars_os() {
        if key.to_string_lossy().starts_with("FAULT_") {
            command.env_remove(key);
        }
    }
    command
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

/// Every service's binary in `directory`; fails, saying how to build them, when one is
/// missing.
pub fn service_binaries(directory: &Path) -> Result<Vec<(Service, PathBuf)>> {
    Service::ALL
        .into_iter()
        .map(|service| Ok((service, service_binary(directory, service)?)))
        .collect()
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
