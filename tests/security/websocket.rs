//! MQTT over WebSocket (`ws`) and secure WebSocket (`wss`) with rumqttc's WebSocket
//! transport, and an upgrade on the wrong path.

use std::time::Duration;

use fleetmq::config::{ClientAuth, ListenerKind};
use rumqttc::{AsyncClient, Event, MqttOptions, Transport};

use crate::common::*;

async fn round_trip(options: MqttOptions) {
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    client
        .subscribe("ws/#", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let received = within("the message back over WebSocket", async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    client
                        .publish("ws/1", rumqttc::QoS::AtLeastOnce, false, "browser")
                        .await
                        .unwrap();
                }
                Ok(Event::Incoming(rumqttc::Packet::Publish(publish))) => return publish,
                Ok(_) => {}
                Err(error) => panic!("WebSocket connection failed: {error}"),
            }
        }
    })
    .await;
    assert_eq!(received.topic, "ws/1");
    assert_eq!(&received.payload[..], b"browser");
}

#[tokio::test]
async fn rumqttc_round_trip_over_websocket() {
    let server = start(config_with(vec![loopback(ListenerKind::Ws)])).await;
    let port = server.listener_addrs()[1].port();
    let mut options = MqttOptions::new("ws-client", format!("ws://127.0.0.1:{port}/mqtt"), port);
    options.set_transport(Transport::Ws);
    options.set_keep_alive(Duration::from_secs(30));
    round_trip(options).await;
    server.shutdown().await;
}

#[tokio::test]
async fn rumqttc_round_trip_over_secure_websocket() {
    let pki = Pki::new();
    let mut listener = pki.listener(ListenerKind::Wss, ClientAuth::None);
    listener.path = Some("/ws".into());
    let server = start(config_with(vec![listener])).await;
    let port = server.listener_addrs()[1].port();
    let mut options = MqttOptions::new("wss-client", format!("wss://localhost:{port}/ws"), port);
    options.set_transport(Transport::wss_with_config(
        rumqttc::TlsConfiguration::Rustls(pki.client_config(None)),
    ));
    options.set_keep_alive(Duration::from_secs(30));
    round_trip(options).await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_upgrade_on_another_path_is_refused() {
    let server = start(config_with(vec![loopback(ListenerKind::Ws)])).await;
    let addr = server.listener_addrs()[1];
    let mut options = MqttOptions::new(
        "lost",
        format!("ws://127.0.0.1:{}/elsewhere", addr.port()),
        addr.port(),
    );
    options.set_transport(Transport::Ws);
    let (_client, mut eventloop) = AsyncClient::new(options, 4);
    let result = within("the refusal", eventloop.poll()).await;
    assert!(
        result.is_err(),
        "expected a refused upgrade, got {result:?}"
    );
    still_serving(server.local_addr()).await;
    server.shutdown().await;
}
