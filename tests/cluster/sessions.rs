//! Who owns a session: a connect on another node takes it over through consensus (the
//! old connection gets DISCONNECT 0x8E), and of two concurrent connects of one client id
//! on two nodes exactly one keeps the session.

use crate::common::mqtt::{Event, Publisher, Subscriber};
use crate::common::{wait_routed, within, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_on_another_node_takes_the_session_over() {
    let cluster = Cluster::start(3).await;
    let mut first = Subscriber::v5(cluster.mqtt(1), "device-7", 3600);
    first.connected().await;
    first.subscribe("cmd/device-7/#", 1, Some(4)).await;
    let mut second = Subscriber::v5(cluster.mqtt(2), "device-7", 3600);
    assert!(
        second.connected().await,
        "the session moved with its subscriptions: present"
    );
    loop {
        match first.next_event().await {
            Event::Disconnect(code) => {
                assert_eq!(code, 0x8E, "Session taken over");
                break;
            }
            // rumqttc reports a DISCONNECT from the broker as the end of its connection.
            Event::Closed(error) => {
                assert!(
                    error.contains("SessionTakenOver"),
                    "closed without DISCONNECT 0x8E: {error}"
                );
                break;
            }
            _ => {}
        }
    }
    let metrics = cluster.metrics(1).await;
    assert!(
        metrics.contains("fleetmq_cluster_ownership_moves_total 1"),
        "{metrics}"
    );
    // Its subscription serves it on its new node, from a publisher on a third.
    wait_routed(cluster.mqtt(3), "cmd/device-7/probe", &mut second).await;
    let mut publisher = Publisher::v4(cluster.mqtt(3), "commander").await;
    publisher
        .publish("cmd/device-7/reboot", 1, false, b"now")
        .await;
    let command = second.next_publish().await;
    assert_eq!(command.payload, b"now");
    assert_eq!(command.subscription_ids, vec![4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_connects_of_one_id_on_two_nodes_leave_one_owner() {
    let cluster = Cluster::start(3).await;
    for round in 0..5 {
        let id = format!("twin-{round}");
        let mut a = Subscriber::v5(cluster.mqtt(2), &id, 3600);
        let mut b = Subscriber::v5(cluster.mqtt(3), &id, 3600);
        // Each one's first event: accepted, refused, or (accepted then) taken over.
        let (first_a, first_b) = tokio::join!(a.next_event(), b.next_event());
        let accepted = |event: &Event| matches!(event, Event::ConnAck { code: 0, .. });
        assert!(
            accepted(&first_a) || accepted(&first_b),
            "one connect wins: {first_a:?} {first_b:?}"
        );
        // Every claim is applied on both nodes once each applied the leader's log; then
        // a connection still open is the owner's, and only one may be.
        cluster.wait_for_leader(&[1, 2, 3]).await;
        let alive_a = accepted(&first_a) && still_attached(&mut a).await;
        let alive_b = accepted(&first_b) && still_attached(&mut b).await;
        assert!(
            alive_a ^ alive_b,
            "round {round}: exactly one connection keeps the session (a: {alive_a}, b: {alive_b})"
        );
    }
}

/// Whether the connection still holds its session: a SUBSCRIBE is answered (a connection
/// that was taken over gets DISCONNECT 0x8E instead).
async fn still_attached(client: &mut Subscriber) -> bool {
    within("the connection to answer or close", async {
        client.try_subscribe("alive/check").await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_returns_to_its_node_after_a_restart_of_the_whole_cluster() {
    let mut cluster = Cluster::start(3).await;
    let mut subscriber = Subscriber::v4(cluster.mqtt(2), "keeper", false);
    subscriber.connected().await;
    subscriber.subscribe("keep/#", 1, None).await;
    drop(subscriber);
    for id in 1..=3 {
        cluster.kill(id).await;
    }
    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster.wait_for_leader(&[1, 2, 3]).await;
    // The session and its subscription are back on node 2 (its store), and the route
    // in the replicated table: a message published on node 1 while it is offline is
    // queued for it.
    let mut publisher = crate::common::mqtt::Publisher::v4(cluster.mqtt(1), "keep-pub").await;
    within("the stored session to be routed again", async {
        loop {
            publisher.publish("keep/a", 1, false, b"while-away").await;
            let metrics = cluster.metrics(2).await;
            if metrics.lines().any(|line| {
                line.starts_with("fleetmq_cluster_received_messages_total") && !line.ends_with(" 0")
            }) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let mut back = Subscriber::v4(cluster.mqtt(2), "keeper", false);
    assert!(back.connected().await, "session present");
    let message = back.next_publish().await;
    assert_eq!(
        (message.topic.as_str(), message.payload.as_slice()),
        ("keep/a", &b"while-away"[..])
    );
}
