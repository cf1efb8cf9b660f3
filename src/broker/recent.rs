//! The cluster ids of the messages a session that just moved here from another node
//! already holds or was given, for a while after the move: a message can then reach it
//! twice, relayed by its old node and forwarded to its new one (see ARCHITECTURE.md,
//! "The cluster"), and the session keeps the first copy (`Broker::deliver`). Bounded in
//! entries (oldest go) and in time; sessions that never moved have none, and the
//! router's only cost for them is one flag on the handle.
//!
//! While the old node still relays to the session (it said so in the hand-over), the
//! deliveries that reach it otherwise (forwarded straight here, or published here) wait
//! in `held`, in their order, until the old node tells that its relay ended
//! (`Broker::release_held`): a message it relays late is then not overtaken by a later
//! one of the same publisher. A message that comes both ways keeps its relayed copy
//! (what was held before the other copy goes ahead of it, `Held::take_through`), and
//! the other one goes as soon as both are here, whichever came first: a held copy
//! left stored until the relay ended would be queued again by a node that takes the
//! session over from a copy made meanwhile (the session's node dying within the relay's
//! few seconds), and delivered twice. A session taken from a backup has no relay and holds
//! nothing. Held deliveries are bounded by the numbers of the session's queue limits
//! (messages and bytes, counted apart); beyond them they are dropped and counted as a
//! full queue.

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use bytestring::ByteString;

use crate::message::ClusterMessageId;
use crate::session::Delivery;

/// Deliveries waiting behind the old node's relay, in their order.
#[derive(Debug)]
pub(crate) struct Held {
    /// The session's client id: a session that ended while it held (a clean start)
    /// leaves its window behind, found again by its client id when the relay ends.
    pub(crate) client_id: ByteString,
    pub(crate) deliveries: VecDeque<Delivery>,
    /// The cluster ids of `deliveries`.
    ids: HashSet<ClusterMessageId>,
    bytes: usize,
}

impl Held {
    pub(crate) fn new(client_id: ByteString) -> Held {
        Held {
            client_id,
            deliveries: VecDeque::new(),
            ids: HashSet::new(),
            bytes: 0,
        }
    }

    /// Takes out the held delivery of the message `id`, if one waits (its relayed copy
    /// arrived), with the deliveries held before it, in their order: those arrived
    /// here before that message did, so whatever the relay must bring ahead of them
    /// it brought ahead of that message's copy, already here (the relay keeps the old
    /// node's order, and the message reached the old node after they reached this one).
    /// They go now, ahead of the relayed copy, as they would have with the copy's twin.
    pub(crate) fn take_through(
        &mut self,
        id: ClusterMessageId,
    ) -> Option<(Vec<Delivery>, Delivery)> {
        if !self.ids.remove(&id) {
            return None;
        }
        let index = self
            .deliveries
            .iter()
            .position(|delivery| delivery.message.cluster_id() == id)?;
        let earlier: Vec<Delivery> = self.deliveries.drain(..index).collect();
        let twin = self.deliveries.pop_front()?;
        for delivery in earlier.iter().chain(std::iter::once(&twin)) {
            self.ids.remove(&delivery.message.cluster_id());
            self.bytes -= delivery.message.payload.len();
        }
        Some((earlier, twin))
    }

    /// Keeps `delivery` at the end; gives it back beyond `max_messages` or `max_bytes`.
    pub(crate) fn push(
        &mut self,
        delivery: Delivery,
        max_messages: usize,
        max_bytes: usize,
    ) -> Result<(), Delivery> {
        let size = delivery.message.payload.len();
        if self.deliveries.len() >= max_messages || self.bytes + size > max_bytes {
            return Err(delivery);
        }
        self.bytes += size;
        self.ids.insert(delivery.message.cluster_id());
        self.deliveries.push_back(delivery);
        Ok(())
    }
}

/// Ids remembered beyond those a session arrived with.
pub const RECENT_IDS: usize = 4096;

#[derive(Debug)]
pub(crate) struct RecentIds {
    ids: HashSet<ClusterMessageId>,
    order: VecDeque<ClusterMessageId>,
    capacity: usize,
    /// The window closes at this time.
    pub(crate) until: Instant,
    /// While the old node's relay is open: the deliveries that did not come through it.
    pub(crate) held: Option<Held>,
    /// Store operations that put the deliveries queued from the relay batch being
    /// delivered behind the held ones' entries back in the session's order
    /// (`Broker::deliver_relayed`).
    pub(crate) requeue: Vec<crate::storage::StoreOp>,
}

impl RecentIds {
    pub(crate) fn new(held: impl IntoIterator<Item = ClusterMessageId>, until: Instant) -> Self {
        let mut recent = RecentIds {
            ids: HashSet::new(),
            order: VecDeque::new(),
            capacity: RECENT_IDS,
            until,
            held: None,
            requeue: Vec::new(),
        };
        for id in held {
            recent.admit(id);
        }
        recent.capacity = recent.order.len() + RECENT_IDS;
        recent
    }

    /// Whether a copy of `id` came before (without remembering it).
    pub(crate) fn contains(&self, id: ClusterMessageId) -> bool {
        self.ids.contains(&id)
    }

    /// Whether `id` is new (then remembered), false for a copy of one seen before.
    pub(crate) fn admit(&mut self, id: ClusterMessageId) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(sequence: u64) -> ClusterMessageId {
        ClusterMessageId { node: 1, sequence }
    }

    #[test]
    fn a_second_copy_is_refused_and_the_window_is_bounded() {
        let mut recent = RecentIds::new([id(1), id(2)], Instant::now());
        assert!(!recent.admit(id(1)), "held on arrival");
        assert!(recent.admit(id(3)));
        assert!(!recent.admit(id(3)), "given since");
        for sequence in 10..10 + RECENT_IDS as u64 {
            assert!(recent.admit(id(sequence)));
        }
        assert!(recent.order.len() <= 2 + RECENT_IDS);
        assert!(recent.admit(id(1)), "the oldest went");
    }

    #[test]
    fn held_deliveries_are_bounded_in_messages_and_bytes() {
        let delivery = |size: usize| Delivery {
            message: std::sync::Arc::new(crate::message::Message {
                topic: "held".into(),
                payload: vec![0; size].into(),
                qos: crate::protocol::QoS::AtLeastOnce,
                retain: false,
                properties: Default::default(),
                expires_at: None,
                publisher: None,
                cluster_id: Default::default(),
            }),
            qos: crate::protocol::QoS::AtLeastOnce,
            retain: false,
            subscription_ids: Vec::new(),
            stored: None,
        };
        let mut held = Held::new("device".into());
        assert!(held.push(delivery(90), 3, 100).is_ok());
        assert!(held.push(delivery(11), 3, 100).is_err(), "beyond the bytes");
        assert!(held.push(delivery(10), 3, 100).is_ok());
        assert!(held.push(delivery(0), 3, 100).is_ok());
        assert!(
            held.push(delivery(0), 3, 100).is_err(),
            "beyond the messages"
        );
        assert_eq!(held.deliveries.len(), 3);
    }
}
