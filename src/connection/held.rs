//! Acknowledgements held back until the writes they promise are durable.
//!
//! A PUBACK or PUBREC tells the client the broker has its message; with a durable store
//! that is only true once the store's write covering the message completed. The same
//! goes for SUBACK, UNSUBACK and CONNACK and the subscription or session they confirm.
//! Such a packet waits here with its writes; packets produced after it wait behind it
//! even when they need no write, because MQTT requires acknowledgements in the order of
//! the packets they answer. Waiting is one of the events the connection polls for, so the
//! connection keeps reading, and the other clients are never blocked by it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use crate::protocol::Packet;
use crate::storage::{Completion, StoreError};

struct Held {
    packet: Packet,
    writes: Vec<Completion>,
    /// How many of `writes` have resolved; those are not polled again.
    settled: usize,
    failure: Option<StoreError>,
}

#[derive(Default)]
pub(super) struct HeldPackets {
    queue: VecDeque<Held>,
}

/// A held packet whose writes all resolved.
pub(super) struct Settled {
    pub(super) packet: Packet,
    /// The first write that failed, if any: the packet must not confirm what it says.
    pub(super) failure: Option<StoreError>,
}

impl HeldPackets {
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether `packet`, needing `writes`, must be held rather than sent now.
    pub(super) fn must_hold(&self, writes: &[Completion]) -> bool {
        !writes.is_empty() || !self.queue.is_empty()
    }

    pub(super) fn hold(&mut self, packet: Packet, writes: Vec<Completion>) {
        self.queue.push_back(Held {
            packet,
            writes,
            settled: 0,
            failure: None,
        });
    }

    /// Polls the oldest held packet's writes; ready once they have all resolved
    /// (pending, with no wake-up, while nothing is held: holding happens on the
    /// connection's own task, which polls again). A resolved write is recorded at once,
    /// so nothing is lost between polls.
    pub(super) fn poll_front_settled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(front) = self.queue.front_mut() else {
            return Poll::Pending;
        };
        while front.settled < front.writes.len() {
            let result = ready!(Pin::new(&mut front.writes[front.settled]).poll(cx));
            front.settled += 1;
            if let Err(error) = result {
                front.failure.get_or_insert(error);
            }
        }
        Poll::Ready(())
    }

    /// Takes the held packets from the front whose writes have all resolved, in order;
    /// packets with writes still to wait for stay. Writes that resolved already (the
    /// memory store's always have) are found without waiting.
    pub(super) fn take_settled(&mut self, into: &mut Vec<Settled>) {
        while let Some(front) = self.queue.front_mut() {
            while front.settled < front.writes.len() {
                match front.writes[front.settled].try_result() {
                    Some(Err(error)) => {
                        front.failure.get_or_insert(error);
                    }
                    Some(Ok(())) => {}
                    None => return,
                }
                front.settled += 1;
            }
            if let Some(held) = self.queue.pop_front() {
                into.push(Settled {
                    packet: held.packet,
                    failure: held.failure,
                });
            }
        }
    }
}
