//! End-to-end smoke tests: the real server on 127.0.0.1:0, driven by rumqttc clients over
//! MQTT 3.1.1 and 5.0. Each test waits for the events it expects (bounded by a timeout
//! so a broken broker fails instead of hanging); nothing sleeps.

use std::future::Future;
use std::time::Duration;

use fleetmq::config::{Config, ListenerConfig, ListenerKind};
use fleetmq::server::{self, ServerHandle};

const WAIT: Duration = Duration::from_secs(10);

async fn start_broker() -> ServerHandle {
    let config = Config {
        listeners: vec![ListenerConfig {
            kind: ListenerKind::Tcp,
            bind: "127.0.0.1:0".parse().unwrap(),
        }],
        ..Config::default()
    };
    server::start(config).await.expect("broker starts")
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

mod v311 {
    use super::*;
    use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, Publish, QoS};

    fn client(server: &ServerHandle, id: &str, clean: bool) -> (AsyncClient, EventLoop) {
        let addr = server.local_addr();
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options.set_clean_session(clean);
        options.set_keep_alive(Duration::from_secs(30));
        AsyncClient::new(options, 16)
    }

    /// Polls until `pick` accepts an incoming packet.
    async fn wait_for<T>(
        eventloop: &mut EventLoop,
        what: &str,
        mut pick: impl FnMut(&Packet) -> Option<T>,
    ) -> T {
        within(what, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(packet)) => {
                        if let Some(found) = pick(&packet) {
                            return found;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(error) => panic!("connection failed while waiting for {what}: {error}"),
                }
            }
        })
        .await
    }

    async fn connack(eventloop: &mut EventLoop) -> bool {
        wait_for(eventloop, "CONNACK", |packet| match packet {
            Packet::ConnAck(connack) => Some(connack.session_present),
            _ => None,
        })
        .await
    }

    async fn publish(eventloop: &mut EventLoop) -> Publish {
        wait_for(eventloop, "PUBLISH", |packet| match packet {
            Packet::Publish(publish) => Some(publish.clone()),
            _ => None,
        })
        .await
    }

    /// Keeps a client's event loop running in the background.
    fn drive(mut eventloop: EventLoop) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move { while eventloop.poll().await.is_ok() {} })
    }

    #[tokio::test]
    async fn qos_0_1_2_round_trip() {
        let server = start_broker().await;
        let (subscriber, mut sub_events) = client(&server, "smoke-sub", true);
        assert!(!connack(&mut sub_events).await);
        subscriber
            .subscribe("smoke/+", QoS::ExactlyOnce)
            .await
            .unwrap();
        wait_for(&mut sub_events, "SUBACK", |packet| {
            matches!(packet, Packet::SubAck(_)).then_some(())
        })
        .await;

        let (publisher, pub_events) = client(&server, "smoke-pub", true);
        let publisher_loop = drive(pub_events);
        for (topic, qos) in [
            ("smoke/zero", QoS::AtMostOnce),
            ("smoke/one", QoS::AtLeastOnce),
            ("smoke/two", QoS::ExactlyOnce),
        ] {
            publisher
                .publish(topic, qos, false, topic.as_bytes().to_vec())
                .await
                .unwrap();
            let received = publish(&mut sub_events).await;
            assert_eq!(received.topic, topic);
            assert_eq!(received.payload.as_ref(), topic.as_bytes());
            assert_eq!(received.qos, qos);
            assert!(!received.retain);
        }
        publisher_loop.abort();
        server.shutdown().await;
    }

    #[tokio::test]
    async fn persistent_session_is_resumed_and_takeover_publishes_the_will() {
        let server = start_broker().await;
        let (watcher, mut watcher_events) = client(&server, "smoke-watcher", true);
        connack(&mut watcher_events).await;
        watcher
            .subscribe("smoke/will", QoS::AtLeastOnce)
            .await
            .unwrap();
        wait_for(&mut watcher_events, "SUBACK", |packet| {
            matches!(packet, Packet::SubAck(_)).then_some(())
        })
        .await;

        let addr = server.local_addr();
        let mut options = MqttOptions::new("smoke-device", addr.ip().to_string(), addr.port());
        options.set_clean_session(false);
        options.set_last_will(LastWill::new("smoke/will", "lost", QoS::AtLeastOnce, false));
        let (_first, mut first_events) = AsyncClient::new(options, 16);
        assert!(!connack(&mut first_events).await);

        let (_second, mut second_events) = client(&server, "smoke-device", false);
        assert!(connack(&mut second_events).await, "session present");
        let will = publish(&mut watcher_events).await;
        assert_eq!(will.topic, "smoke/will");
        assert_eq!(will.payload.as_ref(), b"lost");

        // The first connection was closed by the broker.
        let first_closed = within("the first connection to close", async {
            loop {
                if first_events.poll().await.is_err() {
                    return true;
                }
            }
        })
        .await;
        assert!(first_closed);
        assert_eq!(server.broker().stats().snapshot().takeovers, 1);
        server.shutdown().await;
    }
}

mod v5 {
    use super::*;
    use bytes::BytesMut;
    use fleetmq::protocol::{
        decode, encode, reason, Connect, ConnectProperties, Packet, ProtocolVersion,
    };
    use rumqttc::v5::mqttbytes::v5::{Packet as ClientPacket, Publish};
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn client(server: &ServerHandle, id: &str) -> (AsyncClient, EventLoop) {
        let addr = server.local_addr();
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        AsyncClient::new(options, 16)
    }

    async fn wait_for<T>(
        eventloop: &mut EventLoop,
        what: &str,
        mut pick: impl FnMut(&ClientPacket) -> Option<T>,
    ) -> T {
        within(what, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(packet)) => {
                        if let Some(found) = pick(&packet) {
                            return found;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(error) => panic!("connection failed while waiting for {what}: {error}"),
                }
            }
        })
        .await
    }

    async fn connack(eventloop: &mut EventLoop) {
        wait_for(eventloop, "CONNACK", |packet| {
            matches!(packet, ClientPacket::ConnAck(_)).then_some(())
        })
        .await
    }

    async fn publish(eventloop: &mut EventLoop) -> Publish {
        wait_for(eventloop, "PUBLISH", |packet| match packet {
            ClientPacket::Publish(publish) => Some(publish.clone()),
            _ => None,
        })
        .await
    }

    #[tokio::test]
    async fn qos_round_trip_and_retained_on_subscribe() {
        let server = start_broker().await;
        let (publisher, mut pub_events) = client(&server, "smoke5-pub");
        connack(&mut pub_events).await;
        publisher
            .publish("smoke5/retained", QoS::AtLeastOnce, true, "kept")
            .await
            .unwrap();
        wait_for(&mut pub_events, "PUBACK", |packet| {
            matches!(packet, ClientPacket::PubAck(_)).then_some(())
        })
        .await;

        let (subscriber, mut sub_events) = client(&server, "smoke5-sub");
        connack(&mut sub_events).await;
        subscriber
            .subscribe("smoke5/#", QoS::ExactlyOnce)
            .await
            .unwrap();
        let retained = publish(&mut sub_events).await;
        assert_eq!(retained.topic.as_ref(), b"smoke5/retained");
        assert_eq!(retained.payload.as_ref(), b"kept");
        assert!(retained.retain, "retained copy carries RETAIN");
        assert_eq!(retained.qos, QoS::AtLeastOnce);

        let publisher_loop = tokio::spawn(async move { while pub_events.poll().await.is_ok() {} });
        publisher
            .publish("smoke5/live", QoS::ExactlyOnce, false, "now")
            .await
            .unwrap();
        let live = publish(&mut sub_events).await;
        assert_eq!(live.topic.as_ref(), b"smoke5/live");
        assert_eq!(live.qos, QoS::ExactlyOnce);
        assert!(!live.retain);
        publisher_loop.abort();
        server.shutdown().await;
    }

    // rumqttc 0.25 cannot read a DISCONNECT whose properties are omitted (`e0 01 8e`, as
    // the spec allows and Mosquitto sends), so the DISCONNECT tests use a raw client.

    #[tokio::test]
    async fn takeover_sends_session_taken_over() {
        let server = start_broker().await;
        let mut first = RawClient::connect(&server, "smoke5-device").await;
        let (_second, mut second_events) = client(&server, "smoke5-device");
        connack(&mut second_events).await;
        assert_eq!(first.disconnect_reason().await, reason::SESSION_TAKEN_OVER);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_sends_server_shutting_down() {
        let server = start_broker().await;
        let mut client = RawClient::connect(&server, "smoke5-shutdown").await;
        let shutdown = tokio::spawn(server.shutdown());
        assert_eq!(
            client.disconnect_reason().await,
            reason::SERVER_SHUTTING_DOWN
        );
        within("shutdown to finish", shutdown).await.unwrap();
    }

    /// A minimal MQTT 5 client on the broker's own codec.
    struct RawClient {
        stream: TcpStream,
        buf: BytesMut,
    }

    impl RawClient {
        async fn connect(server: &ServerHandle, client_id: &str) -> RawClient {
            let stream = TcpStream::connect(server.local_addr()).await.unwrap();
            let mut client = RawClient {
                stream,
                buf: BytesMut::new(),
            };
            let connect = Connect {
                protocol: ProtocolVersion::V5,
                clean_start: true,
                keep_alive: 30,
                client_id: client_id.into(),
                will: None,
                username: None,
                password: None,
                properties: ConnectProperties::default(),
            };
            let mut out = BytesMut::new();
            encode(
                &Packet::Connect(Box::new(connect)),
                ProtocolVersion::V5,
                &mut out,
            );
            client.stream.write_all(&out).await.unwrap();
            match client.next_packet().await {
                Some(Packet::ConnAck(connack)) => assert_eq!(connack.reason_code, 0),
                other => panic!("expected CONNACK, got {other:?}"),
            }
            client
        }

        /// The next packet from the broker; `None` once it closed the connection.
        async fn next_packet(&mut self) -> Option<Packet> {
            within("a packet from the broker", async {
                loop {
                    if let Some(packet) =
                        decode(&mut self.buf, Some(ProtocolVersion::V5), u32::MAX).unwrap()
                    {
                        return Some(packet);
                    }
                    if self.stream.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                        return None;
                    }
                }
            })
            .await
        }

        async fn disconnect_reason(&mut self) -> u8 {
            match self.next_packet().await {
                Some(Packet::Disconnect(disconnect)) => {
                    assert!(
                        self.next_packet().await.is_none(),
                        "closed after DISCONNECT"
                    );
                    disconnect.reason_code
                }
                other => panic!("expected DISCONNECT, got {other:?}"),
            }
        }
    }
}
