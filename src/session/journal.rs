//! The durable changes a session makes, as store operations.
//!
//! A persistent session (one that outlives its connection) writes down every change of
//! what the store keeps for it: a stored message going in flight or leaving the queue,
//! an inflight message moving on or completing, an incoming QoS 2 packet id awaiting
//! PUBREL or released. Whoever holds the session lock takes the operations with
//! `Session::take_journal` and submits them before releasing the lock, so the store sees
//! one session's changes in the order they happened.
//!
//! Only deliveries the store holds (`Delivery::stored`) are journaled: QoS 0 messages and
//! messages for sessions that end with their connection never reach the disk.

use bytestring::ByteString;

use super::Delivery;
use crate::storage::{InflightState, StoreOp};

/// Empty (one pointer) for a session the store does not keep, which is most of them:
/// the client id and the pending operations are allocated only while it is persistent.
#[derive(Debug, Default)]
pub(super) struct Journal(Option<Box<Persisted>>);

#[derive(Debug)]
struct Persisted {
    client_id: ByteString,
    ops: Vec<StoreOp>,
}

impl Journal {
    pub(super) fn is_persistent(&self) -> bool {
        self.0.is_some()
    }

    /// Starts (with the session's client id, which the operations name) or stops
    /// journaling; stopping drops what was not taken.
    pub(super) fn set_persistent(&mut self, client_id: Option<&ByteString>) {
        match (client_id, &mut self.0) {
            (None, _) => self.0 = None,
            (Some(_), Some(_)) => {}
            (Some(client_id), None) => {
                self.0 = Some(Box::new(Persisted {
                    client_id: client_id.clone(),
                    ops: Vec::new(),
                }))
            }
        }
    }

    /// The client id of a persistent session.
    pub(super) fn client_id(&self) -> Option<&ByteString> {
        self.0.as_ref().map(|persisted| &persisted.client_id)
    }

    pub(super) fn take(&mut self) -> Vec<StoreOp> {
        self.0
            .as_mut()
            .map(|persisted| std::mem::take(&mut persisted.ops))
            .unwrap_or_default()
    }

    pub(super) fn sent(&mut self, delivery: &Delivery, packet_id: u16, state: InflightState) {
        if let (Some(message_id), Some(persisted)) = (delivery.stored, self.0.as_mut()) {
            persisted.ops.push(StoreOp::MarkInflight {
                client_id: persisted.client_id.clone(),
                message_id,
                packet_id,
                state,
            });
        }
    }

    /// A stored delivery left the queue without going in flight (expired, too large).
    pub(super) fn dropped(&mut self, delivery: &Delivery) {
        if let (Some(message_id), Some(persisted)) = (delivery.stored, self.0.as_mut()) {
            persisted.ops.push(StoreOp::DropQueued {
                client_id: persisted.client_id.clone(),
                message_id,
            });
        }
    }

    pub(super) fn released(&mut self, delivery: &Delivery, packet_id: u16) {
        if let (Some(_), Some(persisted)) = (delivery.stored, self.0.as_mut()) {
            persisted.ops.push(StoreOp::AdvanceInflight {
                client_id: persisted.client_id.clone(),
                packet_id,
                state: InflightState::AwaitingPubComp,
            });
        }
    }

    pub(super) fn completed(&mut self, delivery: &Delivery, packet_id: u16) {
        if let (Some(_), Some(persisted)) = (delivery.stored, self.0.as_mut()) {
            persisted.ops.push(StoreOp::CompleteInflight {
                client_id: persisted.client_id.clone(),
                packet_id,
            });
            // Only a cluster node's messages have an id; a QoS 1 message may come
            // twice anyway.
            if let Some(cluster_id) = delivery
                .message
                .cluster_id
                .get()
                .filter(|_| delivery.qos == crate::protocol::QoS::ExactlyOnce)
            {
                persisted.ops.push(StoreOp::CompletedInCluster {
                    client_id: persisted.client_id.clone(),
                    cluster_id: *cluster_id,
                });
            }
        }
    }

    pub(super) fn incoming_added(&mut self, packet_id: u16) {
        if let Some(persisted) = self.0.as_mut() {
            persisted.ops.push(StoreOp::AddIncomingQos2 {
                client_id: persisted.client_id.clone(),
                packet_id,
            });
        }
    }

    pub(super) fn incoming_released(&mut self, packet_id: u16) {
        if let Some(persisted) = self.0.as_mut() {
            persisted.ops.push(StoreOp::RemoveIncomingQos2 {
                client_id: persisted.client_id.clone(),
                packet_id,
            });
        }
    }
}
