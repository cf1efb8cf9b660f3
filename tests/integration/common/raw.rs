//! A raw TCP MQTT client: writes exact bytes and reads exact packets back, so a test can
//! send what no well-behaved client library would (violations, duplicates, missing acks)
//! and assert every byte and flag the broker answers with.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wire::{self, Ack, ConnectSpec, Packet, Prop, Publish, PublishSpec};
use super::GUARD;

pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Protocol level the packets are decoded for.
    pub version: u8,
    next_packet_id: u16,
    /// PUBLISH packets that arrived while a helper waited for an acknowledgement.
    pending: VecDeque<Packet>,
}

/// What a read found: a whole frame, or the broker closing the connection.
#[derive(Debug)]
pub enum Read {
    Frame { header: u8, body: Vec<u8> },
    Closed,
}

impl RawClient {
    /// Opens a TCP connection and sends nothing.
    pub async fn open(addr: SocketAddr, version: u8) -> RawClient {
        let stream = tokio::time::timeout(GUARD, TcpStream::connect(addr))
            .await
            .expect("TCP connect timed out")
            .expect("TCP connect failed");
        RawClient::with_stream(stream, version)
    }

    /// Connects with a clean session over a socket whose receive buffer is `bytes`, so
    /// that not reading pushes back on the broker after little data.
    pub async fn connect_small_buffer(
        addr: SocketAddr,
        version: u8,
        client_id: &str,
        bytes: u32,
    ) -> RawClient {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .set_recv_buffer_size(bytes)
            .expect("receive buffer size");
        let stream = tokio::time::timeout(GUARD, socket.connect(addr))
            .await
            .expect("TCP connect timed out")
            .expect("TCP connect failed");
        let mut client = RawClient::with_stream(stream, version);
        client
            .send(&ConnectSpec::new(version, client_id).encode())
            .await;
        match client.recv().await {
            Packet::ConnAck { code: 0, .. } => client,
            other => panic!("connection refused: {other:?}"),
        }
    }

    fn with_stream(stream: TcpStream, version: u8) -> RawClient {
        stream.set_nodelay(true).expect("nodelay");
        RawClient {
            stream,
            buf: Vec::new(),
            version,
            next_packet_id: 1,
            pending: VecDeque::new(),
        }
    }

    /// Opens a connection, sends `spec` and returns the client with the CONNACK.
    pub async fn connect_with(addr: SocketAddr, spec: &ConnectSpec) -> (RawClient, Packet) {
        let mut client = RawClient::open(addr, spec.version).await;
        client.send(&spec.encode()).await;
        let connack = client.recv().await;
        assert!(
            matches!(connack, Packet::ConnAck { .. }),
            "expected CONNACK, got {connack:?}"
        );
        (client, connack)
    }

    /// Connects with a clean session and asserts the CONNACK is a plain success.
    pub async fn connect(addr: SocketAddr, version: u8, client_id: &str) -> RawClient {
        RawClient::connect_ok(addr, &ConnectSpec::new(version, client_id)).await
    }

    /// Connects with `spec` and asserts success; the session present flag is not checked.
    pub async fn connect_ok(addr: SocketAddr, spec: &ConnectSpec) -> RawClient {
        let (client, connack) = RawClient::connect_with(addr, spec).await;
        match connack {
            Packet::ConnAck { code: 0, .. } => client,
            other => panic!("connection refused: {other:?}"),
        }
    }

    /// The socket and the bytes read but not yet decoded, for a test that reads and
    /// writes at the same time (packets already decoded are dropped).
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buf)
    }

    pub fn packet_id(&mut self) -> u16 {
        let id = self.next_packet_id;
        self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
        id
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to broker");
    }

    /// Writes, ignoring errors (the broker may already have closed the socket).
    pub async fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Reads the next frame or the end of the stream, within the guard timeout.
    pub async fn read(&mut self) -> Read {
        assert!(
            self.pending.is_empty(),
            "unread packets before a raw read: {:?}",
            self.pending
        );
        self.read_inner().await
    }

    /// One read of up to `at_most` raw bytes (those buffered first), within the guard
    /// timeout; `None` once the broker closed the connection. For a client the broker
    /// may cut off, whose last packet may then be incomplete.
    pub async fn read_raw(&mut self, at_most: usize) -> Option<usize> {
        if !self.buf.is_empty() {
            let taken = self.buf.len().min(at_most);
            self.buf.drain(..taken);
            return Some(taken);
        }
        let mut chunk = vec![0u8; at_most];
        let read = tokio::time::timeout(GUARD, self.stream.read(&mut chunk))
            .await
            .expect("nothing from the broker within the guard timeout");
        match read {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("read from broker: {e}"),
        }
    }

    /// Reads raw bytes until the broker closes the connection; returns their count.
    pub async fn read_until_closed(&mut self) -> usize {
        let mut total = 0;
        while let Some(read) = self.read_raw(64 * 1024).await {
            total += read;
        }
        total
    }

    async fn read_inner(&mut self) -> Read {
        tokio::time::timeout(GUARD, self.read_unguarded())
            .await
            .expect("nothing from the broker within the guard timeout")
    }

    async fn read_unguarded(&mut self) -> Read {
        loop {
            if self.buf.len() >= 2 {
                if let Some((len, n)) = wire::read_varint(&self.buf[1..]) {
                    let total = 1 + n + len;
                    if self.buf.len() >= total {
                        let header = self.buf[0];
                        let body = self.buf[1 + n..total].to_vec();
                        self.buf.drain(..total);
                        return Read::Frame { header, body };
                    }
                }
            }
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk).await {
                Ok(0) => {
                    assert!(
                        self.buf.is_empty(),
                        "connection closed inside a packet: {:02x?}",
                        self.buf
                    );
                    return Read::Closed;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                // A reset is how a close looks when our unread writes were discarded.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Read::Closed,
                Err(e) => panic!("read from broker: {e}"),
            }
        }
    }

    /// The next packet; panics if the broker closes the connection instead.
    pub async fn recv(&mut self) -> Packet {
        if let Some(packet) = self.pending.pop_front() {
            return packet;
        }
        match self.read_inner().await {
            Read::Frame { header, body } => wire::decode(header, &body, self.version),
            Read::Closed => panic!("broker closed the connection, a packet was expected"),
        }
    }

    /// The next packet, or `None` if the connection is closed.
    pub async fn recv_or_closed(&mut self) -> Option<Packet> {
        if let Some(packet) = self.pending.pop_front() {
            return Some(packet);
        }
        match self.read_inner().await {
            Read::Frame { header, body } => Some(wire::decode(header, &body, self.version)),
            Read::Closed => None,
        }
    }

    /// The next frame as raw bytes (header, remaining length, body).
    pub async fn recv_bytes(&mut self) -> Vec<u8> {
        match self.read().await {
            Read::Frame { header, body } => wire::frame(header, &body),
            Read::Closed => panic!("broker closed the connection, a packet was expected"),
        }
    }

    /// Asserts the broker closes the connection without sending anything more.
    pub async fn expect_closed(&mut self) {
        match self.read().await {
            Read::Closed => {}
            Read::Frame { header, body } => panic!(
                "expected the connection to be closed, got {:?}",
                wire::decode(header, &body, self.version)
            ),
        }
    }

    /// Asserts the broker sends MQTT 5 DISCONNECT with `code`, then closes.
    pub async fn expect_disconnect(&mut self, code: u8) {
        match self.recv().await {
            Packet::Disconnect { code: got, .. } => {
                assert_eq!(
                    got, code,
                    "DISCONNECT reason code 0x{got:02x}, expected 0x{code:02x}"
                )
            }
            other => panic!("expected DISCONNECT 0x{code:02x}, got {other:?}"),
        }
        self.expect_closed().await;
    }

    /// Like `expect_disconnect`, where the specification leaves a choice of codes.
    pub async fn expect_disconnect_one_of(&mut self, codes: &[u8]) {
        match self.recv().await {
            Packet::Disconnect { code, .. } => {
                assert!(
                    codes.contains(&code),
                    "DISCONNECT reason code 0x{code:02x}, expected one of {codes:02x?}"
                )
            }
            other => panic!("expected DISCONNECT {codes:02x?}, got {other:?}"),
        }
        self.expect_closed().await;
    }

    /// Waits for the connection to be closed and returns how long it took from `since`.
    /// An MQTT 5 DISCONNECT with `allowed_code` may precede the close.
    pub async fn closed_after(&mut self, since: Instant, allowed_code: u8) -> Duration {
        loop {
            match self.recv_or_closed().await {
                None => return since.elapsed(),
                Some(Packet::Disconnect { code, .. }) if code == allowed_code => {}
                Some(other) => panic!("expected the connection to close, got {other:?}"),
            }
        }
    }

    /// Subscribes and returns the SUBACK return codes.
    pub async fn subscribe_opts(&mut self, filters: &[(&str, u8)], props: &[Prop]) -> Vec<u8> {
        let id = self.packet_id();
        let bytes = wire::subscribe(self.version, id, filters, props);
        self.send(&bytes).await;
        // Retained messages may come before the SUBACK.
        match self.recv_skipping_publishes().await {
            Packet::SubAck {
                packet_id, codes, ..
            } => {
                assert_eq!(packet_id, id, "SUBACK packet id");
                assert_eq!(codes.len(), filters.len(), "one SUBACK code per filter");
                codes
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Subscribes to one filter and asserts the granted QoS is the one asked for.
    pub async fn subscribe(&mut self, filter: &str, qos: u8) {
        let codes = self.subscribe_opts(&[(filter, qos)], &[]).await;
        assert_eq!(codes, vec![qos], "SUBACK for {filter}");
    }

    /// Unsubscribes and returns the UNSUBACK reason codes (empty for 3.x).
    pub async fn unsubscribe(&mut self, filters: &[&str]) -> Vec<u8> {
        let id = self.packet_id();
        let bytes = wire::unsubscribe(self.version, id, filters);
        self.send(&bytes).await;
        match self.recv().await {
            Packet::UnsubAck {
                packet_id, codes, ..
            } => {
                assert_eq!(packet_id, id, "UNSUBACK packet id");
                codes
            }
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }

    /// Publishes and completes the QoS flow, asserting each acknowledgement exactly.
    pub async fn publish(&mut self, spec: PublishSpec) {
        let mut spec = spec;
        if spec.qos > 0 {
            spec.packet_id = self.packet_id();
        }
        let id = spec.packet_id;
        self.send(&spec.encode(self.version)).await;
        match spec.qos {
            0 => {}
            1 => {
                self.expect_ack(|p| matches!(p, Packet::PubAck(_)), "PUBACK", id)
                    .await
            }
            _ => {
                self.expect_ack(|p| matches!(p, Packet::PubRec(_)), "PUBREC", id)
                    .await;
                self.send(&wire::ack(wire::PUBREL, id)).await;
                self.expect_ack(|p| matches!(p, Packet::PubComp(_)), "PUBCOMP", id)
                    .await;
            }
        }
    }

    /// Shorthand: publish `payload` to `topic` at `qos`.
    pub async fn publish_simple(&mut self, topic: &str, qos: u8, payload: &[u8]) {
        self.publish(PublishSpec::new(topic, qos, payload)).await;
    }

    /// The next packet that is not a PUBLISH; PUBLISHes met on the way are kept for
    /// `recv`. Lets a helper wait for an acknowledgement while messages flow in.
    async fn recv_skipping_publishes(&mut self) -> Packet {
        let mut skipped = Vec::new();
        let found = loop {
            let packet = match self.read_inner().await {
                Read::Frame { header, body } => wire::decode(header, &body, self.version),
                Read::Closed => panic!("broker closed the connection, a packet was expected"),
            };
            match packet {
                Packet::Publish(_) => skipped.push(packet),
                other => break other,
            }
        };
        self.pending.extend(skipped);
        found
    }

    async fn expect_ack(&mut self, is_kind: impl Fn(&Packet) -> bool, name: &str, id: u16) {
        let packet = self.recv_skipping_publishes().await;
        assert!(is_kind(&packet), "expected {name}, got {packet:?}");
        let ack = ack_of(&packet);
        assert_eq!(ack.packet_id, id, "{name} packet id");
        assert!(ack.code < 0x80, "{name} reports failure 0x{:02x}", ack.code);
    }

    /// The next packet, which must be a PUBLISH; it is not acknowledged.
    pub async fn recv_publish_noack(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// The next PUBLISH, acknowledged as the protocol requires: PUBACK for QoS 1; for
    /// QoS 2 PUBREC, then the PUBREL it waits for, then PUBCOMP.
    pub async fn recv_publish(&mut self) -> Publish {
        let publish = self.recv_publish_noack().await;
        self.ack_publish(&publish).await;
        publish
    }

    pub async fn ack_publish(&mut self, publish: &Publish) {
        match publish.qos {
            0 => {}
            1 => self.send(&wire::ack(wire::PUBACK, publish.packet_id)).await,
            _ => {
                self.send(&wire::ack(wire::PUBREC, publish.packet_id)).await;
                match self.recv_skipping_publishes().await {
                    Packet::PubRel(a) => assert_eq!(a.packet_id, publish.packet_id, "PUBREL id"),
                    other => panic!("expected PUBREL, got {other:?}"),
                }
                self.send(&wire::ack(wire::PUBCOMP, publish.packet_id))
                    .await;
            }
        }
    }

    /// Receives PUBLISHes (acknowledging them) until one carries `payload`, and returns
    /// the payloads seen before it. Used with a sentinel message to prove that nothing
    /// else was delivered in between.
    pub async fn payloads_until(&mut self, payload: &[u8]) -> Vec<Vec<u8>> {
        let mut seen = Vec::new();
        loop {
            let p = self.recv_publish().await;
            if p.payload == payload {
                return seen;
            }
            seen.push(p.payload);
        }
    }

    /// Sends PINGREQ and expects PINGRESP: proves every earlier packet was processed.
    pub async fn ping(&mut self) {
        self.send(&wire::PINGREQ).await;
        match self.recv().await {
            Packet::PingResp => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }

    /// Sends DISCONNECT (normal) and waits for the broker to close the connection.
    pub async fn disconnect(mut self) {
        self.send(&wire::DISCONNECT).await;
        self.expect_closed().await;
    }

    /// Drops the TCP connection without DISCONNECT.
    pub async fn drop_connection(mut self) {
        let _ = self.stream.shutdown().await;
    }
}

pub fn ack_of(packet: &Packet) -> &Ack {
    match packet {
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => a,
        other => panic!("not an acknowledgement: {other:?}"),
    }
}
