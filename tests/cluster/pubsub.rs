//! One broker across the nodes: a PUBLISH on one node reaches subscribers on the others
//! with its QoS, properties and order; retained messages are the same everywhere; a
//! shared group delivers each message once cluster-wide; a will is published once.

use rumqttc::v5::mqttbytes::v5::PublishProperties;

use crate::common::mqtt::{Publisher, Subscriber};
use crate::common::{eventually, wait_routed, within, Cluster, RETAINED_WINDOW};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_on_one_node_reaches_subscribers_on_the_others_at_each_qos_and_version() {
    let cluster = Cluster::start(3).await;
    let mut v4 = Subscriber::v4(cluster.mqtt(2), "sub-v4", true);
    v4.connected().await;
    v4.subscribe("fleet/#", 2, None).await;
    let mut v5 = Subscriber::v5(cluster.mqtt(3), "sub-v5", 0);
    v5.connected().await;
    v5.subscribe("fleet/+/telemetry", 2, Some(7)).await;
    wait_routed(cluster.mqtt(1), "fleet/probe/telemetry", &mut v4).await;
    wait_routed(cluster.mqtt(1), "fleet/probe/telemetry", &mut v5).await;
    // v4 also got the probes of v5's wait, published after its own.
    v4.drain_probes("fleet/probe/telemetry");

    let mut publisher = Publisher::v5(cluster.mqtt(1), "pub-1").await;
    for qos in 0..=2u8 {
        for i in 0..20 {
            let properties = PublishProperties {
                user_properties: vec![("seq".into(), i.to_string())],
                content_type: Some("text/plain".into()),
                message_expiry_interval: Some(300),
                ..Default::default()
            };
            publisher
                .publish_with(
                    "fleet/d1/telemetry",
                    qos,
                    format!("{qos}-{i}").as_bytes(),
                    properties,
                )
                .await;
        }
    }
    // Per publisher and topic, order holds across the hop; QoS is min(published, granted).
    for qos in 0..=2u8 {
        for i in 0..20 {
            let expected = format!("{qos}-{i}");
            let a = v4.next_publish().await;
            assert_eq!((a.payload.as_slice(), a.qos), (expected.as_bytes(), qos));
            let b = v5.next_publish().await;
            assert_eq!((b.payload.as_slice(), b.qos), (expected.as_bytes(), qos));
            assert_eq!(
                b.subscription_ids,
                vec![7],
                "the receiving node's subscription id"
            );
            assert_eq!(b.user_properties, vec![("seq".to_string(), i.to_string())]);
            assert_eq!(b.content_type.as_deref(), Some("text/plain"));
            let expiry = b.message_expiry.expect("message expiry survives the hop");
            assert!((1..=300).contains(&expiry), "{expiry}");
        }
    }

    // The mosquitto clients: mosquitto_sub (3.1.1) on node 3 and mosquitto_pub (MQTT 3.1)
    // on node 2, then both with MQTT 5 (subscriber on node 1, publisher on node 3); the
    // publisher publishes until mosquitto_sub (-C 1) got one message and exited.
    for (sub_node, sub_version, pub_node, pub_version) in
        [(3, "mqttv311", 2, "mqttv31"), (1, "mqttv5", 3, "mqttv5")]
    {
        let topic = format!("mosq/{pub_version}");
        let mut sub = tokio::process::Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &cluster.mqtt(sub_node).port().to_string(),
            ])
            .args([
                "-t",
                "mosq/#",
                "-q",
                "1",
                "-C",
                "1",
                "-V",
                sub_version,
                "-v",
            ])
            .args(["-i", &format!("mosq-sub-{sub_version}")])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        within("mosquitto_sub to receive from mosquitto_pub", async {
            while sub.try_wait().unwrap().is_none() {
                let status = tokio::process::Command::new("mosquitto_pub")
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &cluster.mqtt(pub_node).port().to_string(),
                    ])
                    .args(["-t", &topic, "-q", "1", "-m", "from-mosquitto"])
                    .args(["-V", pub_version])
                    .status()
                    .await
                    .unwrap();
                assert!(status.success());
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await;
        let mut out = String::new();
        use tokio::io::AsyncReadExt;
        sub.stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        assert_eq!(out.trim(), format!("{topic} from-mosquitto"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_the_same_from_every_node() {
    let cluster = Cluster::start(3).await;
    let mut publisher = Publisher::v4(cluster.mqtt(2), "retainer").await;
    publisher.publish("state/lamp", 1, true, b"on").await;
    for node in [1, 3, 2] {
        let got = eventually("the retained message on every node", || async {
            let mut sub = Subscriber::v4(cluster.mqtt(node), &format!("r{node}"), true);
            sub.connected().await;
            sub.subscribe("state/#", 1, None).await;
            let found = sub.probe_for("state/lamp", RETAINED_WINDOW).await;
            found.then_some(())
        })
        .await;
        let _: () = got;
    }
    // Cleared from another node: gone everywhere.
    let mut other = Publisher::v4(cluster.mqtt(3), "clearer").await;
    other.publish("state/lamp", 1, true, b"").await;
    for node in [1, 2, 3] {
        eventually(
            "the retained message to be cleared on every node",
            || async {
                let mut sub = Subscriber::v4(cluster.mqtt(node), &format!("c{node}"), true);
                sub.connected().await;
                sub.subscribe("state/#", 1, None).await;
                (!sub.probe_for("state/lamp", RETAINED_WINDOW).await).then_some(())
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_group_across_nodes_gets_each_message_once() {
    let cluster = Cluster::start(3).await;
    let mut member_a = Subscriber::v5(cluster.mqtt(2), "member2", 0);
    let mut member_b = Subscriber::v5(cluster.mqtt(3), "member3", 0);
    for member in [&mut member_a, &mut member_b] {
        member.connected().await;
        member.subscribe("$share/workers/jobs/#", 1, None).await;
    }
    // Both members' routes are known on node 1 once a plain probe subscriber on each
    // node, subscribed after them, is.
    for node in [2u64, 3] {
        let mut probe = Subscriber::v4(cluster.mqtt(node), &format!("probe{node}"), true);
        probe.connected().await;
        probe.subscribe("jobs/probe", 0, None).await;
        wait_routed(cluster.mqtt(1), "jobs/probe", &mut probe).await;
    }
    // Probes published meanwhile went to the group too: start from a clean slate.
    let mut publisher = Publisher::v4(cluster.mqtt(1), "jobs-pub").await;
    for i in 0..40 {
        publisher
            .publish("jobs/run", 1, false, format!("job{i}").as_bytes())
            .await;
    }
    publisher.publish("jobs/end", 1, false, b"end").await;
    let mut got = Vec::new();
    let mut ends = 0;
    while ends < 1 {
        let (i, p) = tokio::select! {
            p = member_a.next_publish() => (0, p),
            p = member_b.next_publish() => (1, p),
        };
        match p.topic.as_str() {
            "jobs/run" => got.push((i, String::from_utf8(p.payload).unwrap())),
            "jobs/end" => ends += 1,
            _ => {}
        }
    }
    // The end marker went to one member; the other may still be receiving: take what
    // arrives until both saw a second marker.
    publisher.publish("jobs/end", 1, false, b"end").await;
    publisher.publish("jobs/end", 1, false, b"end").await;
    let mut markers = 0;
    while markers < 2 {
        let (i, p) = tokio::select! {
            p = member_a.next_publish() => (0, p),
            p = member_b.next_publish() => (1, p),
        };
        match p.topic.as_str() {
            "jobs/run" => got.push((i, String::from_utf8(p.payload).unwrap())),
            "jobs/end" => markers += 1,
            _ => {}
        }
    }
    let mut jobs: Vec<String> = got.iter().map(|(_, job)| job.clone()).collect();
    jobs.sort();
    jobs.dedup();
    assert_eq!(got.len(), 40, "each job exactly once: {got:?}");
    assert_eq!(jobs.len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_is_published_once_cluster_wide() {
    let cluster = Cluster::start(3).await;
    let mut watchers = Vec::new();
    for node in [2, 3] {
        let mut watcher = Subscriber::v4(cluster.mqtt(node), &format!("watch{node}"), true);
        watcher.connected().await;
        watcher.subscribe("wills/#", 1, None).await;
        wait_routed(cluster.mqtt(1), "wills/probe", &mut watcher).await;
        watchers.push(watcher);
    }
    // A 3.1.1 client with a will on node 1, whose connection is dropped without
    // DISCONNECT (the test aborts its event loop).
    let mut options = rumqttc::MqttOptions::new("dying", "127.0.0.1", cluster.mqtt(1).port());
    options.set_last_will(rumqttc::LastWill::new(
        "wills/dying",
        "gone",
        rumqttc::QoS::AtLeastOnce,
        false,
    ));
    let mut dying = Subscriber::v4_with(options);
    dying.connected().await;
    drop(dying);
    let mut marker = Publisher::v4(cluster.mqtt(1), "marker").await;
    let next_not_probe = async |watcher: &mut Subscriber| loop {
        let p = watcher.next_publish().await;
        if p.topic != "wills/probe" {
            return p;
        }
    };
    for watcher in &mut watchers {
        let will = next_not_probe(watcher).await;
        assert_eq!(
            (will.topic.as_str(), will.payload.as_slice()),
            ("wills/dying", &b"gone"[..])
        );
    }
    marker.publish("wills/marker", 1, false, b"m").await;
    for watcher in &mut watchers {
        let next = next_not_probe(watcher).await;
        assert_eq!(next.topic, "wills/marker", "the will came once");
    }
}
