//! Time the broker spends stopped counts: sessions and queued messages whose expiry
//! passed while it was down are gone after the restart, the others are intact, and a
//! delivered message's Message Expiry Interval is reduced by the time it waited.

use std::time::Duration;

use fleetmq::protocol::QoS;
use tokio::time::Instant;

use crate::client::{publish, Client, Identity, Inbox, V311, V5};
use crate::common::{Node, Settings};

const TOPIC: &str = "restart/expiry";
const SENTINEL: &[u8] = b"sentinel";

#[tokio::test]
async fn sessions_and_messages_expire_while_the_broker_is_stopped() {
    let mut node = Node::new(Settings {
        persistent_session_expiry_secs: 1,
        ..Settings::default()
    });
    let broker = node.start().await;
    let short = Identity::persistent("expiry-short", V5).session_expiry(1);
    let long = Identity::persistent("expiry-long", V5).session_expiry(3600);
    // A 3.1.1 persistent session lives `sessions.persistent_session_expiry_secs` (1 s).
    let legacy = Identity::persistent("expiry-legacy", V311);
    for identity in [&short, &long, &legacy] {
        let mut client = Client::connect_expecting(broker.addr, identity, false).await;
        client.subscribe(&[(TOPIC, QoS::AtLeastOnce)]).await;
        client.disconnect().await;
    }
    let mut publisher =
        Client::connect_expecting(broker.addr, &Identity::clean("expiry-pub", V5), false).await;
    for (payload, expiry) in [
        ("expires", Some(1)),
        ("keeps", Some(3600)),
        ("forever", None),
    ] {
        let mut message = publish(TOPIC, QoS::AtLeastOnce, 0, payload);
        message.properties.message_expiry_interval = expiry;
        publisher.publish_acknowledged(message).await;
    }
    publisher.disconnect().await;
    let published = Instant::now();
    broker.terminate().await;

    // Down for more than 1 s (and more than a whole second of any rounding), counted
    // from the last disconnection and publication.
    tokio::time::sleep_until(published + Duration::from_millis(2200)).await;
    let broker = node.start().await;

    for identity in [&short, &legacy] {
        let client = Client::connect_expecting(broker.addr, identity, false).await;
        client.disconnect().await;
    }
    let mut client = Client::connect_expecting(broker.addr, &long, true).await;
    let mut publisher =
        Client::connect_expecting(broker.addr, &Identity::clean("expiry-pub", V5), false).await;
    publisher
        .publish_acknowledged(publish(TOPIC, QoS::AtLeastOnce, 0, SENTINEL))
        .await;
    publisher.disconnect().await;
    let mut inbox = Inbox::new();
    inbox.receive_through(&mut client, TOPIC, SENTINEL).await;
    assert_eq!(
        inbox.topic(TOPIC),
        ["keeps".as_bytes(), b"forever", SENTINEL],
        "the message that expired while the broker was down is not delivered"
    );
    let keeps = &inbox.publishes[0];
    let remaining = keeps
        .properties
        .message_expiry_interval
        .expect("a message with an expiry interval keeps one");
    assert!(
        (3000..=3598).contains(&remaining),
        "the Message Expiry Interval counts the {} s the broker was down: {remaining}",
        published.elapsed().as_secs_f32()
    );
    assert_eq!(inbox.publishes[1].properties.message_expiry_interval, None);
    client.disconnect().await;
    broker.terminate().await;
}
