//! Socket-free tests of the broker's cluster seam (`remote.rs`): what the cluster is told,
//! messages forwarded from other nodes, and sessions moved away.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::protocol::{
    Connect, ConnectProperties, Packet, ProtocolVersion, Publish, PublishProperties, QoS,
    Subscribe, SubscribeFilter, SubscriptionOptions, Unsubscribe,
};
use crate::session::Action;
use crate::storage::MemoryStore;

/// Records what the broker tells the cluster.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
}

impl ClusterHook for Recorder {
    fn published(&self, message: &Arc<Message>) -> Option<crate::storage::Completion> {
        lock(&self.calls).push(format!("published {}", message.topic));
        None
    }
    fn subscribed_elsewhere(&self, topic: &str) -> bool {
        topic.starts_with("elsewhere/")
    }
    fn filter_added(&self, filter: &str) {
        lock(&self.calls).push(format!("added {filter}"));
    }
    fn filter_removed(&self, filter: &str) {
        lock(&self.calls).push(format!("removed {filter}"));
    }
    fn has_leader(&self) -> bool {
        true
    }
    fn claim(&self, _: &str, _: bool) -> remote::ClaimFuture<'_> {
        Box::pin(async { Ok(Some(remote::Claimed { epoch: 1 })) })
    }
    fn owns(&self, _: &str, epoch: u64) -> bool {
        epoch == 1
    }
    fn session_ended(&self, client_id: &str) {
        lock(&self.calls).push(format!("ended {client_id}"));
    }
    fn render_metrics(&self) -> String {
        String::new()
    }
}

fn clustered() -> (Arc<Broker>, Arc<Recorder>) {
    let broker = Broker::new(Config::default(), Arc::new(MemoryStore::new()));
    let recorder = Arc::new(Recorder::default());
    broker.set_cluster(recorder.clone());
    (broker, recorder)
}

fn connect(broker: &Broker, client_id: &str, expiry: u32) -> Connected {
    let connect = Connect {
        protocol: ProtocolVersion::V5,
        clean_start: false,
        keep_alive: 30,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties {
            session_expiry_interval: Some(expiry),
            ..ConnectProperties::default()
        },
    };
    broker.connect(&connect, Duration::from_secs(u64::from(expiry)), None)
}

fn subscribe(broker: &Broker, client: &Connected, filter: &str) {
    let subscribe = Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..SubscriptionOptions::default()
            },
        }],
        subscription_identifier: Some(9),
        user_properties: Vec::new(),
    };
    let actions = client
        .handle
        .lock()
        .handle_packet(Packet::Subscribe(subscribe), now())
        .unwrap();
    let [Action::Subscribe(request)] = <[Action; 1]>::try_from(actions).unwrap() else {
        panic!("SUBSCRIBE yields one Subscribe action");
    };
    broker
        .subscribe(&client.handle, client.attachment.generation, request)
        .unwrap();
}

fn unsubscribe(broker: &Broker, client: &Connected, filter: &str) {
    let unsubscribe = Unsubscribe {
        packet_id: 2,
        filters: vec![filter.into()],
        user_properties: Vec::new(),
    };
    let actions = client
        .handle
        .lock()
        .handle_packet(Packet::Unsubscribe(unsubscribe), now())
        .unwrap();
    let [Action::Unsubscribe(request)] = <[Action; 1]>::try_from(actions).unwrap() else {
        panic!("UNSUBSCRIBE yields one Unsubscribe action");
    };
    broker
        .unsubscribe(&client.handle, client.attachment.generation, request)
        .unwrap();
}

fn message(topic: &str, retain: bool) -> Arc<Message> {
    Arc::new(Message {
        topic: topic.into(),
        payload: Bytes::from_static(b"m"),
        qos: QoS::AtLeastOnce,
        retain,
        properties: PublishProperties::default(),
        expires_at: None,
        publisher: None,
        cluster_id: Default::default(),
    })
}

/// `message` as a node relays it to a session subscribed at QoS 1 with
/// `subscription_ids`.
fn relayed(message: &Arc<Message>, subscription_ids: Vec<u32>) -> Relayed {
    Relayed {
        message: message.clone(),
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids,
    }
}

/// Leaves a persistent session `device`, subscribed to `cmd/#`, offline on `broker`.
fn offline_device(broker: &Broker) {
    let device = connect(broker, "device", 3600);
    subscribe(broker, &device, "cmd/#");
    broker.disconnect(&device.handle, device.attachment.generation, false);
}

/// A persistent session subscribed to `cmd/#`, handed over by its old node (which
/// relays to it) to a new clustered broker over `store`, and resumed there.
fn resumed_behind_relay(store: Arc<MemoryStore>) -> (Arc<Broker>, Connected) {
    let (old_owner, _) = clustered();
    offline_device(&old_owner);
    let moved = old_owner.hand_over_session("device").unwrap();
    resumed_elsewhere(moved, true, store)
}

/// `handed` imported by a new clustered broker over `store` (behind its old node's relay
/// when `behind_relay`) and resumed there by its client.
fn resumed_elsewhere(
    handed: HandedOver,
    behind_relay: bool,
    store: Arc<MemoryStore>,
) -> (Arc<Broker>, Connected) {
    let new_owner = Broker::new(Config::default(), store);
    new_owner.set_cluster(Arc::new(Recorder::default()));
    new_owner
        .import_session_with(handed, behind_relay)
        .unwrap()
        .wait()
        .unwrap();
    let resumed = connect(&new_owner, "device", 3600);
    (new_owner, resumed)
}

fn drain(client: &Connected) -> Vec<Publish> {
    let mut out = Vec::new();
    let mut dropped = Vec::new();
    client
        .handle
        .lock()
        .poll_outgoing(now(), &mut out, &mut dropped);
    out.into_iter()
        .filter_map(|packet| match packet {
            Packet::Publish(publish) => Some(publish),
            _ => None,
        })
        .collect()
}

fn calls(recorder: &Recorder) -> Vec<String> {
    std::mem::take(&mut *lock(&recorder.calls))
}

#[test]
fn the_cluster_hears_of_the_first_and_last_subscriber_of_a_filter_and_of_each_publish() {
    let (broker, recorder) = clustered();
    let a = connect(&broker, "a", 0);
    let b = connect(&broker, "b", 0);
    subscribe(&broker, &a, "t/#");
    subscribe(&broker, &a, "t/#"); // resubscribing is not a new filter
    subscribe(&broker, &b, "t/#");
    assert_eq!(calls(&recorder), vec!["added t/#", "added t/#"]);
    unsubscribe(&broker, &a, "t/#");
    assert_eq!(calls(&recorder), vec!["removed t/#"]);
    let _ = broker.publish_durably(&message("t/1", false));
    assert_eq!(calls(&recorder), vec!["published t/1"]);
    // A session that ends takes its filters along and is reported ended.
    broker.disconnect(&b.handle, b.attachment.generation, false);
    assert_eq!(calls(&recorder), vec!["removed t/#", "ended b"]);
}

/// A message only other nodes' subscribers take is routed, not unrouted: its MQTT 5
/// publisher gets a plain PUBACK, not 0x10 No matching subscribers.
#[test]
fn a_message_subscribed_to_only_on_other_nodes_counts_as_routed() {
    let (broker, _recorder) = clustered();
    let published = broker.publish_durably(&message("elsewhere/1", false));
    assert_eq!(published.routed, 1);
    assert_eq!(broker.stats().snapshot().messages_unrouted, 0);
    let published = broker.publish_durably(&message("nowhere/1", false));
    assert_eq!(published.routed, 0);
    assert_eq!(broker.stats().snapshot().messages_unrouted, 1);
}

#[test]
fn a_forwarded_message_reaches_plain_subscribers_and_only_the_named_shared_groups() {
    let (broker, recorder) = clustered();
    let plain = connect(&broker, "plain", 0);
    let in_g = connect(&broker, "in-g", 0);
    let in_h = connect(&broker, "in-h", 0);
    subscribe(&broker, &plain, "t/+");
    subscribe(&broker, &in_g, "$share/g/t/#");
    subscribe(&broker, &in_h, "$share/h/t/#");
    calls(&recorder);

    assert_eq!(
        broker
            .route_forwarded(&message("t/1", true), &["g".to_string()])
            .0,
        2
    );
    let got = drain(&plain);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].properties.subscription_identifiers, vec![9]);
    assert_eq!(drain(&in_g).len(), 1);
    assert!(
        drain(&in_h).is_empty(),
        "group h was served by another node"
    );
    assert_eq!(
        broker.retained_count(),
        0,
        "retained messages come through consensus"
    );
    assert!(calls(&recorder).is_empty(), "never forwarded again");
}

#[test]
fn a_session_moved_to_another_node_goes_whole_with_its_messages_in_order() {
    let (old_owner, old_recorder) = clustered();
    let device = connect(&old_owner, "device", 3600);
    subscribe(&old_owner, &device, "cmd/#");
    for topic in ["cmd/1", "cmd/2"] {
        old_owner.route(&message(topic, false));
    }
    let sent = drain(&device);
    assert_eq!(sent.len(), 2, "two in flight, unacknowledged");
    old_owner.disconnect(&device.handle, device.attachment.generation, false);
    for topic in ["cmd/3", "cmd/4"] {
        old_owner.route(&message(topic, false));
    }
    calls(&old_recorder);

    let moved = old_owner
        .hand_over_session("device")
        .expect("a session to hand over");
    assert_eq!(moved.session.subscriptions.len(), 1);
    assert_eq!(moved.session.inflight.len(), 2);
    assert_eq!(moved.session.queue.len(), 2);
    assert_eq!(moved.held.len(), 4, "the cluster ids of what it holds");
    assert!(old_owner.session("device").is_none());
    assert_eq!(calls(&old_recorder), vec!["removed cmd/#"]);
    assert_eq!(
        old_owner.route(&message("cmd/5", false)),
        0,
        "no longer routed here"
    );
    assert!(old_owner.hand_over_session("device").is_none());
    // The old owner's stored copy stays until the new owner confirms.
    let stored = |broker: &Broker| {
        broker
            .store()
            .restore(crate::storage::WallClock::now().unix_millis())
            .unwrap()
            .sessions
            .len()
    };
    assert_eq!(stored(&old_owner), 1);

    let (new_owner, new_recorder) = clustered();
    let held = moved.held.clone();
    let written = new_owner.import_session(moved).expect("imported");
    written.wait().unwrap();
    assert_eq!(calls(&new_recorder), vec!["added cmd/#"]);
    let restored = new_owner
        .store()
        .restore(crate::storage::WallClock::now().unix_millis())
        .unwrap();
    assert_eq!(
        restored.sessions[0].inflight.len(),
        2,
        "stored where it is now"
    );
    assert_eq!(restored.sessions[0].queue.len(), 2);
    old_owner.forget_moved_session("device");
    assert_eq!(stored(&old_owner), 0);

    let resumed = connect(&new_owner, "device", 3600);
    assert!(resumed.session_present);
    let out = drain(&resumed);
    let topics: Vec<&str> = out.iter().map(|publish| &*publish.topic).collect();
    assert_eq!(topics, ["cmd/1", "cmd/2", "cmd/3", "cmd/4"]);
    assert!(
        out[0].dup && out[1].dup,
        "the ones in flight are resent first"
    );
    assert_eq!(
        (out[0].packet_id, out[1].packet_id),
        (sent[0].packet_id, sent[1].packet_id),
        "with their packet ids"
    );
    assert!(!out[2].dup && !out[3].dup);
    assert_eq!(new_owner.route(&message("cmd/6", false)), 1, "routed here");

    // A copy of a message it already holds, relayed or forwarded meanwhile, is dropped;
    // a new one is kept.
    let copy = message("cmd/3", false);
    copy.cluster_id.set(held[2]).unwrap();
    let fresh = message("cmd/7", false);
    let (written, moved_on) = new_owner.deliver_relayed(
        "device",
        vec![relayed(&copy, vec![9]), relayed(&fresh, vec![9])],
    );
    assert!(moved_on.is_empty());
    written.unwrap().wait().unwrap();
    let out = drain(&resumed);
    let topics: Vec<&str> = out.iter().map(|publish| &*publish.topic).collect();
    assert_eq!(topics, ["cmd/6", "cmd/7"]);
    new_owner.route(&fresh);
    assert!(
        drain(&resumed).is_empty(),
        "the same message again is a copy too"
    );
    assert_eq!(
        new_owner.stats().snapshot().dropped[Dropped::ALL
            .iter()
            .position(|reason| *reason == Dropped::Duplicate)
            .unwrap()],
        2
    );
}

/// Also: what it holds is stored behind what the relay brought meanwhile, as it is sent.
/// Stored as it arrived (its publisher's acknowledgement waits for that), it sat ahead of
/// the relayed messages in the store, and a restart before the client took them resent
/// them out of order.
#[test]
fn a_session_behind_its_old_nodes_relay_holds_what_reaches_it_otherwise() {
    let store = Arc::new(MemoryStore::new());
    let (new_owner, resumed) = resumed_behind_relay(store.clone());
    let relayed = |message: &Arc<Message>| relayed(message, Vec::new());

    // Published (or forwarded) here while the old node still relays: held.
    let late = message("cmd/1", false);
    let later = message("cmd/2", false);
    let straight = message("cmd/3", false);
    assert_eq!(new_owner.route(&later), 1);
    assert_eq!(new_owner.route(&straight), 1);
    assert!(drain(&resumed).is_empty(), "held behind the relay");
    // The relay brings what reached the old node, a copy of a held one among them.
    let (written, _) = new_owner.deliver_relayed("device", vec![relayed(&late), relayed(&later)]);
    written.unwrap().wait().unwrap();
    new_owner.store().flush().wait().unwrap();
    assert_eq!(
        stored_topics(&store),
        ["cmd/1", "cmd/2", "cmd/3"],
        "as a restart while it holds resends them"
    );
    assert_eq!(topics(drain(&resumed)), ["cmd/1", "cmd/2"]);
    // The relay ended: what was held follows, without the copy.
    assert!(new_owner.release_held("device"));
    assert_eq!(topics(drain(&resumed)), ["cmd/3"]);
    // Nothing is held any more.
    assert_eq!(new_owner.route(&message("cmd/4", false)), 1);
    assert_eq!(topics(drain(&resumed)), ["cmd/4"]);

    // Without a relay (a session taken from a backup), nothing waits.
    let (backup_owner, _) = clustered();
    offline_device(&backup_owner);
    let copy = backup_owner.hand_over_session("device").unwrap();
    let (taker, resumed) = resumed_elsewhere(copy, false, Arc::new(MemoryStore::new()));
    assert_eq!(taker.route(&message("cmd/5", false)), 1);
    assert_eq!(topics(drain(&resumed)), ["cmd/5"]);
}

/// The topics of `store`'s one session as a restart would resend them: in flight first,
/// then queued.
fn stored_topics(store: &MemoryStore) -> Vec<String> {
    let restored = store
        .restore(crate::storage::WallClock::now().unix_millis())
        .unwrap();
    let session = &restored.sessions[0];
    session
        .inflight
        .iter()
        .map(|inflight| &inflight.delivery)
        .chain(&session.queue)
        .map(|delivery| delivery.message.topic.to_string())
        .collect()
}

fn topics(out: Vec<Publish>) -> Vec<String> {
    out.iter()
        .map(|publish| publish.topic.to_string())
        .collect()
}

/// A publisher on the session's new node whose messages reach the old node too (its
/// routes there not yet gone): the relay brings a copy of one of them while an earlier
/// one waits, held, without a relayed copy. The earlier one goes first, in the session
/// and in the store. Sent ahead of it before, the client got 2, 1, 3.
#[test]
fn a_relayed_copy_of_a_held_message_lets_what_was_held_before_it_go_first() {
    let store = Arc::new(MemoryStore::new());
    let (new_owner, resumed) = resumed_behind_relay(store.clone());
    let messages: Vec<Arc<Message>> = (1..=3)
        .map(|n| message(&format!("cmd/{n}"), false))
        .collect();
    for message in &messages {
        assert_eq!(new_owner.route(message), 1);
    }
    let (written, _) = new_owner.deliver_relayed("device", vec![relayed(&messages[1], Vec::new())]);
    written.unwrap().wait().unwrap();
    assert_eq!(topics(drain(&resumed)), ["cmd/1", "cmd/2"]);
    new_owner.store().flush().wait().unwrap();
    assert_eq!(
        stored_topics(&store),
        ["cmd/1", "cmd/2", "cmd/3"],
        "as a restart while it holds resends them"
    );
    assert!(new_owner.release_held("device"));
    assert_eq!(topics(drain(&resumed)), ["cmd/3"]);
    new_owner.store().flush().wait().unwrap();
    assert_eq!(stored_topics(&store), ["cmd/1", "cmd/2", "cmd/3"]);
}

/// One relay batch that brings a message and, after it, a copy of a held one: the held
/// ones before that copy go between them, in the session and in the store.
#[test]
fn a_relay_batch_and_the_held_deliveries_it_lets_go_are_stored_in_the_order_they_are_sent() {
    let store = Arc::new(MemoryStore::new());
    let (new_owner, resumed) = resumed_behind_relay(store.clone());
    let messages: Vec<Arc<Message>> = (1..=4)
        .map(|n| message(&format!("cmd/{n}"), false))
        .collect();
    for message in &messages[1..] {
        assert_eq!(new_owner.route(message), 1);
    }
    let (written, _) = new_owner.deliver_relayed(
        "device",
        vec![
            relayed(&messages[0], Vec::new()),
            relayed(&messages[2], Vec::new()),
        ],
    );
    written.unwrap().wait().unwrap();
    new_owner.store().flush().wait().unwrap();
    assert_eq!(
        stored_topics(&store),
        ["cmd/1", "cmd/2", "cmd/3", "cmd/4"],
        "as a restart while it holds resends them"
    );
    assert_eq!(topics(drain(&resumed)), ["cmd/1", "cmd/2", "cmd/3"]);
    assert!(new_owner.release_held("device"));
    assert_eq!(topics(drain(&resumed)), ["cmd/4"]);
}

#[test]
fn a_session_leaving_while_it_holds_takes_what_it_held_along_in_order() {
    let (old_owner, _) = clustered();
    offline_device(&old_owner);
    let moved = old_owner.hand_over_session("device").unwrap();
    let (middle, _) = clustered();
    middle
        .import_session_with(moved, true)
        .unwrap()
        .wait()
        .unwrap();
    for topic in ["cmd/1", "cmd/2"] {
        middle.route(&message(topic, false));
    }
    let (handed, held) = middle.hand_over_session_and_held("device");
    assert!(handed.unwrap().session.queue.is_empty(), "held, not queued");
    let topics: Vec<&str> = held
        .iter()
        .map(|delivery| &*delivery.message.topic)
        .collect();
    assert_eq!(topics, ["cmd/1", "cmd/2"]);
}

#[test]
fn replicated_retained_messages_are_set_and_cleared_without_routing() {
    let (broker, recorder) = clustered();
    let sub = connect(&broker, "sub", 0);
    subscribe(&broker, &sub, "r/#");
    calls(&recorder);
    broker.apply_replicated_retained(&"r/1".into(), Some(message("r/1", true)));
    assert_eq!(broker.retained_count(), 1);
    assert!(
        drain(&sub).is_empty(),
        "setting a retained message routes nothing"
    );
    assert_eq!(
        broker.retained_topics(),
        vec![bytestring::ByteString::from("r/1")]
    );
    broker.apply_replicated_retained(&"r/1".into(), None);
    assert_eq!(broker.retained_count(), 0);
    assert!(calls(&recorder).is_empty());
}

#[tokio::test]
async fn a_single_node_claims_nothing() {
    let broker = Broker::new(Config::default(), Arc::new(MemoryStore::new()));
    assert_eq!(broker.claim_session("x", true).await, Ok(None));
    assert!(broker.still_owner("x", None));
    assert!(broker.still_owner("x", None));
    assert!(broker.cluster_healthy());
    assert!(broker.cluster_metrics().is_empty());
}

#[test]
fn a_session_taken_from_a_copy_drops_a_message_it_holds_when_it_comes_again() {
    // The owner stores a message forwarded to its offline session, then dies before the
    // publishing node learns that it has it: that node sends it again to whichever node
    // takes the session over from a backup's copy.
    let (owner, _) = clustered();
    offline_device(&owner);
    let stored = message("cmd/1", false);
    let id = crate::message::ClusterMessageId {
        node: 2,
        sequence: 77,
    };
    stored.cluster_id.set(id).unwrap();
    assert_eq!(owner.route(&stored), 1);
    let mut copy = owner.hand_over_session("device").unwrap();
    // A backup's copy is read from its store: no ids come beside it, only what the
    // stored messages carry.
    copy.held.clear();
    for delivery in &mut copy.session.queue {
        let encoded = crate::storage::codec::encode_message(&delivery.message);
        delivery.message = Arc::new(crate::storage::codec::decode_message(&encoded).unwrap());
    }
    assert_eq!(copy.session.queue.len(), 1);
    assert_eq!(copy.session.queue[0].message.cluster_id, Some(id));

    let (taker, resumed) = resumed_elsewhere(copy, false, Arc::new(MemoryStore::new()));
    let again = || {
        let message = message("cmd/1", false);
        message.cluster_id.set(id).unwrap();
        message
    };
    // Pulled by the taker before the session resumed, and forwarded to it again.
    let (written, _) = taker.deliver_relayed("device", vec![relayed(&again(), vec![9])]);
    written.unwrap().wait().unwrap();
    taker.route(&again());
    let out = drain(&resumed);
    let topics: Vec<&str> = out.iter().map(|publish| &*publish.topic).collect();
    assert_eq!(topics, ["cmd/1"], "delivered once");

    // A message published on a cluster node is stored with the id it is forwarded
    // under; a single node stores none.
    let fresh = message("cmd/2", false);
    assert_eq!(taker.route(&fresh), 1);
    assert!(
        fresh.cluster_id.get().is_some(),
        "stored with its cluster id"
    );
    let single = Broker::new(Config::default(), Arc::new(MemoryStore::new()));
    let alone = connect(&single, "device", 3600);
    subscribe(&single, &alone, "cmd/#");
    single.disconnect(&alone.handle, alone.attachment.generation, false);
    let plain = message("cmd/3", false);
    assert_eq!(single.route(&plain), 1);
    assert!(plain.cluster_id.get().is_none(), "a single node gives none");
}

#[test]
fn a_message_that_comes_both_ways_behind_a_relay_is_stored_once_as_soon_as_both_are_here() {
    let store = Arc::new(MemoryStore::new());
    let (new_owner, resumed) = resumed_behind_relay(store.clone());
    let relayed = |message: &Arc<Message>| relayed(message, Vec::new());
    let with_id = |topic: &str, sequence: u64| {
        let message = message(topic, false);
        message
            .cluster_id
            .set(crate::message::ClusterMessageId { node: 2, sequence })
            .unwrap();
        message
    };
    // Forwarded straight here first (held behind the relay), then relayed.
    let first = with_id("cmd/1", 1);
    assert_eq!(new_owner.route(&first), 1);
    let (written, _) = new_owner.deliver_relayed("device", vec![relayed(&first)]);
    written.unwrap().wait().unwrap();
    // Relayed first, then forwarded straight here.
    let second = with_id("cmd/2", 2);
    let (written, _) = new_owner.deliver_relayed("device", vec![relayed(&second)]);
    written.unwrap().wait().unwrap();
    new_owner.route(&second);
    new_owner.store.flush().wait().unwrap();

    // The relay has not ended, yet each message is stored once: a node that takes the
    // session over from a copy of this store now delivers each once.
    let restored = store.restore(0).unwrap();
    let session = restored
        .sessions
        .iter()
        .find(|session| session.record.client_id == "device")
        .unwrap();
    let mut topics: Vec<String> = session
        .queue
        .iter()
        .chain(session.inflight.iter().map(|inflight| &inflight.delivery))
        .map(|delivery| delivery.message.topic.to_string())
        .collect();
    topics.sort();
    assert_eq!(topics, ["cmd/1", "cmd/2"]);
    let out = drain(&resumed);
    let topics: Vec<&str> = out.iter().map(|publish| &*publish.topic).collect();
    assert_eq!(topics, ["cmd/1", "cmd/2"], "the relayed copies, in order");
    assert!(new_owner.release_held("device"));
    assert!(
        drain(&resumed).is_empty(),
        "nothing held is left to release"
    );
}
