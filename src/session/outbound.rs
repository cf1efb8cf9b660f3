//! Broker-to-client application messages: the queue, the inflight window, packet ids,
//! redelivery after a reconnect, and the acknowledgements (PUBACK, PUBREC, PUBCOMP).
//!
//! A delivery waits in a queue bounded in messages and bytes until the inflight window has
//! room; QoS 0 needs no room. QoS 1/2 deliveries stay in the inflight table, in the order
//! they were first sent, until the client acknowledges them; after a reconnect they are
//! sent again (PUBLISH with DUP, or PUBREL once PUBREC arrived) before anything new.
//! Retained messages owed since a SUBSCRIBE wait apart, in the `RetainedBacklog`, and
//! go out in queue order, as far as the connection's outbox budget allows.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::alias::{AliasPlan, OutgoingAliases};
use super::control::protocol_error;
use super::inbound::ack;
use super::inflight::InflightQueue;
use super::journal::Journal;
use super::lazy_map::{LazyMap, OwnPacketIds};
use super::outgoing::{Outgoing, OutgoingPublish};
use super::retained_backlog::RetainedBacklog;
use super::{Action, Delivery, DropReason, Session, SessionLimits, Violation};
use crate::message::Message;
use crate::protocol::reason;
use crate::protocol::{Packet, ProtocolVersion, PubResponse, QoS};
use crate::storage;

/// What the current connection allows, as `poll` needs it.
pub(super) struct OutgoingContext {
    pub(super) protocol: ProtocolVersion,
    pub(super) window: usize,
    pub(super) maximum_packet_size: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InflightState {
    /// QoS 1 PUBLISH sent.
    Qos1Published,
    /// QoS 2 PUBLISH sent.
    Qos2Published,
    /// QoS 2 PUBREC received and PUBREL sent.
    Qos2Released,
}

impl InflightState {
    fn stored(self) -> storage::InflightState {
        match self {
            InflightState::Qos1Published => storage::InflightState::AwaitingPubAck,
            InflightState::Qos2Published => storage::InflightState::AwaitingPubRec,
            InflightState::Qos2Released => storage::InflightState::AwaitingPubComp,
        }
    }

    fn from_stored(state: storage::InflightState) -> InflightState {
        match state {
            storage::InflightState::AwaitingPubAck => InflightState::Qos1Published,
            storage::InflightState::AwaitingPubRec => InflightState::Qos2Published,
            storage::InflightState::AwaitingPubComp => InflightState::Qos2Released,
        }
    }
}

#[derive(Debug)]
struct Inflight {
    packet_id: u16,
    delivery: Delivery,
    state: InflightState,
}

/// What `poll` would send first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pending {
    /// Inflight messages to send again after a reconnect.
    Redelivery,
    /// A message from the queue.
    Queued,
    /// A retained message owed since a SUBSCRIBE.
    Retained,
}

#[derive(Debug)]
pub(super) struct Outbound {
    queue: VecDeque<Delivery>,
    queued_bytes: usize,
    /// QoS 0 deliveries in `queue`: a bridge's outbox drops those first when full.
    /// (u32 fits beside the small fields below: a session does not grow for it.)
    queued_qos0: u32,
    /// Deliveries that ever entered / left the queue; they order the retained backlog
    /// against it.
    queue_pushed: u64,
    queue_popped: u64,
    /// Allocated while retained messages wait: most of the time none do.
    retained: Option<Box<RetainedBacklog>>,
    /// Inflight messages by send sequence, so redelivery keeps the original order.
    inflight: InflightQueue<Inflight>,
    /// Packet id to send sequence, for the acknowledgements.
    sequence_by_id: LazyMap<u16, u64, OwnPacketIds>,
    next_packet_id: u16,
    /// Set by attach: the next poll resends every inflight message first.
    redeliver: bool,
    aliases: OutgoingAliases,
}

impl Outbound {
    pub(super) fn new() -> Outbound {
        Outbound {
            queue: VecDeque::new(),
            queued_bytes: 0,
            queued_qos0: 0,
            queue_pushed: 0,
            queue_popped: 0,
            retained: None,
            inflight: InflightQueue::default(),
            sequence_by_id: LazyMap::default(),
            next_packet_id: 1,
            redeliver: false,
            aliases: OutgoingAliases::default(),
        }
    }

    /// The outbound state in `slot`, allocated on first use with the Topic Alias Maximum
    /// of the attached client (0 while none is attached).
    pub(super) fn ensure(slot: &mut Option<Box<Outbound>>, alias_maximum: u16) -> &mut Outbound {
        slot.get_or_insert_with(|| {
            let mut outbound = Box::new(Outbound::new());
            outbound.aliases.reset(alias_maximum);
            outbound
        })
    }

    /// Nothing queued, owed or in flight: the state may go and be built again.
    pub(super) fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.inflight.is_empty() && self.retained.is_none()
    }

    pub(super) fn attach(&mut self, client_topic_alias_maximum: u16) {
        self.aliases.reset(client_topic_alias_maximum);
        self.redeliver = !self.inflight.is_empty();
    }

    pub(super) fn detach(&mut self) {
        self.aliases.reset(0);
        self.redeliver = false;
    }

    pub(super) fn queued_len(&self) -> usize {
        self.queue.len()
    }

    pub(super) fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    pub(super) fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    pub(super) fn inflight_bytes(&self) -> usize {
        self.inflight
            .iter()
            .map(|(_, inflight)| inflight.delivery.message.size_bytes())
            .sum()
    }

    pub(super) fn retained_backlog_len(&self) -> usize {
        self.retained.as_ref().map_or(0, |backlog| backlog.len())
    }

    /// Adds the retained messages of one subscribed filter behind everything queued so
    /// far, up to `max_backlog` waiting in all; returns how many did not fit.
    pub(super) fn add_retained(
        &mut self,
        granted: QoS,
        subscription_id: Option<u32>,
        messages: Vec<Arc<Message>>,
        max_backlog: usize,
    ) -> usize {
        let room = max_backlog.saturating_sub(self.retained_backlog_len());
        let backlog = self.retained.get_or_insert_with(Box::default);
        let refused = backlog.add(self.queue_pushed, granted, subscription_id, messages, room);
        if backlog.len() == 0 {
            self.retained = None;
        }
        refused
    }

    /// Puts back an inflight message of a restored session, in send order; it is
    /// redelivered (PUBLISH with DUP, or PUBREL) when a client attaches.
    pub(super) fn restore_inflight(
        &mut self,
        delivery: Delivery,
        packet_id: u16,
        state: storage::InflightState,
    ) {
        if packet_id == 0 || self.sequence_by_id.contains_key(&packet_id) {
            return;
        }
        let sequence = self.inflight.push(Inflight {
            packet_id,
            delivery,
            state: InflightState::from_stored(state),
        });
        self.sequence_by_id.insert(packet_id, sequence);
    }

    /// Copies of the inflight messages in send order (with their packet ids and stored
    /// states) and of the queued ones in queue order: what another node needs to serve
    /// the session exactly where it stands. Retained messages owed since a SUBSCRIBE are
    /// not included (as across a restart: the retained store keeps them).
    pub(super) fn export(&self) -> (Vec<(Delivery, u16, storage::InflightState)>, Vec<Delivery>) {
        let inflight = self
            .inflight
            .iter()
            .map(|(_, inflight)| {
                (
                    inflight.delivery.clone(),
                    inflight.packet_id,
                    inflight.state.stored(),
                )
            })
            .collect();
        (inflight, self.queue.iter().cloned().collect())
    }

    /// Puts back a queued message of a restored session. The queue limits were checked
    /// when it was first queued; a restart does not drop what was accepted.
    pub(super) fn restore_queued(&mut self, delivery: Delivery) {
        self.push(delivery);
    }

    /// Whether the queue limits (messages and bytes) leave room for `delivery`. An
    /// empty queue takes one message whatever its size, so a message larger than the
    /// byte limit (up to `max_packet_size`) is delayed, never undeliverable.
    pub(super) fn has_room(&self, delivery: &Delivery, limits: &SessionLimits) -> bool {
        self.queue.len() < limits.max_queued_messages
            && (self.queue.is_empty()
                || self
                    .queued_bytes
                    .saturating_add(delivery.message.size_bytes())
                    <= limits.max_queued_bytes)
    }

    /// Queues a delivery `has_room` accepted.
    pub(super) fn push(&mut self, delivery: Delivery) {
        self.queued_bytes += delivery.message.size_bytes();
        self.queued_qos0 = self
            .queued_qos0
            .saturating_add(u32::from(delivery.qos == QoS::AtMostOnce));
        self.queue_pushed += 1;
        self.queue.push_back(delivery);
    }

    fn pop_queued(&mut self) -> Option<Delivery> {
        let delivery = self.queue.pop_front()?;
        self.queue_popped += 1;
        self.queued_qos0 = self
            .queued_qos0
            .saturating_sub(u32::from(delivery.qos == QoS::AtMostOnce));
        self.queued_bytes = self
            .queued_bytes
            .saturating_sub(delivery.message.size_bytes());
        Some(delivery)
    }

    /// Puts back a delivery just taken by `pop_queued`, first in line.
    fn unpop_queued(&mut self, delivery: Delivery) {
        self.queue_popped -= 1;
        self.queued_bytes += delivery.message.size_bytes();
        self.queued_qos0 = self
            .queued_qos0
            .saturating_add(u32::from(delivery.qos == QoS::AtMostOnce));
        self.queue.push_front(delivery);
    }

    /// Removes the oldest queued delivery to make room in a bridge's outbox: the oldest
    /// QoS 0 one if any is queued, else (only when `any_qos`) the oldest of all.
    pub(super) fn evict_oldest(&mut self, any_qos: bool) -> Option<Delivery> {
        let position = if self.queued_qos0 > 0 {
            self.queue
                .iter()
                .position(|delivery| delivery.qos == QoS::AtMostOnce)?
        } else if any_qos {
            0
        } else {
            return None;
        };
        let delivery = self.queue.remove(position)?;
        // Counts as having left the queue, like a delivery sent: the retained backlog
        // is ordered against the number of deliveries ahead of it.
        self.queue_popped += 1;
        self.queued_qos0 = self
            .queued_qos0
            .saturating_sub(u32::from(delivery.qos == QoS::AtMostOnce));
        self.queued_bytes = self
            .queued_bytes
            .saturating_sub(delivery.message.size_bytes());
        Some(delivery)
    }

    /// The next retained message of the backlog; the backlog's memory goes once it is
    /// empty.
    fn pop_retained(&mut self) -> Option<Delivery> {
        let backlog = self.retained.as_mut()?;
        let delivery = backlog.pop();
        if backlog.len() == 0 {
            self.retained = None;
        }
        delivery
    }

    /// The next message in delivery order, the backlog's or the queue's, with its QoS and
    /// where it comes from.
    fn next(&self) -> Option<(&Arc<Message>, QoS, Pending)> {
        let retained = self.retained.as_ref();
        if let Some((message, qos)) =
            retained.and_then(|backlog| backlog.next_due(self.queue_popped))
        {
            return Some((message, qos, Pending::Retained));
        }
        self.queue
            .front()
            .map(|next| (&next.message, next.qos, Pending::Queued))
    }

    /// What `poll` would send first, if anything may be sent now.
    pub(super) fn pending(&self, window: usize) -> Option<Pending> {
        if self.redeliver && !self.inflight.is_empty() {
            return Some(Pending::Redelivery);
        }
        let (_, qos, source) = self.next()?;
        (qos == QoS::AtMostOnce || self.inflight.len() < window).then_some(source)
    }

    /// Moves what may be sent now into `out`: redeliveries, then queued and retained
    /// messages in order while the window allows. Retained messages are taken only while
    /// the packets produced by this call stay under `budget` bytes (at least one is
    /// taken), so a large backlog goes out as the client reads it; queued messages, bounded
    /// by the queue limits, are not held back by it.
    pub(super) fn poll(
        &mut self,
        context: &OutgoingContext,
        now: Instant,
        budget: usize,
        out: &mut impl Outgoing,
        dropped: &mut Vec<DropReason>,
        journal: &mut Journal,
    ) {
        if self.redeliver {
            self.redeliver = false;
            self.resend_inflight(context, now, out, dropped, journal);
        }
        let mut spent = 0usize;
        while let Some((message, qos, source)) = self.next() {
            // Delivery order is kept: a QoS 1/2 message waiting for the window holds back
            // everything behind it, QoS 0 included.
            let expired = message.is_expired(now);
            if qos != QoS::AtMostOnce && !expired && self.inflight.len() >= context.window {
                break;
            }
            let retained = source == Pending::Retained;
            if retained && spent >= budget.max(1) {
                break;
            }
            let taken = if retained {
                self.pop_retained()
            } else {
                self.pop_queued()
            };
            let Some(delivery) = taken else {
                break;
            };
            if expired {
                dropped.push(DropReason::Expired);
                journal.dropped(&delivery);
                continue;
            }
            match self.send_new(context, delivery, now, out, dropped, journal) {
                Ok(written) => spent = spent.saturating_add(written),
                // Unreachable while the window is at most 65535; keep the message.
                Err(delivery) => {
                    if retained {
                        self.retained
                            .get_or_insert_with(Box::default)
                            .unpop(delivery);
                    } else {
                        self.unpop_queued(delivery);
                    }
                    break;
                }
            }
        }
    }

    /// First transmission of a queued delivery. Returns the encoded length of the packet
    /// it produced (0 if it dropped the delivery), or the delivery back when no packet id
    /// is free.
    fn send_new(
        &mut self,
        context: &OutgoingContext,
        delivery: Delivery,
        now: Instant,
        out: &mut impl Outgoing,
        dropped: &mut Vec<DropReason>,
        journal: &mut Journal,
    ) -> Result<usize, Delivery> {
        let plan = if context.protocol.is_v5() {
            self.aliases.plan(&delivery.message.topic)
        } else {
            AliasPlan::None
        };
        // A message too large for the client gives its packet id back, so ids stay dense.
        let next_packet_id = self.next_packet_id;
        let packet_id = if delivery.qos == QoS::AtMostOnce {
            0
        } else {
            let Some(packet_id) = self.allocate_packet_id() else {
                return Err(delivery);
            };
            packet_id
        };
        let publish = OutgoingPublish {
            protocol: context.protocol,
            delivery: &delivery,
            now,
            packet_id,
            dup: false,
            plan,
        };
        let Some(length) = out.publish(&publish, packet_limit(context)) else {
            self.next_packet_id = next_packet_id;
            dropped.push(DropReason::TooLargeForClient);
            journal.dropped(&delivery);
            return Ok(0);
        };
        if plan != AliasPlan::None {
            self.aliases.commit(&delivery.message.topic, plan);
        }
        if delivery.qos == QoS::AtMostOnce {
            journal.dropped(&delivery);
        } else {
            let state = if delivery.qos == QoS::AtLeastOnce {
                InflightState::Qos1Published
            } else {
                InflightState::Qos2Published
            };
            journal.sent(&delivery, packet_id, state.stored());
            let sequence = self.inflight.push(Inflight {
                packet_id,
                delivery,
                state,
            });
            self.sequence_by_id.insert(packet_id, sequence);
        }
        Ok(length)
    }

    /// Resends every inflight message in its original order, as the spec requires on a
    /// reconnect: PUBLISH with DUP and the full topic (aliases were reset), or PUBREL.
    fn resend_inflight(
        &mut self,
        context: &OutgoingContext,
        now: Instant,
        out: &mut impl Outgoing,
        dropped: &mut Vec<DropReason>,
        journal: &mut Journal,
    ) {
        let mut removed = Vec::new();
        let limit = packet_limit(context);
        for (sequence, entry) in self.inflight.iter() {
            if entry.state == InflightState::Qos2Released {
                out.packet(Packet::PubRel(ack(entry.packet_id, reason::SUCCESS)));
                continue;
            }
            // Like Mosquitto, a PUBLISH that expired while the client was away is not
            // sent again; a PUBREL is, since the client already has the message.
            if entry.delivery.message.is_expired(now) {
                dropped.push(DropReason::Expired);
                removed.push(sequence);
                continue;
            }
            let publish = OutgoingPublish {
                protocol: context.protocol,
                delivery: &entry.delivery,
                now,
                packet_id: entry.packet_id,
                dup: true,
                plan: AliasPlan::None,
            };
            if out.publish(&publish, limit).is_none() {
                dropped.push(DropReason::TooLargeForClient);
                removed.push(sequence);
            }
        }
        for sequence in removed {
            if let Some(entry) = self.inflight.remove(&sequence) {
                self.sequence_by_id.remove(&entry.packet_id);
                journal.completed(&entry.delivery, entry.packet_id);
            }
        }
    }

    /// The next free packet id: from 1 upwards, wrapping after 65535 to 1, skipping ids
    /// still in flight.
    fn allocate_packet_id(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            let candidate = self.next_packet_id;
            self.next_packet_id = candidate.checked_add(1).unwrap_or(1);
            if !self.sequence_by_id.contains_key(&candidate) {
                return Some(candidate);
            }
        }
        None
    }

    fn inflight_state(&self, packet_id: u16) -> Option<InflightState> {
        let sequence = self.sequence_by_id.get(&packet_id)?;
        self.inflight.get(sequence).map(|entry| entry.state)
    }

    /// PUBREC received for a QoS 2 message: it now awaits PUBCOMP.
    fn release(&mut self, packet_id: u16, journal: &mut Journal) {
        if let Some(entry) = self
            .sequence_by_id
            .get(&packet_id)
            .and_then(|sequence| self.inflight.get_mut(sequence))
        {
            if entry.state != InflightState::Qos2Released {
                entry.state = InflightState::Qos2Released;
                journal.released(&entry.delivery, packet_id);
            }
        }
    }

    /// Completes the flow of `packet_id` if it is in the `expected` state, with one
    /// lookup of the id and one of its entry (an acknowledgement per message sent);
    /// returns the state it was in, or `None` for an id not in flight.
    fn complete_in(
        &mut self,
        packet_id: u16,
        expected: InflightState,
        journal: &mut Journal,
    ) -> Option<InflightState> {
        let sequence = *self.sequence_by_id.get(&packet_id)?;
        let mut found = None;
        let (settled, entry) = self.inflight.remove_if(&sequence, |entry| {
            found = Some(entry.state);
            entry.state == expected
        })?;
        if settled {
            self.sequence_by_id.remove(&packet_id);
            if let Some(entry) = entry {
                journal.completed(&entry.delivery, packet_id);
            }
        }
        found
    }

    fn complete(&mut self, packet_id: u16, journal: &mut Journal) {
        if let Some(sequence) = self.sequence_by_id.remove(&packet_id) {
            if let Some(entry) = self.inflight.remove(&sequence) {
                journal.completed(&entry.delivery, packet_id);
            }
        }
    }
}

/// The largest packet the fixed header can frame: a four-byte Remaining Length of
/// 268,435,455 plus the type byte.
const MAX_FRAMED_PACKET: usize = 1 + 4 + 268_435_455;

/// The largest packet the client accepts: its Maximum Packet Size (MQTT 5), and at most
/// what the fixed header can frame at all (the encoder writes nothing beyond).
fn packet_limit(context: &OutgoingContext) -> usize {
    context
        .maximum_packet_size
        .map_or(MAX_FRAMED_PACKET, |maximum| {
            MAX_FRAMED_PACKET.min(maximum as usize)
        })
}

impl Session {
    /// PUBACK: the QoS 1 message is delivered and its window slot is free. Nothing is
    /// sent in answer.
    pub fn handle_puback(&mut self, puback: PubResponse) -> Result<(), Violation> {
        let Some(outbound) = self.outbound.as_deref_mut() else {
            return Ok(());
        };
        let expected = InflightState::Qos1Published;
        match outbound.complete_in(puback.packet_id, expected, &mut self.journal) {
            // An unknown id (e.g. a duplicate ack) is ignored, as Mosquitto does.
            None | Some(InflightState::Qos1Published) => Ok(()),
            Some(_) => Err(protocol_error("PUBACK for a QoS 2 message")),
        }
    }

    /// PUBREC: the client has the QoS 2 message; release it with PUBREL, unless a MQTT 5
    /// failure reason code ends the flow here.
    pub(super) fn handle_pubrec(&mut self, pubrec: PubResponse) -> Result<Vec<Action>, Violation> {
        let packet_id = pubrec.packet_id;
        let state = self
            .outbound
            .as_deref()
            .and_then(|outbound| outbound.inflight_state(packet_id));
        if state == Some(InflightState::Qos1Published) {
            return Err(protocol_error("PUBREC for a QoS 1 message"));
        }
        let v5 = self.params.protocol.is_v5();
        if v5 && pubrec.reason_code >= reason::UNSPECIFIED_ERROR {
            if let Some(outbound) = self.outbound.as_deref_mut() {
                outbound.complete(packet_id, &mut self.journal);
            }
            return Ok(Vec::new());
        }
        let reason_code = match (state, self.outbound.as_deref_mut()) {
            (Some(_), Some(outbound)) => {
                // A repeated PUBREC (state already Qos2Released) gets the PUBREL again.
                outbound.release(packet_id, &mut self.journal);
                reason::SUCCESS
            }
            // Answered anyway, like Mosquitto, so the client can finish its flow.
            _ if v5 => reason::PACKET_IDENTIFIER_NOT_FOUND,
            _ => reason::SUCCESS,
        };
        Ok(vec![Action::Send(Packet::PubRel(ack(
            packet_id,
            reason_code,
        )))])
    }

    /// PUBCOMP: the QoS 2 flow is complete and its window slot is free.
    pub(super) fn handle_pubcomp(
        &mut self,
        pubcomp: PubResponse,
    ) -> Result<Vec<Action>, Violation> {
        let Some(outbound) = self.outbound.as_deref_mut() else {
            return Ok(Vec::new());
        };
        match outbound.inflight_state(pubcomp.packet_id) {
            None => {}
            Some(InflightState::Qos2Released) => {
                outbound.complete(pubcomp.packet_id, &mut self.journal)
            }
            Some(InflightState::Qos2Published) => {
                return Err(protocol_error("PUBCOMP before PUBREC"));
            }
            Some(InflightState::Qos1Published) => {
                return Err(protocol_error("PUBCOMP for a QoS 1 message"));
            }
        }
        Ok(Vec::new())
    }
}
