//! This node's subscription filters as the cluster should know them, what else waits
//! for the route proposer (retained messages, released sessions, dropped nodes), and the
//! route entries the proposer builds from them (`proposer.rs`). Kept apart from the
//! proposer's I/O so that the order of its entries is tested without a consensus group.
//!
//! The rule this module keeps: an entry is built from the book when the proposer takes
//! it, never earlier, and the proposer has one entry in flight at a time. So a complete
//! replacement (`ReplaceRoutes`, alone or in an adopter's batch) holds every filter added
//! before it was taken, and a filter added later is proposed after it: a replacement
//! committed late can never remove a subscription's route.

use std::collections::{BTreeSet, HashMap, VecDeque};

use tokio::sync::oneshot;

use super::super::config::NodeId;
use super::super::retained::PendingRetained;
use super::super::state::Command;

/// Whoever waits for an unreachable node's routes to be dropped: told whether the entry
/// committed.
pub(super) type DropDone = oneshot::Sender<bool>;

#[derive(Default)]
pub(super) struct FilterBook {
    /// Local subscriptions per filter; a filter is in the cluster's routes while > 0.
    counts: HashMap<String, usize>,
    /// Filters whose presence changed since the last proposal.
    dirty: BTreeSet<String>,
    /// The full set must be proposed (at start, or after a replacement failed).
    replace: bool,
    /// Retained changes waiting for the proposer (`super::retained`).
    pub(super) retained: VecDeque<PendingRetained>,
    /// Sessions that ended here, whose ownership is to be released.
    pub(super) released: VecDeque<String>,
    /// Unreachable nodes whose routes are to be dropped together with this node's full
    /// set (`ClusterNode::drop_routes_of`), each with whoever waits for the commit.
    drops: VecDeque<(NodeId, DropDone)>,
}

impl FilterBook {
    /// The book of a node starting with these filters (and their subscription counts):
    /// its first entry replaces whatever the cluster remembered of the node.
    pub(super) fn starting_with(filters: impl IntoIterator<Item = (String, usize)>) -> Self {
        FilterBook {
            counts: filters
                .into_iter()
                .filter(|(_, count)| *count > 0)
                .collect(),
            replace: true,
            ..FilterBook::default()
        }
    }

    /// One more local subscription to `filter`; true when the filter is new here (the
    /// proposer has something to do).
    pub(super) fn add(&mut self, filter: &str) -> bool {
        if let Some(count) = self.counts.get_mut(filter) {
            *count += 1;
            return false;
        }
        self.counts.insert(filter.to_string(), 1);
        self.dirty.insert(filter.to_string());
        true
    }

    /// One local subscription to `filter` fewer; true when it was the last.
    pub(super) fn remove(&mut self, filter: &str) -> bool {
        let Some(count) = self.counts.get_mut(filter) else {
            return false;
        };
        *count -= 1;
        let gone = *count == 0;
        if gone {
            self.counts.remove(filter);
            self.dirty.insert(filter.to_string());
        }
        gone
    }

    /// The next route entry replaces this node's whole set.
    pub(super) fn replace_all(&mut self) {
        self.replace = true;
    }

    /// Queues the dropping of `origin`'s routes; `done` learns whether it committed.
    pub(super) fn request_drop(&mut self, origin: NodeId, done: DropDone) {
        self.drops.push_back((origin, done));
    }

    /// The next unreachable node's drop, as the entry to propose:
    /// `Batch[ReplaceRoutes{me, <every filter now>}, DropRoutes{origin}]`, so that at no
    /// point of the log do the filters of the sessions adopted from `origin` lack a node.
    /// It includes every pending change, so nothing is left dirty.
    pub(super) fn take_drop(&mut self, me: NodeId) -> Option<(NodeId, DropDone, Command)> {
        let (origin, done) = self.drops.pop_front()?;
        self.replace = false;
        self.dirty.clear();
        let command = Command::Batch(vec![
            Command::ReplaceRoutes {
                node: me,
                filters: self.filters(),
            },
            Command::DropRoutes { node: origin },
        ]);
        Some((origin, done, command))
    }

    /// A drop's entry did not commit: what it cleared goes again, whole. (Its waiter is
    /// told and asks again if it still wants the drop.)
    pub(super) fn drop_failed(&mut self) {
        self.replace = true;
    }

    /// The next change of this node's own routes: the whole set if a replacement is
    /// due, else what was added and removed since the last entry.
    pub(super) fn take_route_change(&mut self, me: NodeId) -> Option<Command> {
        if self.replace {
            self.replace = false;
            self.dirty.clear();
            return Some(Command::ReplaceRoutes {
                node: me,
                filters: self.filters(),
            });
        }
        if self.dirty.is_empty() {
            return None;
        }
        let dirty = std::mem::take(&mut self.dirty);
        let (add, remove): (Vec<String>, Vec<String>) = dirty
            .into_iter()
            .partition(|filter| self.counts.contains_key(filter));
        Some(Command::Routes {
            node: me,
            add,
            remove,
        })
    }

    /// `command` (from `take_route_change`) did not commit: its filters are proposed
    /// again, as they stand then.
    pub(super) fn route_change_failed(&mut self, command: Command) {
        match command {
            Command::ReplaceRoutes { .. } => self.replace = true,
            Command::Routes { add, remove, .. } => self.dirty.extend(add.into_iter().chain(remove)),
            _ => {}
        }
    }

    fn filters(&self) -> Vec<String> {
        let mut filters: Vec<String> = self.counts.keys().cloned().collect();
        filters.sort_unstable();
        filters
    }
}

#[cfg(test)]
mod tests {
    //! The proposer's entries applied to the real state machine in the order the
    //! proposer commits them, with other changes arriving while an entry is in flight
    //! and proposals failing.

    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::cluster::state::ClusterState;

    const ME: NodeId = 1;
    const DEAD: NodeId = 2;

    /// The proposer's order: a drop before the node's own changes (`propose_loop`).
    fn take(book: &mut FilterBook) -> Option<(Command, Option<DropDone>)> {
        if let Some((_, done, command)) = book.take_drop(ME) {
            return Some((command, Some(done)));
        }
        book.take_route_change(ME).map(|command| (command, None))
    }

    fn commit(state: &mut ClusterState, command: &Command) {
        state.apply(command, &mut Vec::new());
    }

    fn fail(book: &mut FilterBook, command: Command, done: Option<DropDone>) {
        match done {
            Some(done) => {
                book.drop_failed();
                let _ = done.send(false);
            }
            None => book.route_change_failed(command),
        }
    }

    fn drain(book: &mut FilterBook, state: &mut ClusterState) {
        while let Some((command, done)) = take(book) {
            commit(state, &command);
            if let Some(done) = done {
                let _ = done.send(true);
            }
        }
    }

    fn filters_of(state: &ClusterState, node: NodeId) -> BTreeSet<String> {
        state
            .routes
            .iter()
            .filter(|(_, nodes)| nodes.contains(&node))
            .map(|(filter, _)| filter.clone())
            .collect()
    }

    fn wanted(book: &FilterBook) -> BTreeSet<String> {
        book.counts.keys().cloned().collect()
    }

    /// A cluster state in which this node's start-up set committed and the dead node
    /// had routes of its own, one of them shared with this node.
    fn started(filters: &[&str]) -> (FilterBook, ClusterState) {
        let mut book = FilterBook::starting_with(filters.iter().map(|f| (f.to_string(), 1)));
        let mut state = ClusterState::default();
        commit(
            &mut state,
            &Command::ReplaceRoutes {
                node: DEAD,
                filters: vec!["dead/only".into(), "shared".into()],
            },
        );
        drain(&mut book, &mut state);
        (book, state)
    }

    #[test]
    fn a_drop_holds_every_subscription_made_before_it_is_taken() {
        // The sequence that once lost a route: a subscription's addition in flight, an
        // adoption asking for the dead node's routes to go, another subscription, the
        // addition committing, then the adoption's entry. Built when it was asked for,
        // the adoption's set lacked the second subscription and removed it for good.
        let (mut book, mut state) = started(&["a"]);
        assert!(book.add("b"));
        let (addition, _) = take(&mut book).expect("the addition is proposed");
        let (done, committed) = oneshot::channel();
        book.request_drop(DEAD, done);
        assert!(book.add("c"));
        commit(&mut state, &addition);
        let (drop, done) = take(&mut book).expect("the drop is proposed");
        commit(&mut state, &drop);
        done.expect("a drop has a waiter").send(true).ok();

        assert_eq!(
            filters_of(&state, ME),
            BTreeSet::from(["a".to_string(), "b".to_string(), "c".to_string()])
        );
        assert!(filters_of(&state, DEAD).is_empty());
        assert_eq!(committed.blocking_recv(), Ok(true));
        assert!(take(&mut book).is_none(), "nothing left to propose");
    }

    #[test]
    fn a_subscription_made_while_a_drop_is_in_flight_is_proposed_after_it() {
        let (mut book, mut state) = started(&["a"]);
        let (done, _committed) = oneshot::channel();
        book.request_drop(DEAD, done);
        let (drop, _) = take(&mut book).expect("the drop is proposed");
        assert!(book.add("c"));
        assert!(book.remove("a"));
        commit(&mut state, &drop);
        assert!(
            filters_of(&state, ME).contains("a"),
            "the drop holds the set as it was taken"
        );
        drain(&mut book, &mut state);
        assert_eq!(filters_of(&state, ME), BTreeSet::from(["c".to_string()]));
        assert!(filters_of(&state, DEAD).is_empty());
    }

    #[test]
    fn a_failed_drop_makes_the_next_change_a_complete_replacement() {
        let (mut book, mut state) = started(&["a", "x"]);
        assert!(book.add("y"));
        let (done, committed) = oneshot::channel();
        book.request_drop(DEAD, done);
        let (drop, done) = take(&mut book).expect("the drop is proposed");
        assert!(book.remove("x"));
        fail(&mut book, drop, done);
        assert_eq!(committed.blocking_recv(), Ok(false));
        let replacement = book.take_route_change(ME);
        assert_eq!(
            replacement,
            Some(Command::ReplaceRoutes {
                node: ME,
                filters: vec!["a".into(), "y".into()],
            }),
            "expected a complete replacement"
        );
        if let Some(replacement) = replacement {
            commit(&mut state, &replacement);
        }
        assert!(take(&mut book).is_none(), "nothing left to propose");
        // The replacement committed; the dead node's routes wait for the adopter's
        // next request.
        commit(&mut state, &Command::DropRoutes { node: DEAD });
        assert_eq!(filters_of(&state, ME), wanted(&book));
    }

    #[test]
    fn only_a_filters_first_subscription_and_its_last_unsubscription_are_changes() {
        let mut book = FilterBook::default();
        assert!(book.add("a"));
        assert!(!book.add("a"));
        assert!(!book.remove("a"));
        assert!(book.remove("a"));
        assert!(
            !book.remove("a"),
            "removing what is not there changes nothing"
        );
        assert_eq!(
            book.take_route_change(ME),
            Some(Command::Routes {
                node: ME,
                add: vec![],
                remove: vec!["a".into()],
            })
        );
    }

    #[derive(Debug, Clone)]
    enum Step {
        Subscribe(u8),
        Unsubscribe(u8),
        /// An adopter asks for the dead node's routes to go.
        RequestDrop,
        /// The proposer takes its next entry (if none is in flight).
        Take,
        /// The entry in flight commits, or fails.
        Finish {
            committed: bool,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0u8..5).prop_map(Step::Subscribe),
            2 => (0u8..5).prop_map(Step::Unsubscribe),
            1 => Just(Step::RequestDrop),
            3 => Just(Step::Take),
            3 => any::<bool>().prop_map(|committed| Step::Finish { committed }),
        ]
    }

    proptest! {
        /// However changes, drops, commits and failures interleave, once the proposer
        /// has nothing left the cluster's routes for this node are exactly its filters,
        /// and the dead node's are gone once a drop committed.
        #[test]
        fn the_committed_routes_end_as_the_book_whatever_the_interleaving(
            steps in proptest::collection::vec(step(), 1..60)
        ) {
            let (mut book, mut state) = started(&["f0"]);
            let mut in_flight: Option<(Command, Option<DropDone>)> = None;
            let mut waiters = Vec::new();
            for step in steps {
                match step {
                    Step::Subscribe(n) => { book.add(&format!("f{n}")); }
                    Step::Unsubscribe(n) => { book.remove(&format!("f{n}")); }
                    Step::RequestDrop => {
                        let (done, committed) = oneshot::channel();
                        book.request_drop(DEAD, done);
                        waiters.push(committed);
                    }
                    Step::Take => {
                        if in_flight.is_none() {
                            in_flight = take(&mut book);
                        }
                    }
                    Step::Finish { committed } => {
                        if let Some((command, done)) = in_flight.take() {
                            if committed {
                                commit(&mut state, &command);
                                if let Some(done) = done {
                                    let _ = done.send(true);
                                }
                            } else {
                                fail(&mut book, command, done);
                            }
                        }
                    }
                }
            }
            if let Some((command, done)) = in_flight.take() {
                commit(&mut state, &command);
                if let Some(done) = done {
                    let _ = done.send(true);
                }
            }
            drain(&mut book, &mut state);
            prop_assert_eq!(filters_of(&state, ME), wanted(&book));
            let answers: Vec<bool> = waiters
                .into_iter()
                .map(|mut committed| committed.try_recv().unwrap_or(false))
                .collect();
            if answers.contains(&true) {
                prop_assert!(filters_of(&state, DEAD).is_empty());
            }
        }
    }
}
