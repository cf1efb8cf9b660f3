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
        listeners: vec![ListenerConfig::new(
            ListenerKind::Tcp,
            "127.0.0.1:0".parse().unwrap(),
        )],
        ..Config::default()
    };
    // In memory: the durable store has its own suites.
    let mut config = config;
    config.storage.persistence = false;
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
    use super::raw::RawClient;
    use super::*;
    use fleetmq::protocol::{reason, ProtocolVersion};
    use rumqttc::v5::mqttbytes::v5::{Packet as ClientPacket, Publish};
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};

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

    // The DISCONNECT tests read the reason code with a raw client, independent of how a
    // client library reports it.

    #[tokio::test]
    async fn takeover_sends_session_taken_over() {
        let server = start_broker().await;
        let mut first = RawClient::connect(&server, "smoke5-device", ProtocolVersion::V5, 30).await;
        let (_second, mut second_events) = client(&server, "smoke5-device");
        connack(&mut second_events).await;
        assert_eq!(first.disconnect_reason().await, reason::SESSION_TAKEN_OVER);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_sends_server_shutting_down() {
        let server = start_broker().await;
        let mut client =
            RawClient::connect(&server, "smoke5-shutdown", ProtocolVersion::V5, 30).await;
        let shutdown = tokio::spawn(server.shutdown());
        assert_eq!(
            client.disconnect_reason().await,
            reason::SERVER_SHUTTING_DOWN
        );
        within("shutdown to finish", shutdown).await.unwrap();
    }
}

/// A minimal client on the broker's own codec, for what rumqttc cannot express: reading
/// the broker's DISCONNECT, never reading at all, or sending what a client must not.
mod raw {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use fleetmq::config::LimitsConfig;
    use fleetmq::protocol::{
        decode, encode, reason, Connect, ConnectProperties, Packet, ProtocolVersion, Publish, QoS,
        Subscribe, SubscribeFilter, SubscriptionOptions,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub struct RawClient {
        stream: TcpStream,
        buf: BytesMut,
        version: ProtocolVersion,
    }

    impl RawClient {
        pub async fn connect(
            server: &ServerHandle,
            client_id: &str,
            version: ProtocolVersion,
            keep_alive: u16,
        ) -> RawClient {
            let stream = TcpStream::connect(server.local_addr()).await.unwrap();
            let mut client = RawClient {
                stream,
                buf: BytesMut::new(),
                version,
            };
            client
                .send(Packet::Connect(Box::new(Connect {
                    protocol: version,
                    clean_start: true,
                    keep_alive,
                    client_id: client_id.into(),
                    will: None,
                    username: None,
                    password: None,
                    properties: ConnectProperties::default(),
                })))
                .await;
            match client.next_packet().await {
                Some(Packet::ConnAck(connack)) => assert_eq!(connack.reason_code, 0),
                other => panic!("expected CONNACK, got {other:?}"),
            }
            client
        }

        pub async fn send(&mut self, packet: Packet) {
            let mut out = BytesMut::new();
            encode(&packet, self.version, &mut out);
            self.stream.write_all(&out).await.unwrap();
        }

        /// The next packet from the broker; `None` once it closed the connection.
        pub async fn next_packet(&mut self) -> Option<Packet> {
            within("a packet from the broker", async {
                loop {
                    if let Some(packet) =
                        decode(&mut self.buf, Some(self.version), u32::MAX).unwrap()
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

        /// Reads until the broker sends DISCONNECT and closes; returns its reason.
        pub async fn disconnect_reason(&mut self) -> u8 {
            loop {
                match self.next_packet().await {
                    Some(Packet::Disconnect(disconnect)) => {
                        assert!(
                            self.next_packet().await.is_none(),
                            "closed after DISCONNECT"
                        );
                        return disconnect.reason_code;
                    }
                    Some(_) => {}
                    None => panic!("closed without DISCONNECT"),
                }
            }
        }
    }

    #[tokio::test]
    async fn keep_alive_timeout_disconnects_a_silent_client() {
        let server = start_broker().await;
        let mut client = RawClient::connect(&server, "silent", ProtocolVersion::V5, 1).await;
        assert_eq!(client.disconnect_reason().await, reason::KEEP_ALIVE_TIMEOUT);
        assert_eq!(server.broker().stats().snapshot().keep_alive_timeouts, 1);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn wildcard_in_a_publish_topic_is_a_violation() {
        let server = start_broker().await;
        let mut client = RawClient::connect(&server, "rude", ProtocolVersion::V5, 30).await;
        client
            .send(Packet::Publish(Publish {
                topic: "a/+".into(),
                payload: Bytes::from_static(b"x"),
                ..Publish::default()
            }))
            .await;
        assert!(client.disconnect_reason().await >= 0x80);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn unsupported_protocol_level_gets_connack_0x01() {
        let server = start_broker().await;
        let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
        // CONNECT, protocol "MQTT" level 6, clean session, keep alive 30, client id "x".
        let connect = [
            0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x1E, 0x00, 0x01,
            b'x',
        ];
        stream.write_all(&connect).await.unwrap();
        let mut response = Vec::new();
        within("CONNACK and close", stream.read_to_end(&mut response))
            .await
            .unwrap();
        assert_eq!(response, [0x20, 0x02, 0x00, 0x01]);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_subscriber_that_never_reads_is_disconnected_as_slow_consumer() {
        let config = Config {
            listeners: vec![ListenerConfig::new(
                ListenerKind::Tcp,
                "127.0.0.1:0".parse().unwrap(),
            )],
            limits: LimitsConfig {
                max_outbox_bytes: 64 * 1024,
                ..LimitsConfig::default()
            },
            ..Config::default()
        };
        let mut config = config;
        config.storage.persistence = false;
        let server = server::start(config).await.unwrap();
        let mut subscriber = RawClient::connect(&server, "stuck", ProtocolVersion::V3_1_1, 0).await;
        subscriber
            .send(Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: vec![SubscribeFilter {
                    filter: "flood".into(),
                    options: SubscriptionOptions {
                        qos: QoS::AtMostOnce,
                        ..SubscriptionOptions::default()
                    },
                }],
                ..Subscribe::default()
            }))
            .await;
        assert!(matches!(
            subscriber.next_packet().await,
            Some(Packet::SubAck(_))
        ));

        let mut publisher =
            RawClient::connect(&server, "flooder", ProtocolVersion::V3_1_1, 0).await;
        let payload = Bytes::from(vec![0u8; 64 * 1024]);
        // Far more than loopback socket buffers hold; the subscriber reads nothing.
        for _ in 0..1024 {
            publisher
                .send(Packet::Publish(Publish {
                    topic: "flood".into(),
                    payload: payload.clone(),
                    ..Publish::default()
                }))
                .await;
            if server.broker().stats().snapshot().slow_consumers > 0 {
                break;
            }
        }
        // The subscriber's connection ends after whatever the socket already held.
        within("the subscriber's connection to close", async {
            while subscriber.next_packet().await.is_some() {}
        })
        .await;
        assert_eq!(server.broker().stats().snapshot().slow_consumers, 1);
        server.shutdown().await;
    }
}
