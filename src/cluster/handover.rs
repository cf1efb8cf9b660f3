//! A session on its way between two nodes, on the link: `SessionDump`, the JSON form of
//! a `RestoredSession` (the hand-over format, see `crate::broker::handover`). Records,
//! subscriptions and message bodies travel in the store's encoding (base64), so what a
//! node stores and what it hands over are one format.

use std::sync::Arc;

use bytestring::ByteString;
use serde::{Deserialize, Serialize};

use crate::broker::HandedOver;
use crate::message::ClusterMessageId;
use crate::protocol::QoS;
use crate::storage::codec;
use crate::storage::{InflightState, RestoredDelivery, RestoredInflight, RestoredSession};

use super::state::{decode_base64, encode_base64};

/// A whole session as the old owner hands it to the new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDump {
    pub client_id: String,
    /// The session record (store encoding, base64).
    record: String,
    /// `(filter, subscription entry in the store's encoding, base64)`.
    subscriptions: Vec<(String, String)>,
    inflight: Vec<DumpedInflight>,
    queue: Vec<DumpedDelivery>,
    incoming_qos2: Vec<u16>,
    /// The cluster ids of the queued and inflight messages (`ClusterMessageId`: node,
    /// sequence), so that copies relayed or forwarded meanwhile are recognised.
    held: Vec<(u64, u64)>,
    /// The node handing it over relays to the new owner what still reaches it for the
    /// session (`super::relay`); false from a backup or a node that does not say.
    #[serde(default)]
    pub relayed: bool,
    /// The cluster ids of the unconfirmed messages of `incoming_qos2` (packet id, node,
    /// sequence; `StoreOp::IncomingInCluster`), from a backup, or from a live owner
    /// that took the session from a backup's copy.
    #[serde(default)]
    incoming_ids: Vec<(u16, u64, u64)>,
    /// From a live owner: the packet ids of `incoming_qos2` it held unconfirmed
    /// (`HandedOver::unconfirmed`). A node of an older version leaves it out: they are
    /// then confirmed, as before.
    #[serde(default)]
    unconfirmed: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DumpedDelivery {
    /// The message (store encoding, base64).
    message: String,
    qos: u8,
    retain: bool,
    subscription_ids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DumpedInflight {
    delivery: DumpedDelivery,
    packet_id: u16,
    /// 1: PUBACK awaited, 2: PUBREC awaited, 3: PUBCOMP awaited.
    state: u8,
}

impl SessionDump {
    pub fn from_handed(handed: &HandedOver) -> SessionDump {
        let mut dump = SessionDump::from_session(&handed.session);
        dump.unconfirmed = handed.unconfirmed.clone();
        dump.held = handed
            .held
            .iter()
            .map(|id| (id.node, id.sequence))
            .collect();
        dump
    }

    /// Adds ids of messages the session had lately (completed ones, from a backup's
    /// copy) to those it holds: copies of them that reach its new node are dropped.
    pub fn also_held(&mut self, ids: Vec<ClusterMessageId>) {
        self.held
            .extend(ids.into_iter().map(|id| (id.node, id.sequence)));
    }

    /// `into_session`, with the ids of the messages it holds.
    pub fn into_handed(mut self) -> Option<HandedOver> {
        let held = self
            .held
            .iter()
            .map(|(node, sequence)| ClusterMessageId {
                node: *node,
                sequence: *sequence,
            })
            .collect();
        let unconfirmed = std::mem::take(&mut self.unconfirmed);
        Some(HandedOver {
            session: self.into_session()?,
            held,
            from_copy: false,
            unconfirmed,
        })
    }

    pub fn from_session(session: &RestoredSession) -> SessionDump {
        let delivery = |delivery: &RestoredDelivery| DumpedDelivery {
            message: encode_base64(&codec::encode_message(&delivery.message)),
            qos: delivery.qos as u8,
            retain: delivery.retain,
            subscription_ids: delivery.subscription_ids.clone(),
        };
        SessionDump {
            client_id: session.record.client_id.to_string(),
            record: encode_base64(&codec::encode_session(&session.record)),
            subscriptions: session
                .subscriptions
                .iter()
                .map(|(filter, entry)| {
                    (
                        filter.to_string(),
                        encode_base64(&codec::encode_subscription(entry)),
                    )
                })
                .collect(),
            inflight: session
                .inflight
                .iter()
                .map(|inflight| DumpedInflight {
                    delivery: delivery(&inflight.delivery),
                    packet_id: inflight.packet_id,
                    state: match inflight.state {
                        InflightState::AwaitingPubAck => 1,
                        InflightState::AwaitingPubRec => 2,
                        InflightState::AwaitingPubComp => 3,
                    },
                })
                .collect(),
            queue: session.queue.iter().map(delivery).collect(),
            incoming_qos2: session.incoming_qos2.clone(),
            held: Vec::new(),
            relayed: false,
            incoming_ids: session
                .incoming_ids
                .iter()
                .map(|(packet_id, id)| (*packet_id, id.node, id.sequence))
                .collect(),
            unconfirmed: Vec::new(),
        }
    }

    /// The session again, its message ids 0 (the importing node allocates its own).
    /// `None` if any part does not decode (a peer of another version or a corrupt frame:
    /// the session then starts fresh rather than half restored).
    pub fn into_session(self) -> Option<RestoredSession> {
        let client_id = ByteString::from(self.client_id);
        let record =
            codec::decode_session(client_id.clone(), &decode_base64(&self.record)?).ok()?;
        let delivery = |dumped: DumpedDelivery| -> Option<RestoredDelivery> {
            let message = codec::decode_message(&decode_base64(&dumped.message)?).ok()?;
            Some(RestoredDelivery {
                message_id: 0,
                message: Arc::new(message),
                qos: QoS::from_u8(dumped.qos)?,
                retain: dumped.retain,
                subscription_ids: dumped.subscription_ids,
            })
        };
        let subscriptions = self
            .subscriptions
            .into_iter()
            .map(|(filter, entry)| {
                let entry = codec::decode_subscription(&decode_base64(&entry)?).ok()?;
                Some((ByteString::from(filter), entry))
            })
            .collect::<Option<Vec<_>>>()?;
        let inflight = self
            .inflight
            .into_iter()
            .map(|inflight| {
                Some(RestoredInflight {
                    delivery: delivery(inflight.delivery)?,
                    packet_id: inflight.packet_id,
                    state: match inflight.state {
                        1 => InflightState::AwaitingPubAck,
                        2 => InflightState::AwaitingPubRec,
                        3 => InflightState::AwaitingPubComp,
                        _ => return None,
                    },
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let queue = self
            .queue
            .into_iter()
            .map(delivery)
            .collect::<Option<Vec<_>>>()?;
        Some(RestoredSession {
            record,
            subscriptions,
            queue,
            inflight,
            incoming_qos2: self.incoming_qos2,
            incoming_ids: self
                .incoming_ids
                .iter()
                .map(|(packet_id, node, sequence)| {
                    (
                        *packet_id,
                        ClusterMessageId {
                            node: *node,
                            sequence: *sequence,
                        },
                    )
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{SubscriptionOptions, Will};
    use crate::session::SubscriptionEntry;
    use crate::storage::{SessionRecord, StoredMessage};

    pub(crate) fn sample_session() -> RestoredSession {
        let message = |payload: &'static [u8], qos| StoredMessage {
            topic: "t/1".into(),
            payload: bytes::Bytes::from_static(payload),
            qos,
            retain: false,
            properties: Default::default(),
            expires_at: Some(1_900_000_000_000),
            cluster_id: None,
        };
        let delivery = |id, payload, qos| RestoredDelivery {
            message_id: id,
            message: Arc::new(message(payload, qos)),
            qos,
            retain: false,
            subscription_ids: vec![7],
        };
        RestoredSession {
            record: SessionRecord {
                client_id: "mover".into(),
                protocol: crate::protocol::ProtocolVersion::V5,
                expiry_interval: 3600,
                will: Some(Will {
                    topic: "wills/mover".into(),
                    payload: bytes::Bytes::from_static(b"gone"),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    properties: Default::default(),
                }),
                disconnected_at: Some(1_800_000_000_000),
            },
            subscriptions: vec![(
                "t/#".into(),
                SubscriptionEntry {
                    options: SubscriptionOptions::default(),
                    subscription_id: Some(7),
                },
            )],
            inflight: vec![
                RestoredInflight {
                    delivery: delivery(1, b"a", QoS::AtLeastOnce),
                    packet_id: 10,
                    state: InflightState::AwaitingPubAck,
                },
                RestoredInflight {
                    delivery: delivery(2, b"b", QoS::ExactlyOnce),
                    packet_id: 11,
                    state: InflightState::AwaitingPubComp,
                },
            ],
            queue: vec![
                delivery(3, b"c", QoS::ExactlyOnce),
                delivery(4, b"d", QoS::AtLeastOnce),
            ],
            incoming_qos2: vec![3, 9],
            incoming_ids: vec![(
                9,
                ClusterMessageId {
                    node: 1,
                    sequence: 5,
                },
            )],
        }
    }

    fn without_ids(mut session: RestoredSession) -> RestoredSession {
        for delivery in session
            .inflight
            .iter_mut()
            .map(|inflight| &mut inflight.delivery)
            .chain(session.queue.iter_mut())
        {
            delivery.message_id = 0;
        }
        session
    }

    #[test]
    fn a_session_crosses_the_link_unchanged_but_for_its_message_ids() {
        let session = sample_session();
        let json = serde_json::to_vec(&SessionDump::from_session(&session)).unwrap();
        let dump: SessionDump = serde_json::from_slice(&json).unwrap();
        assert_eq!(dump.into_session(), Some(without_ids(session)));
    }

    #[test]
    fn the_ids_of_the_messages_held_cross_with_it() {
        let held = vec![
            ClusterMessageId {
                node: 2,
                sequence: 40,
            },
            ClusterMessageId {
                node: 3,
                sequence: 7,
            },
        ];
        // A live owner's unconfirmed packet ids and their recorded cluster ids.
        let handed = HandedOver {
            session: without_ids(sample_session()),
            held,
            from_copy: false,
            unconfirmed: vec![9],
        };
        let json = serde_json::to_vec(&SessionDump::from_handed(&handed)).unwrap();
        let dump: SessionDump = serde_json::from_slice(&json).unwrap();
        assert_eq!(dump.into_handed(), Some(handed));
    }

    #[test]
    fn a_dump_with_a_corrupt_part_is_refused_whole() {
        let mut dump = SessionDump::from_session(&sample_session());
        dump.queue[1].message = "not base64!".into();
        assert_eq!(dump.clone().into_session(), None);
        let mut dump = SessionDump::from_session(&sample_session());
        dump.inflight[0].state = 9;
        assert_eq!(dump.into_session(), None);
    }
}
