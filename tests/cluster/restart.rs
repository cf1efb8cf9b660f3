//! A node restarted after kill -9 serves the sessions the cluster's log says it owns,
//! whatever its last snapshot says: a session that moved away from it before that
//! snapshot and came back after it is resumed there (Session Present = 1, with what was
//! queued for it).
//!
//! The snapshot is forced between the two moves (`snapshot_entries` lowered, claims of
//! other clients until node 2 reports a snapshot past the move away), and nothing else
//! may move the session while node 2 is down (`link_timeout_ms` long enough that no
//! adoption starts). Before the restart applied the committed log as a whole, node 2
//! rebuilt its state from that snapshot first, handed the session it held over to node
//! 1 (which no longer owned it), and its client got a fresh session: in the kill loop
//! (`kill_loop.rs`) a publisher whose node had been killed twice came back to nothing.

use std::time::Duration;

use crate::common::acked::{Outcome, RawClient};
use crate::common::{within, Cluster};

const CLIENT: &str = "rs-mover";
/// Entries between two snapshots of a node.
const SNAPSHOT_ENTRIES: u64 = 30;

/// Sets every node's `snapshot_entries` (the common configuration has 50).
fn snapshot_every(cluster: &Cluster, entries: u64) {
    for node in cluster.nodes.values() {
        let config = std::fs::read_to_string(&node.config).unwrap();
        assert!(config.contains("snapshot_entries = 50\n"), "{config}");
        let config = config.replace(
            "snapshot_entries = 50\n",
            &format!("snapshot_entries = {entries}\n"),
        );
        std::fs::write(&node.config, config).unwrap();
    }
}

async fn applied_index(cluster: &Cluster, id: u64) -> u64 {
    cluster
        .status(id)
        .await
        .and_then(|status| status.applied_index)
        .unwrap_or(0)
}

async fn snapshot_index(cluster: &Cluster, id: u64) -> Option<u64> {
    cluster
        .status(id)
        .await
        .and_then(|status| status.snapshot_index)
}

/// Connects `CLIENT` to node `id`; Session Present.
async fn connect(cluster: &Cluster, id: u64) -> (RawClient, bool) {
    within("the client to connect", async {
        loop {
            if let Ok(connected) = RawClient::connect(cluster.mqtt(id), CLIENT, 5).await {
                return connected;
            }
            // Refused while node `id` has no leader yet: again shortly.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_resumes_a_session_that_came_back_to_it_after_its_snapshot() {
    let mut cluster = Cluster::configure(3, &[]).await;
    snapshot_every(&cluster, SNAPSHOT_ENTRIES);
    cluster.configure_section("cluster", "link_timeout_ms = 20000");
    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster.wait_for_leader(&[1, 2, 3]).await;

    // On node 2, then moved to node 1.
    let (mut client, present) = connect(&cluster, 2).await;
    assert!(!present);
    client.subscribe("rs/#", 1).await.unwrap();
    drop(client);
    let (client, present) = connect(&cluster, 1).await;
    assert!(present, "moved to node 1");
    drop(client);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let moved_away = applied_index(&cluster, 2).await;

    // Node 2 snapshots a state in which the session is node 1's (claims of other clients
    // add entries until it took a snapshot covering the move, so that the next one is
    // `SNAPSHOT_ENTRIES` entries away: more than the rest of the test adds).
    let earlier = snapshot_index(&cluster, 2).await;
    within("node 2 to snapshot the move away", async {
        for n in 0.. {
            let snapshot = snapshot_index(&cluster, 2).await;
            if snapshot != earlier && snapshot.is_some_and(|index| index >= moved_away) {
                return;
            }
            let filler = format!("rs-filler-{n}");
            let _ = RawClient::connect(cluster.mqtt(1), &filler, 5).await;
        }
    })
    .await;
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let before_back = applied_index(&cluster, 2).await;

    // Back on node 2, where messages are queued for it while its client is away.
    let (client, present) = connect(&cluster, 2).await;
    assert!(present, "moved back to node 2");
    drop(client);
    let (mut publisher, _) = RawClient::connect(cluster.mqtt(2), "rs-publisher", 4)
        .await
        .unwrap();
    for n in 1..=3u16 {
        let payload = format!("queued-{n}");
        let outcome = publisher
            .publish("rs/x", 1, n, payload.as_bytes(), false)
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Accepted);
    }
    drop(publisher);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let snapshot = snapshot_index(&cluster, 2).await;
    assert!(
        snapshot.is_some_and(|index| index <= before_back),
        "node 2's last snapshot ({snapshot:?}) must predate the move back (after {before_back}) for this test to mean anything"
    );

    cluster.kill(2).await;
    cluster.spawn(2);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let (mut client, present) = connect(&cluster, 2).await;
    assert!(present, "node 2 owns the session and holds it in its store");
    // Each queued message, in order of first arrival (QoS 1: a copy may come twice).
    let mut received: Vec<String> = Vec::new();
    within("the queued messages", async {
        while received.len() < 3 {
            let message = client.receive().await.unwrap();
            let payload = String::from_utf8(message.payload).unwrap();
            if !received.contains(&payload) {
                received.push(payload);
            }
        }
    })
    .await;
    assert_eq!(received, ["queued-1", "queued-2", "queued-3"]);
}
