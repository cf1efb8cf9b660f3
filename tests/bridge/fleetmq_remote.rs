//! A bridge between two in-process fleetmq brokers, its link through a proxy the tests
//! cut, black-hole and point at a restarted remote while devices publish.

use std::time::Duration;

use fleetmq::config::{BridgeProtocol, Direction, WhenFull};

use super::support::*;

const TELEMETRY_Q1: &str = "telemetry/q1";
const TELEMETRY_Q2: &str = "telemetry/q2";

/// Local broker with a bridge (out: telemetry/# to site/telemetry/#; in:
/// site/commands/# to commands/#) through `proxy` to the remote.
async fn local_with_bridge(proxy: &Proxy, protocol: BridgeProtocol) -> Fleetmq {
    let remote = proxy.addr;
    Fleetmq::start(move |config| {
        config.bridges = vec![bridge(
            remote,
            protocol,
            vec![
                rule("telemetry/#", Direction::Out, 2, "", "site/"),
                rule("commands/#", Direction::In, 2, "", "site/"),
            ],
        )];
    })
    .await
}

/// Publishes a command on the remote and waits for it on the local broker.
async fn command_reaches_local(local: &Fleetmq, remote: &Fleetmq, name: &str) {
    let (commands, task) =
        subscribe(local.addr, &format!("device-{name}"), "commands/#", 1, true).await;
    publish_acknowledged(
        remote.addr,
        &format!("cloud-{name}"),
        "site/commands/x",
        1,
        0..5,
    )
    .await;
    commands.wait_distinct("commands/x", 5).await;
    assert_complete_in_order(&commands, "commands/x", 5, false);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_published_during_a_cut_and_a_black_hole_all_arrive_in_order() {
    for protocol in [BridgeProtocol::Mqttv311, BridgeProtocol::Mqttv5] {
        let remote = Fleetmq::start(|_| {}).await;
        let proxy = Proxy::start(remote.addr).await;
        let local = local_with_bridge(&proxy, protocol).await;
        let (cloud, cloud_task) =
            subscribe(remote.addr, "cloud-app", "site/telemetry/#", 2, true).await;
        until("the bridge link", || local.bridge().connected).await;

        // Devices publish all along: 3 phases of 300 messages per topic.
        let (q1, q2) = (
            format!("site/{TELEMETRY_Q1}"),
            format!("site/{TELEMETRY_Q2}"),
        );
        publish_both(&local, 0..300).await;
        cloud.wait_distinct(&q1, 300).await;

        // Cut: the link closes on both sides; publishers are acknowledged locally.
        proxy.set(Mode::Cut);
        until("the bridge to notice the cut", || !local.bridge().connected).await;
        publish_both(&local, 300..600).await;
        let waiting = local.bridge();
        assert!(
            waiting.outbox_messages + waiting.outbox_inflight >= 600,
            "{waiting:?}"
        );
        proxy.set(Mode::Forward);
        cloud.wait_distinct(&q1, 600).await;
        cloud.wait_distinct(&q2, 600).await;

        // Black hole: only the keep alive (1 s here) notices.
        until("the link back up", || local.bridge().connected).await;
        proxy.set(Mode::BlackHole);
        publish_both(&local, 600..900).await;
        until("the keep alive to notice the black hole", || {
            !local.bridge().connected
        })
        .await;
        proxy.set(Mode::Forward);
        cloud.wait_distinct(&q1, 900).await;
        cloud.wait_distinct(&q2, 900).await;

        assert_complete_in_order(&cloud, &q1, 900, false);
        assert_complete_in_order(&cloud, &q2, 900, true);
        until("the outbox to empty", || {
            let status = local.bridge();
            status.outbox_messages + status.outbox_inflight == 0
        })
        .await;
        let status = local.bridge();
        assert!(status.reconnects >= 2, "{status:?}");
        assert_eq!(
            status.dropped.outbox_full + status.dropped.evicted,
            0,
            "{status:?}"
        );
        assert!(status.acknowledged >= 1800, "{status:?}");
        let broker = local.handle().broker();
        let metrics = broker.metrics().render(broker);
        for line in [
            "fleetmq_bridge_up{bridge=\"cloud\"} 1",
            "fleetmq_bridge_outbox_messages{bridge=\"cloud\"} 0",
            "fleetmq_bridge_messages_dropped_total{bridge=\"cloud\",reason=\"outbox_full\"} 0",
        ] {
            assert!(metrics.contains(line), "no {line} in\n{metrics}");
        }
        assert!(metrics.contains("fleetmq_bridge_messages_acknowledged_total{bridge=\"cloud\"}"));

        command_reaches_local(&local, &remote, &format!("{protocol:?}")).await;
        cloud_task.abort();
        local.stop().await;
        remote.stop().await;
    }
}

async fn publish_both(local: &Fleetmq, numbers: std::ops::Range<usize>) {
    let q1 = publish_acknowledged(local.addr, "device-q1", TELEMETRY_Q1, 1, numbers.clone());
    let q2 = publish_acknowledged(local.addr, "device-q2", TELEMETRY_Q2, 2, numbers);
    tokio::join!(q1, q2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_remote_restarted_while_devices_publish_gets_everything_exactly_once() {
    // The remote is the real binary, stopped and started again on its data directory.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let remote_addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let remote_config = write_plain_config(dir.path(), port);
    let mut remote = start_binary(&remote_config, port, &dir.path().join("remote-1.log")).await;
    let proxy = Proxy::start(remote_addr).await;
    let local = local_with_bridge(&proxy, BridgeProtocol::Mqttv5).await;
    until("the bridge link", || local.bridge().connected).await;
    // A persistent subscriber on the remote, so it keeps its messages over the restart
    // (QoS 1: a QoS 2 exchange cut by the test would confuse a new client instance).
    let (cloud, cloud_task) =
        subscribe(remote_addr, "cloud-app", "site/telemetry/#", 1, false).await;
    publish_both(&local, 0..200).await;
    cloud
        .wait_distinct(&format!("site/{TELEMETRY_Q2}"), 200)
        .await;
    cloud_task.abort();

    // The remote is killed (SIGKILL) while devices keep publishing.
    remote.start_kill().unwrap();
    let _ = within("the remote to stop", remote.wait()).await;
    until("the bridge to notice", || !local.bridge().connected).await;
    publish_both(&local, 200..500).await;
    let mut remote = start_binary(&remote_config, port, &dir.path().join("remote-2.log")).await;
    let (cloud, cloud_task) =
        subscribe(remote_addr, "cloud-app", "site/telemetry/#", 1, false).await;
    let (q1, q2) = (
        format!("site/{TELEMETRY_Q1}"),
        format!("site/{TELEMETRY_Q2}"),
    );
    // What the subscriber got after its reconnect: 200..500 in order, QoS 2 once (an
    // in-flight QoS 1 message of the first run may come again).
    for (topic, exactly_once) in [(&q1, false), (&q2, true)] {
        let expected: Vec<String> = (200..500)
            .map(|n| format!("{}:{n}", topic.trim_start_matches("site/")))
            .collect();
        cloud.wait_all(topic, &expected).await;
        // Messages of the first run still in flight to the first subscriber come again
        // to the second one: only 200..500 are this run's.
        let this_run: Vec<String> = cloud
            .payloads(topic)
            .into_iter()
            .filter(|payload| expected.contains(payload))
            .collect();
        let mut seen = std::collections::HashSet::new();
        let firsts: Vec<&String> = this_run.iter().filter(|p| seen.insert(*p)).collect();
        assert_eq!(firsts, expected.iter().collect::<Vec<_>>(), "{topic}");
        if exactly_once {
            assert_eq!(this_run.len(), 300, "{topic}: a duplicate");
        }
    }
    let (commands, task) = subscribe(local.addr, "device-restart", "commands/#", 1, true).await;
    publish_acknowledged(remote_addr, "cloud-restart", "site/commands/x", 1, 0..5).await;
    commands.wait_distinct("commands/x", 5).await;
    task.abort();
    cloud_task.abort();
    local.stop().await;
    remote.start_kill().unwrap();
    let _ = remote.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_outbox_refuses_new_messages_and_counts_them() {
    let remote = Fleetmq::start(|_| {}).await;
    let proxy = Proxy::start(remote.addr).await;
    proxy.set(Mode::Cut);
    let remote_addr = proxy.addr;
    let local = Fleetmq::start(move |config| {
        let mut link = bridge(
            remote_addr,
            BridgeProtocol::Mqttv5,
            vec![rule("telemetry/#", Direction::Out, 1, "", "site/")],
        );
        link.outbox.max_messages = 50;
        config.bridges = vec![link];
    })
    .await;
    publish_acknowledged(local.addr, "device", "telemetry/a", 1, 0..80).await;
    let status = local.bridge();
    assert_eq!(status.outbox_messages, 50, "{status:?}");
    assert_eq!(status.dropped.outbox_full, 30, "{status:?}");
    assert_eq!(status.dropped.evicted, 0, "{status:?}");

    let (cloud, cloud_task) = subscribe(remote.addr, "cloud-app", "site/#", 1, true).await;
    proxy.set(Mode::Forward);
    cloud.wait_distinct("site/telemetry/a", 50).await;
    // The first 50 were kept, the rest refused.
    assert_complete_in_order(&cloud, "site/telemetry/a", 50, false);
    cloud_task.abort();
    local.stop().await;
    remote.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_outbox_under_drop_oldest_keeps_the_newest() {
    let remote = Fleetmq::start(|_| {}).await;
    let proxy = Proxy::start(remote.addr).await;
    proxy.set(Mode::Cut);
    let remote_addr = proxy.addr;
    let local = Fleetmq::start(move |config| {
        let mut link = bridge(
            remote_addr,
            BridgeProtocol::Mqttv311,
            vec![rule("telemetry/#", Direction::Out, 1, "", "site/")],
        );
        link.outbox.max_messages = 50;
        link.outbox.when_full = WhenFull::DropOldest;
        config.bridges = vec![link];
    })
    .await;
    publish_acknowledged(local.addr, "device", "telemetry/a", 1, 0..80).await;
    let status = local.bridge();
    assert_eq!(status.outbox_messages, 50, "{status:?}");
    assert_eq!(status.dropped.evicted, 30, "{status:?}");
    assert_eq!(status.dropped.outbox_full, 0, "{status:?}");

    let (cloud, cloud_task) = subscribe(remote.addr, "cloud-app", "site/#", 1, true).await;
    proxy.set(Mode::Forward);
    cloud.wait_distinct("site/telemetry/a", 50).await;
    let expected: Vec<String> = (30..80).map(|n| format!("telemetry/a:{n}")).collect();
    let mut got = cloud.payloads("site/telemetry/a");
    got.dedup();
    assert_eq!(got, expected);
    cloud_task.abort();
    local.stop().await;
    remote.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_remote_never_holds_local_publishers_back() {
    // The remote black-holes: the bridge's local session is connected but nothing is
    // acknowledged. Local publishers and subscribers carry on at full speed.
    let remote = Fleetmq::start(|_| {}).await;
    let proxy = Proxy::start(remote.addr).await;
    let remote_addr = proxy.addr;
    let local = Fleetmq::start(move |config| {
        config.limits.slow_consumer_timeout_ms = 60_000;
        let mut link = bridge(
            remote_addr,
            BridgeProtocol::Mqttv5,
            vec![rule("telemetry/#", Direction::Out, 1, "", "site/")],
        );
        link.keep_alive_secs = 60;
        link.outbox.max_messages = 100;
        config.bridges = vec![link];
    })
    .await;
    until("the bridge link", || local.bridge().connected).await;
    proxy.set(Mode::BlackHole);
    let (device, device_task) = subscribe(local.addr, "dashboard", "telemetry/#", 1, true).await;
    // With a 60 s slow-consumer wait, a publisher held back by the bridge would time out.
    tokio::time::timeout(
        Duration::from_secs(20),
        publish_acknowledged(local.addr, "device", "telemetry/a", 1, 0..1000),
    )
    .await
    .expect("local publishers are not paused by the bridge");
    device.wait_distinct("telemetry/a", 1000).await;
    let status = local.bridge();
    assert!(status.dropped.outbox_full > 0, "{status:?}");
    assert_eq!(
        local.handle().broker().stats().snapshot().publishers_paused,
        0
    );
    device_task.abort();
    local.stop().await;
    remote.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_with_new_rules_reconnects_and_keeps_the_outbox() {
    let remote = Fleetmq::start(|_| {}).await;
    let proxy = Proxy::start(remote.addr).await;
    proxy.set(Mode::Cut);
    let local = local_with_bridge(&proxy, BridgeProtocol::Mqttv5).await;
    publish_acknowledged(local.addr, "device", "telemetry/a", 1, 0..20).await;
    assert_eq!(local.bridge().outbox_messages, 20);

    // A new rule (and a changed prefix for the old one) while the link is down.
    let handle = local.handle();
    let mut config = (*handle.broker().config()).clone();
    config.bridges[0].topics[0].remote_prefix = "site-b/".into();
    config.bridges[0]
        .topics
        .push(rule("alarms/#", Direction::Out, 1, "", "site-b/"));
    fleetmq::reload::reload(handle.broker(), config);
    assert_eq!(
        local.bridge().outbox_messages,
        20,
        "the outbox survives the reload"
    );

    let (cloud, cloud_task) = subscribe(remote.addr, "cloud-app", "site-b/#", 1, true).await;
    proxy.set(Mode::Forward);
    cloud.wait_distinct("site-b/telemetry/a", 20).await;
    publish_acknowledged(local.addr, "device", "alarms/fire", 1, 0..3).await;
    cloud.wait_distinct("site-b/alarms/fire", 3).await;
    cloud_task.abort();
    local.stop().await;
    remote.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_outbox_session_is_reserved_and_never_expires() {
    let remote = Fleetmq::start(|_| {}).await;
    let proxy = Proxy::start(remote.addr).await;
    proxy.set(Mode::Cut);
    let remote_addr = proxy.addr;
    let local = Fleetmq::start(move |config| {
        config.sessions.max_session_expiry_secs = 1;
        config.bridges = vec![bridge(
            remote_addr,
            BridgeProtocol::Mqttv311,
            vec![rule("telemetry/#", Direction::Out, 1, "", "site/")],
        )];
    })
    .await;
    let mut options = rumqttc::MqttOptions::new("$bridge/cloud", "127.0.0.1", local.addr.port());
    options.set_clean_session(false);
    let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    let refused = within("CONNACK", eventloop.poll()).await;
    assert!(
        matches!(
            refused,
            Err(rumqttc::ConnectionError::ConnectionRefused(
                rumqttc::ConnectReturnCode::BadClientId
            ))
        ),
        "{refused:?}"
    );
    // The outbox still collects.
    publish_acknowledged(local.addr, "device", "telemetry/a", 1, 0..3).await;
    assert_eq!(local.bridge().outbox_messages, 3);
    // And it never expires, whatever the cap on clients' sessions (1 s here).
    let outbox = local
        .handle()
        .broker()
        .session("$bridge/cloud")
        .expect("the outbox session");
    assert_eq!(
        outbox.lock().expiry_interval(),
        Duration::from_secs(u64::from(u32::MAX))
    );
    local.stop().await;
    remote.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_capped_drain_rate_holds_a_backlog_to_it() {
    let remote = Fleetmq::start(|_| {}).await;
    let proxy = Proxy::start(remote.addr).await;
    proxy.set(Mode::Cut);
    let remote_addr = proxy.addr;
    let local = Fleetmq::start(move |config| {
        let mut link = bridge(
            remote_addr,
            BridgeProtocol::Mqttv5,
            vec![rule("telemetry/#", Direction::Out, 1, "", "site/")],
        );
        link.outbox.max_rate_per_sec = Some(50);
        config.bridges = vec![link];
    })
    .await;
    publish_acknowledged(local.addr, "device", "telemetry/a", 1, 0..100).await;
    let (cloud, cloud_task) = subscribe(remote.addr, "cloud-app", "site/#", 1, true).await;
    let start = std::time::Instant::now();
    proxy.set(Mode::Forward);
    cloud.wait_distinct("site/telemetry/a", 100).await;
    // 100 messages at 50 per second take about two seconds, never less than one.
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert_complete_in_order(&cloud, "site/telemetry/a", 100, false);
    cloud_task.abort();
    local.stop().await;
    remote.stop().await;
}
