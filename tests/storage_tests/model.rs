//! Model-based property test: random sequences of store operations, restores and
//! reopens are applied to the memory store, the RocksDB store and a deliberately naive
//! model (vectors and linear scans); every restore of the three must agree, and so must
//! the number of stored message bodies.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use fleetmq::message::ClusterMessageId;
use fleetmq::protocol::{PublishProperties, QoS};
use fleetmq::session::SubscriptionEntry;
use fleetmq::storage::{
    InflightState, MessageId, QueuedDelivery, RestoredDelivery, RestoredInflight, RestoredSession,
    RestoredState, SessionRecord, StoreOp, StoredMessage, UnixMillis, EXPIRY_NEVER,
};
use proptest::prelude::*;

use crate::common::*;

const T0: UnixMillis = 1_700_000_000_000;
const CLIENTS: [&str; 3] = ["a", "b", "c"];
const FILTERS: [&str; 3] = ["f/1", "f/+", "#"];
const TOPICS: [&str; 2] = ["t/1", "t/2"];

#[derive(Debug, Clone)]
enum Step {
    Op(Box<StoreOp>),
    Restore(UnixMillis),
    Reopen,
}

#[derive(Debug, Clone)]
struct Entry {
    message_id: MessageId,
    qos: QoS,
    retain: bool,
    subscription_ids: Vec<u32>,
    /// Position in the order of queueing.
    order: u64,
}

#[derive(Debug, Clone)]
struct ModelSession {
    record: SessionRecord,
    subscriptions: BTreeMap<String, SubscriptionEntry>,
    queue: Vec<Entry>,
    inflight: Vec<(Entry, u16, InflightState)>,
    /// With the cluster id recorded for it, if any.
    incoming: BTreeMap<u16, Option<ClusterMessageId>>,
}

#[derive(Debug, Default)]
struct Model {
    sessions: BTreeMap<String, ModelSession>,
    retained: BTreeMap<String, Arc<StoredMessage>>,
    bodies: BTreeMap<MessageId, Arc<StoredMessage>>,
    next_order: u64,
}

impl Model {
    fn apply(&mut self, op: &StoreOp) {
        match op {
            StoreOp::PutSession(record) => {
                let fresh = ModelSession {
                    record: record.clone(),
                    subscriptions: BTreeMap::new(),
                    queue: Vec::new(),
                    inflight: Vec::new(),
                    incoming: BTreeMap::new(),
                };
                self.sessions
                    .entry(record.client_id.to_string())
                    .or_insert(fresh)
                    .record = record.clone();
            }
            StoreOp::RemoveSession { client_id } => {
                self.sessions.remove(&client_id.to_string());
            }
            StoreOp::AddSubscription {
                client_id,
                filter,
                entry,
            } => {
                if let Some(session) = self.sessions.get_mut(&client_id.to_string()) {
                    session.subscriptions.insert(filter.to_string(), *entry);
                }
            }
            StoreOp::RemoveSubscription { client_id, filter } => {
                if let Some(session) = self.sessions.get_mut(&client_id.to_string()) {
                    session.subscriptions.remove(&filter.to_string());
                }
            }
            StoreOp::SetRetained(message) => {
                self.retained
                    .insert(message.topic.to_string(), message.clone());
            }
            StoreOp::ClearRetained { topic } => {
                self.retained.remove(&topic.to_string());
            }
            StoreOp::Accept {
                message_id,
                message,
                deliveries,
            } => {
                for delivery in deliveries {
                    if let Some(session) = self.sessions.get_mut(&delivery.client_id.to_string()) {
                        session.queue.push(Entry {
                            message_id: *message_id,
                            qos: delivery.qos,
                            retain: delivery.retain,
                            subscription_ids: delivery.subscription_ids.clone(),
                            order: self.next_order,
                        });
                        self.next_order += 1;
                        self.bodies
                            .entry(*message_id)
                            .or_insert_with(|| message.clone());
                    }
                }
            }
            StoreOp::MarkInflight {
                client_id,
                message_id,
                packet_id,
                state,
            } => {
                if let Some(session) = self.sessions.get_mut(&client_id.to_string()) {
                    if let Some(at) = session
                        .queue
                        .iter()
                        .position(|e| e.message_id == *message_id)
                    {
                        session.inflight.retain(|(_, id, _)| id != packet_id);
                        let entry = session.queue.remove(at);
                        session.inflight.push((entry, *packet_id, *state));
                        session.inflight.sort_by_key(|(entry, _, _)| entry.order);
                    }
                }
            }
            StoreOp::AdvanceInflight {
                client_id,
                packet_id,
                state,
            } => {
                if let Some(session) = self.sessions.get_mut(&client_id.to_string()) {
                    for inflight in &mut session.inflight {
                        if inflight.1 == *packet_id {
                            inflight.2 = *state;
                        }
                    }
                }
            }
            StoreOp::CompleteInflight {
                client_id,
                packet_id,
            } => {
                if let Some(session) = self.sessions.get_mut(&client_id.to_string()) {
                    session.inflight.retain(|(_, id, _)| id != packet_id);
                }
            }
            StoreOp::DropQueued {
                client_id,
                message_id,
            } => {
                if let Some(session) = self.sessions.get_mut(&client_id.to_string()) {
                    if let Some(at) = session
                        .queue
                        .iter()
                        .position(|e| e.message_id == *message_id)
                    {
                        session.queue.remove(at);
                    }
                }
            }
            StoreOp::CompletedInCluster { .. } => {}
            StoreOp::IncomingInCluster {
                client_id,
                packet_id,
                cluster_id,
            } => {
                if let Some(session) = self.sessions.get_mut(&client_id.to_string()) {
                    if let Some(recorded) = session.incoming.get_mut(packet_id) {
                        *recorded = Some(*cluster_id);
                    }
                }
            }
            StoreOp::AddIncomingQos2 {
                client_id,
                packet_id,
            } => {
                if let Some(session) = self.sessions.get_mut(&client_id.to_string()) {
                    session.incoming.entry(*packet_id).or_insert(None);
                }
            }
            StoreOp::RemoveIncomingQos2 {
                client_id,
                packet_id,
            } => {
                if let Some(session) = self.sessions.get_mut(&client_id.to_string()) {
                    session.incoming.remove(packet_id);
                }
            }
        }
        self.collect_bodies();
    }

    /// A body lives exactly as long as something refers to it.
    fn collect_bodies(&mut self) {
        let referenced: BTreeSet<MessageId> = self
            .sessions
            .values()
            .flat_map(|s| {
                let queued = s.queue.iter().map(|e| e.message_id);
                let inflight = s.inflight.iter().map(|(e, _, _)| e.message_id);
                queued.chain(inflight).collect::<Vec<_>>()
            })
            .collect();
        self.bodies.retain(|id, _| referenced.contains(id));
    }

    fn restore(&mut self, now: UnixMillis) -> RestoredState {
        let mut expired_sessions = Vec::new();
        let bodies = self.bodies.clone();
        let body_expired = |id: MessageId| bodies[&id].expires_at.is_some_and(|at| at <= now);
        self.sessions.retain(|_, session| {
            let record = &mut session.record;
            let since = record.disconnected_at.unwrap_or(now);
            let expired = record.expiry_interval != EXPIRY_NEVER
                && since + u64::from(record.expiry_interval) * 1000 <= now;
            if expired {
                expired_sessions.push(record.clone());
                return false;
            }
            record.disconnected_at = Some(since);
            session
                .queue
                .retain(|entry| !body_expired(entry.message_id));
            true
        });
        self.retained
            .retain(|_, message| message.expires_at.is_none_or(|at| at > now));
        self.collect_bodies();

        let delivery = |entry: &Entry| RestoredDelivery {
            message_id: entry.message_id,
            message: self.bodies[&entry.message_id].clone(),
            qos: entry.qos,
            retain: entry.retain,
            subscription_ids: entry.subscription_ids.clone(),
        };
        RestoredState {
            sessions: self
                .sessions
                .values()
                .map(|session| RestoredSession {
                    record: session.record.clone(),
                    subscriptions: session
                        .subscriptions
                        .iter()
                        .map(|(filter, entry)| (filter.as_str().into(), *entry))
                        .collect(),
                    queue: session.queue.iter().map(delivery).collect(),
                    inflight: session
                        .inflight
                        .iter()
                        .map(|(entry, packet_id, state)| RestoredInflight {
                            delivery: delivery(entry),
                            packet_id: *packet_id,
                            state: *state,
                        })
                        .collect(),
                    incoming_qos2: session.incoming.keys().copied().collect(),
                    incoming_ids: session
                        .incoming
                        .iter()
                        .filter_map(|(packet_id, id)| Some((*packet_id, (*id)?)))
                        .collect(),
                })
                .collect(),
            expired_sessions,
            retained: self.retained.values().cloned().collect(),
        }
    }
}

// ---- generators ----

fn client() -> impl Strategy<Value = String> {
    prop::sample::select(CLIENTS.to_vec()).prop_map(String::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn state() -> impl Strategy<Value = InflightState> {
    prop_oneof![
        Just(InflightState::AwaitingPubAck),
        Just(InflightState::AwaitingPubRec),
        Just(InflightState::AwaitingPubComp)
    ]
}

fn expires_at() -> impl Strategy<Value = Option<UnixMillis>> {
    prop::option::of(prop::sample::select(vec![T0 + 1_000, T0 + 10_000]))
}

fn body() -> impl Strategy<Value = Arc<StoredMessage>> {
    (
        prop::sample::select(TOPICS.to_vec()),
        0u8..3,
        any::<bool>(),
        expires_at(),
    )
        .prop_map(|(topic, payload, retain, expires_at)| {
            Arc::new(StoredMessage {
                topic: topic.into(),
                payload: Bytes::from(vec![payload; usize::from(payload)]),
                qos: QoS::ExactlyOnce,
                retain,
                properties: PublishProperties::default(),
                expires_at,
                cluster_id: None,
            })
        })
}

fn record() -> impl Strategy<Value = SessionRecord> {
    (
        client(),
        prop::sample::select(vec![0, 10, EXPIRY_NEVER]),
        prop::option::of(prop::sample::select(vec![T0 - 60_000, T0])),
        any::<bool>(),
    )
        .prop_map(
            |(client_id, expiry_interval, disconnected_at, with_will)| SessionRecord {
                will: with_will.then(will),
                disconnected_at,
                ..session(&client_id, expiry_interval)
            },
        )
}

fn op() -> impl Strategy<Value = StoreOp> {
    let packet_id = 1u16..4;
    let message_id = 1u64..5;
    prop_oneof![
        3 => record().prop_map(StoreOp::PutSession),
        1 => client().prop_map(|c| StoreOp::RemoveSession { client_id: c.into() }),
        2 => (client(), prop::sample::select(FILTERS.to_vec()), qos(), prop::option::of(1u32..3))
            .prop_map(|(c, f, q, sid)| StoreOp::AddSubscription {
                client_id: c.into(),
                filter: f.into(),
                entry: subscription(q, sid),
            }),
        1 => (client(), prop::sample::select(FILTERS.to_vec()))
            .prop_map(|(c, f)| StoreOp::RemoveSubscription { client_id: c.into(), filter: f.into() }),
        1 => body().prop_map(StoreOp::SetRetained),
        1 => prop::sample::select(TOPICS.to_vec())
            .prop_map(|t| StoreOp::ClearRetained { topic: t.into() }),
        4 => (
            message_id.clone(),
            body(),
            prop::collection::vec((client(), qos(), any::<bool>(), prop::collection::vec(1u32..4, 0..3)), 0..4),
        )
            .prop_map(|(id, message, targets)| StoreOp::Accept {
                message_id: id,
                message,
                deliveries: targets
                    .into_iter()
                    .map(|(c, qos, retain, subscription_ids)| QueuedDelivery {
                        client_id: c.into(),
                        qos,
                        retain,
                        subscription_ids,
                    })
                    .collect(),
            }),
        3 => (client(), message_id.clone(), packet_id.clone(), state()).prop_map(|(c, m, p, s)| {
            StoreOp::MarkInflight { client_id: c.into(), message_id: m, packet_id: p, state: s }
        }),
        1 => (client(), packet_id.clone(), state()).prop_map(|(c, p, s)| StoreOp::AdvanceInflight {
            client_id: c.into(),
            packet_id: p,
            state: s,
        }),
        2 => (client(), packet_id.clone())
            .prop_map(|(c, p)| StoreOp::CompleteInflight { client_id: c.into(), packet_id: p }),
        1 => (client(), message_id)
            .prop_map(|(c, m)| StoreOp::DropQueued { client_id: c.into(), message_id: m }),
        1 => (client(), packet_id.clone())
            .prop_map(|(c, p)| StoreOp::AddIncomingQos2 { client_id: c.into(), packet_id: p }),
        1 => (client(), packet_id.clone(), 1u64..4, 1u64..1000).prop_map(|(c, p, node, sequence)| {
            StoreOp::IncomingInCluster {
                client_id: c.into(),
                packet_id: p,
                cluster_id: ClusterMessageId { node, sequence },
            }
        }),
        1 => (client(), packet_id)
            .prop_map(|(c, p)| StoreOp::RemoveIncomingQos2 { client_id: c.into(), packet_id: p }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        20 => op().prop_map(|op| Step::Op(Box::new(op))),
        1 => prop::sample::select(vec![T0, T0 + 5_000, T0 + 20_000]).prop_map(Step::Restore),
        1 => Just(Step::Reopen),
    ]
}

fn check_restore(
    model: &mut Model,
    memory: &dyn Backend,
    rocks: &dyn Backend,
    now: UnixMillis,
) -> Result<(), TestCaseError> {
    let expected = model.restore(now);
    let from_memory = memory.store().restore(now).unwrap();
    let from_rocks = rocks.store().restore(now).unwrap();
    prop_assert_eq!(
        &from_memory,
        &expected,
        "memory store differs from the model"
    );
    prop_assert_eq!(
        &from_rocks,
        &expected,
        "RocksDB store differs from the model"
    );
    let bodies = model.bodies.len() as u64;
    prop_assert_eq!(memory.store().stats().message_bodies, bodies);
    prop_assert_eq!(rocks.store().stats().message_bodies, bodies);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn both_stores_agree_with_the_model(steps in prop::collection::vec(step(), 1..80)) {
        let mut model = Model::default();
        let memory = memory();
        let mut rocks = rocks();
        // Submissions are not awaited one by one: ordering must hold while the RocksDB
        // writer groups them.
        let mut pending = Vec::new();
        for step in steps {
            match step {
                Step::Op(op) => {
                    model.apply(&op);
                    memory.store().submit(vec![(*op).clone()]).wait().unwrap();
                    pending.push(rocks.store().submit(vec![*op]));
                }
                Step::Restore(now) => {
                    pending.drain(..).try_for_each(|c| c.wait()).unwrap();
                    check_restore(&mut model, memory.as_ref(), rocks.as_ref(), now)?;
                }
                Step::Reopen => {
                    pending.drain(..).try_for_each(|c| c.wait()).unwrap();
                    rocks.reopen();
                }
            }
        }
        pending.drain(..).try_for_each(|c| c.wait()).unwrap();
        rocks.reopen();
        check_restore(&mut model, memory.as_ref(), rocks.as_ref(), T0 + 5_000)?;
    }
}
