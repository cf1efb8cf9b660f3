//! Model-based property test: random client packets, deliveries, polls, reconnects and
//! time steps, checked against a small model of the outgoing inflight table and the
//! incoming QoS 2 set. Whatever a client sends, the session must not panic, must keep
//! every bound, and must never route a QoS 2 message twice.

use std::collections::HashSet;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::protocol::{Subscribe, SubscribeFilter, SubscriptionOptions};

/// Ids drawn from a small range so acknowledgements often hit something in flight.
const IDS: std::ops::RangeInclusive<u16> = 1..=6;
const CLIENT_RECEIVE_MAXIMUM: u16 = 3;

#[derive(Debug, Clone)]
enum Op {
    Publish {
        topic: &'static str,
        qos: QoS,
        packet_id: u16,
        alias: Option<u16>,
    },
    PubAck(u16),
    PubRec(u16, u8),
    PubComp(u16),
    PubRel(u16),
    /// The right next acknowledgement for the n-th (modulo) message in flight.
    Acknowledge(usize),
    Subscribe(&'static str, bool),
    Enqueue {
        topic: &'static str,
        qos: QoS,
        expiry_secs: Option<u64>,
    },
    Poll,
    Reconnect,
    Advance(u64),
}

fn qos() -> impl Strategy<Value = QoS> {
    prop::sample::select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn op() -> impl Strategy<Value = Op> {
    let topic = prop::sample::select(vec!["a", "a/b", "", "a/+", "$SYS/x"]);
    let filter = prop::sample::select(vec!["a/#", "$share/g/a", "a/#/b", "+"]);
    prop_oneof![
        (topic.clone(), qos(), 0..=6u16, prop::option::of(0..=4u16)).prop_map(
            |(topic, qos, packet_id, alias)| Op::Publish {
                topic,
                qos,
                packet_id,
                alias
            }
        ),
        IDS.prop_map(Op::PubAck),
        (IDS, prop::sample::select(vec![0u8, 0x80])).prop_map(|(id, code)| Op::PubRec(id, code)),
        IDS.prop_map(Op::PubComp),
        IDS.prop_map(Op::PubRel),
        (0..8usize).prop_map(Op::Acknowledge),
        (0..8usize).prop_map(Op::Acknowledge),
        (filter, any::<bool>()).prop_map(|(filter, no_local)| Op::Subscribe(filter, no_local)),
        (topic, qos(), prop::option::of(1..=20u64)).prop_map(|(topic, qos, expiry_secs)| {
            Op::Enqueue {
                topic,
                qos,
                expiry_secs,
            }
        }),
        Just(Op::Poll),
        Just(Op::Poll),
        Just(Op::Reconnect),
        (1..=10u64).prop_map(Op::Advance),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Qos1,
    Qos2,
    Released,
}

/// What the client has been sent and not yet completed, in send order.
#[derive(Default)]
struct Model {
    inflight: Vec<(u16, Sent)>,
    awaiting_release: HashSet<u16>,
}

impl Model {
    fn state(&self, id: u16) -> Option<Sent> {
        self.inflight
            .iter()
            .find(|(sent, _)| *sent == id)
            .map(|(_, state)| *state)
    }

    fn remove(&mut self, id: u16) {
        self.inflight.retain(|(sent, _)| *sent != id);
    }

    fn set(&mut self, id: u16, state: Sent) {
        if let Some(entry) = self.inflight.iter_mut().find(|(sent, _)| *sent == id) {
            entry.1 = state;
        }
    }
}

/// The acknowledgement that moves a message in `state` on.
fn acknowledgement(id: u16, state: Sent) -> Op {
    match state {
        Sent::Qos1 => Op::PubAck(id),
        Sent::Qos2 => Op::PubRec(id, 0),
        Sent::Released => Op::PubComp(id),
    }
}

struct Harness {
    session: Session,
    model: Model,
    connect: Connect,
    now: Instant,
    /// Set by a reconnect: the next poll must resend exactly the model's inflight table.
    expect_redelivery: bool,
}

impl Harness {
    fn new(protocol: ProtocolVersion) -> Harness {
        let mut connect = connect(protocol);
        connect.properties.receive_maximum = Some(CLIENT_RECEIVE_MAXIMUM);
        connect.properties.topic_alias_maximum = Some(2);
        connect.properties.maximum_packet_size = Some(200);
        let (session, now) = attached_with(&connect, limits());
        Harness {
            session,
            model: Model::default(),
            connect,
            now,
            expect_redelivery: false,
        }
    }

    fn v5(&self) -> bool {
        self.connect.protocol.is_v5()
    }

    fn reconnect(&mut self) {
        self.session.detach(self.now);
        self.session
            .attach(&self.connect, Duration::from_secs(60), self.now);
        self.expect_redelivery = !self.model.inflight.is_empty();
    }

    /// Sends a packet; a violation closes the connection and the client reconnects.
    fn client(&mut self, packet: Packet, expect_violation: bool) -> Option<Vec<Action>> {
        match self.session.handle_packet(packet, self.now) {
            Ok(actions) => {
                assert!(!expect_violation, "expected a violation, got {actions:?}");
                Some(actions)
            }
            Err(violation) => {
                assert!(expect_violation, "unexpected violation: {violation}");
                self.reconnect();
                None
            }
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Publish {
                topic,
                qos,
                packet_id,
                alias,
            } => self.publish(topic, qos, packet_id, alias),
            Op::PubAck(id) => {
                let state = self.model.state(id);
                let wrong = matches!(state, Some(Sent::Qos2 | Sent::Released));
                if self.client(Packet::PubAck(response(id)), wrong).is_some() && state.is_some() {
                    self.model.remove(id);
                }
            }
            Op::PubRec(id, code) => {
                let state = self.model.state(id);
                let wrong = state == Some(Sent::Qos1);
                if self
                    .client(Packet::PubRec(response_with(id, code)), wrong)
                    .is_some()
                {
                    if code >= 0x80 && self.v5() {
                        self.model.remove(id);
                    } else {
                        self.model.set(id, Sent::Released);
                    }
                }
            }
            Op::PubComp(id) => {
                let state = self.model.state(id);
                let wrong = matches!(state, Some(Sent::Qos1 | Sent::Qos2));
                if self.client(Packet::PubComp(response(id)), wrong).is_some() {
                    self.model.remove(id);
                }
            }
            Op::Acknowledge(index) => {
                if !self.model.inflight.is_empty() {
                    let (id, state) = self.model.inflight[index % self.model.inflight.len()];
                    self.apply(acknowledgement(id, state));
                }
            }
            Op::PubRel(id) => {
                self.client(Packet::PubRel(response(id)), false);
                self.model.awaiting_release.remove(&id);
            }
            Op::Subscribe(filter, no_local) => {
                let shared = filter.starts_with("$share/");
                let packet = Packet::Subscribe(Subscribe {
                    packet_id: 1,
                    filters: vec![SubscribeFilter {
                        filter: filter.into(),
                        options: SubscriptionOptions {
                            no_local,
                            ..SubscriptionOptions::default()
                        },
                    }],
                    subscription_identifier: None,
                    user_properties: Vec::new(),
                });
                self.client(packet, shared && no_local);
            }
            Op::Enqueue {
                topic,
                qos,
                expiry_secs,
            } => {
                let mut message = message(topic, qos);
                message.expires_at = expiry_secs.map(|secs| self.now + Duration::from_secs(secs));
                let _ = self.session.enqueue(delivery_of(message, qos), self.now);
            }
            Op::Poll => self.poll(),
            Op::Reconnect => self.reconnect(),
            Op::Advance(secs) => self.now += Duration::from_secs(secs),
        }
        self.check_bounds();
    }

    fn publish(&mut self, topic: &'static str, qos: QoS, packet_id: u16, alias: Option<u16>) {
        let mut packet = publish(topic, qos, packet_id);
        packet.properties.topic_alias = alias;
        let duplicate = qos == QoS::ExactlyOnce && self.model.awaiting_release.contains(&packet_id);
        let Ok(actions) = self
            .session
            .handle_packet(Packet::Publish(packet), self.now)
        else {
            // Invalid topics, aliases and ids are refused; the client reconnects.
            self.reconnect();
            return;
        };
        let routes = actions
            .iter()
            .filter(|action| matches!(action, Action::Route(_)))
            .count();
        assert_eq!(routes, usize::from(!duplicate), "exactly once: {actions:?}");
        if qos == QoS::ExactlyOnce {
            self.model.awaiting_release.insert(packet_id);
        }
    }

    fn poll(&mut self) {
        let (out, _) = poll(&mut self.session, self.now);
        let mut resent = Vec::new();
        let mut new = Vec::new();
        for packet in out {
            match packet {
                Packet::Publish(publish) if publish.dup => {
                    let state = self.model.state(publish.packet_id);
                    assert!(matches!(state, Some(Sent::Qos1 | Sent::Qos2)), "{state:?}");
                    resent.push((publish.packet_id, state));
                }
                Packet::Publish(publish) if publish.qos != QoS::AtMostOnce => {
                    assert_ne!(publish.packet_id, 0);
                    let id = publish.packet_id;
                    assert_eq!(self.model.state(id), None, "id reused in flight");
                    assert!(new.iter().all(|(sent, _)| *sent != id), "id used twice");
                    let sent = if publish.qos == QoS::AtLeastOnce {
                        Sent::Qos1
                    } else {
                        Sent::Qos2
                    };
                    new.push((id, sent));
                }
                Packet::Publish(publish) => assert_eq!(publish.packet_id, 0),
                Packet::PubRel(pubrel) => {
                    let state = self.model.state(pubrel.packet_id);
                    assert_eq!(state, Some(Sent::Released));
                    resent.push((pubrel.packet_id, state));
                }
                other => panic!("unexpected packet from poll: {other:?}"),
            }
        }
        if self.expect_redelivery {
            self.expect_redelivery = false;
            // Redelivery keeps the original order; what is missing was dropped (expired).
            let in_order: Vec<u16> = self
                .model
                .inflight
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| resent.iter().any(|(sent, _)| sent == id))
                .collect();
            let resent_ids: Vec<u16> = resent.iter().map(|(id, _)| *id).collect();
            assert_eq!(resent_ids, in_order);
            self.model
                .inflight
                .retain(|(id, _)| resent_ids.contains(id));
        } else {
            assert!(resent.is_empty(), "resent without a reconnect: {resent:?}");
        }
        self.model.inflight.extend(new);
    }

    fn check_bounds(&self) {
        let limits = limits();
        let window = if self.v5() {
            limits.max_inflight.min(CLIENT_RECEIVE_MAXIMUM)
        } else {
            limits.max_inflight
        };
        assert_eq!(self.session.inflight_len(), self.model.inflight.len());
        assert!(self.session.inflight_len() <= usize::from(window));
        assert!(self.session.queued_len() <= limits.max_queued_messages);
        assert!(self.session.queued_bytes() <= limits.max_queued_bytes);
        assert_eq!(
            self.session.incoming_qos2_len(),
            self.model.awaiting_release.len()
        );
        if self.v5() {
            assert!(self.session.incoming_qos2_len() <= usize::from(limits.receive_maximum));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn session_matches_model(v5 in any::<bool>(), ops in prop::collection::vec(op(), 1..60)) {
        let protocol = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V3_1_1 };
        let mut harness = Harness::new(protocol);
        for op in ops {
            harness.apply(op);
        }
        // Everything still in flight completes once acknowledged.
        harness.reconnect();
        harness.poll();
        for _ in 0..2 {
            for (id, state) in harness.model.inflight.clone() {
                harness.apply(acknowledgement(id, state));
            }
        }
        prop_assert_eq!(harness.session.inflight_len(), 0);
    }
}
