//! A dead node's sessions adopted by its backup (ARCHITECTURE.md, "A dead node").
//!
//! Without this, a persistent session of a node that died moves only when its client
//! reconnects elsewhere (failover from a backup, `ownership`); a client that never comes
//! back left its delayed will unpublished and its session unexpired. Here, once a voter
//! has been unreachable for `cluster.link_timeout_ms`, its *adopter* (the first of its
//! in-sync backups this node can reach, `adopter_of`) looks up in its copy the sessions
//! the state says that node still owns and commits `Command::Adopt`, which moves each of
//! them still owned with the epoch read to the adopter with a new epoch. Of two nodes racing
//! (two views of who is reachable, or a client reconnecting elsewhere at the same time)
//! the epoch lets one win each session. The adopter then reads each adopted session
//! from its copy (that one alone) and imports it as a hand-over (its store, so its own backups get it: the replication factor is back),
//! which arms the session's expiry and delayed will from the stored times (a will of a
//! client that was connected when its node died counts from now, delay 0 publishes it
//! now), and drops its copy. A node that comes back applies the adoption like any claim:
//! its copies are fenced and deleted (`ownership::sweep_handovers`), and the wills its
//! restart found due are held until it caught up and dropped for adopted sessions
//! (`release_held_wills`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::broker::HandedOver;
use crate::message::Message;
use crate::storage::WallClock;

use super::config::NodeId;
use super::node::{lock, ClusterNode, PROPOSE_TIMEOUT};
use super::ownership::Importing;
use super::state::{ClusterState, Command};

/// How often the adoption task looks at the other nodes.
const ADOPTION_TICK: Duration = Duration::from_millis(200);
/// Sessions adopted per log entry.
const ADOPTED_PER_ENTRY: usize = 500;

/// Which node adopts `origin`'s sessions: the first of its backups that the applied
/// state counts in sync and that `reachable` (this node's view) says is up; `None` when
/// it has no in-sync backup.
pub fn adopter_of(
    state: &ClusterState,
    origin: NodeId,
    factor: usize,
    reachable: impl Fn(NodeId) -> bool,
) -> Option<NodeId> {
    super::replication::backups_of(origin, state.membership.membership().voter_ids(), factor)
        .into_iter()
        .filter(|backup| state.replica_in_sync(origin, *backup))
        .find(|backup| reachable(*backup))
}

/// The client ids of the sessions `origin` owns in `state`.
pub fn owned_by(state: &ClusterState, origin: NodeId) -> Vec<String> {
    state
        .owners
        .iter()
        .filter(|(_, owner)| owner.node == origin)
        .map(|(client_id, _)| client_id.clone())
        .collect()
}

/// The sessions of `copies` (client ids) that `origin` still owns in `state`, with
/// their epochs: what an `Adopt` may move.
pub fn adoptable<'a>(
    state: &ClusterState,
    origin: NodeId,
    copies: impl IntoIterator<Item = &'a str>,
) -> Vec<(String, u64)> {
    copies
        .into_iter()
        .filter_map(|client_id| {
            state
                .owners
                .get(client_id)
                .filter(|owner| owner.node == origin)
                .map(|owner| (client_id.to_string(), owner.epoch))
        })
        .collect()
}

/// Watches the other voters; adopts the sessions of each one that stayed unreachable for
/// `after`, where this node is its adopter. Ends with the node.
pub(super) async fn run(node: Weak<ClusterNode>, after: Duration) {
    let mut down_since: HashMap<NodeId, Instant> = HashMap::new();
    // Nodes whose sessions were adopted during their current absence.
    let mut adopted: HashSet<NodeId> = HashSet::new();
    loop {
        tokio::time::sleep(ADOPTION_TICK).await;
        let Some(node) = node.upgrade() else {
            return;
        };
        let me = node.node_id();
        let voters: Vec<NodeId> = node.with_state(|state| {
            state
                .membership
                .membership()
                .voter_ids()
                .filter(|id| *id != me)
                .collect()
        });
        let now = Instant::now();
        for origin in voters {
            if node.reachable(origin) {
                down_since.remove(&origin);
                adopted.remove(&origin);
                continue;
            }
            let since = *down_since.entry(origin).or_insert(now);
            if now.duration_since(since) < after || adopted.contains(&origin) {
                continue;
            }
            let adopter = node.with_state(|state| {
                adopter_of(state, origin, node.replication_factor, |id| {
                    id == me || node.reachable(id)
                })
            });
            if !node.has_leader() {
                continue;
            }
            let done = match adopter {
                Some(adopter) if adopter == me => match node.adopt(origin).await {
                    Ok(count) => {
                        if count > 0 {
                            tracing::warn!(
                                origin,
                                sessions = count,
                                "node unreachable: its sessions adopted here from this node's copy"
                            );
                        }
                        node.drop_routes_of(origin).await
                    }
                    Err(error) => {
                        tracing::info!(origin, %error, "adopting an unreachable node's sessions failed; retrying");
                        false
                    }
                },
                // Its adopter drops its routes once the sessions are here.
                Some(_) => continue,
                // Nobody holds a copy (no replication, or none in sync): what its
                // sessions held is unavailable until it returns; its routes go, so that
                // publishers are not kept waiting for it. The first reachable voter in
                // id order proposes it (a second proposal changes nothing).
                None => {
                    let first = node.with_state(|state| {
                        state
                            .membership
                            .membership()
                            .voter_ids()
                            .find(|id| *id == me || (*id != origin && node.reachable(*id)))
                    });
                    if first != Some(me) {
                        continue;
                    }
                    node.drop_routes_of(origin).await
                }
            };
            if done {
                adopted.insert(origin);
            }
        }
    }
}

/// Once this node caught up with the cluster's log after it started, routes the
/// forwards held meanwhile (`forward_ack`, "restart") and publishes the wills its
/// restore held back for the sessions it still owns (`Broker::hold_wills`).
pub(super) async fn release_wills_when_caught_up(node: Weak<ClusterNode>) {
    loop {
        let Some(current) = node.upgrade() else {
            return;
        };
        // An empty entry: once it is applied here, so is everything committed before.
        let caught_up = match current.propose(Command::Batch(Vec::new())).await {
            Ok(result) => current.wait_applied(result.log_index).await,
            Err(_) => false,
        };
        if caught_up {
            current.release_held_forwards().await;
            let Some(broker) = current.broker.upgrade() else {
                return;
            };
            let me = current.node_id();
            let (published, dropped) = broker.release_held_wills(|client_id| {
                current
                    .owner(client_id)
                    .is_none_or(|owner| owner.node == me)
            });
            if published + dropped > 0 {
                tracing::info!(published, dropped, "wills held at start released");
            }
            return;
        }
        drop(current);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl ClusterNode {
    /// Whether the link to `peer` is up.
    fn reachable(&self, peer: NodeId) -> bool {
        self.links()
            .peer(peer)
            .is_some_and(|peer| peer.is_connected())
    }

    /// Waits until this node applied the log up to `index`; false after
    /// `PROPOSE_TIMEOUT`.
    pub(super) async fn wait_applied(&self, index: u64) -> bool {
        self.raft
            .wait(Some(PROPOSE_TIMEOUT))
            .metrics(
                |metrics| metrics.last_applied.map_or(0, |id| id.index) >= index,
                "entry applied",
            )
            .await
            .is_ok()
    }

    /// Adopts the sessions of `origin` that this node holds a copy of and `origin` still
    /// owns; how many were adopted. Only the records of the sessions `origin` owns are
    /// looked up in the copy before the commit, and each adopted session is read whole
    /// once, after it (the cost follows the adopted sessions, one in memory at a time);
    /// nothing leaves the copy before its session is adopted, so an attempt that does
    /// not commit loses nothing for the next one.
    pub(super) async fn adopt(&self, origin: NodeId) -> Result<usize, String> {
        let replicas = self
            .replicas
            .clone()
            .ok_or("this node keeps no copies (replication_factor = 1)")?;
        let broker = self.broker.upgrade().ok_or("the broker stopped")?;
        let owned = self.with_state(|state| owned_by(state, origin));
        if owned.is_empty() {
            return Ok(0);
        }
        let held = replicas.holding(origin, owned).await?;
        let candidates =
            self.with_state(|state| adoptable(state, origin, held.iter().map(String::as_str)));
        if candidates.is_empty() {
            return Ok(0);
        }
        // Claims of these sessions applied here meanwhile wait until they are imported
        // (`take_handover` answers "not yet"), then they move on (`pass_on`).
        let ids: Vec<String> = candidates.iter().map(|(id, _)| id.clone()).collect();
        let _importing: Vec<Importing<'_>> =
            ids.iter().map(|id| Importing::new(self, id)).collect();
        let _adopting = Adopting::new(self, &ids);
        let mut count = 0;
        let mut pending: Option<Vec<Arc<Message>>> = None;
        for chunk in candidates.chunks(ADOPTED_PER_ENTRY) {
            let command = Command::Adopt {
                origin,
                node: self.me,
                sessions: chunk.to_vec(),
            };
            let result = self
                .propose(command)
                .await
                .map_err(|error| error.to_string())?;
            if !self.wait_applied(result.log_index).await {
                return Err("the adoption was not applied here in time".into());
            }
            for (client_id, epoch) in result.adopted {
                let Some(session) = replicas.session(origin, &client_id).await else {
                    tracing::warn!(
                        client_id,
                        origin,
                        "an adopted session could not be read from this node's copy"
                    );
                    continue;
                };
                if session.record.is_expired(WallClock::now().unix_millis()) {
                    // It expired in the copy (its node died after its client left, and
                    // its expiry ran out before the adoption): adopted only to publish
                    // the will it owes, then taken out of the copy and released.
                    if let Some(will) = session.record.will {
                        broker.publish_will(will);
                    }
                    replicas.forget(origin, &client_id).await;
                    self.stats.adopted.fetch_add(1, Ordering::Relaxed);
                    count += 1;
                    self.release(client_id).await;
                    continue;
                }
                // Copies of the QoS 2 messages it completed lately are dropped too
                // (`Replicas::recently_completed`).
                let handed = HandedOver {
                    session,
                    held: replicas.recently_completed(origin, &client_id),
                    from_copy: true,
                    unconfirmed: Vec::new(),
                };
                match broker.import_session(handed) {
                    Some(written) => {
                        if let Err(error) = written.await {
                            // The copy stays on this node (`replicas`), owned by nobody
                            // that serves it: logged for the operator.
                            tracing::warn!(client_id, %error, "an adopted session could not be stored");
                            continue;
                        }
                    }
                    None => continue,
                }
                // What was on its way to `origin` for this session is not in the copy:
                // fetched from every node once per adoption, queued per session.
                if pending.is_none() {
                    pending = Some(self.pending_everywhere(origin).await);
                }
                if let Some(messages) = &pending {
                    self.deliver_pending(&client_id, messages).await;
                }
                replicas.forget(origin, &client_id).await;
                self.stats.failovers.fetch_add(1, Ordering::Relaxed);
                self.stats.adopted.fetch_add(1, Ordering::Relaxed);
                count += 1;
                self.pass_on(&client_id, epoch);
            }
        }
        Ok(count)
    }
}

/// Marks sessions as being adopted here for as long as it lives: a CONNECT of one of
/// them on this node waits (`wait_while_adopting`), so that it resumes the adopted
/// session instead of starting one that the import would then find in its way.
struct Adopting<'a> {
    node: &'a ClusterNode,
    ids: &'a [String],
}

impl<'a> Adopting<'a> {
    fn new(node: &'a ClusterNode, ids: &'a [String]) -> Adopting<'a> {
        lock(&node.adopting).extend(ids.iter().cloned());
        Adopting { node, ids }
    }
}

impl Drop for Adopting<'_> {
    fn drop(&mut self) {
        let mut adopting = lock(&self.node.adopting);
        for id in self.ids {
            adopting.remove(id);
        }
    }
}

impl ClusterNode {
    /// Waits while `client_id`'s session is being adopted here (at most a few proposal
    /// timeouts: an adoption that takes longer lets the CONNECT go on).
    pub(super) async fn wait_while_adopting(&self, client_id: &str) {
        let deadline = Instant::now() + PROPOSE_TIMEOUT * 3;
        while lock(&self.adopting).contains(client_id) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Starts the adoption task and the release of held wills on a started node.
pub(super) fn start(node: &Arc<ClusterNode>, after: Duration) {
    tokio::spawn(release_wills_when_caught_up(Arc::downgrade(node)));
    tokio::spawn(run(Arc::downgrade(node), after));
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use openraft::{BasicNode, Membership, StoredMembership};

    use super::*;
    use crate::cluster::state::{Effect, Owner};

    fn three_nodes() -> ClusterState {
        let voters = BTreeSet::from([1, 2, 3]);
        let membership: Membership<NodeId, BasicNode> = Membership::new(vec![voters], None);
        ClusterState {
            membership: StoredMembership::new(None, membership),
            ..ClusterState::default()
        }
    }

    fn claim(state: &mut ClusterState, client_id: &str, node: NodeId) -> u64 {
        let command = Command::Claim {
            client_id: client_id.into(),
            node,
        };
        state.apply(&command, &mut Vec::new()).epoch
    }

    #[test]
    fn the_first_in_sync_reachable_backup_adopts() {
        let mut state = three_nodes();
        // Factor 2: node 1's backup is node 2, node 3's is node 1.
        assert_eq!(adopter_of(&state, 1, 2, |_| true), Some(2));
        assert_eq!(adopter_of(&state, 3, 2, |_| true), Some(1));
        // A backup out of sync holds no usable copy: nobody adopts.
        let out = Command::ReplicaSync {
            origin: 1,
            backup: 2,
            in_sync: false,
        };
        state.apply(&out, &mut Vec::new());
        assert_eq!(adopter_of(&state, 1, 2, |_| true), None);
        // Factor 3: node 1's backups are 2 and 3; with 2 out of sync, 3 adopts, and
        // with 2 in sync but unreachable from here, 3 too.
        assert_eq!(adopter_of(&state, 1, 3, |_| true), Some(3));
        let back = Command::ReplicaSync {
            origin: 1,
            backup: 2,
            in_sync: true,
        };
        state.apply(&back, &mut Vec::new());
        assert_eq!(adopter_of(&state, 1, 3, |id| id != 2), Some(3));
        assert_eq!(adopter_of(&state, 1, 3, |_| true), Some(2));
        // Factor 1: no backups, no adoption.
        assert_eq!(adopter_of(&state, 1, 1, |_| true), None);
    }

    #[test]
    fn only_sessions_the_dead_node_still_owns_are_adoptable() {
        let mut state = three_nodes();
        let a = claim(&mut state, "a", 1);
        claim(&mut state, "b", 1);
        claim(&mut state, "b", 3);
        let expired = claim(&mut state, "expired", 1);
        let copies = ["a", "b", "never-claimed", "expired"];
        assert_eq!(
            adoptable(&state, 1, copies),
            vec![("a".to_string(), a), ("expired".to_string(), expired)],
            "b moved to node 3; an unclaimed copy belongs to nobody"
        );
        assert_eq!(owned_by(&state, 1), ["a", "expired"]);
        assert_eq!(owned_by(&state, 3), ["b"]);
    }

    #[test]
    fn an_adoption_moves_each_session_once_and_a_second_one_is_refused_by_the_epoch() {
        let mut state = three_nodes();
        let a = claim(&mut state, "a", 1);
        let b = claim(&mut state, "b", 1);
        let sessions = vec![("a".to_string(), a), ("b".to_string(), b)];
        let adopt = |node| Command::Adopt {
            origin: 1,
            node,
            sessions: sessions.clone(),
        };
        let mut effects = Vec::new();
        let first = state.apply(&adopt(2), &mut effects);
        assert_eq!(first.adopted.len(), 2);
        assert!(first.adopted.iter().all(|(_, epoch)| *epoch > b));
        assert_eq!(state.owners["a"].node, 2);
        assert_eq!(
            effects[0],
            Effect::Owner {
                client_id: "a".into(),
                owner: Owner {
                    node: 2,
                    epoch: first.adopted[0].1
                }
            }
        );
        // A second adopter (another view of who is reachable) read the same epochs: it
        // gets nothing, and nothing changes.
        let before = state.clone();
        let mut effects = Vec::new();
        let second = state.apply(&adopt(3), &mut effects);
        assert!(second.adopted.is_empty());
        assert!(effects.is_empty());
        assert_eq!(state, before);
    }

    #[test]
    fn a_client_that_reconnected_first_keeps_its_session_where_it_is() {
        let mut state = three_nodes();
        let a = claim(&mut state, "a", 1);
        let b = claim(&mut state, "b", 1);
        // "a" reconnected to node 3 before the adoption committed.
        let moved = claim(&mut state, "a", 3);
        let adopt = Command::Adopt {
            origin: 1,
            node: 2,
            sessions: vec![("a".into(), a), ("b".into(), b)],
        };
        let result = state.apply(&adopt, &mut Vec::new());
        assert_eq!(
            result
                .adopted
                .iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(
            state.owners["a"],
            Owner {
                node: 3,
                epoch: moved
            }
        );
        // And a node cannot adopt from itself.
        let own = Command::Adopt {
            origin: 2,
            node: 2,
            sessions: vec![("b".into(), state.owners["b"].epoch)],
        };
        assert!(state.apply(&own, &mut Vec::new()).adopted.is_empty());
    }
}
