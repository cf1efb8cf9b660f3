//! Shared subscriptions (`$share/{group}/{filter}`): each message goes to one member of
//! the group, round robin; 3.1.1 clients can join; ordinary subscribers still get all.

use std::net::SocketAddr;

use crate::common::raw::RawClient;
use crate::common::wire::{Publish, V311, V5};
use crate::common::{client_id, start_default, topic};

/// Two members subscribe to `$share/g/{t}` (and to a private sentinel topic each), an
/// ordinary subscriber to `t`; ten QoS 1 messages are published. Returns how many each
/// member got, after checking nobody got anything beyond.
async fn distribute(addr: SocketAddr, versions: [u8; 2]) -> (usize, usize) {
    let t = topic("shared");
    let share = format!("$share/g/{t}");
    let mut members = Vec::new();
    for (i, version) in versions.into_iter().enumerate() {
        let mut m = RawClient::connect(addr, version, &client_id("member")).await;
        m.subscribe(&share, 1).await;
        m.subscribe(&format!("{t}/sentinel{i}"), 1).await;
        members.push(m);
    }
    let mut plain = RawClient::connect(addr, V5, &client_id("plain")).await;
    plain.subscribe(&t, 1).await;

    let mut publisher = RawClient::connect(addr, V311, &client_id("pub")).await;
    for i in 0..10 {
        publisher
            .publish_simple(&t, 1, format!("m{i}").as_bytes())
            .await;
    }

    // The ordinary subscriber gets all ten, in order.
    for i in 0..10 {
        let p = plain.recv_publish().await;
        assert_eq!(p.payload, format!("m{i}").as_bytes());
    }

    // Each member's messages; together exactly the ten, none twice.
    let mut got: Vec<Vec<Publish>> = vec![Vec::new(), Vec::new()];
    let mut a = members.remove(0);
    let mut b = members.remove(0);
    while got[0].len() + got[1].len() < 10 {
        // Only the read is raced (it is cancel safe); the acknowledgement follows.
        let (i, p) = tokio::select! {
            p = a.recv_publish_noack() => (0, p),
            p = b.recv_publish_noack() => (1, p),
        };
        let member = if i == 0 { &mut a } else { &mut b };
        member.ack_publish(&p).await;
        got[i].push(p);
    }
    for (i, m) in [&mut a, &mut b].into_iter().enumerate() {
        publisher
            .publish_simple(&format!("{t}/sentinel{i}"), 1, b"sentinel")
            .await;
        let extra = m.payloads_until(b"sentinel").await;
        assert!(
            extra.is_empty(),
            "member {i} got more than its share: {extra:?}"
        );
    }
    let mut all: Vec<Vec<u8>> = got.iter().flatten().map(|p| p.payload.clone()).collect();
    all.sort();
    let expected: Vec<Vec<u8>> = (0..10).map(|i| format!("m{i}").into_bytes()).collect();
    assert_eq!(all, expected, "every message to exactly one member");
    for p in got.iter().flatten() {
        assert_eq!(
            (p.topic.as_str(), p.qos),
            (t.as_str(), 1),
            "delivered on the real topic"
        );
    }
    (got[0].len(), got[1].len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_shared_round_robin() {
    let broker = start_default().await;
    assert_eq!(distribute(broker.addr, [V5, V5]).await, (5, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_shared_round_robin() {
    let broker = start_default().await;
    assert_eq!(distribute(broker.addr, [V311, V311]).await, (5, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_and_v5_members_share_a_group() {
    let broker = start_default().await;
    assert_eq!(distribute(broker.addr, [V311, V5]).await, (5, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_gets_no_retained_messages() {
    let broker = start_default().await;
    let t = topic("sharedret");
    let mut publisher = RawClient::connect(broker.addr, V5, &client_id("pub")).await;
    publisher
        .publish(crate::common::wire::PublishSpec::new(&t, 1, b"retained").retain())
        .await;
    let mut m = RawClient::connect(broker.addr, V5, &client_id("member")).await;
    m.subscribe(&format!("$share/g/{t}"), 1).await;
    publisher.publish_simple(&t, 1, b"sentinel").await;
    let seen = m.payloads_until(b"sentinel").await;
    assert!(
        seen.is_empty(),
        "retained message sent to a shared subscription: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_each_get_every_message() {
    let broker = start_default().await;
    let t = topic("groups");
    let mut g1 = RawClient::connect(broker.addr, V5, &client_id("g1")).await;
    g1.subscribe(&format!("$share/one/{t}"), 0).await;
    let mut g2 = RawClient::connect(broker.addr, V311, &client_id("g2")).await;
    g2.subscribe(&format!("$share/two/{t}"), 0).await;
    let mut publisher = RawClient::connect(broker.addr, V5, &client_id("pub")).await;
    for i in 0..3 {
        publisher
            .publish_simple(&t, 0, format!("m{i}").as_bytes())
            .await;
    }
    for c in [&mut g1, &mut g2] {
        for i in 0..3 {
            assert_eq!(c.recv_publish().await.payload, format!("m{i}").as_bytes());
        }
    }
}
