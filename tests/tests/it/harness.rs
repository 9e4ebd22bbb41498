//! Tests of the harness itself: a private NATS server with JetStream, and a service whose
//! port another program took.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use e2e::nats_server::NatsServer;
use e2e::system::{Service, System, SystemOptions};

#[tokio::test]
async fn a_private_nats_server_serves_jetstream_and_deduplicates_by_message_id()
-> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let client = async_nats::connect(server.url()).await?;
    let jetstream = jetstream::new(client);
    let mut stream = jetstream
        .create_stream(stream::Config {
            name: "PROBE".to_owned(),
            subjects: vec!["probe.>".to_owned()],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(60),
            ..Default::default()
        })
        .await?;

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "event-1");
    let first = jetstream
        .publish_with_headers("probe.one", headers.clone(), "hello".into())
        .await?
        .await?;
    let again = jetstream
        .publish_with_headers("probe.one", headers, "hello".into())
        .await?
        .await?;

    assert!(!first.duplicate);
    assert!(again.duplicate, "the same Nats-Msg-Id must be dropped");
    assert_eq!(stream.info().await?.state.messages, 1);
    Ok(())
}

#[tokio::test]
async fn a_dropped_nats_server_is_gone_with_its_files() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let url = server.url();
    let log = server.log_path();
    let directory = log.parent().map(std::path::Path::to_path_buf);
    drop(server);

    let connected = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_millis(500))
        .connect(&url)
        .await;
    assert!(connected.is_err(), "{url} still accepts connections");
    assert!(directory.is_some_and(|directory| !directory.exists()));
    Ok(())
}

#[tokio::test]
async fn a_service_whose_port_was_taken_starts_on_another() -> anyhow::Result<()> {
    let mut system = System::start(SystemOptions::default()).await?;
    let taken = system.http_port(Service::Notification);
    system.kill(Service::Notification);
    // Another program binds the port between the harness's choice and the service's bind.
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", taken))?;

    system.restart(Service::Notification, &[]).await?;
    let moved = system.http_port(Service::Notification);
    assert_ne!(moved, taken);
    let ready = system.get(Service::Notification, "/readyz").await?;
    assert_eq!(ready.status, 200, "{}", ready.text);
    system.shutdown().await
}
