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
        Box::pin(async {
            Ok(Some(remote::Claimed {
                epoch: 1,
                adopted: Vec::new(),
            }))
        })
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
    })
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
fn a_session_moved_to_another_node_ends_here_and_its_connection_is_kicked() {
    let (broker, recorder) = clustered();
    let device = connect(&broker, "device", 3600);
    subscribe(&broker, &device, "cmd/device");
    calls(&recorder);
    let moved = broker
        .kick_moved_session("device")
        .expect("a session to move");
    assert_eq!(moved.subscriptions.len(), 1);
    assert_eq!(moved.subscriptions[0].0, "cmd/device");
    assert!(
        device
            .handle
            .lock_current(device.attachment.generation)
            .is_none(),
        "the old connection no longer holds the session"
    );
    assert!(broker.session("device").is_none());
    assert_eq!(calls(&recorder), vec!["removed cmd/device"]);
    assert_eq!(broker.route(&message("cmd/device", false)), 0);
    assert!(
        broker.kick_moved_session("device").is_none(),
        "nothing left to move"
    );

    // The new owner adopts what was handed over: routes, session, cluster routes.
    let again = connect(&broker, "device", 3600);
    let (_, adopted) = broker
        .adopt_subscriptions(
            &again.handle,
            again.attachment.generation,
            moved.subscriptions,
        )
        .unwrap();
    assert!(adopted);
    assert_eq!(calls(&recorder), vec!["added cmd/device"]);
    assert_eq!(broker.route(&message("cmd/device", false)), 1);
    assert_eq!(
        drain(&again)[0].properties.subscription_identifiers,
        vec![9]
    );
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
