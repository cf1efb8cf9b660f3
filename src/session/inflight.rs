//! The messages in flight towards a client, in send order, by send sequence.
//!
//! A `BTreeMap` did this before; removing its entry for every PUBACK was about a tenth
//! of the instructions a QoS 1 fan-out spends per delivered message. Sequences are
//! handed out in increasing order, so a deque sorted by sequence takes new entries at
//! its back and finds any entry by binary search; acknowledgements mostly come in send
//! order, so the entry removed is mostly the front one. An entry acknowledged out of
//! order leaves a hole, dropped once it reaches either end, and the deque is compacted
//! whenever holes outnumber the live entries, so it never holds more than about twice
//! what is in flight. An empty queue keeps its allocation for the next burst (one
//! allocation and release per burst of deliveries cost more than the rest of the queue's
//! work): an idle client keeps none all the same, since its whole outbound state goes
//! when it goes idle (`Session::release_idle_memory`).

use std::collections::VecDeque;

/// Holes tolerated beyond twice the live entries before compacting.
const SLACK: usize = 16;

#[derive(Debug)]
pub(super) struct InflightQueue<T> {
    /// Sorted by sequence; `None` is a hole left by an out-of-order removal.
    entries: VecDeque<(u64, Option<T>)>,
    live: usize,
    /// The sequence of the next entry.
    next_sequence: u64,
}

impl<T> Default for InflightQueue<T> {
    fn default() -> Self {
        InflightQueue {
            entries: VecDeque::new(),
            live: 0,
            next_sequence: 0,
        }
    }
}

impl<T> InflightQueue<T> {
    pub(super) fn len(&self) -> usize {
        self.live
    }

    pub(super) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Adds `value` after everything present; returns its sequence.
    pub(super) fn push(&mut self, value: T) -> u64 {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.entries.push_back((sequence, Some(value)));
        self.live += 1;
        sequence
    }

    /// Where `sequence` is: most often the front (acknowledgements in send order), so
    /// that is looked at before searching.
    fn position(&self, sequence: u64) -> Option<usize> {
        match self.entries.front() {
            Some((first, _)) if *first == sequence => Some(0),
            Some((first, _)) if *first > sequence => None,
            None => None,
            Some(_) => self
                .entries
                .binary_search_by_key(&sequence, |(known, _)| *known)
                .ok(),
        }
    }

    pub(super) fn get(&self, sequence: &u64) -> Option<&T> {
        let index = self.position(*sequence)?;
        self.entries[index].1.as_ref()
    }

    pub(super) fn get_mut(&mut self, sequence: &u64) -> Option<&mut T> {
        let index = self.position(*sequence)?;
        self.entries[index].1.as_mut()
    }

    pub(super) fn remove(&mut self, sequence: &u64) -> Option<T> {
        let index = self.position(*sequence)?;
        self.remove_at(index)
    }

    /// Removes the entry of `sequence` if `settles` says so, with one search; returns
    /// what `settles` said (`None`: no such entry) and the entry if it was removed.
    /// Inlined into its caller: one call per acknowledged message, and left to itself the
    /// compiler sometimes did not (fan-out QoS 1 counted 1.5% more instructions).
    #[inline]
    pub(super) fn remove_if(
        &mut self,
        sequence: &u64,
        settles: impl FnOnce(&T) -> bool,
    ) -> Option<(bool, Option<T>)> {
        let index = self.position(*sequence)?;
        let settled = settles(self.entries[index].1.as_ref()?);
        Some((settled, if settled { self.remove_at(index) } else { None }))
    }

    fn remove_at(&mut self, index: usize) -> Option<T> {
        let removed = if index == 0 {
            // The usual case, acknowledged in send order: taken off the front whole.
            self.entries.pop_front()?.1
        } else {
            self.entries[index].1.take()
        };
        let Some(removed) = removed else {
            // A hole at the front is never left in place; elsewhere it stays one.
            return None;
        };
        self.live -= 1;
        while matches!(self.entries.front(), Some((_, None))) {
            self.entries.pop_front();
        }
        while matches!(self.entries.back(), Some((_, None))) {
            self.entries.pop_back();
        }
        if self.entries.len() > 2 * self.live + SLACK {
            self.entries.retain(|(_, entry)| entry.is_some());
        }
        Some(removed)
    }

    /// The entries in send order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.entries
            .iter()
            .filter_map(|(sequence, entry)| Some((*sequence, entry.as_ref()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn remove_if_removes_only_what_settles() {
        let mut queue = InflightQueue::default();
        for value in 0..4u64 {
            queue.push(value * 10);
        }
        assert_eq!(queue.remove_if(&9, |_| true), None, "no such entry");
        assert_eq!(
            queue.remove_if(&0, |value| *value == 5),
            Some((false, None))
        );
        assert_eq!(queue.len(), 4, "kept when it does not settle");
        assert_eq!(
            queue.remove_if(&0, |value| *value == 0),
            Some((true, Some(0)))
        );
        assert_eq!(queue.remove_if(&2, |_| true), Some((true, Some(20))));
        assert_eq!(queue.remove_if(&2, |_| true), None, "a hole is no entry");
        let left: Vec<(u64, u64)> = queue.iter().map(|(k, v)| (k, *v)).collect();
        assert_eq!(left, vec![(1, 10), (3, 30)]);
    }

    /// Against a `BTreeMap`, with removals in order, in reverse and scattered, and
    /// the holes they leave kept within bounds.
    #[test]
    fn behaves_as_an_ordered_map_and_stays_bounded() {
        let mut queue = InflightQueue::default();
        let mut model = BTreeMap::new();
        let mut next = 0u64;
        for round in 0..50u64 {
            for _ in 0..40 {
                assert_eq!(queue.push(next * 10), next);
                model.insert(next, next * 10);
                next += 1;
            }
            // Keep the oldest one in flight for good: holes pile up behind it.
            let keys: Vec<u64> = model.keys().copied().skip(1).collect();
            for (i, key) in keys.iter().enumerate() {
                let take = match round % 3 {
                    0 => true,
                    1 => i % 2 == 0,
                    _ => (key * 7 + round) % 5 < 3,
                };
                if take {
                    assert_eq!(queue.remove(key), model.remove(key));
                    assert_eq!(queue.remove(key), None);
                }
            }
            assert_eq!(queue.len(), model.len());
            assert!(queue.entries.len() <= 2 * queue.len() + SLACK + 1);
            let listed: Vec<(u64, u64)> = queue.iter().map(|(k, v)| (k, *v)).collect();
            let expected: Vec<(u64, u64)> = model.iter().map(|(k, v)| (*k, *v)).collect();
            assert_eq!(listed, expected);
            for (key, value) in &model {
                assert_eq!(queue.get(key), Some(value));
            }
            if let Some(value) = queue.get_mut(&0) {
                *value += 1;
                *model.get_mut(&0).unwrap() += 1;
            }
        }
        let keys: Vec<u64> = model.keys().copied().collect();
        for key in keys.iter().rev() {
            assert_eq!(queue.remove(key), model.remove(key));
        }
        assert!(queue.is_empty());
        assert!(queue.entries.is_empty(), "no holes are left behind");
    }
}
