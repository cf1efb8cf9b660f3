//! The per-client task: moves bytes between the socket and the session.
//!
//! One task per connection, over any transport (`crate::listener::ClientStream`): `open`
//! reads CONNECT and attaches the session, then `Connected::serve` polls, in one place,
//! socket reads, socket writes (while encoded bytes wait), the session's wake-up (also
//! rung for a takeover and at server shutdown) and the keep-alive deadline. An idle connection
//! holds no buffers (`buffer`). Incoming packets are decoded and handed to the
//! sans-IO `Session`; its actions are carried out here and in `crate::broker` (routing a
//! PUBLISH to subscribers happens right on this task). Outgoing packets are drained from
//! the session in batches (`output`) and encoded into one write buffer, bounded by
//! `limits.max_outbox_bytes`: a client whose backlog stays full for
//! `limits.slow_consumer_timeout_ms` while more messages wait is a slow consumer and is
//! disconnected. A publisher whose message left a subscriber's queue nearly full stops
//! being read until that subscriber drained (`backpressure`). Closing delivers the last
//! packets (a DISCONNECT with the reason) before the socket goes (`close`).

mod authenticate;
mod backpressure;
mod buffer;
mod chunked;
mod close;
mod handshake;
mod held;
mod open;
mod output;
mod park;
mod policy;

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use bytestring::ByteString;
use tokio::io::AsyncWrite;
use tokio::time::{sleep_until, Instant as TokioInstant, Sleep};

use crate::auth::Exchange;
use crate::broker::{now, Broker, Dropped, ForwardOrder, SessionHandle, Stats};
use crate::config::Config;
use crate::listener::{ClientStream, ConnectionSlots, ListenerContext};
use crate::protocol::{decode_from_client, reason, Packet, ProtocolVersion, PubResponse, QoS};
use crate::session::Action;
use crate::storage::{Completion, StoreOp};

use backpressure::{Paused, Resume};
use held::HeldPackets;
pub use open::{open, Connected};
pub use park::{ParkingLot, ParkingTableTask};

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
    /// An operator disconnected the client (`crate::admin`).
    Kicked,
    Shutdown,
    /// The client did not read fast enough; its write buffer overflowed.
    SlowConsumer,
    /// A write its acknowledgement depended on failed, and MQTT 3 has no way to say so
    /// in the acknowledgement: the client resends after reconnecting.
    StorageFailed,
}

impl Exit {
    /// Reason of the MQTT 5 DISCONNECT the server sends, if it sends one.
    fn disconnect_reason(self) -> Option<u8> {
        match self {
            Exit::Violation { reason_code } => Some(reason_code),
            Exit::KeepAliveTimeout => Some(reason::KEEP_ALIVE_TIMEOUT),
            Exit::TakenOver => Some(reason::SESSION_TAKEN_OVER),
            Exit::Kicked => Some(reason::ADMINISTRATIVE_ACTION),
            Exit::Shutdown => Some(reason::SERVER_SHUTTING_DOWN),
            Exit::StorageFailed => Some(reason::UNSPECIFIED_ERROR),
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
            | Exit::Kicked
            | Exit::SocketClosed
            | Exit::SlowConsumer
            | Exit::StorageFailed => true,
        }
    }
}

/// What one write step achieved.
enum WriteProgress {
    /// This many bytes left the write buffer.
    Wrote(usize),
    /// The buffer was empty and the stream was flushed.
    Flushed,
}

/// Writes some of `buf`, or flushes once it is empty (TLS and WebSocket hold written
/// bytes until flushed). A buffer written out gives its memory back.
fn poll_write_or_flush<W: AsyncWrite + Unpin>(
    writer: &mut W,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<std::io::Result<WriteProgress>> {
    if buf.is_empty() {
        ready!(Pin::new(writer).poll_flush(cx))?;
        return Poll::Ready(Ok(WriteProgress::Flushed));
    }
    let written = ready!(Pin::new(writer).poll_write(cx, buf))?;
    buf.advance(written);
    buffer::release_if_empty(buf);
    Poll::Ready(match written {
        0 => Err(std::io::ErrorKind::WriteZero.into()),
        written => Ok(WriteProgress::Wrote(written)),
    })
}

/// What woke the connection task.
enum Event {
    Read(std::io::Result<usize>),
    Written(std::io::Result<WriteProgress>),
    Wake,
    /// The oldest held acknowledgement's writes resolved.
    Settled,
    /// The subscriber this publisher waited for drained, or the wait timed out.
    Resume(Resume),
    /// The outbox has been full for the slow-consumer timeout.
    OutboxTimeout,
    /// The timer of the keep-alive deadline and the idle check fired.
    Timer,
}

struct Connection {
    broker: Arc<Broker>,
    /// The configuration in force when the connection was accepted.
    config: Arc<Config>,
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
    /// Acknowledgements waiting for their writes to be durable, and what queued behind.
    held: HeldPackets,
    /// The effective keep alive in seconds, 0 when disabled (`keep_alive` gives the
    /// deadline's period); two bytes rather than a 16-byte `Option<Duration>`.
    keep_alive_secs: u16,
    /// QoS 0 PUBLISHes encoded since `write_buf` was last empty: what is lost if the
    /// client is cut off as a slow consumer (QoS 1/2 stay in the session).
    qos0_unwritten: u64,
    /// Bytes were written since the last flush.
    unflushed: bool,
    /// The listener that accepted the connection: its security settings and parking
    /// table.
    listener: Arc<ListenerContext>,
    /// The authenticated username; `None` for an anonymous client.
    username: Option<String>,
    /// MQTT 5 enhanced authentication, for a client that used it in CONNECT; boxed, as
    /// few do.
    enhanced_auth: Option<Box<EnhancedAuth>>,
    rate: policy::PublishRate,
    /// Reading is paused until this subscriber drained (backpressure).
    paused: Option<Paused>,
    /// When a client whose outbox stays full while queued messages wait is cut off as a
    /// slow consumer; set (and allocated) only while that is so.
    outbox_deadline: Option<Pin<Box<Sleep>>>,
    /// The session had more to send than the outbox took at the last drain; drain again
    /// once the socket took half of it.
    output_waiting: bool,
    /// The connection's place under the connection limits, until it is dropped.
    slots: ConnectionSlots,
    /// The connection went on as a parked entry (`park`), which counts its close.
    parked: bool,
    /// Keeps this publisher's messages in order on their way to other cluster nodes
    /// while one waits for its packet id to reach the session's backups.
    forward_order: ForwardOrder,
}

/// What re-authentication (AUTH after CONNACK) needs.
struct EnhancedAuth {
    /// The authentication method of CONNECT; re-authentication must use it.
    method: ByteString,
    /// A re-authentication in progress.
    exchange: Option<Box<dyn Exchange>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if !self.parked {
            Stats::incr(&self.broker.stats().connections_closed);
        }
    }
}

impl Connection {
    /// How long the client may stay silent: 1.5 times its effective keep alive
    /// (MQTT 3.1.1 section 3.1.2.10); `None` when disabled.
    fn keep_alive(&self) -> Option<Duration> {
        (self.keep_alive_secs != 0)
            .then(|| Duration::from_millis(u64::from(self.keep_alive_secs) * 1500))
    }
}

impl Connection {
    /// Its future is most of what an idle client costs, so it holds little: the socket
    /// and one timer (for the keep-alive deadline and the idle check that parks the
    /// connection), allocated only when needed. The rest of the state is in the boxed
    /// `Connection`; what the connection waits for (the socket, the session's wake-up,
    /// rung for deliveries, a takeover and shutdown, and the rest) is polled by
    /// `poll_event`, which keeps no future of its own, and closing is boxed.
    ///
    /// `keep_alive_deadline` carries the deadline of a connection coming back from its
    /// parking table; `None` starts a full keep-alive period now. `fresh`: the client
    /// has just connected (not come back from its parking table).
    ///
    /// Not an `async fn`: its future would keep a second copy of its arguments.
    #[allow(clippy::manual_async_fn)]
    fn run(
        mut self: Box<Self>,
        mut stream: ClientStream,
        keep_alive_deadline: Option<TokioInstant>,
        fresh: bool,
    ) -> impl Future<Output = ()> + Send {
        async move {
            let started = TokioInstant::now();
            let mut keep_alive_deadline =
                keep_alive_deadline.or_else(|| self.keep_alive().map(|period| started + period));
            // Parking happens once the connection stayed idle (`can_park`) through one
            // whole period between two checks: between one and two periods after its
            // last event, without a clock read or a timer change per event.
            let park_after = self.park_after(&stream);
            // A client that has just connected is checked more often at first
            // (`QUICK_PARK_CHECKS`): a fleet connecting at thousands per second is then
            // parked as it arrives, shortly after its CONNECT and SUBSCRIBE, rather than
            // thousands of connections waiting at full size for a whole period each.
            let mut quick_checks = if fresh { QUICK_PARK_CHECKS } else { 0 };
            let mut park_check =
                park_after.map(|period| started + check_period(period, quick_checks));
            let mut active = false;
            let mut timer =
                earliest(keep_alive_deadline, park_check).map(|at| Box::pin(sleep_until(at)));
            // Packets pipelined behind CONNECT are already in the read buffer.
            let mut result = self.process_input();
            if result.is_ok() {
                result = self.drain_session();
            }
            let exit = loop {
                if let Err(exit) = result {
                    break exit;
                }
                // A takeover or shutdown signalled after these checks wakes the wait
                // (`poll_event`).
                if self.handle.generation() != self.generation {
                    break Exit::TakenOver;
                }
                if self.handle.is_kicked() {
                    break Exit::Kicked;
                }
                if self.broker.is_shutting_down() {
                    break Exit::Shutdown;
                }
                let line_full = self.forward_order.is_full();
                let event = poll_fn(|cx| self.poll_event(cx, &mut stream, &mut timer)).await;
                if line_full && !self.forward_order.is_full() {
                    // Not read while its line to the other nodes was full
                    // (`broker::forward_order`): the client was not silent.
                    if let Some(period) = self.keep_alive() {
                        keep_alive_deadline = Some(TokioInstant::now() + period);
                    }
                }
                if !matches!(event, Event::Timer) {
                    active = true;
                }
                result = match event {
                    Event::Read(Ok(0)) | Event::Read(Err(_)) => Err(Exit::SocketClosed),
                    Event::Written(Err(_)) => Err(Exit::SocketClosed),
                    Event::Read(Ok(read)) => {
                        Stats::add(&self.broker.stats().bytes_received, read as u64);
                        let handled = self.process_input();
                        if let Some(period) = self.keep_alive() {
                            keep_alive_deadline = Some(TokioInstant::now() + period);
                        }
                        handled.and_then(|()| self.drain_session())
                    }
                    Event::Written(Ok(WriteProgress::Wrote(written))) => {
                        Stats::add(&self.broker.stats().bytes_sent, written as u64);
                        self.unflushed = true;
                        if self.write_buf.is_empty() {
                            self.qos0_unwritten = 0;
                        }
                        if self.output_waiting
                            && self.write_buf.len() <= self.config.limits.max_outbox_bytes / 2
                        {
                            self.drain_session()
                        } else {
                            Ok(())
                        }
                    }
                    Event::Written(Ok(WriteProgress::Flushed)) => {
                        self.unflushed = false;
                        Ok(())
                    }
                    Event::Wake => self.drain_session(),
                    // What was read while this publisher's line to the other nodes was
                    // full waits in the buffer; acknowledgements settling is how the
                    // line empties.
                    Event::Settled if !self.read_buf.is_empty() && self.paused.is_none() => {
                        self.process_input().and_then(|()| self.drain_session())
                    }
                    Event::Settled => self.drain_session(),
                    Event::Resume(resume) => {
                        if let Some(paused) = self.paused.take() {
                            if resume == Resume::TimedOut {
                                paused.give_up();
                            }
                        }
                        // The client was not read while paused; it was not silent.
                        if let Some(period) = self.keep_alive() {
                            keep_alive_deadline = Some(TokioInstant::now() + period);
                        }
                        // What was read before the pause comes first.
                        self.process_input().and_then(|()| self.drain_session())
                    }
                    Event::OutboxTimeout => self.drain_session(),
                    Event::Timer => {
                        let now = TokioInstant::now();
                        if keep_alive_deadline.is_some_and(|deadline| deadline <= now) {
                            break Exit::KeepAliveTimeout;
                        }
                        if let (Some(period), Some(check)) = (park_after, park_check) {
                            if check <= now {
                                if !active && self.can_park(&stream) {
                                    match park::park(self, stream, keep_alive_deadline) {
                                        Ok(()) => return,
                                        Err(park::NotParked::Busy(connection, kept)) => {
                                            self = connection;
                                            stream = kept;
                                        }
                                        Err(park::NotParked::SocketLost(connection)) => {
                                            connection.close_lost_socket();
                                            return;
                                        }
                                    }
                                }
                                active = false;
                                park_check = Some(now + check_period(period, quick_checks));
                                quick_checks = quick_checks.saturating_sub(1);
                            }
                        }
                        if let (Some(timer), Some(at)) =
                            (&mut timer, earliest(keep_alive_deadline, park_check))
                        {
                            timer.as_mut().reset(at);
                        }
                        Ok(())
                    }
                };
            };
            // An operator's kick that also ended the session retired it, which looks like
            // a takeover from here.
            let exit =
                if exit == Exit::TakenOver && self.handle.is_kicked() && self.handle.is_retired() {
                    Exit::Kicked
                } else {
                    exit
                };
            // Boxed: closing happens once and would otherwise add its size to every
            // connection.
            Box::pin(self.close(&mut stream, exit)).await;
        }
    }

    /// Polls, in priority order, everything the connection waits for, and returns the
    /// first event. One poll function over the whole socket instead of a `select!` over
    /// futures: the futures of a `select!` (and the halves of a split socket) would be
    /// part of every idle connection. While paused (backpressure), the client is neither
    /// read nor timed out for silence.
    fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut ClientStream,
        timer: &mut Option<Pin<Box<Sleep>>>,
    ) -> Poll<Event> {
        let reading = self.paused.is_none() && !self.forward_order.is_full();
        if let (true, Some(timer)) = (reading, timer) {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Timer);
            }
        }
        if !self.write_buf.is_empty() || self.unflushed {
            if let Poll::Ready(written) = poll_write_or_flush(stream, cx, &mut self.write_buf) {
                return Poll::Ready(Event::Written(written));
            }
        }
        if reading {
            if let Poll::Ready(read) = buffer::poll_read_some(stream, cx, &mut self.read_buf) {
                return Poll::Ready(Event::Read(read));
            }
        }
        let generation = self.generation;
        let handle = &self.handle;
        // Registered only while this connection is the session's (a taken-over one must
        // not hold the slot); shutdown is checked after registering, as `begin_shutdown`
        // sets its flag before it wakes.
        if handle
            .wake
            .poll_wake(cx, || handle.generation() == generation)
            .is_ready()
            || self.broker.is_shutting_down()
        {
            return Poll::Ready(Event::Wake);
        }
        if self.held.poll_front_settled(cx).is_ready() {
            return Poll::Ready(Event::Settled);
        }
        if let Some(paused) = &mut self.paused {
            if let Poll::Ready(resume) = paused.poll_resume(cx) {
                return Poll::Ready(Event::Resume(resume));
            }
        }
        if let Some(deadline) = &mut self.outbox_deadline {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::OutboxTimeout);
            }
        }
        Poll::Pending
    }

    /// Decodes and handles every complete packet in the read buffer, until a PUBLISH
    /// pauses reading (the rest waits in the buffer).
    fn process_input(&mut self) -> Result<(), Exit> {
        let max_packet_size = self.config.limits.max_packet_size;
        loop {
            if self.paused.is_some() || self.forward_order.is_full() {
                return Ok(());
            }
            match decode_from_client(&mut self.read_buf, Some(self.version), max_packet_size) {
                // Taken apart where it was decoded: the subscriber's acknowledgement of
                // every QoS 1 message is not moved around as a whole `Packet`.
                Ok(Some(Packet::PubAck(puback))) => {
                    Stats::incr(&self.broker.stats().packets_received);
                    self.handle_puback(puback)?
                }
                Ok(Some(packet)) => {
                    Stats::incr(&self.broker.stats().packets_received);
                    self.handle_packet(packet)?
                }
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

    /// PUBACK: frees the message's window slot; produces nothing to send.
    fn handle_puback(&mut self, puback: PubResponse) -> Result<(), Exit> {
        let mut session = self
            .handle
            .lock_current(self.generation)
            .ok_or(Exit::TakenOver)?;
        let handled = session.handle_puback(puback);
        let _ = self.broker.submit_journal(&mut session);
        drop(session);
        handled.map_err(|violation| {
            tracing::debug!(client_id = %self.handle.client_id, %violation, "protocol violation");
            Exit::Violation {
                reason_code: violation.reason_code,
            }
        })
    }

    fn handle_packet(&mut self, packet: Packet) -> Result<(), Exit> {
        let now = now();
        let packet = match packet {
            // Authentication is the connection's business, not the session's.
            Packet::Auth(auth) if self.version.is_v5() => return self.handle_auth(auth),
            other => other,
        };
        // What a PUBLISH changes in the session (an incoming QoS 2 packet id) goes to the
        // store in the same write as the message (`publish_durably_with`), or on its own
        // when the message is not routed (`record_incoming`), and its acknowledgement
        // waits for that write: after a crash, a packet id the store knows makes the
        // broker acknowledge the client's resend without routing it, so the message must
        // be stored with it. Other packets' session changes are submitted at once and
        // hold nothing back.
        //
        // Until that write completes, the packet id the session now knows stands for a
        // message not yet durable: the write is promised to the session under the lock
        // where the packet id appears (`promise_incoming_write`), and every PUBREC for it,
        // this one or a resend's on a later connection, waits for it (`incoming_write`).
        let is_publish = matches!(packet, Packet::Publish(_));
        let qos2_packet_id = match &packet {
            Packet::Publish(publish) if publish.qos == QoS::ExactlyOnce => Some(publish.packet_id),
            _ => None,
        };
        let (actions, mut incoming, mut promise, mut stored_by) = {
            let mut session = self
                .handle
                .lock_current(self.generation)
                .ok_or(Exit::TakenOver)?;
            let actions = session.handle_packet(packet, now);
            if is_publish {
                let ops = session.take_journal();
                let promise = session.promise_incoming_write(&ops);
                let stored_by = qos2_packet_id.and_then(|id| session.incoming_write(id));
                (actions, ops, promise, stored_by)
            } else {
                let _ = self.broker.submit_journal(&mut session);
                (actions, Vec::new(), None, None)
            }
        };
        let mut writes: Vec<Completion> = Vec::new();
        let actions = actions.map_err(|violation| {
            tracing::debug!(client_id = %self.handle.client_id, %violation, "protocol violation");
            Exit::Violation {
                reason_code: violation.reason_code,
            }
        })?;
        // Set by a PUBLISH that was not routed; its acknowledgement, which follows in the
        // action list, then says why (MQTT 5 only).
        let mut ack_reason = None;
        // Set by a PUBLISH that was refused (ACL, `$` topic, rate): its acknowledgement
        // carries this reason for MQTT 5.
        let mut refused = None;
        for action in actions {
            match action {
                Action::Send(mut packet) => {
                    // A PUBLISH that was not routed (refused) records its packet id
                    // before it is acknowledged.
                    let recorded = std::mem::take(&mut incoming);
                    let submitted: Vec<Completion> = self
                        .record_incoming(recorded, |ops| self.broker.submit(ops))
                        .into_iter()
                        .collect();
                    keep_promise(&mut promise, submitted, &mut writes);
                    if matches!(packet, Packet::PubRec(_)) {
                        writes.extend(stored_by.take());
                    }
                    if let Some(reason_code) = ack_reason.take() {
                        mark_ack(&mut packet, reason_code);
                    }
                    if let Some(code) = refused.take() {
                        self.refuse_ack(&mut packet, code)?;
                    }
                    self.send(packet, std::mem::take(&mut writes));
                }
                Action::Route(message) => {
                    if let Some(code) = self.check_publish(&message, now)? {
                        self.broker
                            .stats()
                            .dropped(if code == reason::QUOTA_EXCEEDED {
                                Dropped::RateLimited
                            } else {
                                Dropped::AclDenied
                            });
                        refused = Some(code);
                        continue;
                    }
                    // Routed before its acknowledgement is queued, with the session
                    // changes of this PUBLISH in the same store write as the message.
                    let recorded = std::mem::take(&mut incoming);
                    let mut order = std::mem::take(&mut self.forward_order);
                    let published = self.record_incoming(recorded, |ops| {
                        self.broker.publish_in_order(&message, ops, &mut order)
                    });
                    self.forward_order = order;
                    keep_promise(&mut promise, published.writes, &mut writes);
                    if let Some(target) = published.congested {
                        self.pause_for(target);
                    }
                    ack_reason = (published.routed == 0 && self.version.is_v5())
                        .then_some(reason::NO_MATCHING_SUBSCRIBERS);
                }
                Action::Subscribe(mut request) => {
                    self.check_subscribe(&mut request)?;
                    let (suback, written) = self
                        .broker
                        .subscribe(&self.handle, self.generation, request)
                        .ok_or(Exit::TakenOver)?;
                    self.send(Packet::SubAck(suback), written.into_iter().collect());
                }
                Action::Unsubscribe(request) => {
                    let (unsuback, written) = self
                        .broker
                        .unsubscribe(&self.handle, self.generation, request)
                        .ok_or(Exit::TakenOver)?;
                    self.send(Packet::UnsubAck(unsuback), written.into_iter().collect());
                }
                Action::Disconnect { publish_will } => {
                    return Err(Exit::ClientDisconnect { publish_will });
                }
            }
        }
        Ok(())
    }

    /// Submits the session changes a PUBLISH made (`ops`, taken from the session under
    /// its lock) with `submit`, outside the lock. A packet id they record may have been
    /// released meanwhile (the session taken over and the flow completed on the new
    /// connection, whose release then reached the store first): the store is told again,
    /// after them, so that it does not keep a released packet id.
    fn record_incoming<T>(&self, ops: Vec<StoreOp>, submit: impl FnOnce(Vec<StoreOp>) -> T) -> T {
        let packet_ids: Vec<u16> = ops
            .iter()
            .filter_map(|op| match op {
                StoreOp::AddIncomingQos2 { packet_id, .. } => Some(*packet_id),
                _ => None,
            })
            .collect();
        let submitted = submit(ops);
        if !packet_ids.is_empty() {
            let session = self.handle.lock();
            let released: Vec<StoreOp> = packet_ids
                .into_iter()
                .filter(|packet_id| !session.awaits_release(*packet_id))
                .map(|packet_id| StoreOp::RemoveIncomingQos2 {
                    client_id: self.handle.client_id.clone(),
                    packet_id,
                })
                .collect();
            if !released.is_empty() {
                self.broker.submit_detached(released);
            }
        }
        submitted
    }

    /// Stops reading until `target`, a subscriber this client's message left nearly
    /// full, has drained, for at most `limits.slow_consumer_timeout_ms`.
    fn pause_for(&mut self, target: Arc<SessionHandle>) {
        let timeout = self.slow_consumer_timeout();
        if self.paused.is_some() || timeout.is_zero() {
            return;
        }
        Stats::incr(&self.broker.stats().publishers_paused);
        self.paused = Some(Paused::new(target, timeout));
    }

    fn slow_consumer_timeout(&self) -> Duration {
        Duration::from_millis(self.config.limits.slow_consumer_timeout_ms)
    }
}

/// Checks for idleness a new connection gets at `QUICK_PARK_CHECK_PERIOD` before it
/// is checked once per `park_after_ms`: about its first 0.1 s.
const QUICK_PARK_CHECKS: u8 = 10;
const QUICK_PARK_CHECK_PERIOD: Duration = Duration::from_millis(10);

/// The time between two idleness checks: `period` (`park_after_ms`), or shorter while
/// quick checks remain.
fn check_period(period: Duration, quick_checks: u8) -> Duration {
    if quick_checks > 0 {
        period.min(QUICK_PARK_CHECK_PERIOD)
    } else {
        period
    }
}

/// The earlier of two optional instants.
fn earliest(a: Option<TokioInstant>, b: Option<TokioInstant>) -> Option<TokioInstant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Hands the completions of the write that stores an incoming QoS 2 packet id to the
/// session's `promise` (the acknowledgement then waits for them through
/// `Session::incoming_write`); without a promise, the acknowledgement waits for them
/// itself (`writes`).
fn keep_promise(
    promise: &mut Option<crate::storage::WritePromise>,
    submitted: Vec<Completion>,
    writes: &mut Vec<Completion>,
) {
    match promise.take() {
        Some(promise) => promise.fulfil(submitted),
        None => writes.extend(submitted),
    }
}

/// Gives the success acknowledgement of a PUBLISH that was not routed its reason
/// (MQTT 5): 0x10 No matching subscribers on PUBACK or PUBREC. A failure code goes on
/// PUBACK only, since a failed PUBREC would end a QoS 2 flow the session keeps open
/// (refusals go through `refuse_ack`, which also releases the session's QoS 2 state).
fn mark_ack(packet: &mut Packet, reason_code: u8) {
    match packet {
        Packet::PubAck(ack) if ack.reason_code == reason::SUCCESS => ack.reason_code = reason_code,
        Packet::PubRec(ack)
            if ack.reason_code == reason::SUCCESS && reason_code < reason::UNSPECIFIED_ERROR =>
        {
            ack.reason_code = reason_code
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connected client holds one `Connection`, idle or not (see
    /// `crate::broker::handle`'s test of the session's size for why this is guarded).
    #[test]
    fn a_connection_stays_small() {
        assert!(
            std::mem::size_of::<Connection>() <= 336,
            "Connection is {} bytes",
            std::mem::size_of::<Connection>()
        );
    }
}
