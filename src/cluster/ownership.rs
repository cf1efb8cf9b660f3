//! Who owns a session: claiming it through consensus before a CONNECT attaches (with
//! the fencing epoch), handing a moved session's subscriptions over to its new owner,
//! and releasing the ownership of sessions that ended here.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytestring::ByteString;

use crate::broker::Claimed;

use super::config::NodeId;
use super::network::{Request, Response};
use super::node::{lock, ClusterNode, PROPOSE_TIMEOUT};
use super::state::{encode_base64, Command, Owner};

/// How long a new owner asks the previous one for a session's subscriptions.
const HANDOVER_WAIT: Duration = Duration::from_secs(1);

impl ClusterNode {
    /// The owner of `client_id`'s session as applied here.
    pub fn owner(&self, client_id: &str) -> Option<Owner> {
        self.with_state(|state| state.owners.get(client_id).copied())
    }

    /// The subscriptions `previous` kept for a session this node took with `epoch`. The
    /// previous owner may apply the claim a little after this node: asked again for up
    /// to `HANDOVER_WAIT`. Nothing when it is unreachable (the session starts fresh).
    pub(super) async fn fetch_handover(
        &self,
        previous: NodeId,
        client_id: &str,
        epoch: u64,
    ) -> Vec<(ByteString, crate::session::SubscriptionEntry)> {
        let request = Request::Handover {
            client_id: client_id.to_string(),
            epoch,
        };
        let Ok(body) = serde_json::to_vec(&request) else {
            return Vec::new();
        };
        let deadline = tokio::time::Instant::now() + HANDOVER_WAIT;
        while tokio::time::Instant::now() < deadline {
            let Ok(answer) = self.links.request(previous, &body, HANDOVER_WAIT).await else {
                return Vec::new();
            };
            match serde_json::from_slice(&answer) {
                Ok(Response::Handover(Some(entries))) => {
                    return entries
                        .into_iter()
                        .filter_map(|(filter, entry): (String, String)| {
                            let bytes = super::state::decode_base64(&entry)?;
                            let entry = crate::storage::codec::decode_subscription(&bytes).ok()?;
                            Some((ByteString::from(filter), entry))
                        })
                        .collect();
                }
                Ok(Response::Handover(None)) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => return Vec::new(),
            }
        }
        Vec::new()
    }

    /// Releases an ended session's ownership unless a session of that id is back here
    /// (the epoch makes a late release harmless to a newer owner). Best effort: an
    /// unreleased entry only keeps the id in the owner table until it is claimed again.
    pub(super) async fn release(&self, client_id: String) {
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        if broker.session(&client_id).is_some() {
            return;
        }
        let Some(owner) = self.owner(&client_id).filter(|owner| owner.node == self.me) else {
            return;
        };
        let _ = self
            .propose(Command::Release {
                client_id,
                node: self.me,
                epoch: owner.epoch,
            })
            .await;
    }

    pub(super) async fn claim_session(
        &self,
        client_id: &str,
        persistent: bool,
    ) -> Result<Option<Claimed>, u8> {
        use crate::protocol::reason;
        if self.has_leader() {
            if let Some(owner) = self.owner(client_id).filter(|owner| owner.node == self.me) {
                return Ok(Some(Claimed {
                    epoch: owner.epoch,
                    adopted: Vec::new(),
                }));
            }
        }
        let command = Command::Claim {
            client_id: client_id.to_string(),
            node: self.me,
        };
        match self.propose(command).await {
            Ok(result) => {
                if result.previous_owner.is_some() {
                    self.stats.ownership_moves.fetch_add(1, Ordering::Relaxed);
                }
                // Applied on the leader; wait until this node applied it too, so that
                // `owns` sees it.
                let wait = self.raft.wait(Some(PROPOSE_TIMEOUT));
                let applied = wait
                    .metrics(
                        |metrics| metrics.last_applied.map_or(0, |id| id.index) >= result.log_index,
                        "claim applied",
                    )
                    .await;
                if applied.is_err() {
                    return Err(reason::SERVER_UNAVAILABLE);
                }
                let adopted = match result.previous_owner {
                    Some(previous) if persistent => {
                        self.fetch_handover(previous, client_id, result.epoch).await
                    }
                    _ => Vec::new(),
                };
                Ok(Some(Claimed {
                    epoch: result.epoch,
                    adopted,
                }))
            }
            Err(error) if persistent => {
                tracing::info!(client_id, %error, "persistent session refused: no cluster majority");
                Err(reason::SERVER_UNAVAILABLE)
            }
            Err(_) => Ok(None),
        }
    }

    /// What this node kept of a session that moved to the node that claimed it with
    /// `epoch` (handed over once). `Some(empty)` when this node held no such session.
    pub(super) fn take_handover(
        &self,
        client_id: &str,
        epoch: u64,
    ) -> Option<Vec<(String, String)>> {
        // The owner first: the state's lock is held while an applied claim's effects
        // (the handover kept below) are carried out, so once the claim shows here its
        // handover is in place.
        let applied = self
            .owner(client_id)
            .is_some_and(|owner| owner.epoch >= epoch);
        if !applied {
            return None;
        }
        let mut handovers = lock(&self.handovers);
        let kept = handovers
            .get(client_id)
            .is_some_and(|(kept, _)| *kept == epoch);
        let subscriptions = if kept {
            handovers
                .remove(client_id)
                .map(|(_, subscriptions)| subscriptions)
        } else {
            None
        };
        // Applied, and nothing kept: this node held no such session.
        Some(
            subscriptions
                .unwrap_or_default()
                .into_iter()
                .map(|(filter, entry)| {
                    let encoded = crate::storage::codec::encode_subscription(&entry);
                    (filter.to_string(), encode_base64(&encoded))
                })
                .collect(),
        )
    }
}
