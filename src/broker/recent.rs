//! The cluster ids of the messages a session that just moved here from another node
//! already holds or was given, for a while after the move: a message can then reach it
//! twice, relayed by its old node and forwarded to its new one (see ARCHITECTURE.md,
//! "The cluster"), and the session keeps the first copy (`Broker::deliver`). Bounded in
//! entries (oldest go) and in time; sessions that never moved have none, and the
//! router's only cost for them is one flag on the handle.
//!
//! While the old node still relays to the session, its other deliveries (forwarded
//! straight here or published here) wait behind the relay in `held`, in their order,
//! until the old node says the relay ended (or `HOLD_MAX` passed): so a message relayed
//! late never arrives after a later one of the same publisher. Bounded in messages and
//! bytes; beyond, deliveries are dropped and counted.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::message::ClusterMessageId;
use crate::session::Delivery;

/// Ids remembered beyond those a session arrived with.
pub const RECENT_IDS: usize = 4096;
/// Deliveries held behind a relay, at most (as many as a relay buffers).
pub const HELD_MESSAGES: usize = 10_000;
/// Payload bytes held behind a relay, at most.
pub const HELD_BYTES: usize = 64 * 1024 * 1024;
/// How long deliveries wait for the relay's end at most: longer than a relay lasts
/// (`crate::cluster::relay::RELAY_MAX`), for an old node that died or never relayed.
pub const HOLD_MAX: Duration = Duration::from_secs(35);

/// Deliveries waiting behind the old node's relay.
#[derive(Debug, Default)]
pub(crate) struct Held {
    pub(crate) deliveries: VecDeque<Delivery>,
    pub(crate) bytes: usize,
}

impl Held {
    /// Keeps `delivery` at the end; gives it back when the bounds are reached.
    pub(crate) fn push(&mut self, delivery: Delivery) -> Result<(), Delivery> {
        let size = delivery.message.payload.len();
        if self.deliveries.len() >= HELD_MESSAGES || self.bytes + size > HELD_BYTES {
            return Err(delivery);
        }
        self.bytes += size;
        self.deliveries.push_back(delivery);
        Ok(())
    }
}

#[derive(Debug)]
pub(crate) struct RecentIds {
    ids: HashSet<ClusterMessageId>,
    order: VecDeque<ClusterMessageId>,
    capacity: usize,
    /// The window closes at this time.
    pub(crate) until: Instant,
    /// While the old node's relay is open: the deliveries that did not come through it.
    pub(crate) held: Option<Held>,
}

impl RecentIds {
    pub(crate) fn new(held: impl IntoIterator<Item = ClusterMessageId>, until: Instant) -> Self {
        let mut recent = RecentIds {
            ids: HashSet::new(),
            order: VecDeque::new(),
            capacity: RECENT_IDS,
            until,
            held: None,
        };
        for id in held {
            recent.admit(id);
        }
        recent.capacity = recent.order.len() + RECENT_IDS;
        recent
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
    fn held_deliveries_are_bounded_in_bytes() {
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
        let mut held = Held::default();
        assert!(held.push(delivery(HELD_BYTES - 10)).is_ok());
        assert!(held.push(delivery(11)).is_err(), "beyond the bytes");
        assert!(held.push(delivery(10)).is_ok());
        assert_eq!(held.deliveries.len(), 2);
        assert_eq!(held.bytes, HELD_BYTES);
    }
}
