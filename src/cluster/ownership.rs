//! Who owns a session: claiming it through consensus before a CONNECT attaches (with
//! the fencing epoch), moving a session whole from its previous owner (the hand-over
//! protocol, ARCHITECTURE.md "The cluster"), deleting the sessions handed over that
//! their new owner never took (`sweep_handovers`), and releasing the ownership of
//! sessions that ended here.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use crate::broker::Claimed;

use super::config::NodeId;
use super::handover::SessionDump;
use super::network::{HandoverAnswer, Request, Response};
use super::node::{lock, ClusterNode, PROPOSE_TIMEOUT};
use super::state::{Command, Owner};

/// How long a new owner asks the previous one for a moved session: the previous owner
/// may apply the claim a little after this node, or be restarting.
const HANDOVER_WAIT: Duration = Duration::from_secs(3);
/// How long one request for it waits for an answer before it is sent again (within
/// `HANDOVER_WAIT`): a request sent as the previous owner's link went down, or to a
/// node that restarted, is lost, and waiting out the whole `HANDOVER_WAIT` for its
/// answer started the session fresh although the previous owner had it ready.
const HANDOVER_ATTEMPT: Duration = Duration::from_secs(1);

impl ClusterNode {
    /// The owner of `client_id`'s session as applied here.
    pub fn owner(&self, client_id: &str) -> Option<Owner> {
        self.with_state(|state| state.owners.get(client_id).copied())
    }

    /// Takes over the session `previous` held for `client_id`, which this node claimed
    /// with `epoch`: fetches it (asked again while `previous` has not applied the claim
    /// yet, for up to `HANDOVER_WAIT`), imports it into the local broker and store, and
    /// once that write is durable tells `previous` to delete its copy. Whether a session
    /// was imported; nothing when `previous` held none or is unreachable (the session
    /// then starts fresh).
    pub(super) async fn take_over(&self, previous: NodeId, client_id: &str, epoch: u64) -> bool {
        let imported = self.import_from(previous, client_id, epoch).await;
        if imported {
            self.pass_on(client_id, epoch);
        }
        imported
    }

    async fn import_from(&self, previous: NodeId, client_id: &str, epoch: u64) -> bool {
        let Some(broker) = self.broker.upgrade() else {
            return false;
        };
        let Some((dump, source)) = self.fetch_handover(previous, client_id, epoch).await else {
            return false;
        };
        // The previous owner relays to the session: what reaches it otherwise waits
        // behind that relay until it ended. A backup relays nothing.
        let behind_relay = matches!(source, Source::Owner) && dump.relayed;
        let Some(mut handed) = dump.into_handed() else {
            tracing::warn!(
                client_id,
                previous,
                "a session handed over did not decode; it starts fresh"
            );
            return false;
        };
        handed.from_copy = matches!(source, Source::Replica(_));
        let moved = handed.session.queue.len() + handed.session.inflight.len();
        let Some(written) = broker.import_session_with(handed, behind_relay) else {
            return false;
        };
        if behind_relay {
            self.open_inbound(client_id, previous, epoch);
        }
        if let Err(error) = written.await {
            // The old owner keeps its copy: nothing is lost, the session is not resumed.
            tracing::warn!(client_id, %error, "a session handed over could not be stored");
            return false;
        }
        self.stats.handover_moves.fetch_add(1, Ordering::Relaxed);
        self.stats
            .handover_messages
            .fetch_add(moved as u64, Ordering::Relaxed);
        if let Source::Replica(backup) = source {
            self.stats.failovers.fetch_add(1, Ordering::Relaxed);
            // What was on its way to the dead owner for this session is not in the copy.
            self.pull_pending(previous, client_id).await;
            self.forget_replica(backup, previous, client_id, HANDOVER_WAIT)
                .await;
            return true;
        }
        let done = Request::HandoverDone {
            client_id: client_id.to_string(),
            epoch,
        };
        if let Ok(body) = serde_json::to_vec(&done) {
            // Best effort: an old owner that misses it keeps a stale copy in its store
            // (offered again, to nobody, when it restarts).
            let _ = self.links.request(previous, &body, HANDOVER_WAIT).await;
        }
        true
    }

    /// A session that arrived after a later claim (another node's) was applied here: it
    /// goes on to that node as any session that moved away.
    pub(super) fn pass_on(&self, client_id: &str, epoch: u64) {
        let Some(owner) = self.owner(client_id) else {
            return;
        };
        if owner.node == self.me && owner.epoch == epoch {
            return;
        }
        if let Some(broker) = self.broker.upgrade() {
            if owner.node != self.me {
                self.sink.moved(&broker, client_id, owner);
            }
        }
    }

    /// The session from `previous`, or, while `previous` is unreachable, from one of
    /// its in-sync backups (failover).
    async fn fetch_handover(
        &self,
        previous: NodeId,
        client_id: &str,
        epoch: u64,
    ) -> Option<(SessionDump, Source)> {
        let request = Request::Handover {
            client_id: client_id.to_string(),
            epoch,
        };
        let body = serde_json::to_vec(&request).ok()?;
        let deadline = tokio::time::Instant::now() + HANDOVER_WAIT;
        while tokio::time::Instant::now() < deadline {
            let reachable = self
                .links
                .peer(previous)
                .is_some_and(|peer| peer.is_connected());
            if !reachable {
                if let Some((dump, backup)) = self
                    .fetch_from_replica(previous, client_id, HANDOVER_WAIT)
                    .await
                {
                    tracing::info!(
                        client_id,
                        previous,
                        backup,
                        found = dump.is_some(),
                        "session taken over from a backup of its unreachable owner"
                    );
                    return dump.map(|dump| (dump, Source::Replica(backup)));
                }
            }
            let attempt = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .min(HANDOVER_ATTEMPT);
            let answer = match self.links.request(previous, &body, attempt).await {
                Ok(answer) => answer,
                // Not reachable (yet): a restarting node comes back within the wait.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match serde_json::from_slice(&answer) {
                Ok(Response::Handover(HandoverAnswer::Session(dump))) => {
                    return Some((*dump, Source::Owner))
                }
                Ok(Response::Handover(HandoverAnswer::Nothing)) => return None,
                Ok(Response::Handover(HandoverAnswer::NotApplied)) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => return None,
            }
        }
        None
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
        self.wait_while_adopting(client_id).await;
        if self.has_leader() {
            if let Some(owner) = self.owner(client_id).filter(|owner| owner.node == self.me) {
                return Ok(Some(Claimed { epoch: owner.epoch }));
            }
        }
        let command = Command::Claim {
            client_id: client_id.to_string(),
            node: self.me,
        };
        // From before the claim can be applied here until the session arrived: a later
        // claim of another node applied here meanwhile waits for it (`take_handover`),
        // then it moves on (`pass_on`).
        let _importing = Importing::new(self, client_id);
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
                // The whole session moves here before the CONNECT attaches, which then
                // resumes it (or, with a clean start, ends it as on one node).
                if let Some(previous) = result.previous_owner {
                    self.take_over(previous, client_id, result.epoch).await;
                } else {
                    // This node owned it already: an adoption here that committed just
                    // before this claim (it started after this CONNECT passed the wait
                    // above) is importing it; the CONNECT resumes it once imported
                    // rather than start a session the import would find in its way.
                    self.wait_while_adopting(client_id).await;
                }
                Ok(Some(Claimed {
                    epoch: result.epoch,
                }))
            }
            Err(error) if persistent => {
                tracing::info!(client_id, %error, "persistent session refused: no cluster majority");
                Err(reason::SERVER_UNAVAILABLE)
            }
            Err(_) => Ok(None),
        }
    }

    /// The session this node handed over to the node that claimed it with `epoch`.
    pub(super) fn take_handover(&self, client_id: &str, epoch: u64) -> HandoverAnswer {
        // The owner first: the state's lock is held while an applied claim's effects
        // (the hand-over kept below) are carried out, so once the claim shows here its
        // session is in place.
        let applied = self
            .owner(client_id)
            .is_some_and(|owner| owner.epoch >= epoch);
        // Still on its way here from its previous owner: asked again after.
        if !applied || lock(&self.importing).contains_key(client_id) {
            return HandoverAnswer::NotApplied;
        }
        // Kept until the new owner confirms (`handover_done`): an answer lost on the
        // link is asked for again.
        let mut handovers = lock(&self.handovers);
        match handovers.get_mut(client_id) {
            Some(kept) if kept.epoch == epoch => {
                kept.fetched = true;
                let mut dump = SessionDump::from_handed(&kept.handed);
                dump.relayed = self.relays_to(client_id, epoch);
                HandoverAnswer::Session(Box::new(dump))
            }
            _ => HandoverAnswer::Nothing,
        }
    }

    /// The new owner holds the session durably: this node's copy goes.
    pub(super) fn handover_done(&self, client_id: &str, epoch: u64) {
        let kept = {
            let mut handovers = lock(&self.handovers);
            let kept = handovers
                .get(client_id)
                .is_some_and(|kept| kept.epoch == epoch);
            if kept {
                handovers.remove(client_id);
            }
            kept
        };
        if kept {
            if let Some(broker) = self.broker.upgrade() {
                broker.forget_moved_session(client_id);
            }
            self.confirmed_handovers.confirm(client_id, epoch);
        }
        self.confirm_relay(client_id, epoch);
    }

    /// Those of `client_ids`' sessions that moved to another node that may have taken
    /// them from a backup's copy rather than from this node, with that node: moved, and
    /// neither did the new owner confirm taking this node's hand-over within
    /// `HANDOVER_WAIT` (one wait for them all) nor did this node hand it over after
    /// `mark` (when the write was submitted: the session it handed over held the
    /// write's messages, and the nodes it went on to got them with it, as when two
    /// connects race). A write released without a backup's copy misses those sessions
    /// only (the hand-over carries the session as this node holds it).
    pub(super) async fn moved_from_a_copy(
        &self,
        client_ids: &[String],
        mark: u64,
    ) -> Vec<(String, NodeId)> {
        let deadline = tokio::time::Instant::now() + HANDOVER_WAIT;
        loop {
            let confirmed = self.confirmed_handovers.changed.notified();
            tokio::pin!(confirmed);
            confirmed.as_mut().enable();
            let unconfirmed: Vec<(String, NodeId)> = client_ids
                .iter()
                .filter_map(|client_id| {
                    let owner = self.owner(client_id)?;
                    (owner.node != self.me
                        && !self.confirmed_handovers.has(client_id, owner.epoch, mark))
                    .then(|| (client_id.clone(), owner.node))
                })
                .collect();
            if unconfirmed.is_empty() || tokio::time::timeout_at(deadline, confirmed).await.is_err()
            {
                return unconfirmed;
            }
        }
    }
}

/// Hand-overs whose new owner confirmed it holds the session, the latest
/// `MAX_CONFIRMED_HANDOVERS`.
#[derive(Default)]
pub(super) struct ConfirmedHandovers {
    /// Client id, the new owner's epoch, and the confirmation's number.
    recent: Mutex<VecDeque<(String, u64, u64)>>,
    /// Confirmations so far: a write notes it when submitted (`mark`), and a hand-over
    /// confirmed after that carried the write's messages with its session.
    confirmed: std::sync::atomic::AtomicU64,
    changed: Notify,
}

/// Confirmed hand-overs remembered: a write waits on one for at most `HANDOVER_WAIT`,
/// so only the latest matter.
const MAX_CONFIRMED_HANDOVERS: usize = 4096;

impl ConfirmedHandovers {
    fn confirm(&self, client_id: &str, epoch: u64) {
        let mut recent = lock(&self.recent);
        if recent.len() >= MAX_CONFIRMED_HANDOVERS {
            recent.pop_front();
        }
        let number = self
            .confirmed
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1;
        recent.push_back((client_id.to_string(), epoch, number));
        drop(recent);
        self.changed.notify_waiters();
    }

    /// The number of the latest confirmation.
    pub(super) fn mark(&self) -> u64 {
        self.confirmed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether this node handed `client_id`'s session over to the owner of `epoch`, or
    /// handed it over at all after `mark` (the session then took along what this node
    /// held at that point, wherever it went after).
    fn has(&self, client_id: &str, epoch: u64, mark: u64) -> bool {
        lock(&self.recent).iter().any(|(id, confirmed, number)| {
            id == client_id && (*confirmed == epoch || *number > mark)
        })
    }
}

/// Where a session taken over came from.
enum Source {
    /// Its previous owner, which deletes its copy once told.
    Owner,
    /// An in-sync backup of its unreachable previous owner.
    Replica(NodeId),
}

/// Marks a client id as claimed here and its session possibly on its way, for as long
/// as it lives (claims of one client id on one node may overlap: counted).
pub(super) struct Importing<'a> {
    node: &'a ClusterNode,
    client_id: &'a str,
}

impl<'a> Importing<'a> {
    pub(super) fn new(node: &'a ClusterNode, client_id: &'a str) -> Importing<'a> {
        *lock(&node.importing)
            .entry(client_id.to_string())
            .or_default() += 1;
        Importing { node, client_id }
    }
}

impl Drop for Importing<'_> {
    fn drop(&mut self) {
        let mut importing = lock(&self.node.importing);
        if let Some(count) = importing.get_mut(self.client_id) {
            *count -= 1;
            if *count == 0 {
                importing.remove(self.client_id);
            }
        }
    }
}

/// How long a session handed over waits for its new owner to ask for it. The new owner
/// asks for `HANDOVER_WAIT` after its claim and otherwise starts the session fresh
/// (CONNACK Session Present = 0), so a session nobody asked for by then never will be:
/// one a restarted node hands over again while replaying old claims, or one whose new
/// owner gave up (this node was down or cut off).
const HANDOVER_UNCLAIMED: Duration = Duration::from_secs(10);
/// How long a session its new owner fetched waits for its confirmation (the new owner
/// crashed before storing it: its client, never acknowledged, starts afresh).
const HANDOVER_UNCONFIRMED: Duration = Duration::from_secs(600);

/// Deletes, here and in the store, the sessions handed over that their new owner will
/// not take any more (fencing: this node never serves them again).
pub(super) async fn sweep_handovers(node: std::sync::Weak<ClusterNode>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(node) = node.upgrade() else {
            return;
        };
        let stale: Vec<String> = {
            let mut handovers = lock(&node.handovers);
            let stale: Vec<String> = handovers
                .iter()
                .filter(|(_, kept)| {
                    let limit = if kept.fetched {
                        HANDOVER_UNCONFIRMED
                    } else {
                        HANDOVER_UNCLAIMED
                    };
                    kept.since.elapsed() >= limit
                })
                .map(|(client_id, _)| client_id.clone())
                .collect();
            for client_id in &stale {
                handovers.remove(client_id);
            }
            stale
        };
        let Some(broker) = node.broker.upgrade() else {
            return;
        };
        for client_id in stale {
            tracing::info!(
                client_id,
                "session handed over but never taken: deleted here"
            );
            node.stats.handover_dropped.fetch_add(1, Ordering::Relaxed);
            broker.forget_moved_session(&client_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ConfirmedHandovers;

    #[test]
    fn a_hand_over_counts_at_the_owners_epoch_or_when_confirmed_after_the_write() {
        let handovers = ConfirmedHandovers::default();
        let before = handovers.mark();
        handovers.confirm("device", 5);
        let after = handovers.mark();
        // Handed over to the owner of epoch 5.
        assert!(handovers.has("device", 5, after));
        // Gone on to a later owner (epoch 7, from the node it was handed to): a write
        // submitted before this node's hand-over went along with the session.
        assert!(handovers.has("device", 7, before));
        // A write submitted after it did not.
        assert!(!handovers.has("device", 7, after));
        assert!(!handovers.has("other", 5, before));
    }
}
