//! The service lifecycle: connect the database and NATS, create streams, bind the HTTP
//! listener (`build`), then run the consumers, the outbox relay, the pruner and the HTTP API
//! until a shutdown signal, and drain them in order (`run_until_stopped`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use backon::ExponentialBuilder;
use events::streams::Context;
use futures::future::BoxFuture;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::Authenticator;
use crate::consumer::{Consumer, ConsumerHealth, ConsumerOptions, Handler, Subscription};
use crate::database::{connect_and_migrate, redact};
use crate::http::{Access, Readiness, finish};
use crate::jetstream::{
    advisory_stream, connect, context_stream, dead_letter_stream, ensure_streams,
};
use crate::metrics::{Metrics, Scrape};
use crate::outbox::{Outbox, Relay};
use crate::pruning::Pruner;
use crate::rate_limit::RateLimit;
use crate::settings::{Identity, LogFormat, Settings};
use crate::telemetry;

/// How long a starting service keeps trying a dependency that cannot take it yet (Postgres
/// still starting or out of connection slots, a stream without a leader during an election):
/// the pauses between tries add up to this, and each try takes what it takes on top. Long
/// enough for a server started at the same time, short enough that a wrong address is not
/// hidden for long.
pub const STARTUP_PATIENCE: Duration = Duration::from_secs(60);

/// The pauses between a starting service's tries: from 200 ms, doubling to 5 s, jittered,
/// [`STARTUP_PATIENCE`] in all.
pub(crate) fn startup_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_total_delay(Some(STARTUP_PATIENCE))
        .without_max_times()
        .with_jitter()
}

/// The connected infrastructure a service builds its routes and handler from.
#[derive(Debug, Clone)]
pub struct Platform {
    pub identity: Identity,
    pub settings: Settings,
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub outbox: Outbox,
    /// The service's own registry; a service adds its series to it before `Service::build`.
    pub metrics: Metrics,
    /// Who may call the API and how often.
    pub access: Access,
}

impl Platform {
    /// Checks how the API authenticates (refusing a service with no authentication before it
    /// connects anywhere), creates and migrates the service's database and connects to NATS.
    pub async fn connect(
        identity: Identity,
        settings: Settings,
        migrations: &Migrator,
    ) -> anyhow::Result<Platform> {
        settings.validate()?;
        let authenticator = Authenticator::from_settings(&settings.auth)?;
        if authenticator.is_insecure() {
            tracing::warn!(
                "INSECURE_DEV_AUTH=1: the API checks no token and believes whatever customer a \
                 request names. For local development only; never deploy this"
            );
        }
        let access = Access {
            authenticator: Arc::new(authenticator),
            rate_limit: RateLimit::new(settings.rate_limit_per_second, settings.rate_limit_burst),
        };
        Self::connect_with(identity, settings, migrations, access).await
    }

    /// [`Platform::connect`] for a command that serves no API (a rebuild): no authentication
    /// to configure, and an API built on it anyway would let no one in.
    pub async fn connect_without_api(
        identity: Identity,
        settings: Settings,
        migrations: &Migrator,
    ) -> anyhow::Result<Platform> {
        settings.validate()?;
        let access = Access {
            authenticator: Arc::new(Authenticator::closed()),
            rate_limit: None,
        };
        Self::connect_with(identity, settings, migrations, access).await
    }

    async fn connect_with(
        identity: Identity,
        settings: Settings,
        migrations: &Migrator,
        access: Access,
    ) -> anyhow::Result<Platform> {
        let database = settings.database(&identity);
        tracing::info!(database = %redact(&database.url), migrations = %redact(&database.migration_url), nats = %settings.nats_url, nats_auth = %settings.nats_auth.describe(), "connecting");
        let pool = connect_and_migrate(&database, migrations)
            .await
            .context("failed to prepare the database")?;
        let nats = connect(&settings.nats_url, identity.name, &settings.nats_auth).await?;
        let jetstream = jetstream::new(nats.clone());
        Ok(Platform {
            identity,
            outbox: if settings.outbox_handoff {
                Outbox::with_handoff(identity.name)
            } else {
                Outbox::new(identity.name)
            },
            settings,
            pool,
            nats,
            jetstream,
            metrics: Metrics::new(),
            access,
        })
    }
}

/// A background task of the service's own (e.g. a timer): started with the consumers, asked
/// to stop through its token with them, and awaited like them.
pub type Worker = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// What a service adds to the platform: its HTTP routes, the stream it publishes to, what it
/// subscribes to, how it reacts, and any background workers of its own.
pub struct Domain<H> {
    /// The service's routes with their OpenAPI documentation (`GET /openapi.json` serves it).
    pub routes: OpenApiRouter,
    pub publishes: Option<Context>,
    pub subscriptions: Vec<Subscription>,
    pub handler: H,
    pub workers: Vec<Worker>,
}

impl<H> std::fmt::Debug for Domain<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domain")
            .field("publishes", &self.publishes)
            .field("subscriptions", &self.subscriptions)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

/// A built service, listening but not yet running.
#[derive(Debug)]
pub struct Service<H> {
    platform: Platform,
    domain: Domain<H>,
    listener: TcpListener,
}

impl<H: Handler> Service<H> {
    /// Creates the streams the service touches and binds its HTTP listener (port 0 works).
    pub async fn build(platform: Platform, domain: Domain<H>) -> anyhow::Result<Service<H>> {
        let replicas = platform.settings.stream_replicas;
        let mut streams: Vec<Context> = domain.publishes.into_iter().collect();
        for subscription in &domain.subscriptions {
            if !streams.contains(&subscription.stream) {
                streams.push(subscription.stream);
            }
        }
        let mut configs: Vec<_> = streams
            .into_iter()
            .map(|context| context_stream(context, replicas))
            .collect();
        configs.push(dead_letter_stream(replicas));
        configs.push(advisory_stream(replicas));
        ensure_streams(&platform.jetstream, configs).await?;

        let address = platform.settings.http_addr(&platform.identity);
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("failed to listen on {address}"))?;
        Ok(Service {
            platform,
            domain,
            listener,
        })
    }

    /// The address the HTTP API actually listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Runs until `shutdown` completes, then stops pulling, finishes in-flight messages,
    /// stops the HTTP API, publishes what the outbox still holds, and returns.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Service {
            platform,
            domain,
            listener,
        } = self;
        let settings = &platform.settings;
        let health = Arc::new(ConsumerHealth::default());
        let handler = Arc::new(domain.handler);

        let stop_consumers = CancellationToken::new();
        let consumers = TaskTracker::new();
        let mut durable_consumers = Vec::new();
        for subscription in domain.subscriptions {
            let name = Consumer::<H>::durable_name(platform.identity.name, subscription.stream);
            durable_consumers.push((name.clone(), subscription.stream));
            let consumer = Consumer {
                name,
                subscription,
                pool: platform.pool.clone(),
                jetstream: platform.jetstream.clone(),
                outbox: platform.outbox.clone(),
                handler: handler.clone(),
                options: ConsumerOptions {
                    concurrency: settings.consumer_concurrency,
                    batch: usize::from(settings.consumer_batch),
                    max_deliver: settings.consumer_max_deliver,
                    ack_wait: settings.consumer_ack_wait,
                    crash_after_commit: settings.fault_crash_after_commit.clone(),
                },
                metrics: platform.metrics.clone(),
            };
            consumers.spawn(consumer.run(stop_consumers.clone(), health.clone()));
        }
        for worker in domain.workers {
            consumers.spawn(worker(stop_consumers.clone()));
        }
        // Every service's own: the inbox (and any outbox row left marked by an older relay)
        // kept to what deduplication still needs. It stops with the consumers.
        consumers.spawn(
            Pruner {
                pool: platform.pool.clone(),
                retention: settings.inbox_retention,
                interval: settings.inbox_prune_interval,
                metrics: platform.metrics.clone(),
            }
            .run(stop_consumers.clone()),
        );
        consumers.close();

        let stop_relay = CancellationToken::new();
        let relay = tokio::spawn(
            Relay {
                pool: platform.pool.clone(),
                jetstream: platform.jetstream.clone(),
                poll_interval: settings.outbox_poll_interval,
                metrics: platform.metrics.clone(),
                crash_after_publish_ack: settings.fault_crash_after_publish_ack.clone(),
                handed_off: platform.outbox.take_handed_off(),
            }
            .run(stop_relay.clone()),
        );

        let stop_http = CancellationToken::new();
        let router = finish(
            domain.routes,
            Readiness {
                pool: platform.pool.clone(),
                nats: platform.nats.clone(),
                consumers: health,
            },
            Scrape {
                metrics: platform.metrics.clone(),
                pool: platform.pool.clone(),
                jetstream: platform.jetstream.clone(),
                consumers: durable_consumers,
            },
            platform.access.clone(),
        );
        tracing::info!(address = %listener.local_addr()?, "listening");
        let mut http = tokio::spawn(
            // With the peer's address, which the rate limit keys on.
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(stop_http.clone().cancelled_owned())
            .into_future(),
        );

        let result = tokio::select! {
            () = shutdown => Ok(()),
            finished = &mut http => Err(match finished {
                Ok(Ok(())) => anyhow::anyhow!("the HTTP server stopped unexpectedly"),
                Ok(Err(error)) => anyhow::Error::from(error).context("the HTTP server failed"),
                Err(error) => anyhow::Error::from(error).context("the HTTP server panicked"),
            }),
        };
        tracing::info!("shutting down");

        let deadline = tokio::time::Instant::now() + settings.shutdown_timeout;
        stop_consumers.cancel();
        if tokio::time::timeout_at(deadline, consumers.wait())
            .await
            .is_err()
        {
            tracing::warn!("in-flight messages did not finish in time; they will be redelivered");
        }
        stop_http.cancel();
        let _ = tokio::time::timeout_at(deadline, &mut http).await;
        stop_relay.cancel();
        if tokio::time::timeout_at(deadline, relay).await.is_err() {
            tracing::warn!(
                "outbox relay did not finish in time; pending rows stay for the next start"
            );
        }
        // Both wait on the network; a broker or database that is gone must not hold us up.
        let grace = std::time::Duration::from_secs(2);
        let _ = tokio::time::timeout(grace, platform.nats.flush()).await;
        let _ = tokio::time::timeout(grace, platform.pool.close()).await;
        tracing::info!("stopped");
        result
    }
}

/// The whole of a service binary's `main`: telemetry first, then build the service and run it
/// until SIGTERM or Ctrl-C, then flush the last spans.
pub async fn run_binary<H: Handler>(
    log_format: LogFormat,
    identity: Identity,
    service: impl Future<Output = anyhow::Result<Service<H>>>,
) -> anyhow::Result<()> {
    let telemetry = telemetry::init(log_format, identity.name);
    let result = match service.await {
        Ok(service) => service.run_until_stopped(shutdown_signal()).await,
        Err(error) => Err(error),
    };
    telemetry.shutdown();
    result
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
