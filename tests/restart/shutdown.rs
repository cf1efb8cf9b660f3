//! SIGTERM with clients connected: MQTT 5 clients get DISCONNECT 0x8B (server shutting
//! down), the broker flushes its store and exits 0, and after a restart the sessions of
//! those clients are present with their unacknowledged and queued messages.

use bytes::Bytes;
use fleetmq::protocol::{Packet, QoS};

use crate::client::{first_occurrences, numbered, publish, Client, Identity, Inbox, V311, V5};
use crate::common::{Node, Settings};

const SENTINEL: &[u8] = b"sentinel";
const T1: &str = "restart/term/q1";
const T2: &str = "restart/term/q2";
const N: usize = 4;

#[tokio::test]
async fn sigterm_disconnects_clients_and_keeps_their_sessions() {
    // `never`: writes are not synced when acknowledged; the shutdown flushes the store.
    let mut node = Node::new(Settings::sync("never"));
    let broker = node.start().await;
    // One message in flight at a time: the rest wait in the session's queue.
    let narrow = Identity::persistent("term-narrow", V5).receive_maximum(1);
    let wide = Identity::persistent("term-wide", V5);
    let legacy = Identity::persistent("term-legacy", V311);
    let mut narrow_client = Client::connect_expecting(broker.addr, &narrow, false).await;
    narrow_client.subscribe(&[(T1, QoS::AtLeastOnce)]).await;
    let mut wide_client = Client::connect_expecting(broker.addr, &wide, false).await;
    wide_client.subscribe(&[(T2, QoS::ExactlyOnce)]).await;
    let mut legacy_client = Client::connect_expecting(broker.addr, &legacy, false).await;
    legacy_client
        .subscribe(&[(T1, QoS::AtLeastOnce), (T2, QoS::ExactlyOnce)])
        .await;

    let mut publisher =
        Client::connect_expecting(broker.addr, &Identity::clean("term-pub", V5), false).await;
    for (one, two) in numbered("q1", N).into_iter().zip(numbered("q2", N)) {
        publisher
            .publish_acknowledged(publish(T1, QoS::AtLeastOnce, 0, one))
            .await;
        publisher
            .publish_acknowledged(publish(T2, QoS::ExactlyOnce, 0, two))
            .await;
    }
    publisher.disconnect().await;
    // The narrow client holds its first message unacknowledged; nothing else can come.
    let first = narrow_client.expect_publish().await;
    assert_eq!(first.payload, "q1-0");

    broker.signal("TERM");
    for client in [&mut narrow_client, &mut wide_client] {
        let packets = client.until_closed().await;
        match packets.last() {
            Some(Packet::Disconnect(disconnect)) => assert_eq!(
                disconnect.reason_code, 0x8B,
                "{}: {disconnect:?}",
                client.client_id
            ),
            other => panic!(
                "{}: expected DISCONNECT 0x8B last, got {other:?} (all: {packets:?})",
                client.client_id
            ),
        }
        assert!(
            packets[..packets.len() - 1]
                .iter()
                .all(|packet| matches!(packet, Packet::Publish(_))),
            "{}: {packets:?}",
            client.client_id
        );
    }
    // A 3.1.1 client has no DISCONNECT from the server: its connection is closed.
    let packets = legacy_client.until_closed().await;
    assert!(
        packets
            .iter()
            .all(|packet| matches!(packet, Packet::Publish(_))),
        "{packets:?}"
    );
    let mut broker = broker;
    let status = broker.wait().await;
    assert_eq!(status.code(), Some(0), "{status}; log:\n{}", broker.log());

    let broker = node.start().await;
    let mut publisher =
        Client::connect_expecting(broker.addr, &Identity::clean("term-pub", V5), false).await;
    publisher
        .publish_acknowledged(publish(T1, QoS::AtLeastOnce, 0, SENTINEL))
        .await;
    publisher
        .publish_acknowledged(publish(T2, QoS::ExactlyOnce, 0, SENTINEL))
        .await;
    publisher.disconnect().await;

    let mut narrow_client = Client::connect_expecting(broker.addr, &narrow, true).await;
    let again = narrow_client.expect_publish().await;
    assert_eq!(
        (again.dup, again.packet_id, &again.payload),
        (true, first.packet_id, &first.payload),
        "the unacknowledged message is resent first, with DUP=1 and its packet id"
    );
    let mut inbox = Inbox::new();
    inbox
        .handle(&mut narrow_client, Packet::Publish(again))
        .await;
    inbox
        .receive_through(&mut narrow_client, T1, SENTINEL)
        .await;
    let mut expected = numbered("q1", N);
    expected.push(Bytes::from_static(SENTINEL));
    assert_eq!(inbox.topic(T1), expected, "{}", narrow.client_id);
    narrow_client.disconnect().await;

    for (identity, topics) in [(&wide, &[T2][..]), (&legacy, &[T1, T2][..])] {
        let mut client = Client::connect_expecting(broker.addr, identity, true).await;
        let mut inbox = Inbox::new();
        for topic in topics {
            inbox.receive_through(&mut client, topic, SENTINEL).await;
        }
        if topics.contains(&T1) {
            assert_eq!(
                first_occurrences(&inbox.topic(T1), &[SENTINEL]),
                numbered("q1", N),
                "{}",
                identity.client_id
            );
        }
        let mut expected = numbered("q2", N);
        expected.push(Bytes::from_static(SENTINEL));
        assert_eq!(inbox.topic(T2), expected, "{}", identity.client_id);
        client.disconnect().await;
    }
    broker.terminate().await;
}
