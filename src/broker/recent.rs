//! The cluster ids of the messages a session that just moved here from another node
//! already holds or was given, for a while after the move: a message can then reach it
//! twice, relayed by its old node and forwarded to its new one (see ARCHITECTURE.md,
//! "The cluster"), and the session keeps the first copy (`Broker::deliver`). Bounded in
//! entries (oldest go) and in time; sessions that never moved have none, and the
//! router's only cost for them is one flag on the handle.

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use crate::message::ClusterMessageId;

/// Ids remembered beyond those a session arrived with.
pub const RECENT_IDS: usize = 4096;

#[derive(Debug)]
pub(crate) struct RecentIds {
    ids: HashSet<ClusterMessageId>,
    order: VecDeque<ClusterMessageId>,
    capacity: usize,
    /// The window closes at this time.
    pub(crate) until: Instant,
}

impl RecentIds {
    pub(crate) fn new(held: impl IntoIterator<Item = ClusterMessageId>, until: Instant) -> Self {
        let mut recent = RecentIds {
            ids: HashSet::new(),
            order: VecDeque::new(),
            capacity: RECENT_IDS,
            until,
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
}
