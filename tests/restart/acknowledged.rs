//! What the broker acknowledged survives a restart, graceful (SIGTERM) or not (SIGKILL),
//! in every sync mode: persistent sessions and their subscriptions, the messages queued
//! for them (QoS 2 exactly once, QoS 1 at least once, each topic in order) and retained
//! messages. And with `persistence = false`, a restart starts from nothing.

use bytes::Bytes;
use fleetmq::protocol::QoS;

use crate::client::{first_occurrences, numbered, publish, Client, Identity, Inbox, V311, V5};
use crate::common::{Broker, Node, Settings};
use crate::thirdparty;

/// Messages per QoS level.
const N: usize = 25;
const Q1: &str = "fleet/acked/q1";
const Q2: &str = "fleet/acked/q2";
const RETAINED: &str = "fleet/acked/retained";
const SENTINEL: &[u8] = b"sentinel";

#[derive(Debug, Clone, Copy)]
enum Stop {
    Term,
    Kill,
}

impl Stop {
    async fn apply(self, broker: Broker) {
        match self {
            Stop::Term => broker.terminate().await,
            Stop::Kill => broker.kill().await,
        }
    }
}

#[tokio::test]
async fn acknowledged_state_survives_sigterm() {
    survives(Settings::default(), Stop::Term).await;
}

#[tokio::test]
async fn acknowledged_state_survives_sigkill() {
    survives(Settings::default(), Stop::Kill).await;
}

#[tokio::test]
async fn acknowledged_state_survives_sigkill_with_sync_always_and_the_data_dir_flag() {
    let settings = Settings {
        data_dir_flag: true,
        ..Settings::sync("always")
    };
    survives(settings, Stop::Kill).await;
}

#[tokio::test]
async fn acknowledged_state_survives_sigterm_with_sync_never() {
    survives(Settings::sync("never"), Stop::Term).await;
}

#[tokio::test]
async fn acknowledged_state_survives_sigkill_with_sync_never() {
    // `never` still writes the WAL before acknowledging: a crash of the process (not of
    // the machine) loses nothing.
    survives(Settings::sync("never"), Stop::Kill).await;
}

fn raw_subscribers() -> [Identity; 2] {
    [
        Identity::persistent("acked-raw-v311", V311),
        Identity::persistent("acked-raw-v5", V5),
    ]
}

const RUMQTTC_V4: &str = "acked-rumqttc-v4";
const RUMQTTC_V5: &str = "acked-rumqttc-v5";

/// The retained messages published before the restart: (topic, payload, QoS).
fn retained() -> Vec<(String, Bytes, QoS)> {
    vec![
        (format!("{RETAINED}/a"), Bytes::from("ra"), QoS::AtLeastOnce),
        (format!("{RETAINED}/b"), Bytes::from("rb"), QoS::ExactlyOnce),
        (format!("{RETAINED}/c"), Bytes::from("rc"), QoS::AtLeastOnce),
    ]
}

async fn survives(settings: Settings, stop: Stop) {
    let mut node = Node::new(settings);
    let broker = node.start().await;
    let addr = broker.addr;

    for identity in raw_subscribers() {
        let mut client = Client::connect_expecting(addr, &identity, false).await;
        client
            .subscribe(&[(Q1, QoS::AtLeastOnce), (Q2, QoS::ExactlyOnce)])
            .await;
        client.disconnect().await;
    }
    let (mut v4, present) = thirdparty::V4::connect(addr, RUMQTTC_V4, true).await;
    assert!(!present);
    v4.subscribe(&[(Q1, 1), (Q2, 2)]).await;
    v4.disconnect().await;
    let (mut v5, present) = thirdparty::V5::connect(addr, RUMQTTC_V5, true).await;
    assert!(!present);
    v5.subscribe(&[(Q1, 1), (Q2, 2)]).await;
    v5.disconnect().await;

    // Every message is acknowledged (PUBACK, or PUBREC and PUBCOMP) before the next.
    let mut publisher =
        Client::connect_expecting(addr, &Identity::clean("acked-publisher", V5), false).await;
    for (one, two) in numbered("q1", N).into_iter().zip(numbered("q2", N)) {
        publisher
            .publish_acknowledged(publish(Q1, QoS::AtLeastOnce, 0, one))
            .await;
        publisher
            .publish_acknowledged(publish(Q2, QoS::ExactlyOnce, 0, two))
            .await;
    }
    for (topic, payload, qos) in retained() {
        let mut message = publish(&topic, qos, 0, payload);
        message.retain = true;
        publisher.publish_acknowledged(message).await;
    }
    // Set, then cleared: must stay cleared.
    let cleared = format!("{RETAINED}/cleared");
    for payload in [Bytes::from("gone"), Bytes::new()] {
        let mut message = publish(&cleared, QoS::AtLeastOnce, 0, payload);
        message.retain = true;
        publisher.publish_acknowledged(message).await;
    }
    publisher.disconnect().await;

    stop.apply(broker).await;
    let broker = node.start().await;
    let addr = broker.addr;

    // Published after the restart, before anyone reconnects: these reach the sessions
    // only through the restored subscriptions.
    let mut publisher =
        Client::connect_expecting(addr, &Identity::clean("acked-publisher", V5), false).await;
    publisher
        .publish_acknowledged(publish(Q1, QoS::AtLeastOnce, 0, SENTINEL))
        .await;
    publisher
        .publish_acknowledged(publish(Q2, QoS::ExactlyOnce, 0, SENTINEL))
        .await;

    for identity in raw_subscribers() {
        let who = identity.client_id.clone();
        let mut client = Client::connect_expecting(addr, &identity, true).await;
        let mut inbox = Inbox::new();
        inbox.receive_through(&mut client, Q1, SENTINEL).await;
        inbox.receive_through(&mut client, Q2, SENTINEL).await;
        for publish in &inbox.publishes {
            let expected = if publish.topic == Q1 {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            };
            assert_eq!(publish.qos, expected, "{who}: {publish:?}");
            assert!(
                !publish.dup,
                "{who}: a first delivery has DUP=0: {publish:?}"
            );
            assert!(!publish.retain, "{who}: {publish:?}");
        }
        check_delivered(&who, &inbox.topic(Q1), &inbox.topic(Q2));
        client.disconnect().await;
    }
    let (mut v4, present) = thirdparty::V4::connect(addr, RUMQTTC_V4, true).await;
    assert!(present, "{RUMQTTC_V4}: session present after the restart");
    v4.receive_through(Q1, SENTINEL).await;
    v4.receive_through(Q2, SENTINEL).await;
    check_delivered(RUMQTTC_V4, &v4.received.topic(Q1), &v4.received.topic(Q2));
    v4.disconnect().await;
    let (mut v5, present) = thirdparty::V5::connect(addr, RUMQTTC_V5, true).await;
    assert!(present, "{RUMQTTC_V5}: session present after the restart");
    v5.receive_through(Q1, SENTINEL).await;
    v5.receive_through(Q2, SENTINEL).await;
    check_delivered(RUMQTTC_V5, &v5.received.topic(Q1), &v5.received.topic(Q2));
    v5.disconnect().await;

    // A new subscriber gets the retained messages, and only those.
    let (mut fresh, present) = thirdparty::V4::connect(addr, "acked-fresh", false).await;
    assert!(!present);
    let everything = format!("{RETAINED}/#");
    fresh.subscribe(&[(everything.as_str(), 2)]).await;
    let end = format!("{RETAINED}/end");
    publisher
        .publish_acknowledged(publish(&end, QoS::AtLeastOnce, 0, SENTINEL))
        .await;
    fresh.receive_through(&end, SENTINEL).await;
    let mut got = fresh.received.retained.clone();
    got.sort();
    let expected: Vec<(String, Bytes)> = retained()
        .into_iter()
        .map(|(topic, payload, _)| (topic, payload))
        .collect();
    assert_eq!(got, expected, "retained messages after the restart");
    assert!(
        fresh.received.topic(&cleared).is_empty(),
        "a cleared retained message came back"
    );
    fresh.disconnect().await;
    publisher.disconnect().await;
    broker.terminate().await;
}

/// QoS 1: every message at least once, first deliveries in publishing order; QoS 2:
/// every message exactly once, in order. The sentinel comes last on each topic.
fn check_delivered(who: &str, q1: &[Bytes], q2: &[Bytes]) {
    assert_eq!(
        first_occurrences(q1, &[SENTINEL]),
        numbered("q1", N),
        "{who}: QoS 1 messages after the restart (received {q1:?})"
    );
    let mut expected = numbered("q2", N);
    expected.push(Bytes::from_static(SENTINEL));
    assert_eq!(
        q2,
        expected.as_slice(),
        "{who}: QoS 2 messages after the restart"
    );
    assert_eq!(q1.last().map(|p| p.as_ref()), Some(SENTINEL), "{who}");
}

#[tokio::test]
async fn without_persistence_a_restart_forgets_everything() {
    let mut node = Node::new(Settings {
        persistence: false,
        ..Settings::default()
    });
    let broker = node.start().await;
    let identity = Identity::persistent("volatile-v5", V5);
    let legacy = Identity::persistent("volatile-v311", V311);
    for identity in [&identity, &legacy] {
        let mut client = Client::connect_expecting(broker.addr, identity, false).await;
        client.subscribe(&[(Q1, QoS::AtLeastOnce)]).await;
        client.disconnect().await;
    }
    let mut publisher =
        Client::connect_expecting(broker.addr, &Identity::clean("volatile-pub", V5), false).await;
    publisher
        .publish_acknowledged(publish(Q1, QoS::AtLeastOnce, 0, "lost"))
        .await;
    let mut message = publish(&format!("{RETAINED}/a"), QoS::AtLeastOnce, 0, "lost");
    message.retain = true;
    publisher.publish_acknowledged(message).await;
    publisher.disconnect().await;
    broker.terminate().await;

    let broker = node.start().await;
    let retained = format!("{RETAINED}/#");
    for identity in [&identity, &legacy] {
        let mut client = Client::connect_expecting(broker.addr, identity, false).await;
        client
            .subscribe(&[
                (Q1, QoS::AtLeastOnce),
                (retained.as_str(), QoS::AtLeastOnce),
            ])
            .await;
        let mut publisher =
            Client::connect_expecting(broker.addr, &Identity::clean("volatile-pub", V5), false)
                .await;
        publisher
            .publish_acknowledged(publish(Q1, QoS::AtLeastOnce, 0, SENTINEL))
            .await;
        publisher.disconnect().await;
        let mut inbox = Inbox::new();
        inbox.receive_through(&mut client, Q1, SENTINEL).await;
        assert_eq!(
            inbox.publishes.len(),
            1,
            "{}: nothing but the sentinel after a restart without persistence: {:?}",
            identity.client_id,
            inbox.publishes
        );
        client.disconnect().await;
    }
    broker.terminate().await;
}
