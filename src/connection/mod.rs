//! The per-client task: moves bytes between the socket and the session.
//!
//! One task per TCP connection, with one `select!` over socket reads, socket writes
//! (while encoded bytes wait), the session's wake-up, the keep-alive deadline, the
//! takeover signal and server shutdown. Incoming packets are decoded and handed to the
//! sans-IO `Session`; its actions are carried out here and in `crate::broker` (routing a
//! PUBLISH to subscribers happens right on this task). Outgoing packets are drained from
//! the session in batches and encoded into one write buffer, bounded by
//! `limits.max_outbox_bytes`: a client whose backlog is full while more messages wait is
//! a slow consumer and is disconnected.

mod handshake;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant as TokioInstant;

use crate::broker::{now, Broker, SessionHandle, Stats};
use crate::protocol::{decode, encode, reason, ConnAck, Disconnect, Packet, ProtocolVersion, QoS};
use crate::session::Action;
use crate::storage::StoreEvent;

use handshake::HandshakeError;

/// Bytes reserved in the read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;
/// How long a closing connection may take to deliver its last packets (CONNACK refusal,
/// DISCONNECT with a reason) before the socket is dropped anyway.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// The client sent DISCONNECT.
    ClientDisconnect {
        publish_will: bool,
    },
    /// A protocol violation (decode error or session rule).
    Violation {
        reason_code: u8,
    },
    KeepAliveTimeout,
    /// The client closed the socket, or it failed.
    SocketClosed,
    /// Another connection attached to the session (or discarded it).
    TakenOver,
    Shutdown,
    /// The client did not read fast enough; its write buffer overflowed.
    SlowConsumer,
}

impl Exit {
    /// Reason of the MQTT 5 DISCONNECT the server sends, if it sends one.
    fn disconnect_reason(self) -> Option<u8> {
        match self {
            Exit::Violation { reason_code } => Some(reason_code),
            Exit::KeepAliveTimeout => Some(reason::KEEP_ALIVE_TIMEOUT),
            Exit::TakenOver => Some(reason::SESSION_TAKEN_OVER),
            Exit::Shutdown => Some(reason::SERVER_SHUTTING_DOWN),
            Exit::ClientDisconnect { .. } | Exit::SocketClosed | Exit::SlowConsumer => None,
        }
    }

    /// Whether the connection's will is published. Not on a normal DISCONNECT, not on
    /// takeover (the taking connection decides), not when the server itself stops.
    fn publishes_will(self) -> bool {
        match self {
            Exit::ClientDisconnect { publish_will } => publish_will,
            Exit::TakenOver | Exit::Shutdown => false,
            Exit::Violation { .. }
            | Exit::KeepAliveTimeout
            | Exit::SocketClosed
            | Exit::SlowConsumer => true,
        }
    }
}

/// Serves one accepted socket until it closes.
pub async fn serve(mut stream: TcpStream, peer: SocketAddr, broker: Arc<Broker>) {
    Stats::incr(&broker.stats().connections_accepted);
    // MQTT packets are small and already batched per wake-up; Nagle would only add delay.
    let _ = stream.set_nodelay(true);
    let mut shutdown = broker.shutdown_signal();
    let mut read_buf = BytesMut::with_capacity(READ_CHUNK);

    let first = tokio::select! {
        result = handshake::read_connect(&mut stream, &mut read_buf, broker.config()) => result,
        _ = shutdown.wait_for(|stopping| *stopping) => {
            return;
        }
    };
    let mut connect = match first {
        Ok(connect) => connect,
        Err(error) => {
            Stats::incr(&broker.stats().connections_rejected);
            tracing::debug!(%peer, ?error, "connection closed before a valid CONNECT");
            if let HandshakeError::Decode(crate::protocol::DecodeError::UnsupportedProtocol) = error
            {
                // The 3.1.1 CONNACK format is the one every client version can read.
                let refusal = ConnAck {
                    reason_code: reason::UNSUPPORTED_PROTOCOL_VERSION,
                    ..ConnAck::default()
                };
                send_and_close(
                    &mut stream,
                    Packet::ConnAck(refusal),
                    ProtocolVersion::V3_1_1,
                )
                .await;
            }
            return;
        }
    };
    let version = connect.protocol;
    let terms = match handshake::negotiate(&broker, &mut connect) {
        Ok(terms) => terms,
        Err(reason_code) => {
            Stats::incr(&broker.stats().connections_rejected);
            tracing::info!(%peer, client_id = %connect.client_id, reason_code, "connection refused");
            let refusal = ConnAck {
                reason_code,
                ..ConnAck::default()
            };
            send_and_close(&mut stream, Packet::ConnAck(refusal), version).await;
            return;
        }
    };

    let connected = broker.connect(&connect, terms.session_expiry);
    tracing::info!(
        %peer,
        client_id = %connect.client_id,
        protocol = version.level(),
        clean_start = connect.clean_start,
        session_present = connected.session_present,
        keep_alive = terms.keep_alive,
        "client connected"
    );
    let mut connack = terms.connack;
    connack.session_present = connected.session_present;
    let mut connection = Connection {
        broker: broker.clone(),
        handle: connected.handle,
        generation: connected.attachment.generation,
        version,
        peer,
        read_buf,
        write_buf: BytesMut::with_capacity(READ_CHUNK),
        out: vec![Packet::ConnAck(connack)],
        keep_alive: (terms.keep_alive != 0)
            .then(|| Duration::from_millis(u64::from(terms.keep_alive) * 1500)),
    };
    drop(connect);
    connection
        .run(stream, connected.attachment.kicked, shutdown)
        .await;
    Stats::incr(&broker.stats().connections_closed);
}

/// Writes one packet and closes, within `CLOSE_FLUSH_TIMEOUT`.
async fn send_and_close(stream: &mut TcpStream, packet: Packet, version: ProtocolVersion) {
    let mut buf = BytesMut::new();
    encode(&packet, version, &mut buf);
    let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, async {
        stream.write_all(&buf).await?;
        stream.shutdown().await
    })
    .await;
}

/// What woke the connection task.
enum Event {
    Read(std::io::Result<usize>),
    Written(std::io::Result<usize>),
    Wake,
    KeepAliveExpired,
    Kicked,
    Shutdown,
}

struct Connection {
    broker: Arc<Broker>,
    handle: Arc<SessionHandle>,
    generation: u64,
    version: ProtocolVersion,
    peer: SocketAddr,
    read_buf: BytesMut,
    /// Encoded packets not yet written; bounded by `limits.max_outbox_bytes`.
    write_buf: BytesMut,
    /// Packets produced by handling input (acknowledgements), encoded before anything
    /// drained from the session so they keep their order.
    out: Vec<Packet>,
    /// 1.5 times the effective keep alive; `None` when disabled.
    keep_alive: Option<Duration>,
}

impl Connection {
    async fn run(
        &mut self,
        mut stream: TcpStream,
        mut kicked: watch::Receiver<u64>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Exit {
        let keep_alive_timer = tokio::time::sleep(self.keep_alive.unwrap_or(Duration::ZERO));
        tokio::pin!(keep_alive_timer);
        // Packets pipelined behind CONNECT are already in the read buffer.
        let mut result = self.process_input();
        if result.is_ok() {
            result = self.drain_session();
        }
        let exit = loop {
            if let Err(exit) = result {
                break exit;
            }
            let (mut reader, mut writer) = stream.split();
            let has_output = !self.write_buf.is_empty();
            self.read_buf.reserve(READ_CHUNK);
            let event = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stopping| *stopping) => Event::Shutdown,
                _ = kicked.changed() => Event::Kicked,
                _ = &mut keep_alive_timer, if self.keep_alive.is_some() => Event::KeepAliveExpired,
                written = writer.write_buf(&mut self.write_buf), if has_output => Event::Written(written),
                read = reader.read_buf(&mut self.read_buf) => Event::Read(read),
                _ = self.handle.wake.notified() => Event::Wake,
            };
            result = match event {
                Event::Read(Ok(0)) | Event::Read(Err(_)) => Err(Exit::SocketClosed),
                Event::Written(Ok(0)) | Event::Written(Err(_)) => Err(Exit::SocketClosed),
                Event::Read(Ok(_)) => {
                    let handled = self.process_input();
                    if let Some(period) = self.keep_alive {
                        keep_alive_timer
                            .as_mut()
                            .reset(TokioInstant::now() + period);
                    }
                    handled.and_then(|()| self.drain_session())
                }
                Event::Written(Ok(_)) => Ok(()),
                Event::Wake => self.drain_session(),
                Event::KeepAliveExpired => Err(Exit::KeepAliveTimeout),
                Event::Kicked => {
                    if *kicked.borrow_and_update() == self.generation {
                        Ok(())
                    } else {
                        Err(Exit::TakenOver)
                    }
                }
                Event::Shutdown => Err(Exit::Shutdown),
            };
        };
        self.close(&mut stream, exit).await;
        exit
    }

    /// Decodes and handles every complete packet in the read buffer.
    fn process_input(&mut self) -> Result<(), Exit> {
        let max_packet_size = self.broker.config().limits.max_packet_size;
        loop {
            match decode(&mut self.read_buf, Some(self.version), max_packet_size) {
                Ok(Some(packet)) => self.handle_packet(packet)?,
                Ok(None) => return Ok(()),
                Err(error) => {
                    tracing::debug!(client_id = %self.handle.client_id, %error, "undecodable packet");
                    return Err(Exit::Violation {
                        reason_code: error.reason_code(),
                    });
                }
            }
        }
    }

    fn handle_packet(&mut self, packet: Packet) -> Result<(), Exit> {
        let now = now();
        let actions = {
            let mut session = self
                .handle
                .lock_current(self.generation)
                .ok_or(Exit::TakenOver)?;
            session.handle_packet(packet, now)
        };
        let actions = actions.map_err(|violation| {
            tracing::debug!(client_id = %self.handle.client_id, %violation, "protocol violation");
            Exit::Violation {
                reason_code: violation.reason_code,
            }
        })?;
        // Set by a PUBLISH that matched no subscription; its acknowledgement, which
        // follows in the action list, then says so (MQTT 5 reason 0x10).
        let mut unrouted = false;
        for action in actions {
            match action {
                Action::Send(mut packet) => {
                    if std::mem::take(&mut unrouted) {
                        mark_no_subscribers(&mut packet);
                    }
                    self.out.push(packet);
                }
                Action::Route(message) => {
                    // Routed before its acknowledgement is queued: a durable store will
                    // hold the ack back until the message is safely written.
                    let deliveries = self.broker.publish(&message);
                    if message.qos != QoS::AtMostOnce {
                        self.broker.record_event(StoreEvent::MessageAccepted {
                            message: &message,
                            deliveries,
                        });
                    }
                    unrouted = deliveries == 0 && self.version.is_v5();
                }
                Action::Subscribe(request) => {
                    let suback = self
                        .broker
                        .subscribe(&self.handle, self.generation, request)
                        .ok_or(Exit::TakenOver)?;
                    self.out.push(Packet::SubAck(suback));
                }
                Action::Unsubscribe(request) => {
                    let unsuback = self
                        .broker
                        .unsubscribe(&self.handle, self.generation, request)
                        .ok_or(Exit::TakenOver)?;
                    self.out.push(Packet::UnsubAck(unsuback));
                }
                Action::Disconnect { publish_will } => {
                    return Err(Exit::ClientDisconnect { publish_will });
                }
            }
        }
        Ok(())
    }

    /// Encodes pending acknowledgements, then everything the session may send now.
    ///
    /// While the unwritten backlog is at `max_outbox_bytes` or more, nothing more is
    /// taken from the session; if the session then still has messages waiting, the client
    /// is not keeping up and is disconnected as a slow consumer. One batch may overshoot
    /// the limit (it is bounded by the inflight window and the session's queue limits).
    fn drain_session(&mut self) -> Result<(), Exit> {
        let mut packets = std::mem::take(&mut self.out);
        let mut dropped = Vec::new();
        let backlog_full = self.write_buf.len() >= self.broker.config().limits.max_outbox_bytes;
        {
            let mut session = self
                .handle
                .lock_current(self.generation)
                .ok_or(Exit::TakenOver)?;
            if !backlog_full {
                session.poll_outgoing(now(), &mut packets, &mut dropped);
            } else if session.has_outgoing() {
                return Err(Exit::SlowConsumer);
            }
        }
        for reason in dropped {
            self.broker.stats().dropped(reason);
        }
        for packet in packets.drain(..) {
            encode(&packet, self.version, &mut self.write_buf);
        }
        // Keep the allocation for the next batch.
        self.out = packets;
        Ok(())
    }

    /// Ends the connection: settles the session first (so a fast reconnect finds it
    /// detached), then flushes what is owed to the client and closes the socket.
    async fn close(&mut self, stream: &mut TcpStream, exit: Exit) {
        let client_id = &self.handle.client_id;
        match exit {
            Exit::TakenOver => {
                // This task may have consumed a wake-up meant for the new connection.
                self.handle.wake.notify_one();
            }
            _ => self
                .broker
                .disconnect(&self.handle, self.generation, exit.publishes_will()),
        }
        match exit {
            Exit::SlowConsumer => {
                Stats::incr(&self.broker.stats().slow_consumers);
                tracing::warn!(client_id = %client_id, peer = %self.peer, "slow consumer disconnected");
                self.write_buf.clear();
                return;
            }
            Exit::KeepAliveTimeout => Stats::incr(&self.broker.stats().keep_alive_timeouts),
            Exit::Violation { .. } => Stats::incr(&self.broker.stats().protocol_violations),
            _ => {}
        }
        tracing::info!(client_id = %client_id, peer = %self.peer, reason = ?exit, "client disconnected");
        if exit == Exit::SocketClosed {
            return;
        }
        for packet in self.out.drain(..) {
            encode(&packet, self.version, &mut self.write_buf);
        }
        if self.version.is_v5() {
            if let Some(reason_code) = exit.disconnect_reason() {
                let disconnect = Disconnect {
                    reason_code,
                    ..Disconnect::default()
                };
                encode(
                    &Packet::Disconnect(disconnect),
                    self.version,
                    &mut self.write_buf,
                );
            }
        }
        let write_buf = &self.write_buf;
        let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, async {
            stream.write_all(write_buf).await?;
            stream.shutdown().await
        })
        .await;
    }
}

/// Turns the success acknowledgement of an unrouted PUBLISH into 0x10 (MQTT 5).
fn mark_no_subscribers(packet: &mut Packet) {
    if let Packet::PubAck(ack) | Packet::PubRec(ack) = packet {
        if ack.reason_code == reason::SUCCESS {
            ack.reason_code = reason::NO_MATCHING_SUBSCRIBERS;
        }
    }
}
