//! A bridge from fleetmq to the real Mosquitto broker, MQTT 3.1.1 with Mosquitto's bridge
//! flag, through a proxy the test cuts and black-holes; loop prevention on a two-way
//! rule; a remote that takes no QoS 2.

use fleetmq::config::{BridgeProtocol, Direction};

use super::support::*;

/// A local fleetmq bridged through `proxy` (to Mosquitto) with the given rules.
async fn local_bridged(proxy: &Proxy, topics: Vec<fleetmq::config::BridgeTopic>) -> Fleetmq {
    let remote = proxy.addr;
    Fleetmq::start(move |config| {
        let mut link = bridge(remote, BridgeProtocol::Mqttv311, topics);
        link.try_private = true;
        config.bridges = vec![link];
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_reach_mosquitto_across_a_cut_and_a_black_hole_and_commands_come_back() {
    let mosquitto = Mosquitto::start("").await;
    let proxy = Proxy::start(mosquitto.addr).await;
    let local = local_bridged(
        &proxy,
        vec![
            rule("telemetry/#", Direction::Out, 2, "", "site/"),
            rule("commands/#", Direction::In, 1, "", "site/"),
        ],
    )
    .await;
    // One subscriber per topic: each then sees a single QoS.
    let (cloud, cloud_task) =
        subscribe(mosquitto.addr, "cloud-app", "site/telemetry/q2", 2, true).await;
    let (cloud_q1, cloud_q1_task) =
        subscribe(mosquitto.addr, "cloud-app-q1", "site/telemetry/q1", 1, true).await;
    until("the bridge link", || local.bridge().connected).await;
    publish_acknowledged(local.addr, "device-q2", "telemetry/q2", 2, 0..200).await;
    cloud.wait_distinct("site/telemetry/q2", 200).await;

    proxy.set(Mode::Cut);
    until("the bridge to notice the cut", || !local.bridge().connected).await;
    let q1 = publish_acknowledged(local.addr, "device-q1", "telemetry/q1", 1, 0..300);
    let q2 = publish_acknowledged(local.addr, "device-q2", "telemetry/q2", 2, 200..500);
    tokio::join!(q1, q2);
    proxy.set(Mode::Forward);
    cloud_q1.wait_distinct("site/telemetry/q1", 300).await;
    cloud.wait_distinct("site/telemetry/q2", 500).await;

    // Black hole: only the keep alive (1 s) notices; Mosquitto keeps the session.
    until("the link back up", || local.bridge().connected).await;
    proxy.set(Mode::BlackHole);
    let q1 = publish_acknowledged(local.addr, "device-q1", "telemetry/q1", 1, 300..400);
    let q2 = publish_acknowledged(local.addr, "device-q2", "telemetry/q2", 2, 500..600);
    tokio::join!(q1, q2);
    until("the keep alive to notice", || !local.bridge().connected).await;
    proxy.set(Mode::Forward);
    cloud_q1.wait_distinct("site/telemetry/q1", 400).await;
    cloud.wait_distinct("site/telemetry/q2", 600).await;
    assert_complete_in_order(&cloud_q1, "site/telemetry/q1", 400, false);
    assert_complete_in_order(&cloud, "site/telemetry/q2", 600, true);

    let (commands, commands_task) = subscribe(local.addr, "device", "commands/#", 1, true).await;
    until("the bridge link", || local.bridge().connected).await;
    publish_acknowledged(mosquitto.addr, "cloud-cmd", "site/commands/reboot", 1, 0..5).await;
    commands.wait_distinct("commands/reboot", 5).await;
    assert_complete_in_order(&commands, "commands/reboot", 5, false);
    commands_task.abort();
    cloud_task.abort();
    cloud_q1_task.abort();
    local.stop().await;
}

/// Counts what a local subscriber of a two-way topic got once a marker published on the
/// remote after everything else has arrived: an echo would have come before it.
async fn assert_no_echo(local: &Fleetmq, remote: std::net::SocketAddr) {
    let (device, device_task) = subscribe(local.addr, "device-sub", "echo/#", 1, true).await;
    let (cloud, cloud_task) = subscribe(remote, "cloud-sub", "site/echo/#", 1, true).await;
    until("the bridge link", || local.bridge().connected).await;
    publish_acknowledged(local.addr, "device-pub", "echo/x", 1, 0..10).await;
    cloud.wait_distinct("site/echo/x", 10).await;
    publish_acknowledged(remote, "cloud-pub", "site/echo/marker", 1, 0..1).await;
    device.wait_distinct("echo/marker", 1).await;
    assert_eq!(
        device.count("echo/x"),
        10,
        "a message came back over the bridge"
    );
    assert_eq!(cloud.count("site/echo/x"), 10);
    device_task.abort();
    cloud_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_two_way_rule_does_not_echo_with_mosquitto_s_bridge_flag() {
    let mosquitto = Mosquitto::start("").await;
    let proxy = Proxy::start(mosquitto.addr).await;
    let local = local_bridged(
        &proxy,
        vec![rule("echo/#", Direction::Both, 1, "", "site/")],
    )
    .await;
    assert_no_echo(&local, mosquitto.addr).await;
    local.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_two_way_rule_does_not_echo_with_mqtt5_no_local() {
    let remote = Fleetmq::start(|_| {}).await;
    let remote_addr = remote.addr;
    let local = Fleetmq::start(move |config| {
        config.bridges = vec![bridge(
            remote_addr,
            BridgeProtocol::Mqttv5,
            vec![rule("echo/#", Direction::Both, 1, "", "site/")],
        )];
    })
    .await;
    assert_no_echo(&local, remote.addr).await;
    local.stop().await;
    remote.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn qos2_goes_as_qos1_to_a_remote_whose_maximum_qos_is_1() {
    let mosquitto = Mosquitto::start("max_qos 1").await;
    let remote = mosquitto.addr;
    let local = Fleetmq::start(move |config| {
        config.bridges = vec![bridge(
            remote,
            BridgeProtocol::Mqttv5,
            vec![rule("telemetry/#", Direction::Out, 2, "", "site/")],
        )];
    })
    .await;
    let (cloud, cloud_task) = subscribe(mosquitto.addr, "cloud-app", "site/#", 1, true).await;
    until("the bridge link", || local.bridge().connected).await;
    publish_acknowledged(local.addr, "device", "telemetry/q2", 2, 0..100).await;
    cloud.wait_distinct("site/telemetry/q2", 100).await;
    assert_complete_in_order(&cloud, "site/telemetry/q2", 100, false);
    until("the outbox to empty", || {
        let status = local.bridge();
        status.outbox_messages + status.outbox_inflight == 0
    })
    .await;
    let status = local.bridge();
    assert_eq!(status.link_failures, 0, "{status:?}");
    assert_eq!(status.acknowledged, 100, "{status:?}");
    cloud_task.abort();
    local.stop().await;
}
