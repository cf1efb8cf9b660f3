//! The running node as the broker and the link see it: what the broker tells the
//! cluster about local activity (`ClusterHook`: publishes, subscriptions, claims) and
//! what arrives from other nodes over the link (`LinkHandler`: requests, forwarded
//! messages).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use crate::broker::ClusterHook;
use crate::message::Message;
use crate::protocol::QoS;
use crate::storage::{Completion, StoreError};

use super::super::config::NodeId;
use super::super::forward;
use super::super::link::{self, LinkHandler};
use super::super::network::{Request, Response};
use super::*;

impl ClusterHook for ClusterNode {
    fn received(&self, id: crate::message::ClusterMessageId) -> bool {
        self.received.knows(id)
    }

    fn subscribed_elsewhere(&self, topic: &str) -> bool {
        self.routes.subscribed_elsewhere(topic)
    }

    fn published(&self, message: &Arc<Message>) -> Option<Completion> {
        let broker = self.broker.upgrade()?;
        let committed = message
            .retain
            .then(|| self.replicate_retained(&broker, message));
        let destinations = self.routes.destinations(&message.topic);
        let acknowledged = message.qos != QoS::AtMostOnce;
        // What the acknowledgement waits for: usually nothing, rarely more than one
        // (a retained message, several congested peers), so the Vec rarely allocates.
        let mut wait = committed.flatten();
        let mut more: Vec<Completion> = Vec::new();
        let mut wait_also = |completion: Completion| match wait {
            None => wait = Some(completion),
            Some(_) => more.push(completion),
        };
        // A QoS 1/2 message is acknowledged only once every node it goes to stored it
        // durably (`super::super::forward_ack`); the nodes it went to, to send it to no
        // node twice when a peer that is down has its routes taken over.
        let sent_to: Vec<NodeId> = if acknowledged {
            destinations.iter().map(|(node, _)| *node).collect()
        } else {
            Vec::new()
        };
        for (node, groups) in destinations {
            let Some(peer) = self.links.peer(node) else {
                continue;
            };
            let body = forward::encode(message, broker.wall_clock(), &groups);
            let kind = if acknowledged {
                link::FORWARD_ACKED
            } else {
                link::FORWARD
            };
            let frame = link::frame(kind, &body);
            let bytes = frame.len() as u64;
            let queued = if acknowledged {
                peer.forward_acknowledged(frame, message, groups, sent_to.clone())
                    .map(|(acked, paused)| {
                        wait_also(acked);
                        paused
                    })
            } else {
                peer.forward(frame, false)
            };
            match queued {
                Ok(paused) => {
                    if let Some(paused) = paused {
                        wait_also(paused);
                    }
                    self.stats
                        .forwarded_messages
                        .fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .forwarded_bytes
                        .fetch_add(bytes, Ordering::Relaxed);
                    peer.stats
                        .forwarded_messages
                        .fetch_add(1, Ordering::Relaxed);
                    peer.stats
                        .forwarded_bytes
                        .fetch_add(bytes, Ordering::Relaxed);
                }
                Err(why) => {
                    self.stats.forward_dropped.fetch_add(1, Ordering::Relaxed);
                    // A QoS 1/2 message that could not be kept for the peer (its outbox
                    // or its unacknowledged messages are full): the publisher is not
                    // told the message was delivered, and sends it again
                    // (ARCHITECTURE.md, "Forwarded QoS 1/2 messages are acknowledged").
                    if acknowledged && why == link::NotQueued::OutboxFull {
                        wait_also(Completion::done(Err(StoreError::Io(format!(
                            "the message could not be forwarded: the outbox of the link to node {node} is full"
                        )))));
                    }
                }
            }
        }
        self.relay(message);
        if more.is_empty() {
            return wait;
        }
        more.extend(wait);
        let (promise, all) = crate::storage::write_promise();
        promise.fulfil(more);
        Some(Completion::shared(all))
    }

    fn filter_added(&self, filter: &str) {
        if lock(&self.book).add(filter) {
            self.book_changed.notify_one();
        }
    }

    fn filter_removed(&self, filter: &str) {
        if lock(&self.book).remove(filter) {
            self.book_changed.notify_one();
        }
    }

    fn has_leader(&self) -> bool {
        ClusterNode::has_leader(self)
    }

    fn claim(&self, client_id: &str, persistent: bool) -> crate::broker::remote::ClaimFuture<'_> {
        let client_id = client_id.to_string();
        Box::pin(async move { self.claim_session(&client_id, persistent).await })
    }

    fn owns(&self, client_id: &str, epoch: u64) -> bool {
        self.owner(client_id)
            .is_some_and(|owner| owner.node == self.me && owner.epoch == epoch)
    }

    fn render_metrics(&self) -> String {
        super::super::metrics::render(self)
    }

    fn session_ended(&self, client_id: &str) {
        let mut book = lock(&self.book);
        if book.released.len() < MAX_PENDING_RETAINED {
            book.released.push_back(client_id.to_string());
            drop(book);
            self.book_changed.notify_one();
        }
    }
}

impl LinkHandler for ClusterNode {
    fn request(
        &self,
        from: NodeId,
        body: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send + '_>> {
        Box::pin(async move {
            let response = match serde_json::from_slice::<Request>(&body) {
                Err(error) => Response::Invalid(error.to_string()),
                Ok(Request::AppendEntries(rpc)) => {
                    Response::AppendEntries(self.raft.append_entries(rpc).await)
                }
                Ok(Request::Vote(rpc)) => Response::Vote(self.raft.vote(rpc).await),
                Ok(Request::InstallSnapshot(rpc)) => {
                    Response::InstallSnapshot(self.raft.install_snapshot(rpc).await)
                }
                Ok(Request::Propose(command)) => {
                    Response::Propose(self.propose_local(command).await)
                }
                Ok(Request::AddNode { id, addr }) => {
                    Response::Membership(self.add_node(id, addr).await)
                }
                Ok(Request::RemoveNode { id }) => Response::Membership(self.remove_node(id).await),
                Ok(Request::Handover { client_id, epoch }) => {
                    Response::Handover(self.take_handover(&client_id, epoch))
                }
                Ok(Request::HandoverDone { client_id, epoch }) => {
                    self.handover_done(&client_id, epoch);
                    Response::HandoverDone
                }
                Ok(Request::Relay {
                    client_id,
                    messages,
                    epoch,
                    last,
                }) => Response::Relayed(self.take_relayed(&client_id, messages, epoch, last).await),
                Ok(Request::Replicate(batch)) => {
                    Response::Replicated(self.apply_replicated(from, batch).await)
                }
                Ok(Request::ReplicaSession { origin, client_id }) => {
                    Response::Handover(self.replica_session(origin, &client_id).await)
                }
                Ok(Request::ReplicaForget { origin, client_id }) => {
                    self.replica_forget(origin, &client_id).await;
                    Response::HandoverDone
                }
                Ok(Request::PendingFor { dead }) => Response::Pending(self.pending_for(dead)),
                Ok(Request::MovedCopy {
                    client_ids,
                    message,
                }) => Response::Relayed(self.take_moved_copy(&client_ids, &message).await),
            };
            serde_json::to_vec(&response).unwrap_or_default()
        })
    }

    fn moved(&self, from: NodeId, moved: Vec<link::MovedForward>) {
        let node = self.this();
        tokio::spawn(async move {
            for forward in moved {
                let Some(this) = node.upgrade() else {
                    forward.fail(from);
                    continue;
                };
                let copies = this.hand_to_new_owners(from, &forward).await;
                forward.settle(copies);
            }
        });
    }

    fn forwarded(&self, from: NodeId, body: Bytes, acknowledge: bool) -> Option<link::ReadPause> {
        if self.hold_while_catching_up(from, &body, acknowledge) {
            return None;
        }
        self.route_forward(from, body, acknowledge)
    }
}

impl ClusterNode {
    /// Routes a forwarded message here; a pause of the link's reader when a local
    /// subscriber or the acknowledging task is behind.
    pub(in crate::cluster) fn route_forward(
        &self,
        from: NodeId,
        body: Bytes,
        acknowledge: bool,
    ) -> Option<link::ReadPause> {
        let broker = self.broker.upgrade()?;
        let Some((message, groups)) = forward::decode(body, broker.wall_clock()) else {
            tracing::warn!("malformed forwarded message dropped");
            return None;
        };
        self.stats.received_messages.fetch_add(1, Ordering::Relaxed);
        let message = Arc::new(message);
        let mut congested = None;
        let mut route = || {
            let (_, first_congested, writes) = broker.route_forwarded(&message, &groups);
            congested = first_congested;
            self.relay(&message);
            writes
        };
        // A QoS 1/2 message is routed once however often it arrives, and acknowledged
        // once its writes here are durable; its acknowledging task may hold the reader.
        let behind = if acknowledge {
            self.receive_acknowledged(from, &message, route)
        } else {
            drop(route());
            None
        };
        // A local subscriber's queue is nearly full: the link is not read until it
        // drained, as a local publisher's connection is not, so the sending node's
        // outbox fills and paces its publishers. Bounded by one heartbeat (the link also
        // carries Raft traffic); past it, the subscriber is stalled as locally (nobody
        // waits for it until it drained; its messages are dropped and counted).
        let Some(session) = congested else {
            return behind;
        };
        let bound = self.links.read_pause_bound();
        Some(Box::pin(async move {
            if let Some(behind) = behind {
                behind.await;
            }
            let (space, congested) = session.congestion.wait_for_space();
            if !congested {
                return;
            }
            tokio::select! {
                _ = space => {}
                _ = tokio::time::sleep(bound) => session.congestion.stall(),
            }
        }))
    }
}
