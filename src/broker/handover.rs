//! A persistent session moving between cluster nodes, the broker's part: the old owner
//! hands the whole session over (`hand_over_session`), the new owner rebuilds it offline
//! before the CONNECT attaches (`import_session`), and the old owner deletes its stored
//! copy once the new owner holds it durably (`forget_moved_session`).
//!
//! The hand-over format is `RestoredSession`, the one a restart restores: subscriptions,
//! queued messages, inflight messages with their packet ids and states (resent with DUP
//! or PUBREL in their order when the client attaches), incoming QoS 2 packet ids, and
//! the record with the will still owed. Times are wall-clock milliseconds, so they mean
//! the same on every node. The protocol around it is in `crate::cluster::ownership`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::message::{ClusterMessageId, Message};
use crate::session::Delivery;
use crate::storage::{
    Completion, MessageId, RestoredDelivery, RestoredInflight, RestoredSession, StoreOp,
};

use super::lifecycle::will_delay;
use super::{lock, Broker, Stats};

/// How long after a move a session drops second copies of messages it already had: longer
/// than the old owner relays messages to it (`crate::cluster::relay`).
pub const MOVE_WINDOW: Duration = Duration::from_secs(60);

/// A session on its way to another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandedOver {
    pub session: RestoredSession,
    /// The cluster ids of its queued and inflight messages.
    pub held: Vec<ClusterMessageId>,
    /// Taken from a backup's copy (failover, adoption) rather than handed over by its
    /// live owner: a resend of an incoming QoS 2 message it holds the packet id of is
    /// routed again (`session::RestoredParts::incoming_qos2_unconfirmed`).
    pub from_copy: bool,
    /// Handed over by its live owner: the incoming QoS 2 packet ids that owner held
    /// unconfirmed (it took the session from a copy, and the client has not sent those
    /// messages again since): they stay unconfirmed here.
    /// (The cluster ids of its incoming QoS 2 messages, where known, are
    /// `session.incoming_ids`.)
    pub unconfirmed: Vec<u16>,
}

/// A message the old owner of a moving session relays to the new one, as that session's
/// subscriptions matched it there.
#[derive(Debug, Clone)]
pub struct Relayed {
    pub message: Arc<Message>,
    pub qos: crate::protocol::QoS,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
}

impl Broker {
    /// Another node took `client_id`'s session: a connection holding it here is
    /// disconnected (MQTT 5: 0x8E Session taken over) and the session leaves this node's
    /// memory and routes. Returns it whole, as the new owner is to serve it, when it
    /// outlives its connection; its stored copy stays here until the new owner confirms
    /// it holds it (`forget_moved_session`), so a crash of either node loses nothing.
    ///
    /// A session that ends with its connection (expiry 0) is not carried over: it ends
    /// here, its will published. As in a takeover on one node, the will of a connected
    /// session is published now unless it is delayed; a delayed one goes with the session
    /// (a resuming client cancels it, a clean start publishes it).
    ///
    /// `None` when this node holds no session of that id.
    pub fn hand_over_session(&self, client_id: &str) -> Option<HandedOver> {
        self.hand_over_session_and_held(client_id).0
    }

    /// `hand_over_session`, also returning the deliveries the session held behind the
    /// relay from its previous node (`release_held`), in their order: they follow the
    /// session through this node's own relay, behind what that previous node still
    /// relays (`crate::cluster::relay`).
    pub fn hand_over_session_and_held(
        &self,
        client_id: &str,
    ) -> (Option<HandedOver>, Vec<Delivery>) {
        let now = super::now();
        let mut registry = lock(&self.registry);
        let Some(handle) = registry.remove(client_id) else {
            return (None, Vec::new());
        };
        let pending_will = self
            .scheduler
            .cancel(handle.key)
            .and_then(|pending| pending.will.map(|(_, will)| will));
        let mut wills = Vec::new();
        let (filters, handed) = {
            let mut session = handle.lock();
            let connected = session.is_connected();
            let connected_will = if connected { session.take_will() } else { None };
            let persistent = session.is_persistent();
            let filters: Vec<_> = session
                .subscriptions()
                .map(|(filter, _)| filter.clone())
                .collect();
            let waiting = self.take_held(&handle);
            let handed = if persistent {
                let (immediate, delayed): (Vec<_>, Vec<_>) = connected_will
                    .into_iter()
                    .partition(|will| will_delay(will).is_zero());
                wills.extend(immediate);
                let will = delayed.into_iter().next().or(pending_will);
                let mut record = self.session_record(&handle.client_id, &session, will);
                if connected {
                    record.disconnected_at = Some(self.clock.to_unix_millis(now));
                }
                Some(self.export(&session, record, now))
            } else {
                wills.extend(connected_will);
                wills.extend(pending_will);
                None
            };
            // Retiring bumps the generation: a connection still attached is told to go
            // (0x8E) and nothing it does reaches the session any more. The store copy
            // stays (`retire_locked` only forgets that the store keeps it).
            handle.retire_locked(&mut session, now);
            (filters, (handed, waiting))
        };
        drop(registry);
        self.remove_routes(handle.key, &filters);
        Stats::incr(&self.stats.takeovers);
        for will in wills {
            self.publish_will(will);
        }
        handed
    }

    /// The deliveries `session` holds behind a relay (none unless it moved here and its
    /// previous node still relays); the hold ends. Called with the session locked.
    fn take_held(&self, session: &super::SessionHandle) -> Vec<Delivery> {
        if !session
            .moved_recently
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Vec::new();
        }
        lock(&self.recent)
            .get_mut(&session.key)
            .and_then(|window| window.held.take())
            .map(|held| held.deliveries.into())
            .unwrap_or_default()
    }

    fn export(
        &self,
        session: &crate::session::Session,
        record: crate::storage::SessionRecord,
        now: std::time::Instant,
    ) -> HandedOver {
        let parts = session.export(now);
        // Every copy of these messages has this identity: a copy that reaches the new
        // owner by another way is recognised there.
        let held = parts
            .inflight
            .iter()
            .map(|(delivery, _, _)| delivery)
            .chain(parts.queue.iter())
            .map(|delivery| delivery.message.cluster_id())
            .collect();
        let delivery = |delivery: Delivery| RestoredDelivery {
            message_id: delivery.stored.unwrap_or(0),
            message: Arc::new(crate::storage::StoredMessage::from_message(
                &delivery.message,
                &self.clock,
            )),
            qos: delivery.qos,
            retain: delivery.retain,
            subscription_ids: delivery.subscription_ids,
        };
        let mut subscriptions = parts.subscriptions;
        subscriptions.sort_by(|a, b| a.0.cmp(&b.0));
        let session = RestoredSession {
            record,
            subscriptions,
            queue: parts.queue.into_iter().map(delivery).collect(),
            inflight: parts
                .inflight
                .into_iter()
                .map(|(message, packet_id, state)| RestoredInflight {
                    delivery: delivery(message),
                    packet_id,
                    state,
                })
                .collect(),
            incoming_qos2: parts.incoming_qos2,
            incoming_ids: parts.incoming_qos2_ids,
        };
        HandedOver {
            session,
            held,
            from_copy: false,
            unconfirmed: parts.incoming_qos2_unconfirmed,
        }
    }

    /// Rebuilds a session handed over by its previous owner, offline, before the CONNECT
    /// that claimed it attaches (which then resumes it: Session Present = 1, inflight
    /// messages resent first). Its messages get message ids of this node's store and
    /// everything is written here; the returned write must be durable before the old
    /// owner is told to delete its copy. `None` (nothing imported) if a session of that
    /// id is already here.
    pub fn import_session(&self, handed: HandedOver) -> Option<Completion> {
        self.import_session_with(handed, false)
    }

    /// `import_session`; with `behind_relay` (the previous owner relays to it), the
    /// deliveries that reach the session otherwise wait behind that relay until
    /// `release_held` (`super::recent`).
    pub fn import_session_with(
        &self,
        handed: HandedOver,
        behind_relay: bool,
    ) -> Option<Completion> {
        let HandedOver {
            mut session,
            mut held,
            from_copy,
            unconfirmed,
        } = handed;
        // Every packet id of a backup's copy is unconfirmed; of a live owner's, those it
        // held unconfirmed itself.
        let unconfirmed = if from_copy {
            session.incoming_qos2.clone()
        } else {
            unconfirmed
        };
        // The ids its stored messages carry (a backup's copy, or a session handed over
        // by a node that took it from one): a copy of one of them that the publishing
        // node sends again, having kept it for the session's dead owner, is dropped.
        held.extend(
            session
                .inflight
                .iter()
                .map(|inflight| &inflight.delivery)
                .chain(session.queue.iter())
                .filter_map(|delivery| delivery.message.cluster_id),
        );
        let now = super::now();
        let now_ms = self.clock.to_unix_millis(now);
        let mut registry = lock(&self.registry);
        if registry.contains_key(&session.record.client_id) {
            tracing::warn!(client_id = %session.record.client_id, "a session handed over is already here; kept the local one");
            return None;
        }
        // This store's ids: the old owner's mean nothing here. QoS 0 messages are not
        // stored (as on one node): they keep the id 0 and travel in memory only.
        for delivery in session
            .inflight
            .iter_mut()
            .map(|inflight| &mut inflight.delivery)
            .chain(session.queue.iter_mut())
        {
            delivery.message_id = if delivery.qos == crate::protocol::QoS::AtMostOnce {
                0
            } else {
                self.store.next_message_id()
            };
        }
        let mut ops = session.to_ops();
        let clock = self.clock;
        let mut bodies: HashMap<MessageId, Arc<Message>> = HashMap::new();
        let mut delivery_of = |restored: RestoredDelivery| {
            let message = if restored.message_id == 0 {
                Arc::new(restored.message.to_message(&clock))
            } else {
                bodies
                    .entry(restored.message_id)
                    .or_insert_with(|| Arc::new(restored.message.to_message(&clock)))
                    .clone()
            };
            Delivery {
                message,
                qos: restored.qos,
                retain: restored.retain,
                subscription_ids: restored.subscription_ids,
                stored: (restored.message_id != 0).then_some(restored.message_id),
            }
        };
        let filters: Vec<_> = session
            .subscriptions
            .iter()
            .map(|(filter, _)| filter.clone())
            .collect();
        let installed =
            self.install_session(session, now_ms, &mut delivery_of, &mut ops, unconfirmed);
        {
            let mut recent = lock(&self.recent);
            // Windows of sessions that ended before their window closed go here too.
            recent.retain(|_, window| window.until > now);
            let mut window = super::recent::RecentIds::new(held, now + MOVE_WINDOW);
            if behind_relay {
                window.held = Some(super::recent::Held::new(installed.handle.client_id.clone()));
            }
            recent.insert(installed.handle.key, window);
        }
        installed
            .handle
            .moved_recently
            .store(true, std::sync::atomic::Ordering::Relaxed);
        registry.insert(installed.handle.client_id.clone(), installed.handle);
        let written = self.submit(ops);
        drop(registry);
        if let Some(cluster) = self.cluster.get() {
            for filter in &filters {
                cluster.filter_added(filter);
            }
        }
        if let Some(will) = installed.will_due {
            self.publish_will(will);
        }
        written
    }

    /// The new owner of a session this node handed over holds it durably: the stored
    /// copy goes, unless the session is back here meanwhile.
    pub fn forget_moved_session(&self, client_id: &str) {
        let registry = lock(&self.registry);
        if registry.contains_key(client_id) {
            return;
        }
        self.submit_detached(vec![StoreOp::RemoveSession {
            client_id: client_id.into(),
        }]);
    }

    /// Messages the old owner of `client_id`'s session relayed while the session moved
    /// here: queued (and stored) like any delivery, ahead of what waits behind the relay;
    /// copies the session already has are dropped (`super::recent`). The returned write
    /// covers them. What finds no session here (it moved on meanwhile) is given back, to
    /// be relayed onwards.
    pub fn deliver_relayed(
        &self,
        client_id: &str,
        relayed: Vec<Relayed>,
    ) -> (Option<Completion>, Vec<Relayed>) {
        // The registry stays locked: the session does not leave halfway through the
        // batch (what it took goes with it, the rest is given back). Only the session
        // that moved here takes them: one a CONNECT started here after it moved on (a
        // connect that lost a race, refused a moment later) is not it.
        let registry = lock(&self.registry);
        let Some(handle) = registry.get(client_id).cloned().filter(|handle| {
            handle
                .moved_recently
                .load(std::sync::atomic::Ordering::Relaxed)
        }) else {
            return (None, relayed);
        };
        let now = super::now();
        let mut written = None;
        for relayed in relayed {
            let mut delivery = Delivery {
                message: relayed.message,
                qos: relayed.qos,
                retain: relayed.retain,
                subscription_ids: relayed.subscription_ids,
                stored: None,
            };
            if delivery.qos != crate::protocol::QoS::AtMostOnce && handle.is_persistent() {
                let message_id = self.store.next_message_id();
                delivery.stored = Some(message_id);
                written = Some(self.store.submit(vec![self.accept_one(
                    &handle.client_id,
                    message_id,
                    &delivery,
                )]));
            }
            self.deliver_via(&handle, delivery, now, Via::Relay);
        }
        self.requeue_behind_relay(&handle);
        (written, Vec::new())
    }

    /// Puts the store back in the session's order after a relay batch: what the batch
    /// queued while deliveries were held was stored behind those (stored as they
    /// arrived); their entries are queued again in the order the session sends them,
    /// then the held ones behind (`requeue_stored`). The stored queue is then what the
    /// session sends followed by what it holds, and a restart during the hold resends
    /// them in that order. Once per batch: its cost is the batch and the held line, not
    /// their product.
    fn requeue_behind_relay(&self, handle: &super::SessionHandle) {
        let _state = handle.lock();
        let requeued = {
            let mut recent = lock(&self.recent);
            let Some(window) = recent.get_mut(&handle.key) else {
                return;
            };
            let mut requeued = std::mem::take(&mut window.requeue);
            if requeued.is_empty() {
                return;
            }
            if let Some(held) = &window.held {
                for delivery in &held.deliveries {
                    requeued.extend(self.requeue_stored(handle, delivery));
                }
            }
            requeued
        };
        self.submit_detached(requeued);
    }

    /// Screens a delivery to `session` (which moved here a short while ago), called with
    /// the session locked: a copy of a message it already has is dropped, and while its
    /// previous node's relay is open what did not come through the relay is held behind
    /// it. What to enqueue now, in order. The window closes by itself after
    /// `MOVE_WINDOW`.
    ///
    /// A delivery the relay brings is stored as it arrives, behind the held ones' entries
    /// (stored as they arrived): what it queues then is noted in `RecentIds::requeue`
    /// for `requeue_behind_relay`.
    pub(super) fn screen_moved(
        &self,
        session: &super::SessionHandle,
        delivery: Delivery,
        now: std::time::Instant,
        via: Via,
    ) -> Screened {
        let mut recent = lock(&self.recent);
        let Some(window) = recent.get_mut(&session.key) else {
            session
                .moved_recently
                .store(false, std::sync::atomic::Ordering::Relaxed);
            return Screened::now(delivery);
        };
        if now >= window.until {
            // A hold ends long before (the cluster bounds it), so nothing is left in it.
            recent.remove(&session.key);
            session
                .moved_recently
                .store(false, std::sync::atomic::Ordering::Relaxed);
            return Screened::now(delivery);
        }
        // While the old node relays, a message that comes both ways keeps its relayed
        // copy (in the relay's order), and what was held before the other copy goes
        // ahead of it (`Held::take_through`); the other copy goes as soon as both are
        // here (`super::recent`).
        let id = delivery.message.cluster_id();
        // Stored behind held deliveries: put back in order once the batch is in.
        let behind_held = via == Via::Relay
            && window
                .held
                .as_ref()
                .is_some_and(|held| !held.deliveries.is_empty());
        let mut copies = Vec::new();
        let mut ahead = Vec::new();
        if let Via::Relay = via {
            if let Some((earlier, twin)) =
                window.held.as_mut().and_then(|held| held.take_through(id))
            {
                for held in earlier {
                    if window.admit(held.message.cluster_id()) {
                        ahead.push(held);
                    } else {
                        copies.push(held);
                    }
                }
                copies.push(twin);
            }
        }
        let copy_came_before = window.contains(id);
        let screened = match (via, window.held.as_mut()) {
            (Via::Straight, Some(_)) if copy_came_before => {
                Err((delivery, super::Dropped::Duplicate))
            }
            (Via::Straight, Some(held)) => {
                let config = self.config();
                let limits = &config.limits;
                held.push(
                    delivery,
                    limits.max_queued_messages,
                    limits.max_queued_bytes,
                )
                .map(|()| None)
                .map_err(|delivery| (delivery, super::Dropped::QueueFull))
            }
            _ => {
                if window.admit(id) {
                    Ok(Some(delivery))
                } else {
                    Err((delivery, super::Dropped::Duplicate))
                }
            }
        };
        if behind_held {
            let queued_now = ahead.iter().chain(match &screened {
                Ok(Some(delivery)) => Some(delivery),
                _ => None,
            });
            for queued in queued_now {
                window.requeue.extend(self.requeue_stored(session, queued));
            }
        }
        drop(recent);
        for copy in &copies {
            self.drop_delivery(session, copy, super::Dropped::Duplicate);
        }
        let delivery = screened.unwrap_or_else(|(delivery, reason)| {
            self.drop_delivery(session, &delivery, reason);
            None
        });
        Screened { ahead, delivery }
    }

    fn drop_delivery(
        &self,
        session: &super::SessionHandle,
        delivery: &Delivery,
        reason: super::Dropped,
    ) {
        self.drop_stored(session, delivery);
        self.stats.dropped(reason);
    }

    /// The previous node's relay to `client_id`'s session ended (or is given up on): the
    /// deliveries held behind it are queued, in their order, copies of what the session
    /// got meanwhile dropped. Whether the session is here.
    pub fn release_held(&self, client_id: &str) -> bool {
        let handle = self.session(client_id);
        self.drop_stale_holds(client_id, handle.as_ref().map(|handle| handle.key));
        let Some(handle) = handle else {
            return false;
        };
        let mut results = Vec::new();
        let mut copies = Vec::new();
        {
            let mut state = handle.lock();
            let release: Vec<Delivery> = {
                let mut recent = lock(&self.recent);
                let Some(window) = recent.get_mut(&handle.key) else {
                    return true;
                };
                let Some(held) = window.held.take() else {
                    return true;
                };
                let mut release = Vec::with_capacity(held.deliveries.len());
                for delivery in held.deliveries {
                    if window.admit(delivery.message.cluster_id()) {
                        release.push(delivery);
                    } else {
                        copies.push(delivery);
                    }
                }
                release
            };
            let now = super::now();
            // Stored already behind everything the session queued (`screen_moved`).
            for delivery in release {
                if handle.is_retired() {
                    self.drop_stored(&handle, &delivery);
                    continue;
                }
                results.push(self.enqueue_locked(&handle, &mut state, delivery, now).0);
            }
        }
        for delivery in &copies {
            self.drop_delivery(&handle, delivery, super::Dropped::Duplicate);
        }
        for result in results {
            self.enqueued(&handle, result);
        }
        true
    }
}

/// What `Broker::screen_moved` lets through: held deliveries that go first, then the
/// delivery itself unless it was held or dropped.
pub(super) struct Screened {
    pub(super) ahead: Vec<Delivery>,
    pub(super) delivery: Option<Delivery>,
}

impl Screened {
    fn now(delivery: Delivery) -> Screened {
        Screened {
            ahead: Vec::new(),
            delivery: Some(delivery),
        }
    }
}

impl Broker {
    /// `delivery` stored for `client_id` alone, under `message_id`.
    fn accept_one(
        &self,
        client_id: &bytestring::ByteString,
        message_id: crate::storage::MessageId,
        delivery: &Delivery,
    ) -> StoreOp {
        StoreOp::Accept {
            message_id,
            message: Arc::new(crate::storage::StoredMessage::from_message(
                &delivery.message,
                &self.clock,
            )),
            deliveries: vec![crate::storage::QueuedDelivery {
                client_id: client_id.clone(),
                qos: delivery.qos,
                retain: delivery.retain,
                subscription_ids: delivery.subscription_ids.clone(),
            }],
        }
    }

    /// The store operations that move `delivery`'s stored queue entry to the back of
    /// `session`'s stored queue. A delivery held behind a relay was stored when it
    /// arrived (its publisher's acknowledgement waited for that) but is sent only after
    /// what the relay brings meanwhile; left where it was, a restart would resend it
    /// ahead of those. Queued again under the same message id (the body stays), then
    /// its older entry dropped (`DropQueued` takes a message's oldest entry).
    fn requeue_stored(&self, session: &super::SessionHandle, delivery: &Delivery) -> Vec<StoreOp> {
        let Some(message_id) = delivery.stored else {
            return Vec::new();
        };
        vec![
            self.accept_one(&session.client_id, message_id, delivery),
            StoreOp::DropQueued {
                client_id: session.client_id.clone(),
                message_id,
            },
        ]
    }

    /// What sessions of `client_id` other than the one with key `live` (ended while they
    /// held, by a clean start) still hold: dropped with their store entries.
    fn drop_stale_holds(&self, client_id: &str, live: Option<crate::message::SessionKey>) {
        let stale: Vec<Delivery> = {
            let mut recent = lock(&self.recent);
            recent
                .iter_mut()
                .filter(|(key, window)| {
                    Some(**key) != live
                        && window
                            .held
                            .as_ref()
                            .is_some_and(|held| held.client_id == client_id)
                })
                .filter_map(|(_, window)| window.held.take())
                .flat_map(|held| held.deliveries)
                .collect()
        };
        let ops: Vec<StoreOp> = stale
            .iter()
            .filter_map(|delivery| delivery.stored)
            .map(|message_id| StoreOp::DropQueued {
                client_id: client_id.into(),
                message_id,
            })
            .collect();
        if !ops.is_empty() {
            self.submit_detached(ops);
        }
    }
}

/// How a delivery reaches a session that moved here a short while ago.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Forwarded straight here, or published here.
    Straight,
    /// Relayed by its previous node.
    Relay,
}
