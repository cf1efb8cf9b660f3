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

#[derive(Debug)]
pub(super) struct Journal {
    client_id: ByteString,
    /// Whether the store keeps this session at all.
    persistent: bool,
    ops: Vec<StoreOp>,
}

impl Journal {
    pub(super) fn new(client_id: ByteString) -> Journal {
        Journal {
            client_id,
            persistent: false,
            ops: Vec::new(),
        }
    }

    /// The session's client id (the journal keeps the session's only copy).
    pub(super) fn client_id(&self) -> &ByteString {
        &self.client_id
    }

    pub(super) fn is_persistent(&self) -> bool {
        self.persistent
    }

    pub(super) fn set_persistent(&mut self, persistent: bool) {
        self.persistent = persistent;
        if !persistent {
            self.ops.clear();
        }
    }

    pub(super) fn take(&mut self) -> Vec<StoreOp> {
        std::mem::take(&mut self.ops)
    }

    pub(super) fn sent(&mut self, delivery: &Delivery, packet_id: u16, state: InflightState) {
        if let Some(message_id) = self.stored(delivery) {
            self.ops.push(StoreOp::MarkInflight {
                client_id: self.client_id.clone(),
                message_id,
                packet_id,
                state,
            });
        }
    }

    /// A stored delivery left the queue without going in flight (expired, too large).
    pub(super) fn dropped(&mut self, delivery: &Delivery) {
        if let Some(message_id) = self.stored(delivery) {
            self.ops.push(StoreOp::DropQueued {
                client_id: self.client_id.clone(),
                message_id,
            });
        }
    }

    pub(super) fn released(&mut self, delivery: &Delivery, packet_id: u16) {
        if self.stored(delivery).is_some() {
            self.ops.push(StoreOp::AdvanceInflight {
                client_id: self.client_id.clone(),
                packet_id,
                state: InflightState::AwaitingPubComp,
            });
        }
    }

    pub(super) fn completed(&mut self, delivery: &Delivery, packet_id: u16) {
        if self.stored(delivery).is_some() {
            self.ops.push(StoreOp::CompleteInflight {
                client_id: self.client_id.clone(),
                packet_id,
            });
        }
    }

    pub(super) fn incoming_added(&mut self, packet_id: u16) {
        if self.persistent {
            self.ops.push(StoreOp::AddIncomingQos2 {
                client_id: self.client_id.clone(),
                packet_id,
            });
        }
    }

    pub(super) fn incoming_released(&mut self, packet_id: u16) {
        if self.persistent {
            self.ops.push(StoreOp::RemoveIncomingQos2 {
                client_id: self.client_id.clone(),
                packet_id,
            });
        }
    }

    fn stored(&self, delivery: &Delivery) -> Option<crate::storage::MessageId> {
        delivery.stored.filter(|_| self.persistent)
    }
}
