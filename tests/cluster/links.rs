//! The node links themselves: a link whose peer falls silent (black-holed by the proxy:
//! open, but carrying nothing) is closed and redialled, so a leader whose links to the
//! majority are black-holed reports no leader, as does a follower; and the links' TLS
//! certificates are re-read on SIGHUP.

use std::time::{Duration, Instant};

use crate::common::mqtt::{Event, Publisher, Subscriber};
use crate::common::{eventually, metric_value, wait_routed, Cluster};

/// How long after the black hole a node may still report a leader: the link timeout (the
/// default of 10 heartbeats of 100 ms: 1 s), the watchdog's tick, the status poll, and
/// slack for a loaded machine.
const NO_LEADER_BOUND: Duration = Duration::from_secs(8);

/// Black-holes node `id`'s links and checks that it reports no leader within
/// `NO_LEADER_BOUND`, answers `/health` with 503 and refuses a persistent session, while
/// the other two elect or keep a leader and serve; then reopens and checks convergence.
async fn black_hole_and_heal(cluster: &Cluster, id: u64) {
    let others: Vec<u64> = (1..=3).filter(|other| *other != id).collect();
    let connects_before: Vec<f64> = {
        let text = cluster.metrics(id).await;
        others
            .iter()
            .map(|peer| {
                metric_value(
                    &text,
                    &format!("fleetmq_cluster_link_connects_total{{peer=\"{peer}\"}}"),
                )
                .unwrap()
            })
            .collect()
    };

    let started = Instant::now();
    cluster.black_hole(id, true);
    cluster.wait_for_no_leader(id).await;
    let took = started.elapsed();
    assert!(
        took < NO_LEADER_BOUND,
        "node {id} reported a leader for {took:?} after its links were black-holed"
    );
    assert_eq!(cluster.health(id).await, Some(503));
    let mut refused = Subscriber::v5(cluster.mqtt(id), &format!("black-holed-{id}"), 600);
    match refused.next_event().await {
        Event::Closed(error) => assert!(error.contains("Unavailable"), "{error}"),
        other => panic!("expected CONNACK 0x88 on the black-holed node, got {other:?}"),
    }
    // Its links were closed for their silence (a follower may have lost its leader
    // earlier, by an election timeout).
    for peer in &others {
        let name = format!("fleetmq_cluster_link_timeouts_total{{peer=\"{peer}\"}}");
        eventually("the black-holed link to time out", || async {
            let text = cluster.metrics(id).await;
            (metric_value(&text, &name)? >= 1.0).then_some(())
        })
        .await;
    }

    // Each peer's outbox fill is exported (empty: nothing is queued for a link down).
    let text = cluster.metrics(id).await;
    for peer in &others {
        let name = format!("fleetmq_cluster_link_outbox_bytes{{peer=\"{peer}\"}}");
        assert_eq!(metric_value(&text, &name), Some(0.0), "{text}");
    }

    // The two others are a majority and serve.
    cluster.wait_for_leader(&others).await;
    let mut sub = Subscriber::v4(cluster.mqtt(others[1]), &format!("majority-{id}"), true);
    sub.connected().await;
    sub.subscribe("bh/#", 1, None).await;
    wait_routed(cluster.mqtt(others[0]), "bh/probe", &mut sub).await;

    // Reopened: the links are redialled (counted), the node follows the leader again.
    cluster.black_hole(id, false);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    eventually("the node to report healthy again", || async {
        (cluster.health(id).await == Some(200)).then_some(())
    })
    .await;
    let text = cluster.metrics(id).await;
    for (peer, before) in others.iter().zip(connects_before) {
        let after = metric_value(
            &text,
            &format!("fleetmq_cluster_link_connects_total{{peer=\"{peer}\"}}"),
        )
        .unwrap();
        assert!(
            after > before,
            "the link to {peer} was not redialled:\n{text}"
        );
    }
    let mut back = Subscriber::v5(cluster.mqtt(id), &format!("back-{id}"), 600);
    back.connected().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_holed_links_are_detected_on_a_leader_and_on_a_follower() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    black_hole_and_heal(&cluster, leader).await;

    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    black_hole_and_heal(&cluster, follower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_certificates_are_reloaded_on_sighup() {
    let mut cluster = Cluster::configure_with(3, &[], true).await;
    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster.wait_for_leader(&[1, 2, 3]).await;

    // A new CA and node certificate replace the files every node reads.
    let certs = cluster.dir.path().join("certs");
    let rotated = cluster.dir.path().join("certs-rotated");
    fleetmq::certs::generate(&rotated, &["127.0.0.1".to_string()], &[], 30).unwrap();
    for file in ["server.pem", "server.key", "ca.pem"] {
        std::fs::rename(rotated.join(file), certs.join(file)).unwrap();
    }
    let reloads = |id: u64| {
        std::fs::read_to_string(&cluster.node(id).log)
            .unwrap_or_default()
            .matches("configuration reloaded")
            .count()
    };
    for id in [1, 2] {
        cluster.sighup(id);
        eventually("the node to reload", || async {
            (reloads(id) == 1).then_some(())
        })
        .await;
    }

    // Every link is cut and redialled: nodes 1 and 2 (both reloaded) link up again;
    // node 3 still presents the old certificate, which the new CA does not sign.
    for proxy in cluster.proxies.values() {
        proxy.set_cut(true);
    }
    eventually("every link to go down", || async {
        let status = cluster.status(2).await?;
        status
            .members
            .iter()
            .all(|member| member.id == 2 || !member.reachable)
            .then_some(())
    })
    .await;
    for proxy in cluster.proxies.values() {
        proxy.set_cut(false);
    }
    cluster.wait_for_leader(&[1, 2]).await;
    let log_line = |id: u64| {
        std::fs::read_to_string(&cluster.node(id).log)
            .unwrap_or_default()
            .lines()
            .find(|line| {
                line.contains("cluster link TLS handshake failed") && line.contains("peer=3")
            })
            .map(str::to_string)
    };
    let line = eventually("a clear log line about node 3's certificate", || async {
        log_line(1)
    })
    .await;
    assert!(
        line.contains("UnknownIssuer") || line.contains("invalid peer certificate"),
        "{line}"
    );
    let status = cluster.status(1).await.unwrap();
    let three = status.members.iter().find(|m| m.id == 3).unwrap();
    assert!(
        !three.reachable,
        "a link with a CA that no longer matches came up"
    );

    // Node 3 reloads too: its links come up with the new certificates.
    cluster.sighup(3);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let mut sub = Subscriber::v4(cluster.mqtt(3), "rotated-sub", true);
    sub.connected().await;
    sub.subscribe("rotated/#", 1, None).await;
    wait_routed(cluster.mqtt(1), "rotated/probe", &mut sub).await;
    let mut publisher = Publisher::v4(cluster.mqtt(1), "rotated-pub").await;
    publisher
        .publish("rotated/x", 1, false, b"new certificates")
        .await;
    assert_eq!(sub.next_publish().await.payload, b"new certificates");
}
