//! TLS and mutual TLS: rumqttc over rustls, the real `mosquitto_pub`, refused client
//! certificates, plain MQTT on a TLS port, and a certificate reload.

use std::time::Duration;

use fleetmq::config::{CertIdentity, ClientAuth, ListenerKind};
use fleetmq::protocol::{Packet, ProtocolVersion, QoS};
use rumqttc::{AsyncClient, Event, MqttOptions, TlsConfiguration, Transport};

use crate::common::*;

fn rumqttc_tls(
    pki: &Pki,
    addr: std::net::SocketAddr,
    id: &str,
    cert: Option<&str>,
) -> (AsyncClient, rumqttc::EventLoop) {
    let mut options = MqttOptions::new(id, "localhost", addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        pki.client_config(cert),
    )));
    AsyncClient::new(options, 16)
}

/// Polls until a PUBLISH arrives; returns its topic and payload.
async fn next_publish(eventloop: &mut rumqttc::EventLoop) -> (String, Vec<u8>) {
    within("a PUBLISH", async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(rumqttc::Packet::Publish(publish))) => {
                    return (publish.topic, publish.payload.to_vec())
                }
                Ok(_) => {}
                Err(error) => panic!("connection failed: {error}"),
            }
        }
    })
    .await
}

async fn wait_suback(eventloop: &mut rumqttc::EventLoop) {
    within("SUBACK", async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(rumqttc::Packet::SubAck(_))) => return,
                Ok(_) => {}
                Err(error) => panic!("connection failed: {error}"),
            }
        }
    })
    .await
}

#[tokio::test]
async fn rumqttc_round_trip_over_tls() {
    let pki = Pki::new();
    let server = start(config_with(vec![
        pki.listener(ListenerKind::Tls, ClientAuth::None)
    ]))
    .await;
    let addr = server.listener_addrs()[1];
    let (client, mut eventloop) = rumqttc_tls(&pki, addr, "tls-sub", None);
    client
        .subscribe("t/#", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    wait_suback(&mut eventloop).await;
    client
        .publish("t/1", rumqttc::QoS::AtLeastOnce, false, "over tls")
        .await
        .unwrap();
    assert_eq!(
        next_publish(&mut eventloop).await,
        ("t/1".into(), b"over tls".to_vec())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_uses_the_certificate_identity_as_username() {
    let pki = Pki::new();
    let acl = pki.path("acl");
    std::fs::write(&acl, "user device-1\ntopic readwrite devices/device-1/#\n").unwrap();
    let mut listener = pki.listener(ListenerKind::Tls, ClientAuth::Require);
    listener.allow_anonymous = Some(false);
    if let Some(tls) = &mut listener.tls {
        tls.identity = Some(CertIdentity::Cn);
    }
    let mut config = config_with(vec![listener]);
    config.auth.acl_file = Some(acl);
    let server = start(config).await;
    let addr = server.listener_addrs()[1];
    let (client, mut eventloop) = rumqttc_tls(&pki, addr, "any-id", Some("client"));
    client
        .subscribe("devices/device-1/#", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    wait_suback(&mut eventloop).await;
    client
        .publish(
            "devices/device-1/up",
            rumqttc::QoS::AtLeastOnce,
            false,
            "hi",
        )
        .await
        .unwrap();
    assert_eq!(next_publish(&mut eventloop).await.0, "devices/device-1/up");
    server.shutdown().await;
}

/// A TLS client whose certificate the broker refuses never gets a CONNACK.
async fn refused(pki: &Pki, addr: std::net::SocketAddr, cert: Option<&str>) {
    let Ok(stream) = pki.tls_connect(addr, cert).await else {
        return; // refused during the handshake
    };
    // TLS 1.3 reports a refused client certificate after the client's handshake ends.
    let mut client = Raw::new(stream, ProtocolVersion::V5);
    let answer = client
        .connect(connect_packet(ProtocolVersion::V5, "refused", None, None))
        .await;
    assert_eq!(answer, None, "{cert:?} must not be admitted");
}

#[tokio::test]
async fn foreign_expired_and_missing_client_certificates_are_refused() {
    let pki = Pki::new();
    let server = start(config_with(vec![
        pki.listener(ListenerKind::Tls, ClientAuth::Require)
    ]))
    .await;
    let addr = server.listener_addrs()[1];
    refused(&pki, addr, Some("stranger")).await;
    refused(&pki, addr, Some("expired")).await;
    refused(&pki, addr, None).await;
    // The right certificate still gets in.
    let stream = pki.tls_connect(addr, Some("client")).await.unwrap();
    let mut client = Raw::new(stream, ProtocolVersion::V5);
    let connect = connect_packet(ProtocolVersion::V5, "good", None, None);
    assert_eq!(client.connect(connect).await, Some(0));
    server.shutdown().await;
}

#[tokio::test]
async fn optional_client_auth_admits_no_certificate_but_not_a_bad_one() {
    let pki = Pki::new();
    let server = start(config_with(vec![
        pki.listener(ListenerKind::Tls, ClientAuth::Optional)
    ]))
    .await;
    let addr = server.listener_addrs()[1];
    refused(&pki, addr, Some("stranger")).await;
    let stream = pki.tls_connect(addr, None).await.unwrap();
    let mut client = Raw::new(stream, ProtocolVersion::V3_1_1);
    let connect = connect_packet(ProtocolVersion::V3_1_1, "no-cert", None, None);
    assert_eq!(client.connect(connect).await, Some(0));
    server.shutdown().await;
}

#[tokio::test]
async fn plain_mqtt_on_a_tls_port_is_closed_and_tls_goes_on() {
    let pki = Pki::new();
    let server = start(config_with(vec![
        pki.listener(ListenerKind::Tls, ClientAuth::None)
    ]))
    .await;
    let addr = server.listener_addrs()[1];
    let mut plain = Raw::tcp(addr, ProtocolVersion::V3_1_1).await;
    let connect = connect_packet(ProtocolVersion::V3_1_1, "plain", None, None);
    plain.send(Packet::Connect(Box::new(connect))).await;
    assert_eq!(plain.next().await, None);
    let stream = pki.tls_connect(addr, None).await.unwrap();
    let mut client = Raw::new(stream, ProtocolVersion::V5);
    assert_eq!(
        client
            .connect(connect_packet(ProtocolVersion::V5, "tls", None, None))
            .await,
        Some(0)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn mosquitto_pub_with_cafile_cert_and_key_is_delivered() {
    let pki = Pki::new();
    let server = start(config_with(vec![
        pki.listener(ListenerKind::Tls, ClientAuth::Require)
    ]))
    .await;
    let plain = server.listener_addrs()[0];
    let tls = server.listener_addrs()[1];
    let mut subscriber = connected(plain, ProtocolVersion::V3_1_1, "sub").await;
    subscriber
        .send(Packet::Subscribe(fleetmq::protocol::Subscribe {
            packet_id: 1,
            filters: vec![fleetmq::protocol::SubscribeFilter {
                filter: "mosq/#".into(),
                options: Default::default(),
            }],
            subscription_identifier: None,
            user_properties: Vec::new(),
        }))
        .await;
    assert!(matches!(subscriber.next().await, Some(Packet::SubAck(_))));
    let args = [
        "-h".to_string(),
        "localhost".into(),
        "-p".into(),
        tls.port().to_string(),
        "--cafile".into(),
        pki.path("ca.pem").display().to_string(),
        "--cert".into(),
        pki.path("client.pem").display().to_string(),
        "--key".into(),
        pki.path("client.key").display().to_string(),
        "-t".into(),
        "mosq/1".into(),
        "-m".into(),
        "from mosquitto_pub".into(),
        "-q".into(),
        "1".into(),
    ];
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("mosquitto_pub")
            .args(&args)
            .status()
    })
    .await
    .unwrap()
    .expect("mosquitto_pub is installed (apt package mosquitto-clients)");
    assert!(status.success(), "mosquitto_pub failed: {status}");
    match subscriber.next().await {
        Some(Packet::Publish(publish)) => {
            assert_eq!(&publish.topic[..], "mosq/1");
            assert_eq!(&publish.payload[..], b"from mosquitto_pub");
            assert_eq!(publish.qos, QoS::AtMostOnce);
        }
        other => panic!("expected the message, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_bad_certificate_reload_keeps_the_old_one() {
    let pki = Pki::new();
    let server = start(config_with(vec![
        pki.listener(ListenerKind::Tls, ClientAuth::None)
    ]))
    .await;
    let addr = server.listener_addrs()[1];
    assert!(server.reload().is_empty());
    std::fs::write(pki.path("server.pem"), "not a certificate").unwrap();
    let errors = server.reload();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("server.pem"), "{errors:?}");
    let stream = pki.tls_connect(addr, None).await.unwrap();
    let mut client = Raw::new(stream, ProtocolVersion::V5);
    assert_eq!(
        client
            .connect(connect_packet(ProtocolVersion::V5, "after", None, None))
            .await,
        Some(0)
    );
    server.shutdown().await;
}

/// A TLS client with certificate `cert` connects and gets CONNACK 0.
async fn admitted(pki: &Pki, addr: std::net::SocketAddr, cert: &str) {
    let stream = pki.tls_connect(addr, Some(cert)).await.unwrap();
    let mut client = Raw::new(stream, ProtocolVersion::V5);
    let connect = connect_packet(ProtocolVersion::V5, cert, None, None);
    assert_eq!(client.connect(connect).await, Some(0), "{cert} is admitted");
}

#[tokio::test]
async fn a_revoked_client_certificate_is_refused_after_a_crl_reload() {
    let pki = Pki::new();
    let crl = pki.path("crl.pem");
    std::fs::write(&crl, pki.ca.revocation_list(&[], 30).unwrap()).unwrap();
    let mut listener = pki.listener(ListenerKind::Tls, ClientAuth::Require);
    if let Some(tls) = &mut listener.tls {
        tls.crl = Some(crl.clone());
    }
    let server = start(config_with(vec![listener])).await;
    let addr = server.listener_addrs()[1];
    admitted(&pki, addr, "client").await;
    admitted(&pki, addr, "client2").await;
    // The CA revokes the first client's certificate; the new list applies on reload.
    let revoked = pki.serials[0].clone();
    std::fs::write(&crl, pki.ca.revocation_list(&[revoked], 30).unwrap()).unwrap();
    admitted(&pki, addr, "client").await;
    assert!(server.reload().is_empty());
    refused(&pki, addr, Some("client")).await;
    admitted(&pki, addr, "client2").await;
    // A broken list is refused by the reload, and the one in force stays.
    std::fs::write(
        &crl,
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    let errors = server.reload();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("crl.pem"), "{errors:?}");
    refused(&pki, addr, Some("client")).await;
    admitted(&pki, addr, "client2").await;
    server.shutdown().await;
}
