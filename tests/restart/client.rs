//! A minimal MQTT client on the broker's own codec, for exact control of packet ids,
//! DUP flags, the QoS 2 handshake and `session_present`.
//!
//! A [`Client`] is one connection. State that belongs to a session rather than to a
//! connection (the packet ids a QoS 2 receiver has acknowledged with PUBREC and not yet
//! seen released) lives in [`Inbox`], which survives reconnections like the session does.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use fleetmq::protocol::{
    decode, encode, ConnAck, Connect, ConnectProperties, Disconnect, Packet, ProtocolVersion,
    PubResponse, Publish, PublishProperties, QoS, SubAck, Subscribe, SubscribeFilter,
    SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::within;

pub const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
pub const V5: ProtocolVersion = ProtocolVersion::V5;

/// Who connects, and how.
#[derive(Debug, Clone)]
pub struct Identity {
    pub client_id: String,
    pub version: ProtocolVersion,
    /// Clean session (3.x) / clean start (5).
    pub clean: bool,
    /// MQTT 5 Session Expiry Interval.
    pub session_expiry: Option<u32>,
    /// MQTT 5 Receive Maximum.
    pub receive_maximum: Option<u16>,
}

impl Identity {
    /// A session that outlives its connection: 3.1.1 clean session = false, MQTT 5
    /// clean start = false with a Session Expiry Interval of one hour.
    pub fn persistent(client_id: &str, version: ProtocolVersion) -> Identity {
        Identity {
            client_id: client_id.to_string(),
            version,
            clean: false,
            session_expiry: version.is_v5().then_some(3600),
            receive_maximum: None,
        }
    }

    /// A session that ends with its connection.
    pub fn clean(client_id: &str, version: ProtocolVersion) -> Identity {
        Identity {
            client_id: client_id.to_string(),
            version,
            clean: true,
            session_expiry: None,
            receive_maximum: None,
        }
    }

    pub fn session_expiry(mut self, secs: u32) -> Identity {
        self.session_expiry = Some(secs);
        self
    }

    pub fn receive_maximum(mut self, maximum: u16) -> Identity {
        self.receive_maximum = Some(maximum);
        self
    }

    fn connect_packet(&self) -> Packet {
        Packet::Connect(Box::new(Connect {
            protocol: self.version,
            clean_start: self.clean,
            keep_alive: 60,
            client_id: self.client_id.as_str().into(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties {
                session_expiry_interval: self.session_expiry,
                receive_maximum: self.receive_maximum,
                ..ConnectProperties::default()
            },
        }))
    }
}

/// A PUBLISH as a test builds it.
pub fn publish(topic: &str, qos: QoS, packet_id: u16, payload: impl Into<Bytes>) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id,
        properties: PublishProperties::default(),
        payload: payload.into(),
    }
}

pub fn ack(packet_id: u16) -> PubResponse {
    PubResponse {
        packet_id,
        ..PubResponse::default()
    }
}

/// One MQTT connection.
pub struct Client {
    stream: TcpStream,
    buf: BytesMut,
    pub version: ProtocolVersion,
    pub client_id: String,
    /// The next packet id `publish_*` uses.
    next_packet_id: u16,
}

impl Client {
    /// Connects and returns the CONNACK, whatever its reason code.
    pub async fn connect(addr: SocketAddr, identity: &Identity) -> (Client, ConnAck) {
        let stream = within("a TCP connection", TcpStream::connect(addr))
            .await
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let mut client = Client {
            stream,
            buf: BytesMut::new(),
            version: identity.version,
            client_id: identity.client_id.clone(),
            next_packet_id: 1,
        };
        client.send(&identity.connect_packet()).await;
        match client.recv().await {
            Packet::ConnAck(connack) => (client, connack),
            other => panic!("{}: expected CONNACK, got {other:?}", identity.client_id),
        }
    }

    /// Connects, checks that the broker accepted, and that it did (`Some(true)`) or did
    /// not (`Some(false)`) have a session for this client.
    pub async fn connect_expecting(
        addr: SocketAddr,
        identity: &Identity,
        session_present: bool,
    ) -> Client {
        let (client, connack) = Client::connect(addr, identity).await;
        assert_eq!(
            connack.reason_code, 0,
            "{}: CONNACK {connack:?}",
            identity.client_id
        );
        assert_eq!(
            connack.session_present, session_present,
            "{}: session present in CONNACK after connecting with clean={}",
            identity.client_id, identity.clean
        );
        client
    }

    pub async fn send(&mut self, packet: &Packet) {
        self.try_send(packet)
            .await
            .unwrap_or_else(|error| panic!("{}: cannot send: {error}", self.client_id));
    }

    /// Sends, reporting a connection the broker closed (or died on) as an error.
    pub async fn try_send(&mut self, packet: &Packet) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        encode(packet, self.version, &mut out);
        within("a write to the broker", self.stream.write_all(&out)).await
    }

    /// The next packet; panics if the connection closes.
    pub async fn recv(&mut self) -> Packet {
        match self.try_recv().await {
            Some(packet) => packet,
            None => panic!("{}: the broker closed the connection", self.client_id),
        }
    }

    /// The next packet, or `None` once the connection is closed or reset.
    pub async fn try_recv(&mut self) -> Option<Packet> {
        let client_id = self.client_id.clone();
        within(&format!("a packet for {client_id}"), async {
            loop {
                if let Some(packet) = decode(&mut self.buf, Some(self.version), u32::MAX)
                    .unwrap_or_else(|error| panic!("{client_id}: undecodable packet: {error}"))
                {
                    return Some(packet);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
    }

    /// Reads until the broker closes the connection; returns what came before.
    pub async fn until_closed(&mut self) -> Vec<Packet> {
        let mut packets = Vec::new();
        while let Some(packet) = self.try_recv().await {
            packets.push(packet);
        }
        packets
    }

    pub async fn subscribe(&mut self, filters: &[(&str, QoS)]) -> SubAck {
        let packet_id = self.take_packet_id();
        let filters = filters
            .iter()
            .map(|(filter, qos)| SubscribeFilter {
                filter: (*filter).into(),
                options: SubscriptionOptions {
                    qos: *qos,
                    ..SubscriptionOptions::default()
                },
            })
            .collect();
        self.send(&Packet::Subscribe(Subscribe {
            packet_id,
            filters,
            ..Subscribe::default()
        }))
        .await;
        match self.recv().await {
            Packet::SubAck(suback) => {
                assert_eq!(suback.packet_id, packet_id);
                assert!(
                    suback.reason_codes.iter().all(|code| *code < 0x80),
                    "{}: SUBSCRIBE refused: {suback:?}",
                    self.client_id
                );
                suback
            }
            other => panic!("{}: expected SUBACK, got {other:?}", self.client_id),
        }
    }

    /// A packet id for the next outgoing PUBLISH or SUBSCRIBE.
    pub fn take_packet_id(&mut self) -> u16 {
        let id = self.next_packet_id;
        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        id
    }

    /// Publishes and waits for the whole QoS flow: PUBACK for QoS 1, PUBREC then PUBCOMP
    /// (after our PUBREL) for QoS 2. Nothing else may arrive meanwhile.
    pub async fn publish_acknowledged(&mut self, mut message: Publish) {
        if message.qos != QoS::AtMostOnce {
            message.packet_id = self.take_packet_id();
        }
        let packet_id = message.packet_id;
        let qos = message.qos;
        self.send(&Packet::Publish(message)).await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                let puback = self.expect_ack(Packet::PubAck, "PUBACK").await;
                check_ack(&puback, packet_id, "PUBACK");
            }
            QoS::ExactlyOnce => {
                let pubrec = self.expect_ack(Packet::PubRec, "PUBREC").await;
                check_ack(&pubrec, packet_id, "PUBREC");
                self.send(&Packet::PubRel(ack(packet_id))).await;
                let pubcomp = self.expect_ack(Packet::PubComp, "PUBCOMP").await;
                check_ack(&pubcomp, packet_id, "PUBCOMP");
            }
        }
    }

    /// The next packet, which must be of the kind `wrap` builds.
    pub async fn expect_ack(&mut self, wrap: fn(PubResponse) -> Packet, name: &str) -> PubResponse {
        let packet = self.recv().await;
        let expected = wrap(PubResponse::default()).packet_type() == packet.packet_type();
        match packet {
            Packet::PubAck(response)
            | Packet::PubRec(response)
            | Packet::PubRel(response)
            | Packet::PubComp(response)
                if expected =>
            {
                response
            }
            other => panic!("{}: expected {name}, got {other:?}", self.client_id),
        }
    }

    /// The next packet, which must be a PUBLISH; it is not acknowledged.
    pub async fn expect_publish(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(publish) => publish,
            other => panic!("{}: expected PUBLISH, got {other:?}", self.client_id),
        }
    }

    /// Sends DISCONNECT (normal disconnection) and waits until the broker closes.
    pub async fn disconnect(mut self) {
        self.send(&Packet::Disconnect(Disconnect::default())).await;
        let rest = self.until_closed().await;
        assert!(
            rest.is_empty(),
            "{}: packets after DISCONNECT: {rest:?}",
            self.client_id
        );
    }
}

/// An acknowledgement must name the packet and, in MQTT 5, report success
/// (0x10, no matching subscribers, is a success too).
pub fn check_ack(response: &PubResponse, packet_id: u16, name: &str) {
    assert_eq!(response.packet_id, packet_id, "{name} for another packet");
    assert!(
        response.reason_code < 0x80,
        "{name} with a failure reason code: {response:?}"
    );
}

/// What a subscriber has received, across its connections: per topic, each payload in
/// order of arrival. QoS 2 deliveries follow the receiver's side of the handshake (PUBREC
/// on PUBLISH, PUBCOMP on PUBREL); a PUBLISH resent with DUP for a packet id still
/// awaiting its PUBREL is the same message and is not counted twice.
#[derive(Debug, Default)]
pub struct Inbox {
    pub by_topic: BTreeMap<String, Vec<Bytes>>,
    /// Every PUBLISH as it arrived (after acknowledgement handling).
    pub publishes: Vec<Publish>,
    awaiting_release: HashSet<u16>,
}

impl Inbox {
    pub fn new() -> Inbox {
        Inbox::default()
    }

    /// Handles one packet from the broker: records and acknowledges a PUBLISH, completes
    /// a PUBREL. Anything else is a failure.
    pub async fn handle(&mut self, client: &mut Client, packet: Packet) {
        match packet {
            Packet::Publish(publish) => match publish.qos {
                QoS::AtMostOnce => self.record(publish),
                QoS::AtLeastOnce => {
                    client.send(&Packet::PubAck(ack(publish.packet_id))).await;
                    self.record(publish);
                }
                QoS::ExactlyOnce => {
                    let packet_id = publish.packet_id;
                    if self.awaiting_release.insert(packet_id) {
                        self.record(publish);
                    } else {
                        assert!(
                                publish.dup,
                                "{}: a new QoS 2 PUBLISH reuses packet id {packet_id}, still awaiting its PUBREL: {publish:?}",
                                client.client_id
                            );
                    }
                    client.send(&Packet::PubRec(ack(packet_id))).await;
                }
            },
            Packet::PubRel(pubrel) => {
                self.awaiting_release.remove(&pubrel.packet_id);
                client.send(&Packet::PubComp(ack(pubrel.packet_id))).await;
            }
            other => panic!(
                "{}: unexpected packet for a subscriber: {other:?}",
                client.client_id
            ),
        }
    }

    fn record(&mut self, publish: Publish) {
        self.by_topic
            .entry(publish.topic.to_string())
            .or_default()
            .push(publish.payload.clone());
        self.publishes.push(publish);
    }

    /// Receives (and acknowledges) until `done` holds for what was received and every
    /// QoS 2 delivery is complete (its PUBREL received and answered).
    pub async fn receive_until(&mut self, client: &mut Client, done: impl Fn(&Inbox) -> bool) {
        while !done(self) || !self.awaiting_release.is_empty() {
            let packet = client.recv().await;
            self.handle(client, packet).await;
        }
    }

    /// Receives until a message with payload `sentinel` arrived on `topic`. Per-topic
    /// order means that everything published on `topic` before the sentinel has arrived.
    pub async fn receive_through(&mut self, client: &mut Client, topic: &str, sentinel: &[u8]) {
        self.receive_until(client, |inbox| inbox.has(topic, sentinel))
            .await;
    }

    pub fn has(&self, topic: &str, payload: &[u8]) -> bool {
        self.by_topic
            .get(topic)
            .is_some_and(|payloads| payloads.iter().any(|p| p == payload))
    }

    /// The payloads received on `topic`, sentinels and all.
    pub fn topic(&self, topic: &str) -> Vec<Bytes> {
        self.by_topic.get(topic).cloned().unwrap_or_default()
    }
}

/// The payloads `prefix-0` .. `prefix-(n-1)`.
pub fn numbered(prefix: &str, n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| Bytes::from(format!("{prefix}-{i}")))
        .collect()
}

/// `received` with repeated payloads after the first occurrence removed, and without
/// the payloads in `skip`.
pub fn first_occurrences(received: &[Bytes], skip: &[&[u8]]) -> Vec<Bytes> {
    let mut seen = HashSet::new();
    received
        .iter()
        .filter(|payload| !skip.contains(&payload.as_ref()))
        .filter(|payload| seen.insert((*payload).clone()))
        .cloned()
        .collect()
}
