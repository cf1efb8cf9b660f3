//! Restarts without sockets: a broker writes its state into a store, a second broker is
//! restored from that store, and the second must carry on where the first stopped.
//! The memory store stands in for RocksDB (both share the ledger that gives operations
//! their meaning; the real binary is restarted against RocksDB in `tests/restart.rs`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::protocol::{
    Connect, ConnectProperties, Packet, ProtocolVersion, PubResponse, Publish, PublishProperties,
    QoS, Subscribe, SubscribeFilter, SubscriptionOptions, Will, WillProperties,
};
use crate::session::Action;
use crate::storage::{
    MemoryStore, MessageId, RestoredState, Store, StoreError, StoreStats, UnixMillis,
};

fn broker_on(store: &Arc<MemoryStore>) -> Arc<Broker> {
    Broker::new(Config::default(), store.clone())
}

/// A second broker built from what `store` holds, as a restart does.
fn restarted(store: &Arc<MemoryStore>) -> (Arc<Broker>, Restored) {
    let state = store
        .restore(WallClock::now().unix_millis())
        .expect("memory store restores");
    let broker = broker_on(store);
    let restored = broker.restore(state);
    (broker, restored)
}

fn connect_packet(client_id: &str, clean_start: bool, expiry: u32) -> Connect {
    Connect {
        protocol: ProtocolVersion::V5,
        clean_start,
        keep_alive: 30,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties {
            session_expiry_interval: Some(expiry),
            ..ConnectProperties::default()
        },
    }
}

fn attach(broker: &Broker, connect: &Connect) -> Connected {
    let expiry = connect.properties.session_expiry_interval.unwrap_or(0);
    broker.connect(connect, Duration::from_secs(u64::from(expiry)), None)
}

fn subscribe(broker: &Broker, client: &Connected, filter: &str, qos: QoS) {
    let subscribe = Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
        }],
        ..Subscribe::default()
    };
    let actions = client
        .handle
        .lock()
        .handle_packet(Packet::Subscribe(subscribe), now())
        .unwrap();
    let [Action::Subscribe(request)] = <[Action; 1]>::try_from(actions).unwrap() else {
        panic!("SUBSCRIBE yields one Subscribe action");
    };
    let (suback, _) = broker
        .subscribe(&client.handle, client.attachment.generation, request)
        .unwrap();
    assert!(suback.reason_codes.iter().all(|code| *code < 0x80));
}

fn message(topic: &str, qos: QoS, retain: bool, payload: &'static [u8]) -> Arc<Message> {
    Arc::new(Message {
        topic: topic.into(),
        payload: Bytes::from_static(payload),
        qos,
        retain,
        properties: PublishProperties::default(),
        expires_at: None,
        publisher: None,
        cluster_id: Default::default(),
    })
}

/// Polls the session as its connection does, submitting what it journaled.
fn drain(broker: &Broker, client: &Connected) -> Vec<Packet> {
    let mut out = Vec::new();
    let mut dropped = Vec::new();
    let mut session = client.handle.lock();
    session.poll_outgoing(now(), &mut out, &mut dropped);
    let _ = broker.submit_journal(&mut session);
    out
}

fn publishes(packets: Vec<Packet>) -> Vec<Publish> {
    packets
        .into_iter()
        .map(|packet| match packet {
            Packet::Publish(publish) => publish,
            other => panic!("expected PUBLISH, got {other:?}"),
        })
        .collect()
}

/// Hands the session a packet from its client, submitting what it journaled.
fn from_client(broker: &Broker, client: &Connected, packet: Packet) -> Vec<Action> {
    let mut session = client.handle.lock();
    let actions = session.handle_packet(packet, now()).unwrap();
    let _ = broker.submit_journal(&mut session);
    actions
}

fn ack(packet_id: u16) -> PubResponse {
    PubResponse {
        packet_id,
        ..PubResponse::default()
    }
}

#[test]
fn queued_messages_subscriptions_and_retained_survive_a_restart() {
    let store = Arc::new(MemoryStore::new());
    let broker = broker_on(&store);
    let sub = attach(&broker, &connect_packet("sub", true, 3600));
    subscribe(&broker, &sub, "t/#", QoS::ExactlyOnce);
    broker.disconnect(&sub.handle, sub.attachment.generation, false);

    let first = broker.publish_durably(&message("t/1", QoS::AtLeastOnce, false, b"one"));
    assert_eq!((first.routed, first.writes.len()), (1, 1));
    let second = broker.publish_durably(&message("t/2", QoS::ExactlyOnce, true, b"two"));
    // The retained message and the queued one are separate writes.
    assert_eq!((second.routed, second.writes.len()), (1, 2));
    // QoS 0 to an offline session is not stored (nor delivered).
    let dropped = broker.publish_durably(&message("t/3", QoS::AtMostOnce, false, b"three"));
    assert!(dropped.writes.is_empty());

    let (broker, restored) = restarted(&store);
    assert_eq!(
        (
            restored.sessions,
            restored.subscriptions,
            restored.queued_messages,
            restored.retained_messages
        ),
        (1, 1, 2, 1)
    );
    let sub = attach(&broker, &connect_packet("sub", false, 3600));
    assert!(sub.session_present);
    let delivered = publishes(drain(&broker, &sub));
    let payloads: Vec<&[u8]> = delivered.iter().map(|p| p.payload.as_ref()).collect();
    assert_eq!(payloads, [b"one".as_ref(), b"two".as_ref()]);
    assert_eq!(delivered[0].qos, QoS::AtLeastOnce);
    assert_eq!(delivered[1].qos, QoS::ExactlyOnce);

    // The route came back too: a new message reaches the restored session.
    assert_eq!(
        broker.publish(&message("t/4", QoS::AtLeastOnce, false, b"four")),
        1
    );
    assert_eq!(broker.retained_count(), 1);
}

#[test]
fn inflight_messages_are_redelivered_after_a_restart_and_acks_are_remembered() {
    let store = Arc::new(MemoryStore::new());
    let broker = broker_on(&store);
    let sub = attach(&broker, &connect_packet("sub", true, 3600));
    subscribe(&broker, &sub, "t", QoS::ExactlyOnce);
    for payload in [b"a", b"b", b"c"] {
        let _ = broker.publish_durably(&message("t", QoS::ExactlyOnce, false, payload));
    }
    let sent = publishes(drain(&broker, &sub));
    assert_eq!(sent.len(), 3);
    // "a" is released (PUBREC), "b" completed (PUBREC then PUBCOMP), "c" unanswered.
    from_client(&broker, &sub, Packet::PubRec(ack(sent[0].packet_id)));
    from_client(&broker, &sub, Packet::PubRec(ack(sent[1].packet_id)));
    from_client(&broker, &sub, Packet::PubComp(ack(sent[1].packet_id)));

    let (broker, restored) = restarted(&store);
    assert_eq!(restored.inflight_messages, 2);
    let sub = attach(&broker, &connect_packet("sub", false, 3600));
    let resent = drain(&broker, &sub);
    assert_eq!(resent.len(), 2, "{resent:?}");
    assert!(matches!(&resent[0], Packet::PubRel(rel) if rel.packet_id == sent[0].packet_id));
    match &resent[1] {
        Packet::Publish(publish) => {
            assert!(publish.dup);
            assert_eq!(publish.packet_id, sent[2].packet_id);
            assert_eq!(publish.payload.as_ref(), b"c");
        }
        other => panic!("expected the unanswered PUBLISH again, got {other:?}"),
    }
}

#[test]
fn an_incoming_qos2_message_is_routed_once_across_a_restart() {
    let store = Arc::new(MemoryStore::new());
    let broker = broker_on(&store);
    let publisher = attach(&broker, &connect_packet("pub", true, 3600));
    let publish = Publish {
        qos: QoS::ExactlyOnce,
        topic: "t".into(),
        packet_id: 7,
        payload: Bytes::from_static(b"once"),
        ..Publish::default()
    };
    let actions = from_client(&broker, &publisher, Packet::Publish(publish.clone()));
    assert!(matches!(actions[0], Action::Route(_)));

    let (broker, _) = restarted(&store);
    let publisher = attach(&broker, &connect_packet("pub", false, 3600));
    let resent = Publish {
        dup: true,
        ..publish
    };
    let actions = from_client(&broker, &publisher, Packet::Publish(resent));
    assert!(
        !actions
            .iter()
            .any(|action| matches!(action, Action::Route(_))),
        "a resent QoS 2 PUBLISH awaiting PUBREL must not be routed again: {actions:?}"
    );
    from_client(&broker, &publisher, Packet::PubRel(ack(7)));
    let (_, restored) = restarted(&store);
    assert_eq!(restored.sessions, 1);
    assert!(store
        .restore(WallClock::now().unix_millis())
        .unwrap()
        .sessions[0]
        .incoming_qos2
        .is_empty());
}

#[test]
fn sessions_that_end_leave_the_store_and_clean_sessions_never_enter_it() {
    let store = Arc::new(MemoryStore::new());
    let broker = broker_on(&store);
    let clean = attach(&broker, &connect_packet("clean", true, 0));
    subscribe(&broker, &clean, "t", QoS::AtLeastOnce);
    let lowered = attach(&broker, &connect_packet("lowered", true, 3600));
    // MQTT 5 DISCONNECT may lower the expiry to 0: the session ends.
    lowered.handle.lock().set_expiry_interval(Duration::ZERO);
    broker.disconnect(&lowered.handle, lowered.attachment.generation, false);
    let replaced = attach(&broker, &connect_packet("replaced", true, 3600));
    subscribe(&broker, &replaced, "old/topic", QoS::AtLeastOnce);
    let _ = attach(&broker, &connect_packet("replaced", true, 3600));
    let _ = broker.publish_durably(&message("t", QoS::AtLeastOnce, false, b"x"));

    let (broker, restored) = restarted(&store);
    assert_eq!((restored.sessions, restored.subscriptions), (1, 0));
    assert!(broker.session("replaced").is_some());
    assert!(broker.session("clean").is_none());
    assert!(broker.session("lowered").is_none());
}

#[test]
fn a_will_still_owed_is_published_after_a_restart() {
    let store = Arc::new(MemoryStore::new());
    let broker = broker_on(&store);
    let watcher = attach(&broker, &connect_packet("watcher", true, 3600));
    subscribe(&broker, &watcher, "wills/#", QoS::AtLeastOnce);
    let mut connect = connect_packet("device", true, 3600);
    connect.will = Some(Will {
        topic: "wills/device".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties::default(),
    });
    // The device is connected when the broker stops abruptly: its connection is gone
    // after the restart, so its will is owed.
    let _device = attach(&broker, &connect);
    drop(broker);

    let (broker, restored) = restarted(&store);
    assert_eq!(restored.wills_published, 1);
    let watcher = attach(&broker, &connect_packet("watcher", false, 3600));
    let delivered = publishes(drain(&broker, &watcher));
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].payload.as_ref(), b"gone");
}

/// A memory store that also keeps the operations of every submission, in order.
#[derive(Default)]
struct RecordingStore {
    inner: MemoryStore,
    submissions: std::sync::Mutex<Vec<Vec<StoreOp>>>,
}

impl RecordingStore {
    fn last_submission(&self) -> Vec<StoreOp> {
        let submissions = self.submissions.lock().expect("not poisoned");
        submissions
            .last()
            .cloned()
            .expect("something was submitted")
    }
}

impl Store for RecordingStore {
    fn submit(&self, ops: Vec<StoreOp>) -> Completion {
        self.submissions
            .lock()
            .expect("not poisoned")
            .push(ops.clone());
        self.inner.submit(ops)
    }

    fn flush(&self) -> Completion {
        self.inner.flush()
    }

    fn restore(&self, now: UnixMillis) -> Result<RestoredState, StoreError> {
        self.inner.restore(now)
    }

    fn next_message_id(&self) -> MessageId {
        self.inner.next_message_id()
    }

    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
}

/// A crash between two writes must not keep a publisher's incoming QoS 2 packet id
/// without its message (the client's resend would then be acknowledged and never
/// routed), nor the message without the packet id (routed twice): both go in one write.
#[test]
fn a_qos2_packet_id_is_stored_in_the_same_write_as_its_message() {
    let store = Arc::new(RecordingStore::default());
    let broker = Broker::new(Config::default(), store.clone());
    let sub = attach(&broker, &connect_packet("sub", true, 3600));
    subscribe(&broker, &sub, "t/#", QoS::ExactlyOnce);
    broker.disconnect(&sub.handle, sub.attachment.generation, false);
    let incoming = |packet_id| StoreOp::AddIncomingQos2 {
        client_id: "pub".into(),
        packet_id,
    };

    let stored = broker.publish_durably_with(
        &message("t/1", QoS::ExactlyOnce, false, b"one"),
        vec![incoming(7)],
    );
    assert_eq!((stored.routed, stored.writes.len()), (1, 1));
    let write = store.last_submission();
    assert!(
        matches!(&write[..], [StoreOp::Accept { .. }, op] if *op == incoming(7)),
        "{write:?}"
    );

    // Nobody stores the message: the packet id is written on its own.
    let unrouted = broker.publish_durably_with(
        &message("elsewhere", QoS::ExactlyOnce, false, b"two"),
        vec![incoming(8)],
    );
    assert_eq!((unrouted.routed, unrouted.writes.len()), (0, 1));
    assert_eq!(store.last_submission(), vec![incoming(8)]);
}

/// A cluster node that restarts knows, for each incoming QoS 2 packet id it restores,
/// the cluster id its message went under (stored with the packet id): the packet id is
/// unconfirmed (its resend is routed again) and a session handed on from here carries
/// both, so the resend goes under that id wherever the client sends it and the nodes
/// that had the message recognise it. (Without the id, it was routed as a new message.)
#[test]
fn a_restarted_cluster_node_keeps_the_cluster_ids_of_its_incoming_qos2_messages() {
    let cluster: crate::cluster::ClusterConfig = toml::from_str(
        r#"
            node_id = 1
            bind = "127.0.0.1:1"
            peers = ["1@127.0.0.1:1"]
        "#,
    )
    .expect("a cluster section");
    let config = Config {
        cluster: Some(cluster),
        ..Config::default()
    };
    let store = Arc::new(MemoryStore::new());
    let broker = Broker::new(config.clone(), store.clone());
    let publisher = attach(&broker, &connect_packet("pub", false, 3600));
    let id = crate::message::ClusterMessageId {
        node: 1,
        sequence: 42,
    };
    let published = broker.publish_durably_with(
        &message("t/1", QoS::ExactlyOnce, false, b"one"),
        vec![
            StoreOp::AddIncomingQos2 {
                client_id: "pub".into(),
                packet_id: 7,
            },
            StoreOp::IncomingInCluster {
                client_id: "pub".into(),
                packet_id: 7,
                cluster_id: id,
            },
        ],
    );
    for write in published.writes {
        write.wait().expect("written");
    }
    broker.disconnect(&publisher.handle, publisher.attachment.generation, false);

    let state = store
        .restore(WallClock::now().unix_millis())
        .expect("memory store restores");
    let restarted = Broker::new(config, store.clone());
    let _ = restarted.restore(state);
    let handed = restarted.hand_over_session("pub").expect("the session");
    assert_eq!(handed.session.incoming_qos2, vec![7]);
    assert_eq!(handed.unconfirmed, vec![7]);
    assert_eq!(handed.session.incoming_ids, vec![(7, id)]);
}
