//! Retained messages and their durability across the cluster: a QoS 1/2 retained
//! PUBLISH is acknowledged once the cluster committed it, so kill -9 of its node right
//! after the PUBACK loses nothing; a node cut off from the majority answers it with a
//! failure instead (MQTT 5 PUBACK 0x80, MQTT 3 disconnected unacknowledged); retained
//! messages published with the mosquitto clients (MQTT 3.1 and 5) are read from every
//! node after a restart of the whole cluster.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::mqtt::Subscriber;
use crate::common::{eventually, within, Cluster, RETAINED_WINDOW};

/// Whether a fresh subscriber on `node` receives `topic`'s retained message `payload`.
async fn retained_on(cluster: &Cluster, node: u64, topic: &str, payload: &[u8]) -> bool {
    let mut check = Subscriber::v4(cluster.mqtt(node), &format!("check-{node}"), true);
    check.connected().await;
    check.subscribe(topic, 1, None).await;
    within("the retained message or nothing", async {
        loop {
            match tokio::time::timeout(RETAINED_WINDOW, check.next_publish()).await {
                Ok(received) if received.topic == topic => {
                    return received.retain && received.payload == payload
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
}

/// `mosquitto_pub` of a retained QoS 1 message; returns once it got its PUBACK and exited.
async fn mosquitto_pub(cluster: &Cluster, node: u64, version: &str, topic: &str, payload: &str) {
    let output = tokio::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &cluster.mqtt(node).port().to_string(),
        ])
        .args(["-V", version, "-q", "1", "-r", "-t", topic, "-m", payload])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "mosquitto_pub: {output:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_retained_message_survives_kill_9_of_its_node_right_after_the_puback() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    for (target, version) in [(leader, "mqttv5"), (follower, "mqttv311")] {
        let topic = format!("durable/{target}");
        let payload = format!("acknowledged by node {target}");
        mosquitto_pub(&cluster, target, version, &topic, &payload).await;
        cluster.kill(target).await;

        let others: Vec<u64> = (1..=3).filter(|id| *id != target).collect();
        cluster.wait_for_leader(&others).await;
        for reader in &others {
            eventually("the retained message on a surviving node", || async {
                retained_on(&cluster, *reader, &topic, payload.as_bytes())
                    .await
                    .then_some(())
            })
            .await;
        }
        cluster.spawn(target);
        cluster.wait_for_leader(&[1, 2, 3]).await;
        assert!(retained_on(&cluster, target, &topic, payload.as_bytes()).await);
    }
}

/// A minimal MQTT client on a raw socket: CONNECT (clean), then one retained QoS 1
/// PUBLISH; returns what came back after it (`None`: the connection closed).
async fn publish_retained_raw(
    cluster: &Cluster,
    node: u64,
    v5: bool,
    topic: &str,
) -> Option<Vec<u8>> {
    let mut stream = tokio::net::TcpStream::connect(cluster.mqtt(node))
        .await
        .unwrap();
    let client_id = if v5 { "raw-v5" } else { "raw-v3" };
    let mut connect = vec![
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        if v5 { 5 } else { 4 },
        0x02,
        0,
        60,
    ];
    if v5 {
        connect.push(0); // no properties
    }
    connect.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    connect.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, connect.len() as u8];
    packet.extend_from_slice(&connect);
    stream.write_all(&packet).await.unwrap();
    let mut connack = [0u8; 2];
    stream.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack[0], 0x20);
    let mut rest = vec![0u8; connack[1] as usize];
    stream.read_exact(&mut rest).await.unwrap();
    assert_eq!(rest[1], 0, "CONNACK refused: {rest:?}");

    let mut publish = Vec::new();
    publish.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    publish.extend_from_slice(topic.as_bytes());
    publish.extend_from_slice(&1u16.to_be_bytes());
    if v5 {
        publish.push(0);
    }
    publish.extend_from_slice(b"from the minority");
    let mut packet = vec![0x33, publish.len() as u8];
    packet.extend_from_slice(&publish);
    stream.write_all(&packet).await.unwrap();
    let mut answer = Vec::new();
    within("an answer to the retained PUBLISH", async {
        let mut buffer = [0u8; 64];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
            if answer.len() >= 2 && answer.len() >= 2 + answer[1] as usize {
                return;
            }
        }
    })
    .await;
    (!answer.is_empty()).then_some(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_majority_does_not_acknowledge_a_retained_publish() {
    let cluster = Cluster::start(3).await;
    cluster.isolate(3, true);
    cluster.wait_for_no_leader(3).await;

    // MQTT 5: PUBACK with 0x80 (Unspecified error), after the commit bound.
    let started = std::time::Instant::now();
    let answer = publish_retained_raw(&cluster, 3, true, "minority/v5").await;
    let answer = answer.expect("a PUBACK");
    assert_eq!(answer[0], 0x40, "{answer:?}");
    assert!(answer[1] >= 3 && answer[4] == 0x80, "{answer:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // MQTT 3.1.1: the connection closes without a PUBACK.
    assert_eq!(
        publish_retained_raw(&cluster, 3, false, "minority/v3").await,
        None
    );

    // Healed: the change the node kept converges on the whole cluster.
    cluster.isolate(3, false);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    eventually("the minority's retained message to converge", || async {
        retained_on(&cluster, 1, "minority/v5", b"from the minority")
            .await
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_from_mosquitto_clients_are_read_on_every_node_after_a_restart_of_the_whole_cluster(
) {
    let mut cluster = Cluster::start(3).await;
    mosquitto_pub(&cluster, 1, "mqttv5", "whole/v5", "from mqttv5 on node 1").await;
    mosquitto_pub(
        &cluster,
        2,
        "mqttv31",
        "whole/v31",
        "from mqttv31 on node 2",
    )
    .await;
    mosquitto_pub(
        &cluster,
        3,
        "mqttv311",
        "whole/v311",
        "from mqttv311 on node 3",
    )
    .await;
    for id in 1..=3 {
        cluster.kill(id).await;
    }
    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster.wait_for_leader(&[1, 2, 3]).await;
    for node in 1..=3u64 {
        for version in ["mqttv5", "mqttv31"] {
            let output = within(
                "mosquitto_sub to read the retained messages",
                tokio::process::Command::new("mosquitto_sub")
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &cluster.mqtt(node).port().to_string(),
                    ])
                    .args([
                        "-V", version, "-t", "whole/#", "-q", "1", "-C", "3", "-W", "10",
                    ])
                    .output(),
            )
            .await
            .unwrap();
            let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            lines.sort();
            assert_eq!(
                lines,
                [
                    "from mqttv31 on node 2",
                    "from mqttv311 on node 3",
                    "from mqttv5 on node 1"
                ],
                "node {node}, {version}: {output:?}"
            );
        }
    }
}
