//! The replicated state machine's data and its rules, with no I/O: what every node agrees
//! on through consensus. openraft applies committed log entries here in log order on
//! every node, so every node computes the same state; `Effect`s tell the local broker
//! what changed (socket-free tests drive this directly).
//!
//! - `routes`: for each subscription filter (a `$share/GROUP/` filter kept whole), the
//!   nodes with at least one local subscriber. A node replaces its own entries, never
//!   another's.
//! - `retained`: the retained message of each topic, as the store's encoding (base64 in
//!   the snapshot's JSON). Applied on every node, the publisher's too, so all nodes end
//!   with the value of the last entry in log order.
//! - `owners`: which node owns each session, with a fencing epoch that grows with every
//!   change of owner: a node acts on a session only while the epoch it claimed is the
//!   current one.

use std::collections::{BTreeMap, BTreeSet};

use openraft::{BasicNode, LogId, StoredMembership};
use serde::{Deserialize, Serialize};

use super::config::NodeId;

/// A change proposed through consensus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// `node` now has local subscribers for `add` and none left for `remove`.
    Routes {
        node: NodeId,
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// `node`'s complete set of filters (sent when it starts, replacing what the
    /// cluster remembered of it).
    ReplaceRoutes { node: NodeId, filters: Vec<String> },
    /// The routes of `node`, unreachable for the link timeout, dropped by the node that
    /// adopted its sessions or noticed it first (`super::adoption`): nothing is kept
    /// waiting for a node that is gone. `node` proposes its own routes again when it
    /// applies this (back, or only cut off from the proposer for a while).
    DropRoutes { node: NodeId },
    /// A retained message (`message`: the store's encoding, base64) or its removal.
    Retain {
        topic: String,
        message: Option<String>,
    },
    /// `node` takes the session of `client_id`.
    Claim { client_id: String, node: NodeId },
    /// `node` gives up the session of `client_id` if it still owns it with `epoch`.
    Release {
        client_id: String,
        node: NodeId,
        epoch: u64,
    },
    /// `backup` holds (`in_sync`) or no longer holds an up-to-date copy of `origin`'s
    /// persistent sessions (`super::replication`).
    ReplicaSync {
        origin: NodeId,
        backup: NodeId,
        in_sync: bool,
    },
    /// `node` adopts the sessions of the unreachable `origin`, each only if `origin`
    /// still owns it with the epoch given (`super::adoption`): a session claimed or
    /// adopted meanwhile is left alone, so of two nodes racing, one wins each session.
    Adopt {
        origin: NodeId,
        node: NodeId,
        sessions: Vec<(String, u64)>,
    },
    /// Several commands in one log entry, applied in order (the result is the last
    /// one's).
    Batch(Vec<Command>),
}

/// The state machine's answer to a command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// For `Claim`: the new fencing epoch and the previous owner (if another node).
    pub epoch: u64,
    pub previous_owner: Option<NodeId>,
    /// The log index the command was applied at.
    pub log_index: u64,
    /// For `Adopt`: the sessions adopted, with their new epochs.
    #[serde(default)]
    pub adopted: Vec<(String, u64)>,
}

/// The owner of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub node: NodeId,
    pub epoch: u64,
}

/// What an applied command changed, for the local broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The nodes subscribed to `filter` changed.
    RouteChanged { filter: String },
    /// The retained message of `topic` is now this (store encoding) or gone.
    Retained {
        topic: String,
        message: Option<Vec<u8>>,
    },
    /// `client_id`'s session now belongs to `owner`.
    Owner { client_id: String, owner: Owner },
    /// The membership changed (the link must know every member).
    MembersChanged,
    /// `node`'s routes were dropped (`Command::DropRoutes`).
    RoutesDropped { node: NodeId },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, BasicNode>,
    pub routes: BTreeMap<String, BTreeSet<NodeId>>,
    pub retained: BTreeMap<String, String>,
    pub owners: BTreeMap<String, Owner>,
    /// The last fencing epoch handed out.
    pub epoch: u64,
    /// For each origin node, its backups that are out of sync (a failover does not read
    /// them); every other backup is in sync.
    #[serde(default)]
    pub out_of_sync: BTreeMap<NodeId, BTreeSet<NodeId>>,
}

impl ClusterState {
    /// Applies one command, appending what changed to `effects`.
    pub fn apply(&mut self, command: &Command, effects: &mut Vec<Effect>) -> CommandResult {
        match command {
            Command::Batch(commands) => commands
                .iter()
                .map(|command| self.apply(command, effects))
                .last()
                .unwrap_or_default(),
            Command::Routes { node, add, remove } => {
                for filter in add {
                    if self.routes.entry(filter.clone()).or_default().insert(*node) {
                        effects.push(Effect::RouteChanged {
                            filter: filter.clone(),
                        });
                    }
                }
                for filter in remove {
                    self.remove_route(filter, *node, effects);
                }
                CommandResult::default()
            }
            Command::ReplaceRoutes { node, filters } => {
                let wanted: BTreeSet<&String> = filters.iter().collect();
                let stale: Vec<String> = self
                    .routes
                    .iter()
                    .filter(|(filter, nodes)| nodes.contains(node) && !wanted.contains(filter))
                    .map(|(filter, _)| filter.clone())
                    .collect();
                for filter in stale {
                    self.remove_route(&filter, *node, effects);
                }
                for filter in filters {
                    if self.routes.entry(filter.clone()).or_default().insert(*node) {
                        effects.push(Effect::RouteChanged {
                            filter: filter.clone(),
                        });
                    }
                }
                CommandResult::default()
            }
            Command::DropRoutes { node } => {
                let filters: Vec<String> = self
                    .routes
                    .iter()
                    .filter(|(_, nodes)| nodes.contains(node))
                    .map(|(filter, _)| filter.clone())
                    .collect();
                for filter in filters {
                    self.remove_route(&filter, *node, effects);
                }
                effects.push(Effect::RoutesDropped { node: *node });
                CommandResult::default()
            }
            Command::Retain { topic, message } => {
                let decoded = match message {
                    Some(encoded) => match decode_base64(encoded) {
                        Some(bytes) => {
                            self.retained.insert(topic.clone(), encoded.clone());
                            Some(bytes)
                        }
                        // A proposer never sends this; refuse it identically everywhere.
                        None => return CommandResult::default(),
                    },
                    None => {
                        self.retained.remove(topic);
                        None
                    }
                };
                effects.push(Effect::Retained {
                    topic: topic.clone(),
                    message: decoded,
                });
                CommandResult::default()
            }
            Command::Claim { client_id, node } => {
                let previous = self.owners.get(client_id).copied();
                self.epoch += 1;
                let owner = Owner {
                    node: *node,
                    epoch: self.epoch,
                };
                self.owners.insert(client_id.clone(), owner);
                effects.push(Effect::Owner {
                    client_id: client_id.clone(),
                    owner,
                });
                CommandResult {
                    epoch: owner.epoch,
                    previous_owner: previous.map(|p| p.node).filter(|p| p != node),
                    ..CommandResult::default()
                }
            }
            Command::Adopt {
                origin,
                node,
                sessions,
            } => {
                let mut adopted = Vec::new();
                for (client_id, epoch) in sessions {
                    let Some(owner) = self.owners.get_mut(client_id) else {
                        continue;
                    };
                    if owner.node != *origin || owner.epoch != *epoch || origin == node {
                        continue;
                    }
                    self.epoch += 1;
                    *owner = Owner {
                        node: *node,
                        epoch: self.epoch,
                    };
                    effects.push(Effect::Owner {
                        client_id: client_id.clone(),
                        owner: *owner,
                    });
                    adopted.push((client_id.clone(), self.epoch));
                }
                CommandResult {
                    adopted,
                    ..CommandResult::default()
                }
            }
            Command::Release {
                client_id,
                node,
                epoch,
            } => {
                if self
                    .owners
                    .get(client_id)
                    .is_some_and(|owner| owner.node == *node && owner.epoch == *epoch)
                {
                    self.owners.remove(client_id);
                }
                CommandResult::default()
            }
            Command::ReplicaSync {
                origin,
                backup,
                in_sync,
            } => {
                let out = self.out_of_sync.entry(*origin).or_default();
                if *in_sync {
                    out.remove(backup);
                    if out.is_empty() {
                        self.out_of_sync.remove(origin);
                    }
                } else {
                    out.insert(*backup);
                }
                CommandResult::default()
            }
        }
    }

    /// Whether `backup` holds an up-to-date copy of `origin`'s sessions.
    pub fn replica_in_sync(&self, origin: NodeId, backup: NodeId) -> bool {
        !self
            .out_of_sync
            .get(&origin)
            .is_some_and(|out| out.contains(&backup))
    }

    fn remove_route(&mut self, filter: &str, node: NodeId, effects: &mut Vec<Effect>) {
        if let Some(nodes) = self.routes.get_mut(filter) {
            if nodes.remove(&node) {
                if nodes.is_empty() {
                    self.routes.remove(filter);
                }
                effects.push(Effect::RouteChanged {
                    filter: filter.to_string(),
                });
            }
        }
    }

    /// The nodes with subscribers to `filter`.
    pub fn route_nodes(&self, filter: &str) -> impl Iterator<Item = NodeId> + '_ {
        self.routes.get(filter).into_iter().flatten().copied()
    }
}

pub fn encode_base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(state: &mut ClusterState, command: Command) -> (CommandResult, Vec<Effect>) {
        let mut effects = Vec::new();
        let result = state.apply(&command, &mut effects);
        (result, effects)
    }

    #[test]
    fn routes_are_per_node_and_a_filter_goes_with_its_last_node() {
        let mut state = ClusterState::default();
        let add = |node, filter: &str| Command::Routes {
            node,
            add: vec![filter.into()],
            remove: vec![],
        };
        apply(&mut state, add(1, "a/#"));
        apply(&mut state, add(2, "a/#"));
        let (_, effects) = apply(&mut state, add(2, "a/#"));
        assert!(effects.is_empty(), "adding twice changes nothing");
        assert_eq!(state.route_nodes("a/#").collect::<Vec<_>>(), vec![1, 2]);
        apply(
            &mut state,
            Command::Routes {
                node: 1,
                add: vec![],
                remove: vec!["a/#".into()],
            },
        );
        assert_eq!(state.route_nodes("a/#").collect::<Vec<_>>(), vec![2]);
        apply(
            &mut state,
            Command::ReplaceRoutes {
                node: 2,
                filters: vec!["b".into()],
            },
        );
        assert!(!state.routes.contains_key("a/#"));
        assert_eq!(state.route_nodes("b").collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn every_claim_raises_the_epoch_and_a_stale_release_is_ignored() {
        let mut state = ClusterState::default();
        let claim = |node| Command::Claim {
            client_id: "c".into(),
            node,
        };
        let (first, _) = apply(&mut state, claim(1));
        assert_eq!(first.previous_owner, None);
        let (second, effects) = apply(&mut state, claim(2));
        assert!(second.epoch > first.epoch);
        assert_eq!(second.previous_owner, Some(1));
        assert_eq!(
            effects,
            vec![Effect::Owner {
                client_id: "c".into(),
                owner: Owner {
                    node: 2,
                    epoch: second.epoch
                }
            }]
        );
        // Node 1 releasing with its old epoch must not drop node 2's ownership.
        apply(
            &mut state,
            Command::Release {
                client_id: "c".into(),
                node: 1,
                epoch: first.epoch,
            },
        );
        assert_eq!(state.owners["c"].node, 2);
        apply(
            &mut state,
            Command::Release {
                client_id: "c".into(),
                node: 2,
                epoch: second.epoch,
            },
        );
        assert!(state.owners.is_empty());
    }

    #[test]
    fn the_last_retained_entry_in_log_order_wins_on_every_node() {
        let mut a = ClusterState::default();
        let mut b = ClusterState::default();
        let set = |payload: &[u8]| Command::Retain {
            topic: "t".into(),
            message: Some(encode_base64(payload)),
        };
        for state in [&mut a, &mut b] {
            apply(state, set(b"one"));
            apply(state, set(b"two"));
        }
        assert_eq!(a, b);
        assert_eq!(decode_base64(&a.retained["t"]).unwrap(), b"two");
        let (_, effects) = apply(
            &mut a,
            Command::Retain {
                topic: "t".into(),
                message: None,
            },
        );
        assert!(a.retained.is_empty());
        assert_eq!(
            effects,
            vec![Effect::Retained {
                topic: "t".into(),
                message: None
            }]
        );
    }
}
