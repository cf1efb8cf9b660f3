//! Membership at run time through `fleetmq cluster add-node | remove-node | status`,
//! under load, and the cluster metrics.

use crate::common::mqtt::{Publisher, Subscriber};
use crate::common::{eventually, wait_routed, Cluster};

fn cli(cluster: &Cluster, node: u64, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_fleetmq"))
        .arg("cluster")
        .args(args)
        .arg("-c")
        .arg(&cluster.node(node).config)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_added_and_removed_at_run_time_while_messages_flow() {
    let mut cluster = Cluster::configure(3, &[4]).await;
    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let mut sub = Subscriber::v4(cluster.mqtt(1), "load-sub", true);
    sub.connected().await;
    sub.subscribe("load/#", 1, None).await;
    wait_routed(cluster.mqtt(2), "load/probe", &mut sub).await;
    let mut publisher = Publisher::v4(cluster.mqtt(2), "load-pub").await;

    // Node 4 starts with join = true and becomes a member through node 3 (a follower
    // or the leader: a follower hands the change to the leader).
    cluster.spawn(4);
    let addr = cluster.node(4).link.to_string();
    let mut sent = 0;
    let add = tokio::task::spawn_blocking({
        let config = cluster.node(3).config.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_fleetmq"))
                .args(["cluster", "add-node", &format!("4@{addr}"), "-c"])
                .arg(config)
                .output()
                .unwrap()
        }
    });
    // Messages flow, one round trip after the other, until the change is done.
    while !add.is_finished() {
        let payload = format!("m{sent}");
        publisher
            .publish("load/x", 1, false, payload.as_bytes())
            .await;
        assert_eq!(sub.next_publish().await.payload, payload.as_bytes());
        sent += 1;
        assert!(sent < 100_000, "add-node did not finish");
    }
    let added = add.await.unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    cluster.wait_for_leader(&[1, 2, 3, 4]).await;
    eventually("node 1 to list four reachable voters", || async {
        let status = cli(&cluster, 1, &["status", "--json"]);
        assert!(status.status.success());
        let status: fleetmq::cluster::admin::ClusterStatus =
            serde_json::from_slice(&status.stdout).unwrap();
        (status.members.len() == 4 && status.members.iter().all(|m| m.voter && m.reachable))
            .then_some(())
    })
    .await;

    // The new node is one broker with the others.
    let mut from_new = Publisher::v4(cluster.mqtt(4), "new-pub").await;
    wait_routed(cluster.mqtt(4), "load/probe", &mut sub).await;
    from_new
        .publish("load/new", 1, false, b"hello from 4")
        .await;
    assert_eq!(sub.next_publish().await.payload, b"hello from 4");

    // Node 2 leaves; the table shows three members, the rest keeps serving.
    let removed = cli(&cluster, 1, &["remove-node", "2"]);
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    cluster.kill(2).await;
    cluster.wait_for_leader(&[1, 3, 4]).await;
    let table = cli(&cluster, 3, &["status"]);
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert_eq!(table.lines().count(), 2 + 3, "{table}");
    assert!(
        !table.lines().skip(2).any(|line| line.starts_with("2 ")),
        "{table}"
    );
    from_new
        .publish("load/after", 1, false, b"after removal")
        .await;
    assert_eq!(sub.next_publish().await.payload, b"after removal");

    let metrics = cluster.metrics(4).await;
    for name in [
        "fleetmq_cluster_term",
        "fleetmq_cluster_leader",
        "fleetmq_cluster_applied_index",
        "fleetmq_cluster_link_up{peer=\"1\"} 1",
        "fleetmq_cluster_forwarded_messages_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
    eventually("the leader to report replication lag per peer", || async {
        let leader = cluster.status(1).await?.leader?;
        let metrics = cluster.metrics(leader).await;
        metrics
            .contains("fleetmq_cluster_replication_lag{peer=")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_names_cluster_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[cluster]\nnode_id = 4\nbind = \"127.0.0.1:7001\"\npeers = [\"1@a:1\", \"1@b:2\", \"2@a:1\"]\nlink_timeout_ms = 200\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fleetmq"))
        .args(["check-config", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let errors = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "cluster.peers[1]",
        "node id 1 is already used",
        "cluster.peers[2]",
        "is not listed",
        "cluster.link_timeout_ms",
        "200 is out of range",
    ] {
        assert!(
            errors.contains(expected),
            "{expected} missing from {errors}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_links_run_over_mutual_tls() {
    let mut cluster = Cluster::configure_with(3, &[], true).await;
    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let mut sub = Subscriber::v4(cluster.mqtt(3), "tls-sub", true);
    sub.connected().await;
    sub.subscribe("tls/#", 1, None).await;
    wait_routed(cluster.mqtt(1), "tls/probe", &mut sub).await;
    let mut publisher = Publisher::v4(cluster.mqtt(1), "tls-pub").await;
    publisher.publish("tls/x", 1, false, b"encrypted hop").await;
    assert_eq!(sub.next_publish().await.payload, b"encrypted hop");

    // A peer speaking plain TCP gets no hello back: the link wants a TLS handshake.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut plain = tokio::net::TcpStream::connect(cluster.node(2).link)
        .await
        .unwrap();
    let mut hello = vec![0, 0, 0, 9, 1];
    hello.extend_from_slice(&1u64.to_be_bytes());
    plain.write_all(&hello).await.unwrap();
    let mut answer = Vec::new();
    let _ = crate::common::within(
        "the link to close a plain connection",
        plain.read_to_end(&mut answer),
    )
    .await;
    assert!(
        !answer.starts_with(&[0, 0, 0, 9, 1]),
        "a plain hello was answered: {answer:?}"
    );
}
