//! Fan-out of published messages, retained messages, and the route side of SUBSCRIBE /
//! UNSUBSCRIBE.
//!
//! `route` runs on the publishing connection's task: it read-locks the subscription trie,
//! collects one delivery per target session (overlapping subscriptions merged), releases
//! the lock, and only then locks each target session in turn to enqueue and wake it.
//! A connected target whose queue that leaves nearly full is marked congested and handed
//! back to the publisher's connection, which then stops reading until it drained
//! (`super::congestion`).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;

use crate::auth::Security;
use crate::message::{Message, SessionKey};
use crate::protocol::{reason, QoS, RetainHandling, SubAck, SubscriptionOptions, UnsubAck};
use crate::session::{Delivery, SubscribeRequest, UnsubscribeRequest};
use crate::storage::{Completion, QueuedDelivery, StoreOp, StoredMessage};
use crate::topic::{parse_shared, Match, SharedGroup, SubscriptionTrie};

use super::forward_order::{self, ForwardOrder};
use super::handover::Via;
use super::{read, write, Broker, Dropped, SessionHandle, Stats};

/// The outcome of publishing one message.
#[must_use = "a QoS 1/2 PUBLISH may be acknowledged only once its writes are durable"]
pub struct Published {
    /// Sessions the message was handed to; on a cluster node, 1 when only other nodes'
    /// subscribers take it.
    pub routed: usize,
    /// Writes the acknowledgement must wait for (the retained message, the message queued
    /// for persistent sessions); empty when nothing needed storing.
    pub writes: Vec<Completion>,
    /// A connected target whose queue is now nearly full: the publisher should stop
    /// reading until it drained (`SessionHandle::congestion`).
    pub congested: Option<Arc<SessionHandle>>,
}

/// What the trie stores per subscription: 16 bytes, so that with its key a device's one
/// subscriber entry is a 24-byte allocation (an `Option<u32>` took 8 more, and the
/// allocation the next size up).
#[derive(Debug, Clone)]
pub struct Route {
    pub session: Arc<SessionHandle>,
    pub options: SubscriptionOptions,
    /// MQTT 5's Subscription Identifier, never 0 (a Protocol Error in SUBSCRIBE).
    pub subscription_id: Option<NonZeroU32>,
}

impl Route {
    pub fn new(
        session: Arc<SessionHandle>,
        options: SubscriptionOptions,
        subscription_id: Option<u32>,
    ) -> Route {
        Route {
            session,
            options,
            subscription_id: subscription_id.and_then(NonZeroU32::new),
        }
    }
}

/// Above this many targets, merging overlapping subscriptions switches from a linear scan
/// to a hash index.
const LINEAR_MERGE_LIMIT: usize = 16;

/// The largest target list a worker thread keeps for the next message (entries).
const SPARE_TARGETS_MAX: usize = 1024;

type Targets = Vec<(Arc<SessionHandle>, Delivery)>;

thread_local! {
    /// The emptied target list of the last message routed on this thread: routing
    /// reuses its allocation rather than grow a new list for every message.
    static SPARE_TARGETS: std::cell::Cell<Targets> = const { std::cell::Cell::new(Vec::new()) };
}

/// The deliveries of one message, at most one per session for plain subscriptions.
#[derive(Default)]
pub(super) struct Fanout {
    pub(super) targets: Targets,
    /// Position of each session's merged delivery, once `targets` is large.
    index: HashMap<SessionKey, usize>,
    /// Shared-group deliveries are separate from (not merged into) plain ones.
    pub(super) shared: Vec<(Arc<SessionHandle>, Delivery)>,
}

impl Fanout {
    /// A fan-out whose target list is the thread's spare one.
    pub(super) fn new() -> Fanout {
        Fanout {
            targets: SPARE_TARGETS.take(),
            ..Fanout::default()
        }
    }

    /// Gives the (emptied) target list back to the thread for the next message.
    pub(super) fn recycle(mut targets: Targets) {
        targets.clear();
        if targets.capacity() <= SPARE_TARGETS_MAX {
            SPARE_TARGETS.set(targets);
        }
    }

    pub(super) fn add_direct(&mut self, key: SessionKey, route: &Route, message: &Arc<Message>) {
        let position = if self.targets.len() <= LINEAR_MERGE_LIMIT {
            // One handle per session: comparing pointers spares a read of every handle.
            self.targets
                .iter()
                .position(|(session, _)| Arc::ptr_eq(session, &route.session))
        } else {
            if self.index.is_empty() {
                for (position, (session, _)) in self.targets.iter().enumerate() {
                    self.index.insert(session.key, position);
                }
            }
            self.index.get(&key).copied()
        };
        match position {
            Some(position) => {
                let delivery = &mut self.targets[position].1;
                delivery.qos = delivery.qos.max(delivery_qos(message, &route.options));
                delivery.retain |= message.retain && route.options.retain_as_published;
                delivery
                    .subscription_ids
                    .extend(route.subscription_id.map(NonZeroU32::get));
            }
            None => {
                if !self.index.is_empty() {
                    self.index.insert(key, self.targets.len());
                }
                self.targets
                    .push((route.session.clone(), delivery_for(route, message)));
            }
        }
    }

    pub(super) fn add_shared(
        &mut self,
        group: &SharedGroup<SessionKey, Route>,
        message: &Arc<Message>,
    ) {
        if let Some((_, route)) = pick_member(group) {
            self.shared
                .push((route.session.clone(), delivery_for(route, message)));
        }
    }
}

fn delivery_qos(message: &Message, options: &SubscriptionOptions) -> QoS {
    message.qos.min(options.qos)
}

fn delivery_for(route: &Route, message: &Arc<Message>) -> Delivery {
    Delivery {
        message: message.clone(),
        qos: delivery_qos(message, &route.options),
        retain: message.retain && route.options.retain_as_published,
        subscription_ids: route
            .subscription_id
            .map(NonZeroU32::get)
            .into_iter()
            .collect(),
        stored: None,
    }
}

/// One member of a shared group, round robin, preferring members whose client is online
/// so a QoS 0 message is not handed to an offline session that must drop it.
fn pick_member(group: &SharedGroup<SessionKey, Route>) -> Option<&(SessionKey, Route)> {
    let first = group.pick_round_robin()?;
    if first.1.session.is_connected() {
        return Some(first);
    }
    for _ in 1..group.members.len() {
        match group.pick_round_robin() {
            Some(member) if member.1.session.is_connected() => return Some(member),
            Some(_) => {}
            None => break,
        }
    }
    Some(first)
}

/// Splits a stored filter into the trie's (filter, share group) form.
pub(super) fn trie_key(filter: &str) -> Option<(&str, Option<&str>)> {
    match parse_shared(filter) {
        Ok(Some((group, plain))) => Some((plain, Some(group))),
        Ok(None) => Some((filter, None)),
        Err(_) => None,
    }
}

impl Broker {
    /// Retains (if flagged) and routes a message. Returns the number of sessions it was
    /// handed to. For messages nobody acknowledges (wills); see `publish_durably`.
    pub fn publish(&self, message: &Arc<Message>) -> usize {
        self.publish_durably(message).routed
    }

    /// Retains (if flagged) and routes a message, submitting to the store what must
    /// survive a restart: the retained message, and the message with its queue entry for
    /// every persistent session that gets it at QoS 1 or 2. The publisher's
    /// acknowledgement waits for the returned writes.
    pub fn publish_durably(&self, message: &Arc<Message>) -> Published {
        self.publish_durably_with(message, Vec::new())
    }

    /// `publish_durably`, with `publisher_ops` (the publisher's session changes that
    /// receiving the message made: its incoming QoS 2 packet id) written in the same
    /// store write as the message, so that a crash keeps both or neither: the packet id
    /// without the message would make the broker acknowledge the client's resend
    /// without routing it (a loss), the message without the packet id would route the
    /// resend again (a duplicate).
    pub fn publish_durably_with(
        &self,
        message: &Arc<Message>,
        publisher_ops: Vec<StoreOp>,
    ) -> Published {
        self.publish_in_order(message, publisher_ops, &mut ForwardOrder::default())
    }

    /// `publish_durably_with` for a client's PUBLISH: `order` is its publisher's place
    /// in line for the other cluster nodes (`super::forward_order`), kept by its
    /// connection so that a message held back until its packet id reached the
    /// session's backups keeps the publisher's later messages behind it.
    pub fn publish_in_order(
        &self,
        message: &Arc<Message>,
        mut publisher_ops: Vec<StoreOp>,
        order: &mut ForwardOrder,
    ) -> Published {
        self.stats.message_received(message.qos);
        // Only a client's QoS 2 resend routed again under the id its packet id was
        // recorded with has one before routing (`session::inbound`, "unconfirmed").
        let resent_under = message.cluster_id.get().copied();
        if let Some(cluster) = self.cluster.get() {
            let hold = forward_order::waits_for_publisher(message, &publisher_ops);
            note_incoming_ids(message, &mut publisher_ops);
            if let Some(id) = resent_under.filter(|id| cluster.received(*id)) {
                // This node had the message forwarded from the publisher's old node:
                // its local subscribers have it. The other nodes are sent it again
                // under the same id and recognise it likewise.
                tracing::debug!(
                    ?id,
                    "a QoS 2 resend this node received before: not routed here again"
                );
                let publisher_write = self.submit(publisher_ops);
                let mut writes = Vec::new();
                if message.retain {
                    writes.extend(self.retain(message));
                }
                forward_order::forward(cluster, message, publisher_write, hold, order, &mut writes);
                // Routed here once already (not "no matching subscribers").
                return Published {
                    routed: 1,
                    writes,
                    congested: None,
                };
            }
            let mut writes = Vec::new();
            if message.retain {
                writes.extend(self.retain(message));
            }
            let (mut routed, publisher_write, congested) =
                self.route_durably(message, publisher_ops);
            if routed == 0 && cluster.subscribed_elsewhere(&message.topic) {
                routed = 1;
            }
            forward_order::forward(cluster, message, publisher_write, hold, order, &mut writes);
            return self.published(routed, writes, congested);
        }
        let mut writes = Vec::new();
        if message.retain {
            writes.extend(self.retain(message));
        }
        let (routed, accepted, congested) = self.route_durably(message, publisher_ops);
        writes.extend(accepted);
        self.published(routed, writes, congested)
    }

    /// The outcome of a message routed to `routed` sessions (counted as unrouted if none).
    fn published(
        &self,
        routed: usize,
        writes: Vec<Completion>,
        congested: Option<Arc<SessionHandle>>,
    ) -> Published {
        if routed == 0 {
            Stats::incr(&self.stats.messages_unrouted);
        }
        Published {
            routed,
            writes,
            congested,
        }
    }

    /// Publishes a message of the broker's own (`$SYS`): retained in memory only (the
    /// values are rebuilt after a restart, so the store never sees them) and not counted
    /// as received or unrouted, as Mosquitto does.
    pub fn publish_system(&self, message: &Arc<Message>) {
        if message.retain {
            write(&self.retained).insert(&message.topic, message.clone());
        }
        self.fan_out(message);
    }

    /// Stores or (empty payload) clears the retained message of `message.topic`. The
    /// stored copy keeps the QoS it was published with. The store is told under the
    /// tree's lock, so it sees the changes of one topic in the order the tree does.
    fn retain(&self, message: &Arc<Message>) -> Option<Completion> {
        let mut retained = write(&self.retained);
        if message.payload.is_empty() {
            retained.remove(&message.topic)?;
            Some(self.store.submit(vec![StoreOp::ClearRetained {
                topic: message.topic.clone(),
            }]))
        } else {
            retained.insert(&message.topic, message.clone());
            let stored = StoredMessage::from_message(message, &self.clock).without_cluster_id();
            Some(
                self.store
                    .submit(vec![StoreOp::SetRetained(Arc::new(stored))]),
            )
        }
    }

    /// Hands `message` to every session with a matching subscription and wakes their
    /// connections. Returns the number of sessions it was handed to.
    pub fn route(&self, message: &Arc<Message>) -> usize {
        let (count, _, _) = self.route_durably(message, Vec::new());
        if count == 0 {
            Stats::incr(&self.stats.messages_unrouted);
        }
        count
    }

    /// Routes `message`; for the deliveries to persistent sessions at QoS 1 or 2, first
    /// submits the message and their queue entries to the store (the returned write), so
    /// the store has them before any session can report sending them. Also returns the
    /// first target the delivery left congested.
    fn route_durably(
        &self,
        message: &Arc<Message>,
        publisher_ops: Vec<StoreOp>,
    ) -> (usize, Option<Completion>, Option<Arc<SessionHandle>>) {
        let mut fanout = self.collect_targets(message);
        let now = super::now();
        let count = fanout.targets.len() + fanout.shared.len();
        let accepted = self.store_deliveries(message, &mut fanout, publisher_ops);
        let mut congested = None;
        for (session, delivery) in fanout.targets.drain(..).chain(fanout.shared) {
            if self.deliver(&session, delivery, now) && congested.is_none() {
                congested = Some(session);
            }
        }
        Fanout::recycle(fanout.targets);
        (count, accepted, congested)
    }

    /// Submits the message with its queue entries for the persistent targets, and
    /// `publisher_ops` in the same write (alone when no target stores the message).
    pub(super) fn store_deliveries(
        &self,
        message: &Arc<Message>,
        fanout: &mut Fanout,
        publisher_ops: Vec<StoreOp>,
    ) -> Option<Completion> {
        if message.qos == QoS::AtMostOnce {
            return self.submit(publisher_ops);
        }
        let mut queued = Vec::new();
        let mut message_id = None;
        for (session, delivery) in fanout.targets.iter_mut().chain(fanout.shared.iter_mut()) {
            if delivery.qos == QoS::AtMostOnce || !session.is_persistent() {
                continue;
            }
            let id = *message_id.get_or_insert_with(|| self.store.next_message_id());
            delivery.stored = Some(id);
            queued.push(QueuedDelivery {
                client_id: session.client_id.clone(),
                qos: delivery.qos,
                retain: delivery.retain,
                subscription_ids: delivery.subscription_ids.clone(),
            });
        }
        let Some(message_id) = message_id else {
            return self.submit(publisher_ops);
        };
        if self.cluster.get().is_some() {
            // Stored with the id the message is forwarded under: a node that takes one
            // of these sessions over from a backup's copy recognises a copy of it sent
            // again by another node (`recent`).
            message.cluster_id();
        }
        let mut ops = vec![StoreOp::Accept {
            message_id,
            message: Arc::new(StoredMessage::from_message(message, &self.clock)),
            deliveries: queued,
        }];
        ops.extend(publisher_ops);
        Some(self.store.submit(ops))
    }

    fn fan_out(&self, message: &Arc<Message>) -> usize {
        let mut fanout = self.collect_targets(message);
        let now = super::now();
        let count = fanout.targets.len() + fanout.shared.len();
        for (session, delivery) in fanout.targets.drain(..).chain(fanout.shared) {
            self.deliver(&session, delivery, now);
        }
        Fanout::recycle(fanout.targets);
        count
    }

    fn collect_targets(&self, message: &Arc<Message>) -> Fanout {
        let mut fanout = Fanout::new();
        {
            let routes = read(&self.routes);
            routes.for_each_match(&message.topic, |found| match found {
                Match::Direct(key, route) => {
                    if route.options.no_local && message.publisher == Some(*key) {
                        return;
                    }
                    fanout.add_direct(*key, route, message);
                }
                Match::Shared(group) => fanout.add_shared(group, message),
            });
        }
        if let Some(security) = self.read_checks() {
            self.keep_readable(&mut fanout, security, &message.topic);
        }
        fanout
    }

    /// Drops the targets whose client may not read `topic` (only with an ACL file), as
    /// Mosquitto checks every delivery. A shared group's chosen member that may not read
    /// it does not get it, and neither does another member (Mosquitto's rule too).
    fn keep_readable(&self, fanout: &mut Fanout, security: &Security, topic: &str) {
        let before = fanout.targets.len() + fanout.shared.len();
        let readable = |(session, _): &(Arc<SessionHandle>, Delivery)| {
            session
                .read_gate
                .allows(security, &session.client_id, topic)
        };
        fanout.targets.retain(readable);
        fanout.shared.retain(readable);
        let denied = before - fanout.targets.len() - fanout.shared.len();
        if denied > 0 {
            self.stats.dropped_many(Dropped::AclDenied, denied as u64);
        }
    }

    /// Enqueues one delivery and wakes the session's connection. Returns whether the
    /// session is now congested: connected, with its queue nearly full.
    pub(super) fn deliver(
        &self,
        session: &SessionHandle,
        delivery: Delivery,
        now: Instant,
    ) -> bool {
        self.deliver_via(session, delivery, now, Via::Straight)
    }

    /// `deliver`, saying how the delivery came: a session that moved here a short while
    /// ago drops copies and holds what did not come through its previous node's relay
    /// (`super::recent`); for any other session it is one flag test.
    pub(super) fn deliver_via(
        &self,
        session: &SessionHandle,
        delivery: Delivery,
        now: Instant,
        via: Via,
    ) -> bool {
        let (result, congested) = {
            let mut state = session.lock();
            if session.is_retired() {
                // Ended since the routes were read: a session that replaced it under the
                // same client id must not keep the queue entry stored for this one.
                self.drop_stored(session, &delivery);
                return false;
            }
            if session
                .moved_recently
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                return self.deliver_to_moved(session, state, delivery, now, via);
            }
            self.enqueue_locked(session, &mut state, delivery, now)
        };
        self.enqueued(session, result);
        congested
    }

    /// `deliver_via` for a session that moved here a short while ago, locked (`state`):
    /// screened (`screen_moved`), with the held deliveries that go ahead of it. Apart,
    /// so that the path every other delivery takes stays as small as it was.
    #[cold]
    fn deliver_to_moved(
        &self,
        session: &SessionHandle,
        mut state: std::sync::MutexGuard<'_, crate::session::Session>,
        delivery: Delivery,
        now: Instant,
        via: Via,
    ) -> bool {
        let screened = self.screen_moved(session, delivery, now, via);
        let mut outcomes = Vec::with_capacity(screened.ahead.len() + 1);
        for queued in screened.ahead.into_iter().chain(screened.delivery) {
            outcomes.push(self.enqueue_locked(session, &mut state, queued, now));
        }
        drop(state);
        let mut congested = false;
        for (result, congested_now) in outcomes {
            congested |= congested_now;
            self.enqueued(session, result);
        }
        congested
    }

    /// Enqueues one delivery into the locked session: the outcome (for `enqueued`, once
    /// the lock is released) and whether the session is now congested.
    pub(super) fn enqueue_locked(
        &self,
        session: &SessionHandle,
        state: &mut crate::session::Session,
        delivery: Delivery,
        now: Instant,
    ) -> (Result<(), crate::session::DropReason>, bool) {
        let result = state.enqueue(delivery, now);
        // A refused stored delivery journaled its removal from the stored queue.
        let _ = self.submit_journal(state);
        let congested =
            state.is_connected() && state.queue_congested() && session.congestion.note();
        (result, congested)
    }

    /// Counts an enqueued (or refused) delivery and wakes the session's connection.
    pub(super) fn enqueued(
        &self,
        session: &SessionHandle,
        result: Result<(), crate::session::DropReason>,
    ) {
        match result {
            Ok(()) => {
                Stats::incr(&self.stats.messages_enqueued);
                session.wake.notify_one();
            }
            Err(reason) => self.stats.dropped(reason),
        }
    }

    /// A delivery that will not be queued: its stored queue entry goes.
    pub(super) fn drop_stored(&self, session: &SessionHandle, delivery: &Delivery) {
        if let Some(message_id) = delivery.stored {
            self.submit_detached(vec![StoreOp::DropQueued {
                client_id: session.client_id.clone(),
                message_id,
            }]);
        }
    }

    /// Carries out a SUBSCRIBE the session accepted: records each valid filter, installs
    /// its route, queues the matching retained messages, and returns the SUBACK (to be
    /// sent before those messages). `None` if the connection has been taken over.
    pub fn subscribe(
        &self,
        handle: &Arc<SessionHandle>,
        generation: u64,
        request: SubscribeRequest,
    ) -> Option<(SubAck, Option<Completion>)> {
        let mut reason_codes = Vec::with_capacity(request.filters.len());
        let mut added = Vec::new();
        let written = {
            let mut session = handle.lock_current(generation)?;
            let mut retained_wanted = Vec::new();
            {
                let mut routes = write(&self.routes);
                for filter in request.filters {
                    let existed = match filter.result {
                        Ok(existed) => existed,
                        Err(code) => {
                            reason_codes.push(code);
                            continue;
                        }
                    };
                    let Some((plain, group)) = trie_key(&filter.filter) else {
                        reason_codes.push(reason::TOPIC_FILTER_INVALID);
                        continue;
                    };
                    session.add_subscription(filter.filter.clone(), filter.entry);
                    let route = Route::new(
                        handle.clone(),
                        filter.entry.options,
                        filter.entry.subscription_id,
                    );
                    routes.insert(plain, group, handle.key, route);
                    if !existed {
                        if let Some(cluster) = self.cluster.get() {
                            cluster.filter_added(&filter.filter);
                        }
                    }
                    reason_codes.push(filter.entry.options.qos as u8);
                    let send_retained = match filter.entry.options.retain_handling {
                        RetainHandling::SendAtSubscribe => true,
                        RetainHandling::SendIfNew => !existed,
                        RetainHandling::DoNotSend => false,
                    };
                    if send_retained && group.is_none() {
                        retained_wanted.push((filter.filter.clone(), filter.entry));
                    }
                    added.push((filter.filter, filter.entry));
                }
            }
            // Routes are installed before the retained tree is read: a retained PUBLISH
            // racing with this SUBSCRIBE is then either routed live or found here.
            let mut matched = Vec::with_capacity(retained_wanted.len());
            if !retained_wanted.is_empty() {
                let retained = read(&self.retained);
                let security = self.read_checks();
                for (filter, entry) in &retained_wanted {
                    let mut messages = Vec::new();
                    retained.for_each_matching(filter, |message| messages.push(message.clone()));
                    // Retained messages go out only where the client may read them too.
                    if let Some(security) = security {
                        messages.retain(|message| {
                            handle
                                .read_gate
                                .allows(security, &handle.client_id, &message.topic)
                        });
                    }
                    matched.push((entry, messages));
                }
            }
            // Into the retained backlog, not the queue: its limits would cut a large match.
            for (entry, messages) in matched {
                let refused =
                    session.queue_retained(entry.options.qos, entry.subscription_id, messages);
                if refused > 0 {
                    self.stats
                        .dropped_many(Dropped::RetainedBacklogFull, refused as u64);
                }
            }
            let ops: Vec<StoreOp> = if session.is_persistent() {
                added
                    .into_iter()
                    .map(|(filter, entry)| StoreOp::AddSubscription {
                        client_id: handle.client_id.clone(),
                        filter,
                        entry,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            self.submit(ops)
        };
        let suback = SubAck {
            packet_id: request.packet_id,
            reason_codes,
            ..SubAck::default()
        };
        Some((suback, written))
    }

    /// Carries out an UNSUBSCRIBE: removes the routes and returns the UNSUBACK. `None` if
    /// the connection has been taken over.
    pub fn unsubscribe(
        &self,
        handle: &Arc<SessionHandle>,
        generation: u64,
        request: UnsubscribeRequest,
    ) -> Option<(UnsubAck, Option<Completion>)> {
        let mut reason_codes = Vec::with_capacity(request.filters.len());
        let written = {
            let mut session = handle.lock_current(generation)?;
            let mut ops = Vec::new();
            {
                let mut routes = write(&self.routes);
                for (filter, existed) in &request.filters {
                    let removed = session.remove_subscription(filter);
                    remove_route(&mut routes, filter, handle.key);
                    // The session may have dropped the filter already (`existed`).
                    if *existed || removed {
                        if let Some(cluster) = self.cluster.get() {
                            cluster.filter_removed(filter);
                        }
                    }
                    if removed && session.is_persistent() {
                        ops.push(StoreOp::RemoveSubscription {
                            client_id: handle.client_id.clone(),
                            filter: filter.clone(),
                        });
                    }
                    reason_codes.push(if *existed || removed {
                        reason::SUCCESS
                    } else {
                        reason::NO_SUBSCRIPTION_EXISTED
                    });
                }
            }
            self.submit(ops)
        };
        let unsuback = UnsubAck {
            packet_id: request.packet_id,
            reason_codes,
            ..UnsubAck::default()
        };
        Some((unsuback, written))
    }

    /// Removes every route of an ended session.
    pub(crate) fn remove_routes(&self, key: SessionKey, filters: &[ByteString]) {
        if filters.is_empty() {
            return;
        }
        let mut routes = write(&self.routes);
        for filter in filters {
            remove_route(&mut routes, filter, key);
        }
        drop(routes);
        if let Some(cluster) = self.cluster.get() {
            for filter in filters {
                cluster.filter_removed(filter);
            }
        }
    }
}

fn remove_route(routes: &mut SubscriptionTrie<SessionKey, Route>, filter: &str, key: SessionKey) {
    if let Some((plain, group)) = trie_key(filter) {
        routes.remove(plain, group, &key);
    }
}

/// On a cluster node, with each incoming QoS 2 packet id the publisher's session
/// records, the cluster id its message goes under (`StoreOp::IncomingInCluster`): the
/// backups keep it, and a node that takes the session over from their copy routes the
/// client's resend under the same id.
fn note_incoming_ids(message: &Message, publisher_ops: &mut Vec<StoreOp>) {
    // A PUBLISH records at most one packet id.
    let noted = publisher_ops.iter().find_map(|op| match op {
        StoreOp::AddIncomingQos2 {
            client_id,
            packet_id,
        } => Some(StoreOp::IncomingInCluster {
            client_id: client_id.clone(),
            packet_id: *packet_id,
            cluster_id: message.cluster_id(),
        }),
        _ => None,
    });
    publisher_ops.extend(noted);
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// A device's subscription is one subscriber entry in the trie (BENCHMARKS.md,
    /// "Memory per idle connection"): 24 bytes, a 32-byte allocation.
    #[test]
    fn a_subscriber_entry_stays_small() {
        assert_eq!(std::mem::size_of::<(SessionKey, Route)>(), 24);
    }
}
