//! What passes through a bridge besides topic and payload: MQTT 5 properties, the
//! RETAIN flag where the rule says so, QoS 0 while the link is up, and in-bound
//! commands published on the remote while the link was cut.

use fleetmq::config::{BridgeProtocol, Direction};
use rumqttc::v5 as r5;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};

use super::support::*;

async fn v5_client(addr: std::net::SocketAddr, id: &str) -> (r5::AsyncClient, r5::EventLoop) {
    let options = r5::MqttOptions::new(id, "127.0.0.1", addr.port());
    let (client, mut eventloop) = r5::AsyncClient::new(options, 10);
    within("CONNACK", async {
        loop {
            if let Ok(r5::Event::Incoming(Packet::ConnAck(_))) = eventloop.poll().await {
                return;
            }
        }
    })
    .await;
    (client, eventloop)
}

async fn poll_until<T>(
    eventloop: &mut r5::EventLoop,
    mut want: impl FnMut(&Packet) -> Option<T>,
) -> T {
    within("a packet", async {
        loop {
            match eventloop.poll().await {
                Ok(r5::Event::Incoming(packet)) => {
                    if let Some(found) = want(&packet) {
                        return found;
                    }
                }
                Ok(_) => {}
                Err(error) => panic!("MQTT 5 client failed: {error}"),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn properties_retain_and_qos0_pass_through_an_mqtt5_bridge() {
    let remote = Fleetmq::start(|_| {}).await;
    let remote_addr = remote.addr;
    let local = Fleetmq::start(move |config| {
        let mut keep = rule("telemetry/#", Direction::Out, 1, "", "site/");
        keep.retain = true;
        let mut strip = rule("status/#", Direction::Out, 1, "", "site/");
        strip.retain = false;
        config.bridges = vec![bridge(
            remote_addr,
            BridgeProtocol::Mqttv5,
            vec![keep, strip],
        )];
    })
    .await;
    until("the bridge link", || local.bridge().connected).await;
    let (cloud, mut cloud_loop) = v5_client(remote.addr, "cloud-app").await;
    cloud
        .subscribe("site/#", r5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    poll_until(&mut cloud_loop, |packet| {
        matches!(packet, Packet::SubAck(_)).then_some(())
    })
    .await;

    let (device, mut device_loop) = v5_client(local.addr, "device").await;
    let properties = PublishProperties {
        content_type: Some("application/json".into()),
        user_properties: vec![("site".into(), "42".into())],
        message_expiry_interval: Some(3600),
        ..PublishProperties::default()
    };
    device
        .publish_with_properties(
            "telemetry/a",
            r5::mqttbytes::QoS::AtLeastOnce,
            false,
            "{}",
            properties,
        )
        .await
        .unwrap();
    poll_until(&mut device_loop, |packet| {
        matches!(packet, Packet::PubAck(_)).then_some(())
    })
    .await;
    let forwarded = poll_until(&mut cloud_loop, |packet| match packet {
        Packet::Publish(publish) => Some(publish.clone()),
        _ => None,
    })
    .await;
    assert_eq!(&forwarded.topic[..], b"site/telemetry/a");
    let got = forwarded.properties.expect("properties passed through");
    assert_eq!(got.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        got.user_properties,
        vec![("site".to_string(), "42".to_string())]
    );
    assert!(got.message_expiry_interval.is_some_and(|secs| secs <= 3600));

    // QoS 0 while the link is up.
    device
        .publish(
            "telemetry/q0",
            r5::mqttbytes::QoS::AtMostOnce,
            false,
            "zero",
        )
        .await
        .unwrap();
    // rumqttc sends only while its loop is polled.
    within("the QoS 0 PUBLISH to go out", async {
        loop {
            if let Ok(r5::Event::Outgoing(rumqttc::Outgoing::Publish(_))) = device_loop.poll().await
            {
                return;
            }
        }
    })
    .await;
    let forwarded = poll_until(&mut cloud_loop, |packet| match packet {
        Packet::Publish(publish) => Some(publish.clone()),
        _ => None,
    })
    .await;
    assert_eq!(&forwarded.topic[..], b"site/telemetry/q0");

    // Retained: kept by the first rule, stripped by the second. A new subscriber on the
    // remote sees what the remote retained.
    for topic in ["telemetry/r", "status/r"] {
        device
            .publish(topic, r5::mqttbytes::QoS::AtLeastOnce, true, "last")
            .await
            .unwrap();
        poll_until(&mut device_loop, |packet| {
            matches!(packet, Packet::PubAck(_)).then_some(())
        })
        .await;
    }
    for _ in 0..2 {
        poll_until(&mut cloud_loop, |packet| {
            matches!(packet, Packet::Publish(_)).then_some(())
        })
        .await;
    }
    let (late, mut late_loop) = v5_client(remote.addr, "cloud-late").await;
    // First the stripped topic: nothing retained comes after its SUBACK, so the next
    // PUBLISH, after the second SUBACK, is the kept one.
    for filter in ["site/status/r", "site/telemetry/r"] {
        late.subscribe(filter, r5::mqttbytes::QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    let retained = poll_until(&mut late_loop, |packet| match packet {
        Packet::Publish(publish) => Some(publish.topic.clone()),
        _ => None,
    })
    .await;
    assert_eq!(&retained[..], b"site/telemetry/r");
    local.stop().await;
    remote.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_published_on_the_remote_during_a_cut_arrive_after_it() {
    let remote = Fleetmq::start(|_| {}).await;
    let proxy = Proxy::start(remote.addr).await;
    let remote_addr = proxy.addr;
    let local = Fleetmq::start(move |config| {
        config.bridges = vec![bridge(
            remote_addr,
            BridgeProtocol::Mqttv5,
            vec![rule("commands/#", Direction::In, 2, "", "site/")],
        )];
    })
    .await;
    let (device, device_task) = subscribe(local.addr, "device", "commands/#", 2, true).await;
    until("the bridge link", || local.bridge().connected).await;
    publish_acknowledged(remote.addr, "cloud", "site/commands/x", 2, 0..50).await;
    device.wait_distinct("commands/x", 50).await;
    proxy.set(Mode::Cut);
    until("the bridge to notice", || !local.bridge().connected).await;
    // Queued by the remote for the bridge's kept session.
    publish_acknowledged(remote.addr, "cloud", "site/commands/x", 2, 50..150).await;
    proxy.set(Mode::Forward);
    device.wait_distinct("commands/x", 150).await;
    assert_complete_in_order(&device, "commands/x", 150, true);
    assert!(local.bridge().received >= 150);
    device_task.abort();
    local.stop().await;
    remote.stop().await;
}

/// The ACL limits what clients may read, not what a bridge forwards (as with Mosquitto's
/// bridges): anonymous devices may only write telemetry, and the bridge still carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_acl_that_lets_nobody_read_does_not_stop_the_bridge() {
    let remote = Fleetmq::start(|_| {}).await;
    let remote_addr = remote.addr;
    let acl_dir = tempfile::tempdir().unwrap();
    let acl = acl_dir.path().join("acl");
    std::fs::write(&acl, "topic write telemetry/#\n").unwrap();
    let local = Fleetmq::start(move |config| {
        config.auth.acl_file = Some(acl);
        config.bridges = vec![bridge(
            remote_addr,
            BridgeProtocol::Mqttv5,
            vec![rule("telemetry/#", Direction::Out, 1, "", "site/")],
        )];
    })
    .await;
    until("the bridge link", || local.bridge().connected).await;
    let (cloud, cloud_task) = subscribe(remote.addr, "cloud", "site/telemetry/#", 1, true).await;
    publish_acknowledged(local.addr, "device", "telemetry/t", 1, 0..20).await;
    cloud.wait_distinct("site/telemetry/t", 20).await;
    assert_complete_in_order(&cloud, "site/telemetry/t", 20, false);
    cloud_task.abort();
    local.stop().await;
    remote.stop().await;
}
