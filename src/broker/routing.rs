//! Fan-out of published messages, retained messages, and the route side of SUBSCRIBE /
//! UNSUBSCRIBE.
//!
//! `route` runs on the publishing connection's task: it read-locks the subscription trie,
//! collects one delivery per target session (overlapping subscriptions merged), releases
//! the lock, and only then locks each target session in turn to enqueue and wake it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;

use crate::message::{Message, SessionKey};
use crate::protocol::{reason, QoS, RetainHandling, SubAck, SubscriptionOptions, UnsubAck};
use crate::session::{Delivery, SubscribeRequest, UnsubscribeRequest};
use crate::storage::StoreEvent;
use crate::topic::{parse_shared, Match, SharedGroup, SubscriptionTrie};

use super::{read, write, Broker, SessionHandle, Stats};

/// What the trie stores per subscription.
#[derive(Debug, Clone)]
pub struct Route {
    pub session: Arc<SessionHandle>,
    pub options: SubscriptionOptions,
    pub subscription_id: Option<u32>,
}

/// Above this many targets, merging overlapping subscriptions switches from a linear scan
/// to a hash index.
const LINEAR_MERGE_LIMIT: usize = 16;

/// The deliveries of one message, at most one per session for plain subscriptions.
#[derive(Default)]
struct Fanout {
    targets: Vec<(Arc<SessionHandle>, Delivery)>,
    /// Position of each session's merged delivery, once `targets` is large.
    index: HashMap<SessionKey, usize>,
    /// Shared-group deliveries are separate from (not merged into) plain ones.
    shared: Vec<(Arc<SessionHandle>, Delivery)>,
}

impl Fanout {
    fn add_direct(&mut self, route: &Route, message: &Arc<Message>) {
        let key = route.session.key;
        let position = if self.targets.len() <= LINEAR_MERGE_LIMIT {
            self.targets
                .iter()
                .position(|(session, _)| session.key == key)
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
                delivery.subscription_ids.extend(route.subscription_id);
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

    fn add_shared(&mut self, group: &SharedGroup<SessionKey, Route>, message: &Arc<Message>) {
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
        subscription_ids: route.subscription_id.into_iter().collect(),
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
fn trie_key(filter: &str) -> Option<(&str, Option<&str>)> {
    match parse_shared(filter) {
        Ok(Some((group, plain))) => Some((plain, Some(group))),
        Ok(None) => Some((filter, None)),
        Err(_) => None,
    }
}

impl Broker {
    /// Retains (if flagged) and routes a message. Returns the number of sessions it was
    /// handed to.
    pub fn publish(&self, message: &Arc<Message>) -> usize {
        self.stats.message_received(message.qos);
        if message.retain {
            self.retain(message);
        }
        self.route(message)
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
    /// stored copy keeps the QoS it was published with.
    fn retain(&self, message: &Arc<Message>) {
        if message.payload.is_empty() {
            let removed = write(&self.retained).remove(&message.topic);
            if removed.is_some() {
                self.record_event(StoreEvent::RetainedCleared {
                    topic: &message.topic,
                });
            }
        } else {
            write(&self.retained).insert(&message.topic, message.clone());
            self.record_event(StoreEvent::RetainedSet { message });
        }
    }

    /// Hands `message` to every session with a matching subscription and wakes their
    /// connections. Returns the number of sessions it was handed to.
    pub fn route(&self, message: &Arc<Message>) -> usize {
        let count = self.fan_out(message);
        if count == 0 {
            Stats::incr(&self.stats.messages_unrouted);
        }
        count
    }

    fn fan_out(&self, message: &Arc<Message>) -> usize {
        let mut fanout = Fanout::default();
        {
            let routes = read(&self.routes);
            routes.for_each_match(&message.topic, |found| match found {
                Match::Direct(key, route) => {
                    if route.options.no_local && message.publisher == Some(*key) {
                        return;
                    }
                    fanout.add_direct(route, message);
                }
                Match::Shared(group) => fanout.add_shared(group, message),
            });
        }
        let now = super::now();
        let count = fanout.targets.len() + fanout.shared.len();
        for (session, delivery) in fanout.targets.into_iter().chain(fanout.shared) {
            self.deliver(&session, delivery, now);
        }
        count
    }

    fn deliver(&self, session: &SessionHandle, delivery: Delivery, now: Instant) {
        let result = session.lock().enqueue(delivery, now);
        match result {
            Ok(()) => {
                Stats::incr(&self.stats.messages_enqueued);
                session.wake.notify_one();
            }
            Err(reason) => self.stats.dropped(reason),
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
    ) -> Option<SubAck> {
        let now = super::now();
        let mut reason_codes = Vec::with_capacity(request.filters.len());
        let mut added = Vec::new();
        {
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
                    let route = Route {
                        session: handle.clone(),
                        options: filter.entry.options,
                        subscription_id: filter.entry.subscription_id,
                    };
                    routes.insert(plain, group, handle.key, route);
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
            let mut deliveries = Vec::new();
            if !retained_wanted.is_empty() {
                let retained = read(&self.retained);
                for (filter, entry) in &retained_wanted {
                    retained.for_each_matching(filter, |message| {
                        deliveries.push(Delivery {
                            message: message.clone(),
                            qos: message.qos.min(entry.options.qos),
                            retain: true,
                            subscription_ids: entry.subscription_id.into_iter().collect(),
                        });
                    });
                }
            }
            for delivery in deliveries {
                if let Err(reason) = session.enqueue(delivery, now) {
                    self.stats.dropped(reason);
                }
            }
        }
        for (filter, entry) in &added {
            self.record_event(StoreEvent::SubscriptionAdded {
                client_id: &handle.client_id,
                filter,
                entry,
            });
        }
        Some(SubAck {
            packet_id: request.packet_id,
            reason_codes,
            ..SubAck::default()
        })
    }

    /// Carries out an UNSUBSCRIBE: removes the routes and returns the UNSUBACK. `None` if
    /// the connection has been taken over.
    pub fn unsubscribe(
        &self,
        handle: &Arc<SessionHandle>,
        generation: u64,
        request: UnsubscribeRequest,
    ) -> Option<UnsubAck> {
        let mut reason_codes = Vec::with_capacity(request.filters.len());
        {
            let mut session = handle.lock_current(generation)?;
            let mut routes = write(&self.routes);
            for (filter, existed) in &request.filters {
                let removed = session.remove_subscription(filter);
                remove_route(&mut routes, filter, handle.key);
                reason_codes.push(if *existed || removed {
                    reason::SUCCESS
                } else {
                    reason::NO_SUBSCRIPTION_EXISTED
                });
            }
        }
        for ((filter, _), code) in request.filters.iter().zip(&reason_codes) {
            if *code == reason::SUCCESS {
                self.record_event(StoreEvent::SubscriptionRemoved {
                    client_id: &handle.client_id,
                    filter,
                });
            }
        }
        Some(UnsubAck {
            packet_id: request.packet_id,
            reason_codes,
            ..UnsubAck::default()
        })
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
    }
}

fn remove_route(routes: &mut SubscriptionTrie<SessionKey, Route>, filter: &str, key: SessionKey) {
    if let Some((plain, group)) = trie_key(filter) {
        routes.remove(plain, group, &key);
    }
}
