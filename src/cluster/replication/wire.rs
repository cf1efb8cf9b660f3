//! Store operations on the link, from a session's owner to its backups: `WireOp`, the
//! JSON form of a `StoreOp` (records, subscriptions and message bodies in the store's
//! encoding, base64, as in the hand-over's `SessionDump`).

use std::sync::Arc;

use bytestring::ByteString;
use serde::{Deserialize, Serialize};

use crate::protocol::QoS;
use crate::storage::{codec, InflightState, QueuedDelivery, StoreOp};

use super::super::state::{decode_base64, encode_base64};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireOp {
    PutSession {
        client_id: String,
        record: String,
    },
    RemoveSession {
        client_id: String,
    },
    AddSubscription {
        client_id: String,
        filter: String,
        entry: String,
    },
    RemoveSubscription {
        client_id: String,
        filter: String,
    },
    Accept {
        message_id: u64,
        message: String,
        /// `(client id, QoS, RETAIN, subscription ids)`.
        deliveries: Vec<(String, u8, bool, Vec<u32>)>,
    },
    MarkInflight {
        client_id: String,
        message_id: u64,
        packet_id: u16,
        state: u8,
    },
    AdvanceInflight {
        client_id: String,
        packet_id: u16,
        state: u8,
    },
    CompleteInflight {
        client_id: String,
        packet_id: u16,
    },
    CompletedInCluster {
        client_id: String,
        node: u64,
        sequence: u64,
    },
    IncomingInCluster {
        client_id: String,
        packet_id: u16,
        node: u64,
        sequence: u64,
    },
    DropQueued {
        client_id: String,
        message_id: u64,
    },
    AddIncomingQos2 {
        client_id: String,
        packet_id: u16,
    },
    RemoveIncomingQos2 {
        client_id: String,
        packet_id: u16,
    },
}

impl WireOp {
    /// About the memory the operation holds while it waits for a backup (its strings;
    /// the fixed part counted as 32 bytes): what the backup queue's byte bound counts.
    pub fn size(&self) -> usize {
        const FIXED: usize = 32;
        FIXED
            + match self {
                WireOp::PutSession { client_id, record } => client_id.len() + record.len(),
                WireOp::AddSubscription {
                    client_id,
                    filter,
                    entry,
                } => client_id.len() + filter.len() + entry.len(),
                WireOp::RemoveSubscription { client_id, filter } => client_id.len() + filter.len(),
                WireOp::Accept {
                    message,
                    deliveries,
                    ..
                } => {
                    message.len()
                        + deliveries
                            .iter()
                            .map(|(client_id, _, _, ids)| FIXED + client_id.len() + 4 * ids.len())
                            .sum::<usize>()
                }
                WireOp::RemoveSession { client_id }
                | WireOp::MarkInflight { client_id, .. }
                | WireOp::AdvanceInflight { client_id, .. }
                | WireOp::CompleteInflight { client_id, .. }
                | WireOp::CompletedInCluster { client_id, .. }
                | WireOp::IncomingInCluster { client_id, .. }
                | WireOp::DropQueued { client_id, .. }
                | WireOp::AddIncomingQos2 { client_id, .. }
                | WireOp::RemoveIncomingQos2 { client_id, .. } => client_id.len(),
            }
    }
}

fn state_code(state: InflightState) -> u8 {
    match state {
        InflightState::AwaitingPubAck => 1,
        InflightState::AwaitingPubRec => 2,
        InflightState::AwaitingPubComp => 3,
    }
}

fn state_from(code: u8) -> Option<InflightState> {
    match code {
        1 => Some(InflightState::AwaitingPubAck),
        2 => Some(InflightState::AwaitingPubRec),
        3 => Some(InflightState::AwaitingPubComp),
        _ => None,
    }
}

impl WireOp {
    /// The wire form of `op`; `None` for what is not replicated (retained messages).
    pub fn encode(op: &StoreOp) -> Option<WireOp> {
        let id = |client_id: &ByteString| client_id.to_string();
        Some(match op {
            StoreOp::PutSession(record) => WireOp::PutSession {
                client_id: id(&record.client_id),
                record: encode_base64(&codec::encode_session(record)),
            },
            StoreOp::RemoveSession { client_id } => WireOp::RemoveSession {
                client_id: id(client_id),
            },
            StoreOp::AddSubscription {
                client_id,
                filter,
                entry,
            } => WireOp::AddSubscription {
                client_id: id(client_id),
                filter: filter.to_string(),
                entry: encode_base64(&codec::encode_subscription(entry)),
            },
            StoreOp::RemoveSubscription { client_id, filter } => WireOp::RemoveSubscription {
                client_id: id(client_id),
                filter: filter.to_string(),
            },
            StoreOp::SetRetained(_) | StoreOp::ClearRetained { .. } => return None,
            StoreOp::Accept {
                message_id,
                message,
                deliveries,
            } => WireOp::Accept {
                message_id: *message_id,
                message: encode_base64(&codec::encode_message(message)),
                deliveries: deliveries
                    .iter()
                    .map(|delivery| {
                        (
                            id(&delivery.client_id),
                            delivery.qos as u8,
                            delivery.retain,
                            delivery.subscription_ids.clone(),
                        )
                    })
                    .collect(),
            },
            StoreOp::MarkInflight {
                client_id,
                message_id,
                packet_id,
                state,
            } => WireOp::MarkInflight {
                client_id: id(client_id),
                message_id: *message_id,
                packet_id: *packet_id,
                state: state_code(*state),
            },
            StoreOp::AdvanceInflight {
                client_id,
                packet_id,
                state,
            } => WireOp::AdvanceInflight {
                client_id: id(client_id),
                packet_id: *packet_id,
                state: state_code(*state),
            },
            StoreOp::CompleteInflight {
                client_id,
                packet_id,
            } => WireOp::CompleteInflight {
                client_id: id(client_id),
                packet_id: *packet_id,
            },
            StoreOp::CompletedInCluster {
                client_id,
                cluster_id,
            } => WireOp::CompletedInCluster {
                client_id: id(client_id),
                node: cluster_id.node,
                sequence: cluster_id.sequence,
            },
            StoreOp::IncomingInCluster {
                client_id,
                packet_id,
                cluster_id,
            } => WireOp::IncomingInCluster {
                client_id: id(client_id),
                packet_id: *packet_id,
                node: cluster_id.node,
                sequence: cluster_id.sequence,
            },
            StoreOp::DropQueued {
                client_id,
                message_id,
            } => WireOp::DropQueued {
                client_id: id(client_id),
                message_id: *message_id,
            },
            StoreOp::AddIncomingQos2 {
                client_id,
                packet_id,
            } => WireOp::AddIncomingQos2 {
                client_id: id(client_id),
                packet_id: *packet_id,
            },
            StoreOp::RemoveIncomingQos2 {
                client_id,
                packet_id,
            } => WireOp::RemoveIncomingQos2 {
                client_id: id(client_id),
                packet_id: *packet_id,
            },
        })
    }

    /// The store operation again; `None` if any part does not decode.
    pub fn decode(self) -> Option<StoreOp> {
        Some(match self {
            WireOp::PutSession { client_id, record } => StoreOp::PutSession(
                codec::decode_session(client_id.into(), &decode_base64(&record)?).ok()?,
            ),
            WireOp::RemoveSession { client_id } => StoreOp::RemoveSession {
                client_id: client_id.into(),
            },
            WireOp::AddSubscription {
                client_id,
                filter,
                entry,
            } => StoreOp::AddSubscription {
                client_id: client_id.into(),
                filter: filter.into(),
                entry: codec::decode_subscription(&decode_base64(&entry)?).ok()?,
            },
            WireOp::RemoveSubscription { client_id, filter } => StoreOp::RemoveSubscription {
                client_id: client_id.into(),
                filter: filter.into(),
            },
            WireOp::Accept {
                message_id,
                message,
                deliveries,
            } => StoreOp::Accept {
                message_id,
                message: Arc::new(codec::decode_message(&decode_base64(&message)?).ok()?),
                deliveries: deliveries
                    .into_iter()
                    .map(|(client_id, qos, retain, subscription_ids)| {
                        Some(QueuedDelivery {
                            client_id: client_id.into(),
                            qos: QoS::from_u8(qos)?,
                            retain,
                            subscription_ids,
                        })
                    })
                    .collect::<Option<Vec<_>>>()?,
            },
            WireOp::MarkInflight {
                client_id,
                message_id,
                packet_id,
                state,
            } => StoreOp::MarkInflight {
                client_id: client_id.into(),
                message_id,
                packet_id,
                state: state_from(state)?,
            },
            WireOp::AdvanceInflight {
                client_id,
                packet_id,
                state,
            } => StoreOp::AdvanceInflight {
                client_id: client_id.into(),
                packet_id,
                state: state_from(state)?,
            },
            WireOp::CompleteInflight {
                client_id,
                packet_id,
            } => StoreOp::CompleteInflight {
                client_id: client_id.into(),
                packet_id,
            },
            WireOp::CompletedInCluster {
                client_id,
                node,
                sequence,
            } => StoreOp::CompletedInCluster {
                client_id: client_id.into(),
                cluster_id: crate::message::ClusterMessageId { node, sequence },
            },
            WireOp::IncomingInCluster {
                client_id,
                packet_id,
                node,
                sequence,
            } => StoreOp::IncomingInCluster {
                client_id: client_id.into(),
                packet_id,
                cluster_id: crate::message::ClusterMessageId { node, sequence },
            },
            WireOp::DropQueued {
                client_id,
                message_id,
            } => StoreOp::DropQueued {
                client_id: client_id.into(),
                message_id,
            },
            WireOp::AddIncomingQos2 {
                client_id,
                packet_id,
            } => StoreOp::AddIncomingQos2 {
                client_id: client_id.into(),
                packet_id,
            },
            WireOp::RemoveIncomingQos2 {
                client_id,
                packet_id,
            } => StoreOp::RemoveIncomingQos2 {
                client_id: client_id.into(),
                packet_id,
            },
        })
    }
}
