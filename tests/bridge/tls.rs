//! A bridge over TLS with a client certificate, both made by `fleetmq gen-certs`.

use std::net::SocketAddr;

use fleetmq::config::ListenerKind;
use fleetmq::config::{
    BridgeProtocol, BridgeTlsConfig, ClientAuth, Direction, ListenerConfig, TlsConfig,
};

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bridge_reaches_a_remote_that_requires_a_client_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_fleetmq"))
        .args(["gen-certs", "--out"])
        .arg(certs.path())
        .args(["--client", "site-1"])
        .status()
        .unwrap();
    assert!(status.success());
    let path = |file: &str| certs.path().join(file);

    let (ca, server_cert, server_key) = (path("ca.pem"), path("server.pem"), path("server.key"));
    let remote = Fleetmq::start(move |config| {
        let mut tls = ListenerConfig::new(ListenerKind::Tls, SocketAddr::from(([127, 0, 0, 1], 0)));
        tls.tls = Some(TlsConfig {
            cert: server_cert,
            key: server_key,
            ca: Some(ca),
            client_auth: ClientAuth::Require,
            identity: None,
            cipher_preference: Default::default(),
            crl: None,
        });
        // The plain listener first (for the test's subscriber), TLS second.
        config.listeners.push(tls);
    })
    .await;
    let tls_addr = remote.handle().listener_addrs()[1];
    let (ca, cert, key) = (path("ca.pem"), path("site-1.pem"), path("site-1.key"));
    let local = Fleetmq::start(move |config| {
        let mut link = bridge(
            tls_addr,
            BridgeProtocol::Mqttv5,
            vec![rule("telemetry/#", Direction::Out, 1, "", "site/")],
        );
        link.tls = Some(BridgeTlsConfig {
            ca,
            cert: Some(cert),
            key: Some(key),
            server_name: Some("localhost".into()),
        });
        config.bridges = vec![link];
    })
    .await;
    let (cloud, cloud_task) = subscribe(remote.addr, "cloud-app", "site/#", 1, true).await;
    until("the TLS bridge link", || local.bridge().connected).await;
    publish_acknowledged(local.addr, "device", "telemetry/a", 1, 0..50).await;
    cloud.wait_distinct("site/telemetry/a", 50).await;
    assert_complete_in_order(&cloud, "site/telemetry/a", 50, false);
    cloud_task.abort();
    local.stop().await;
    remote.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bridge_without_the_client_certificate_is_refused_and_keeps_its_outbox() {
    let certs = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_fleetmq"))
        .args(["gen-certs", "--out"])
        .arg(certs.path())
        .status()
        .unwrap();
    assert!(status.success());
    let path = |file: &str| certs.path().join(file);
    let (ca, server_cert, server_key) = (path("ca.pem"), path("server.pem"), path("server.key"));
    let remote = Fleetmq::start(move |config| {
        let mut tls = ListenerConfig::new(ListenerKind::Tls, SocketAddr::from(([127, 0, 0, 1], 0)));
        tls.tls = Some(TlsConfig {
            cert: server_cert,
            key: server_key,
            ca: Some(ca),
            client_auth: ClientAuth::Require,
            identity: None,
            cipher_preference: Default::default(),
            crl: None,
        });
        config.listeners = vec![tls];
    })
    .await;
    let ca = path("ca.pem");
    let remote_addr = remote.addr;
    let local = Fleetmq::start(move |config| {
        let mut link = bridge(
            remote_addr,
            BridgeProtocol::Mqttv5,
            vec![rule("telemetry/#", Direction::Out, 1, "", "site/")],
        );
        link.tls = Some(BridgeTlsConfig {
            ca,
            cert: None,
            key: None,
            server_name: Some("localhost".into()),
        });
        config.bridges = vec![link];
    })
    .await;
    until("failed attempts", || local.bridge().link_failures >= 2).await;
    publish_acknowledged(local.addr, "device", "telemetry/a", 1, 0..10).await;
    let status = local.bridge();
    assert!(!status.connected);
    assert_eq!(status.outbox_messages, 10, "{status:?}");
    local.stop().await;
    remote.stop().await;
}
