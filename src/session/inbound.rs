//! Client-to-broker application messages: PUBLISH in, PUBREL, incoming topic aliases.
//!
//! Each PUBLISH becomes one `Arc<Message>` routed once. QoS 2 is delivered exactly once by
//! remembering the packet ids received and not yet released: a PUBLISH the client re-sends
//! before PUBREL is acknowledged again (PUBREC) but not routed a second time. That set is
//! session state: it survives reconnects, as the spec requires.
//!
//! A persistent session's packet id is durable only once the write storing it with its
//! message completed; until then the set remembers that write (`IncomingWrite`), and a
//! PUBREC for the id, a resend's included, waits for it (`Session::incoming_write`). A
//! packet id whose write failed is forgotten when the client sends it again, so the
//! message is handled as new rather than acknowledged without having been stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::lazy_map::LazyMap;
use super::{Action, Session, Violation};
use crate::message::{ClusterMessageId, Message};
use crate::protocol::reason;
use crate::protocol::{Packet, PubResponse, Publish, PublishProperties, QoS};
use crate::storage::{write_promise, Completion, SharedCompletion, StoreOp, WritePromise};
use crate::topic::validate_topic_name;

/// The store write of an incoming QoS 2 packet id.
#[derive(Debug, Default)]
pub(super) enum IncomingWrite {
    /// Nothing to wait for: written, or never to be (a session the store does not keep).
    #[default]
    Settled,
    /// Written by this write, which may not have completed (or even been submitted).
    Pending(SharedCompletion),
    /// Restored on a cluster node (after a restart, or taken over from a backup's copy):
    /// the record says the packet id was received, not that its message reached every
    /// node it was forwarded to (the node that received it may have died with a forward
    /// unsent). A resend of it is routed again, under the cluster id its message had
    /// when the backups know it (`StoreOp::IncomingInCluster`), so that the nodes that
    /// got it already recognise it; without one a subscriber may get it twice, none
    /// misses it. Acknowledged without routing, a message whose forward never left was
    /// lost although its publisher got its PUBREC.
    Unconfirmed(Option<ClusterMessageId>),
}

#[derive(Debug, Default)]
pub(super) struct Inbound {
    /// QoS 2 packet ids received (and routed) whose PUBREL has not arrived yet, with the
    /// write that stores each. Bounded by our Receive Maximum for MQTT 5 and by the 65535
    /// packet ids for 3.x.
    awaiting_release: LazyMap<u16, IncomingWrite>,
    /// Topic aliases the client set on this connection; at most our Topic Alias Maximum.
    aliases: LazyMap<u16, ByteString>,
}

impl Inbound {
    pub(super) fn reset_aliases(&mut self) {
        self.aliases = LazyMap::default();
    }

    pub(super) fn awaits_release(&self, packet_id: u16) -> bool {
        self.awaiting_release.contains_key(&packet_id)
    }

    pub(super) fn awaiting_release_len(&self) -> usize {
        self.awaiting_release.len()
    }

    /// The packet ids awaiting PUBREL, ascending (for a session handed to another node).
    pub(super) fn awaiting_release_ids(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = self
            .awaiting_release
            .iter()
            .map(|(packet_id, _)| *packet_id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Puts back the packet ids of a restored session; a resend of one of `unconfirmed`
    /// is routed again (`IncomingWrite::Unconfirmed`), under its id in `recorded` if
    /// there.
    pub(super) fn restore_awaiting_release(
        &mut self,
        packet_ids: impl IntoIterator<Item = u16>,
        unconfirmed: &[u16],
        recorded: &[(u16, ClusterMessageId)],
    ) {
        for packet_id in packet_ids {
            let write = if unconfirmed.contains(&packet_id) {
                let id = recorded
                    .iter()
                    .find(|(recorded, _)| *recorded == packet_id)
                    .map(|(_, id)| *id);
                IncomingWrite::Unconfirmed(id)
            } else {
                IncomingWrite::Settled
            };
            self.awaiting_release.insert(packet_id, write);
        }
    }

    /// The packet ids still unconfirmed (ascending), and the cluster ids recorded for
    /// them, for a session handed to another node.
    pub(super) fn unconfirmed(&self) -> (Vec<u16>, Vec<(u16, ClusterMessageId)>) {
        let mut packet_ids = Vec::new();
        let mut recorded = Vec::new();
        for (packet_id, write) in self.awaiting_release.iter() {
            if let IncomingWrite::Unconfirmed(id) = write {
                packet_ids.push(*packet_id);
                recorded.extend(id.map(|id| (*packet_id, id)));
            }
        }
        packet_ids.sort_unstable();
        recorded.sort_unstable_by_key(|(packet_id, _)| *packet_id);
        (packet_ids, recorded)
    }

    /// The cluster id to route a resend of unconfirmed `packet_id` under, if recorded.
    fn recorded_id(&self, packet_id: u16) -> Option<ClusterMessageId> {
        match self.awaiting_release.get(&packet_id) {
            Some(IncomingWrite::Unconfirmed(id)) => *id,
            _ => None,
        }
    }

    /// Whether `packet_id` awaits PUBREL, as a duplicate would see it: a packet id whose
    /// write failed is forgotten (and `false`); one restored unconfirmed is kept, and
    /// `false` (its resend is routed).
    fn knows(&mut self, packet_id: u16) -> bool {
        let failed = match self.awaiting_release.get_mut(&packet_id) {
            None => return false,
            Some(IncomingWrite::Settled) => false,
            Some(IncomingWrite::Unconfirmed(_)) => return false,
            Some(IncomingWrite::Pending(write)) => matches!(write.try_result(), Some(Err(_))),
        };
        if failed {
            self.awaiting_release.remove(&packet_id);
        }
        !failed
    }
}

impl Session {
    /// For the write that records the incoming QoS 2 packet ids among `ops` (taken from
    /// this session's journal after a PUBLISH): a promise for whoever submits `ops` to
    /// fulfil, while the session keeps its completion beside each packet id. `None` when
    /// `ops` record no packet id. Call under the same lock as `handle_packet`.
    pub fn promise_incoming_write(&mut self, ops: &[StoreOp]) -> Option<WritePromise> {
        let mut promised: Option<(WritePromise, SharedCompletion)> = None;
        for op in ops {
            let StoreOp::AddIncomingQos2 { packet_id, .. } = op else {
                continue;
            };
            if let Some(entry) = self.inbound.awaiting_release.get_mut(packet_id) {
                let (_, write) = promised.get_or_insert_with(write_promise);
                *entry = IncomingWrite::Pending(write.clone());
            }
        }
        promised.map(|(promise, _)| promise)
    }

    /// What a PUBREC for incoming QoS 2 `packet_id` must wait for: the write that stores
    /// the packet id, if it has not completed. `None` when there is nothing to wait for.
    pub fn incoming_write(&mut self, packet_id: u16) -> Option<Completion> {
        // A session the store does not keep never waits (and pays no lookup).
        if !self.journal.is_persistent() {
            return None;
        }
        let entry = self.inbound.awaiting_release.get_mut(&packet_id)?;
        let IncomingWrite::Pending(write) = entry else {
            return None;
        };
        match write.try_result() {
            Some(Ok(())) => {
                *entry = IncomingWrite::Settled;
                None
            }
            // Pending, or failed: the acknowledgement must say so, not confirm.
            _ => Some(Completion::shared(write.clone())),
        }
    }
}

fn violation(reason_code: u8, message: &'static str) -> Violation {
    Violation {
        reason_code,
        message,
    }
}

impl Session {
    /// PUBLISH from the client: resolve the topic, build the message, acknowledge.
    pub(super) fn handle_publish(
        &mut self,
        publish: Publish,
        now: Instant,
    ) -> Result<Vec<Action>, Violation> {
        if publish.qos != QoS::AtMostOnce && publish.packet_id == 0 {
            return Err(violation(
                reason::PROTOCOL_ERROR,
                "QoS 1/2 PUBLISH without a packet identifier",
            ));
        }
        if !publish.properties.subscription_identifiers.is_empty() && self.params.protocol.is_v5() {
            // Spec 3.3.4: only a server puts subscription identifiers in a PUBLISH.
            return Err(violation(
                reason::PROTOCOL_ERROR,
                "PUBLISH from a client with a subscription identifier",
            ));
        }
        let topic = self.resolve_topic(&publish)?;

        // Check the QoS 2 quota before routing: a refused message must not be delivered.
        let qos2_duplicate =
            publish.qos == QoS::ExactlyOnce && self.inbound.knows(publish.packet_id);
        if publish.qos == QoS::ExactlyOnce && !qos2_duplicate {
            // 3.x has no Receive Maximum: there the set is bounded by the packet id space,
            // and Mosquitto likewise only enforces the limit for MQTT 5 clients. An
            // unconfirmed id sent again is in the set already.
            let maximum = usize::from(self.limits.receive_maximum.max(1));
            if self.params.protocol.is_v5()
                && self.inbound.awaiting_release.len() >= maximum
                && !self.inbound.awaits_release(publish.packet_id)
            {
                return Err(violation(
                    reason::RECEIVE_MAXIMUM_EXCEEDED,
                    "more QoS 2 messages awaiting PUBREL than Receive Maximum",
                ));
            }
        }

        let packet_id = publish.packet_id;
        let qos = publish.qos;
        let mut actions = Vec::with_capacity(2);
        if !qos2_duplicate {
            let recorded = (qos == QoS::ExactlyOnce)
                .then(|| self.inbound.recorded_id(packet_id))
                .flatten();
            let message = self.build_message(topic, publish, now);
            if let Some(id) = recorded {
                let _ = message.cluster_id.set(id);
            }
            actions.push(Action::Route(Arc::new(message)));
        }
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => actions.push(Action::Send(Packet::PubAck(ack(packet_id, 0)))),
            QoS::ExactlyOnce => {
                if !qos2_duplicate {
                    self.inbound
                        .awaiting_release
                        .insert(packet_id, IncomingWrite::Settled);
                    self.journal.incoming_added(packet_id);
                }
                actions.push(Action::Send(Packet::PubRec(ack(packet_id, 0))));
            }
        }
        Ok(actions)
    }

    /// PUBREL from the client: the QoS 2 message is released; answer PUBCOMP either way.
    pub(super) fn handle_pubrel(&mut self, pubrel: PubResponse) -> Vec<Action> {
        let known = self
            .inbound
            .awaiting_release
            .remove(&pubrel.packet_id)
            .is_some();
        if known {
            self.journal.incoming_released(pubrel.packet_id);
        }
        // An unknown id is answered too, so a client that lost our PUBCOMP can finish;
        // MQTT 5 says which case it was.
        let reason_code = if known || !self.params.protocol.is_v5() {
            reason::SUCCESS
        } else {
            reason::PACKET_IDENTIFIER_NOT_FOUND
        };
        vec![Action::Send(Packet::PubComp(ack(
            pubrel.packet_id,
            reason_code,
        )))]
    }

    /// The full topic name of a PUBLISH, after topic alias handling (MQTT 5).
    fn resolve_topic(&mut self, publish: &Publish) -> Result<ByteString, Violation> {
        let v5 = self.params.protocol.is_v5();
        let alias = if v5 {
            publish.properties.topic_alias
        } else {
            None
        };
        let Some(alias) = alias else {
            if publish.topic.is_empty() && v5 {
                return Err(violation(
                    reason::PROTOCOL_ERROR,
                    "PUBLISH with an empty topic and no topic alias",
                ));
            }
            validate_name(&publish.topic)?;
            return Ok(publish.topic.clone());
        };
        if alias == 0 || alias > self.limits.topic_alias_maximum {
            return Err(violation(
                reason::TOPIC_ALIAS_INVALID,
                "topic alias is 0 or above the Topic Alias Maximum",
            ));
        }
        if publish.topic.is_empty() {
            return match self.inbound.aliases.get(&alias) {
                Some(topic) => Ok(topic.clone()),
                None => Err(violation(
                    reason::PROTOCOL_ERROR,
                    "PUBLISH uses a topic alias that was never set",
                )),
            };
        }
        validate_name(&publish.topic)?;
        // Bounded: alias <= topic_alias_maximum, so at most that many entries.
        self.inbound.aliases.insert(alias, publish.topic.clone());
        Ok(publish.topic.clone())
    }

    fn build_message(&self, topic: ByteString, publish: Publish, now: Instant) -> Message {
        let expires_at = publish
            .properties
            .message_expiry_interval
            // 0 means no expiry, as Mosquitto reads it.
            .filter(|seconds| *seconds > 0)
            .and_then(|seconds| now.checked_add(Duration::from_secs(u64::from(seconds))));
        let PublishProperties {
            payload_format_indicator,
            response_topic,
            correlation_data,
            user_properties,
            content_type,
            ..
        } = publish.properties;
        Message {
            topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            // Per-hop properties (alias, subscription ids, expiry) are filled per delivery.
            properties: PublishProperties {
                payload_format_indicator,
                message_expiry_interval: None,
                topic_alias: None,
                response_topic,
                correlation_data,
                user_properties,
                subscription_identifiers: Vec::new(),
                content_type,
            },
            expires_at,
            publisher: Some(self.key),
            cluster_id: Default::default(),
        }
    }
}

fn validate_name(topic: &str) -> Result<(), Violation> {
    validate_topic_name(topic)
        .map_err(|_| violation(reason::TOPIC_NAME_INVALID, "invalid topic name in PUBLISH"))
}

pub(super) fn ack(packet_id: u16, reason_code: u8) -> PubResponse {
    PubResponse {
        packet_id,
        reason_code,
        properties: Default::default(),
    }
}
