//! The new owner's end of a relay (`super`): a session imported from a node that
//! relays to it holds its other deliveries (`Broker::release_held`) until that relay's
//! last batch, or, when that end does not come, `HOLD_MAX` at most or until the
//! relaying node is unreachable (counted, `relay_holds_expired`). When the session
//! moved on meanwhile, what waited goes on through this node's own relay instead
//! (`super::flush_deferred`), and what the relay still brings is relayed onwards.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Instant;

use super::super::config::NodeId;
use super::super::node::{lock, ClusterNode};
use super::{flush_deferred, RelayedMessage, HOLD_MAX, RELAY_TICK};

/// A relay to this node from a session's previous owner.
pub(super) struct Inbound {
    from: NodeId,
    /// This node's claim.
    epoch: u64,
    opened: Instant,
}

impl ClusterNode {
    /// How many sessions moved here hold deliveries behind their old node's relay.
    pub(in crate::cluster) fn relay_holds_open(&self) -> u64 {
        lock(&self.relays.inbound).len() as u64
    }

    /// `client_id`'s session arrived here from `from`, which relays to it (this node's
    /// claim `epoch`): its other deliveries wait until that relay ends.
    pub(in crate::cluster) fn open_inbound(&self, client_id: &str, from: NodeId, epoch: u64) {
        lock(&self.relays.inbound).insert(
            client_id.to_string(),
            Inbound {
                from,
                epoch,
                opened: Instant::now(),
            },
        );
        tokio::spawn(watch_inbound(self.this(), client_id.to_string(), epoch));
    }

    /// The relay to this node for `client_id` (claim `epoch`) ended, or is given up on
    /// (`expired`): what waited behind it goes, to the session here or through this
    /// node's relay onwards.
    fn close_inbound(&self, client_id: &str, epoch: u64, expired: bool) {
        let opened = {
            let mut inbound = lock(&self.relays.inbound);
            match inbound.get(client_id) {
                Some(open) if open.epoch == epoch => {}
                _ => return,
            }
            inbound.remove(client_id).map(|open| open.opened)
        };
        tracing::info!(
            client_id,
            held_ms = opened.map_or(0, |opened| opened.elapsed().as_millis() as u64),
            expired,
            "relay to this node ended: a moved session's held messages are released"
        );
        if expired {
            self.stats
                .relay_holds_expired
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                client_id,
                "a moved session's relay did not end in time: its held messages are released"
            );
        }
        if let Some(broker) = self.broker.upgrade() {
            broker.release_held(client_id);
        }
        let mut relays = lock(&self.relays.relays);
        if let Some(relay) = relays.get_mut(client_id) {
            flush_deferred(self, relay);
        }
    }

    /// Messages the previous owner of a session that moved here relayed: queued for it
    /// (the copies it already has dropped), or relayed onwards if it moved on; with the
    /// relay's last batch, what waited behind it goes. True once stored.
    pub(in crate::cluster) async fn take_relayed(
        &self,
        client_id: &str,
        messages: Vec<RelayedMessage>,
        epoch: u64,
        last: bool,
    ) -> bool {
        let Some(broker) = self.broker.upgrade() else {
            return false;
        };
        let relayed = messages
            .into_iter()
            .filter_map(|message| message.decode(&broker))
            .collect();
        let (written, moved_on) = broker.deliver_relayed(client_id, relayed);
        if !moved_on.is_empty() {
            self.relay_onwards(client_id, moved_on);
        }
        let stored = match written {
            Some(written) => written.await.is_ok(),
            None => true,
        };
        if last {
            self.close_inbound(client_id, epoch, false);
        }
        stored
    }
}

/// Releases the deliveries held behind a relay to this node when its end does not come:
/// after `HOLD_MAX`, or at once when the relaying node is unreachable (what it still
/// relays may come later, out of order, but is not lost).
async fn watch_inbound(node: Weak<ClusterNode>, client_id: String, epoch: u64) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(RELAY_TICK).await;
        let Some(node) = node.upgrade() else {
            return;
        };
        let from = {
            let inbound = lock(&node.relays.inbound);
            match inbound.get(&client_id) {
                Some(inbound) if inbound.epoch == epoch => inbound.from,
                _ => return,
            }
        };
        let reachable = node
            .links
            .peer(from)
            .is_some_and(|peer| peer.is_connected());
        if !reachable || started.elapsed() >= HOLD_MAX {
            node.close_inbound(&client_id, epoch, true);
            return;
        }
    }
}
