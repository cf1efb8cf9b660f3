//! Forwarding PUBLISHes to the nodes with matching subscribers, and the body of a
//! `FORWARD` frame.
//!
//! The publishing node looks the topic up in the cluster route table (a
//! `SubscriptionTrie` of node ids built from the replicated routes) and sends the message
//! at most once to each other node with a match, which fans it out locally. A shared
//! group is served by the publishing node when it has members of the group; otherwise
//! one node with members is picked round robin and named in the frame, so each message
//! reaches one member cluster-wide.
//!
//! Body: `u8` count of shared group names, each as `u16` BE length + UTF-8, the
//! message's cluster id (`ClusterMessageId`: node and sequence, `u64` BE each), then the
//! message in the store's encoding (`crate::storage::codec`), which keeps QoS, the
//! RETAIN flag, every MQTT 5 property and the expiry as wall-clock time.

use std::collections::{BTreeSet, HashMap};
use std::sync::{PoisonError, RwLock};

use bytes::{Buf, BufMut, Bytes};

use crate::message::{ClusterMessageId, Message};
use crate::storage::codec;
use crate::storage::{StoredMessage, WallClock};
use crate::topic::{Match, SubscriptionTrie};

use super::config::NodeId;
use super::state::ClusterState;

/// The cluster route table as this node sees it: which nodes subscribe to what.
pub struct RouteTable {
    me: NodeId,
    inner: RwLock<Table>,
}

#[derive(Default)]
struct Table {
    trie: SubscriptionTrie<NodeId, ()>,
    /// The nodes in `trie` per filter, to update it entry by entry.
    nodes: HashMap<String, BTreeSet<NodeId>>,
}

/// Where one message goes: each remote node once, with the shared groups it serves.
pub type Destinations = Vec<(NodeId, Vec<String>)>;

impl RouteTable {
    pub fn new(me: NodeId) -> RouteTable {
        RouteTable {
            me,
            inner: RwLock::new(Table::default()),
        }
    }

    /// Brings `filter`'s entry in line with the replicated state.
    pub fn update(&self, state: &ClusterState, filter: &str) {
        let wanted: BTreeSet<NodeId> = state.route_nodes(filter).collect();
        let Some((plain, group)) = split(filter) else {
            return;
        };
        let mut table = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let present = table.nodes.remove(filter).unwrap_or_default();
        for node in present.difference(&wanted) {
            table.trie.remove(plain, group, node);
        }
        for node in wanted.difference(&present) {
            table.trie.insert(plain, group, *node, ());
        }
        if !wanted.is_empty() {
            table.nodes.insert(filter.to_string(), wanted);
        }
    }

    /// Rebuilds the whole table (after a snapshot).
    pub fn reset(&self, state: &ClusterState) {
        let stale: Vec<String> = {
            let table = self.inner.read().unwrap_or_else(PoisonError::into_inner);
            table.nodes.keys().cloned().collect()
        };
        for filter in stale.iter().chain(state.routes.keys()) {
            self.update(state, filter);
        }
    }

    /// Whether another node subscribes to `topic` (`destinations` without its round
    /// robin over shared groups).
    pub fn subscribed_elsewhere(&self, topic: &str) -> bool {
        let table = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let mut found = false;
        table.trie.for_each_match(topic, |matched| {
            found |= match matched {
                Match::Direct(node, ()) => *node != self.me,
                Match::Shared(group) => !group.members.iter().any(|(node, _)| *node == self.me),
            };
        });
        found
    }

    /// The other nodes `topic` must be forwarded to. Empty (without allocating) when no
    /// other node subscribes.
    pub fn destinations(&self, topic: &str) -> Destinations {
        let mut out: Destinations = Vec::new();
        let table = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        table.trie.for_each_match(topic, |found| match found {
            Match::Direct(node, ()) => {
                if *node != self.me && !out.iter().any(|(n, _)| n == node) {
                    out.push((*node, Vec::new()));
                }
            }
            Match::Shared(group) => {
                if group.members.iter().any(|(node, _)| *node == self.me) {
                    return;
                }
                if let Some((node, ())) = group.pick_round_robin() {
                    match out.iter_mut().find(|(n, _)| n == node) {
                        Some((_, groups)) => groups.push(group.name.clone()),
                        None => out.push((*node, vec![group.name.clone()])),
                    }
                }
            }
        });
        out
    }
}

fn split(filter: &str) -> Option<(&str, Option<&str>)> {
    match crate::topic::parse_shared(filter) {
        Ok(Some((group, plain))) => Some((plain, Some(group))),
        Ok(None) => Some((filter, None)),
        Err(_) => None,
    }
}

/// The body of a `FORWARD` frame.
pub fn encode(message: &Message, clock: &WallClock, shared_groups: &[String]) -> Vec<u8> {
    // The id travels in the frame's header.
    let encoded =
        codec::encode_message(&StoredMessage::from_message(message, clock).without_cluster_id());
    let mut out = Vec::with_capacity(17 + encoded.len() + 16 * shared_groups.len());
    let groups = &shared_groups[..shared_groups.len().min(255)];
    out.put_u8(groups.len() as u8);
    for group in groups {
        let name = &group.as_bytes()[..group.len().min(u16::MAX as usize)];
        out.put_u16(name.len() as u16);
        out.put_slice(name);
    }
    let id = message.cluster_id();
    out.put_u64(id.node);
    out.put_u64(id.sequence);
    out.extend_from_slice(&encoded);
    out
}

/// Decodes a `FORWARD` body; `None` when it is malformed.
pub fn decode(mut body: Bytes, clock: &WallClock) -> Option<(Message, Vec<String>)> {
    if body.remaining() < 1 {
        return None;
    }
    let count = body.get_u8();
    let mut groups = Vec::with_capacity(count as usize);
    for _ in 0..count {
        if body.remaining() < 2 {
            return None;
        }
        let length = body.get_u16() as usize;
        if body.remaining() < length {
            return None;
        }
        let name = body.split_to(length);
        groups.push(String::from_utf8(name.to_vec()).ok()?);
    }
    if body.remaining() < 16 {
        return None;
    }
    let id = ClusterMessageId {
        node: body.get_u64(),
        sequence: body.get_u64(),
    };
    let stored = codec::decode_message(&body).ok()?;
    let message = stored.to_message(clock);
    let _ = message.cluster_id.set(id);
    Some((message, groups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::Command;
    use crate::protocol::{PublishProperties, QoS};

    fn state_with(routes: &[(NodeId, &str)]) -> ClusterState {
        let mut state = ClusterState::default();
        for (node, filter) in routes {
            state.apply(
                &Command::Routes {
                    node: *node,
                    add: vec![filter.to_string()],
                    remove: vec![],
                },
                &mut Vec::new(),
            );
        }
        state
    }

    fn table(me: NodeId, state: &ClusterState) -> RouteTable {
        let table = RouteTable::new(me);
        table.reset(state);
        table
    }

    #[test]
    fn each_remote_node_with_a_match_gets_the_message_once_and_this_node_never() {
        let state = state_with(&[(1, "a/#"), (2, "a/+"), (2, "a/b"), (3, "x")]);
        let table = table(1, &state);
        assert_eq!(table.destinations("a/b"), vec![(2, vec![])]);
        assert!(table.destinations("x/y").is_empty());
        let table = table_for(3, &state);
        let mut nodes: Vec<_> = table
            .destinations("a/b")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        nodes.sort();
        assert_eq!(nodes, vec![1, 2]);
    }

    fn table_for(me: NodeId, state: &ClusterState) -> RouteTable {
        table(me, state)
    }

    #[test]
    fn a_shared_group_stays_local_when_this_node_has_members_and_rotates_otherwise() {
        let state = state_with(&[(1, "$share/g/t"), (2, "$share/g/t"), (3, "$share/g/t")]);
        assert!(table(1, &state).destinations("t").is_empty());
        let mut state = state;
        state.apply(
            &Command::ReplaceRoutes {
                node: 1,
                filters: vec![],
            },
            &mut Vec::new(),
        );
        let table = table(1, &state);
        let picks: Vec<_> = (0..4).map(|_| table.destinations("t")).collect();
        for pick in &picks {
            assert_eq!(pick.len(), 1);
            assert_eq!(pick[0].1, vec!["g".to_string()]);
        }
        let nodes: BTreeSet<NodeId> = picks.iter().map(|pick| pick[0].0).collect();
        assert_eq!(nodes, BTreeSet::from([2, 3]));
    }

    #[test]
    fn removing_a_route_updates_the_table() {
        let mut state = state_with(&[(2, "a")]);
        let table = table(1, &state);
        assert_eq!(table.destinations("a").len(), 1);
        state.apply(
            &Command::Routes {
                node: 2,
                add: vec![],
                remove: vec!["a".into()],
            },
            &mut Vec::new(),
        );
        table.update(&state, "a");
        assert!(table.destinations("a").is_empty());
    }

    #[test]
    fn a_forwarded_message_keeps_qos_retain_properties_and_expiry() {
        let clock = WallClock::now();
        let now = crate::broker::now();
        let message = Message {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"payload"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: PublishProperties {
                content_type: Some("text/plain".into()),
                user_properties: vec![("k".into(), "v".into())],
                correlation_data: Some(Bytes::from_static(b"c")),
                ..PublishProperties::default()
            },
            expires_at: Some(now + std::time::Duration::from_secs(30)),
            publisher: Some(7),
            cluster_id: Default::default(),
        };
        let body = encode(&message, &clock, &["g1".to_string()]);
        let (decoded, groups) = decode(Bytes::from(body), &clock).unwrap();
        assert_eq!(groups, vec!["g1".to_string()]);
        assert_eq!(decoded.topic, message.topic);
        assert_eq!(decoded.payload, message.payload);
        assert_eq!(decoded.qos, QoS::ExactlyOnce);
        assert!(decoded.retain);
        assert_eq!(decoded.properties, message.properties);
        assert_eq!(
            decoded.cluster_id(),
            message.cluster_id(),
            "one identity on every node"
        );
        assert_eq!(
            decoded.publisher, None,
            "No Local concerns only the publisher's node"
        );
        let remaining = decoded.remaining_expiry(now).unwrap();
        assert!((29..=30).contains(&remaining), "{remaining}");
        assert!(decode(Bytes::from_static(&[3, 0]), &clock).is_none());
    }
}
