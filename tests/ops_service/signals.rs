//! systemd's view of the broker (READY, WATCHDOG, RELOADING, STOPPING on a socket the
//! test owns) and the signals an operator sends: SIGHUP reloads, SIGTERM stops cleanly.

use fleetmq::protocol::{Packet, ProtocolVersion};

use crate::common::{base_config, RawClient, Service};

#[tokio::test]
async fn ready_after_listening_then_watchdog_pings_and_a_clean_stop() {
    let config = base_config("[log]\nformat = \"json\"\n");
    // A 200 ms watchdog: the broker must ping every 100 ms.
    let mut service = Service::start(&config, &[], &[("WATCHDOG_USEC", "200000")]).await;
    // READY=1 came first: the listener accepts right away.
    let mut client = RawClient::connect(service.mqtt, "notify-v5", ProtocolVersion::V5).await;
    for _ in 0..3 {
        service.notification("WATCHDOG=1").await;
    }

    service.signal("TERM");
    service.notification("STOPPING=1").await;
    match client.next_packet().await {
        Some(Packet::Disconnect(disconnect)) => assert_eq!(disconnect.reason_code, 0x8B),
        other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
    }
    assert!(
        client.next_packet().await.is_none(),
        "closed after DISCONNECT"
    );
    let status = service.exit_status().await;
    assert_eq!(status.code(), Some(0), "log:\n{}", service.log());

    // JSON lines, with the connection's lifecycle at info: client id and peer address.
    let log = service.log();
    let connected = log
        .lines()
        .find(|line| line.contains("client connected"))
        .unwrap_or_else(|| panic!("no connection line in:\n{log}"));
    assert!(
        connected.starts_with('{') && connected.ends_with('}'),
        "{connected}"
    );
    assert!(connected.contains("\"level\":\"INFO\""), "{connected}");
    assert!(
        connected.contains("\"client_id\":\"notify-v5\""),
        "{connected}"
    );
    assert!(connected.contains("\"peer\":\"127.0.0.1:"), "{connected}");
}

#[tokio::test]
async fn sighup_applies_a_new_log_level_and_limits_without_disconnecting_anyone() {
    let mut service = Service::start(&base_config(""), &[], &[]).await;
    let mut client =
        RawClient::connect(service.mqtt, "reload-client", ProtocolVersion::V3_1_1).await;

    service.rewrite_config(&base_config(
        "[log]\nlevel = \"debug\"\n\n[limits]\nmax_inflight_messages = 8\n\n[sys]\ninterval_secs = 30\n",
    ));
    service.signal("HUP");
    service.notification("RELOADING=1").await;
    service.notification("READY=1").await;
    let log = service.log();
    for expected in [
        "configuration change applied key=log.level old=\"info\" new=\"debug\"",
        "configuration change applied key=limits.max_inflight_messages old=32 new=8",
        "configuration change applied key=sys.interval_secs old=10 new=30",
    ] {
        assert!(log.contains(expected), "{expected:?} missing from:\n{log}");
    }
    // The client was not disconnected: it still gets answers.
    client.send(&Packet::PingReq).await;
    assert_eq!(client.next_packet().await, Some(Packet::PingResp));

    // The debug level is in force: a socket closed before CONNECT is now logged.
    let mut silent = RawClient::open(service.mqtt, ProtocolVersion::V3_1_1).await;
    silent.send_bytes(&[0xC0, 0x00]).await;
    assert!(silent.next_packet().await.is_none());

    // A change that needs a restart is reported and not applied; a broken file is
    // reported and changes nothing.
    service.rewrite_config(
        "[[listeners]]\ntype = \"tcp\"\nbind = \"127.0.0.1:0\"\nallow_anonymous = true\n\n[metrics]\nenabled = false\nbind = \"127.0.0.1:0\"\n\n[admin]\nbind = \"127.0.0.1:0\"\n",
    );
    service.signal("HUP");
    service.notification("READY=1").await;
    service.rewrite_config("[limits]\nmax_pakcet_size = 1\n");
    service.signal("HUP");
    service.notification("READY=1").await;
    let log = service.log();
    assert!(
        log.contains("connection closed before a valid CONNECT"),
        "{log}"
    );
    assert!(
        log.contains("configuration change needs a restart; still running with the old value key=metrics.enabled old=true new=false"),
        "{log}"
    );
    assert!(
        log.contains("configuration not reloaded, still running with the previous one"),
        "{log}"
    );
    assert!(log.contains("did you mean 'max_packet_size'?"), "{log}");
    service.scrape().await;
    client.send(&Packet::PingReq).await;
    assert_eq!(client.next_packet().await, Some(Packet::PingResp));

    service.signal("INT");
    assert_eq!(service.exit_status().await.code(), Some(0));
}

/// SIGHUP to the real process: a new ACL file that takes read access away applies to a
/// subscription made before it, from the next message on.
#[tokio::test]
async fn sighup_revokes_a_topic_from_an_existing_subscription() {
    use fleetmq::protocol::{Publish, QoS, Subscribe, SubscribeFilter, SubscriptionOptions};

    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic readwrite #\n").unwrap();
    let config = base_config(&format!("[auth]\nacl_file = \"{}\"\n", acl.display()));
    let mut service = Service::start(&config, &[], &[]).await;
    let mut subscriber = RawClient::connect(service.mqtt, "reader", ProtocolVersion::V5).await;
    subscriber
        .send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![SubscribeFilter {
                filter: "#".into(),
                options: SubscriptionOptions::default(),
            }],
            ..Subscribe::default()
        }))
        .await;
    assert!(matches!(
        subscriber.next_packet().await,
        Some(Packet::SubAck(suback)) if suback.reason_codes == [0]
    ));
    let mut publisher = RawClient::connect(service.mqtt, "writer", ProtocolVersion::V5).await;
    let publish = |topic: &str, packet_id: u16| {
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: topic.into(),
            packet_id,
            payload: bytes::Bytes::from_static(b"x"),
            ..Publish::default()
        })
    };
    let next_topic = async |client: &mut RawClient| match client.next_packet().await {
        Some(Packet::Publish(publish)) => publish.topic.to_string(),
        other => panic!("expected PUBLISH, got {other:?}"),
    };
    for (id, topic) in [(1, "secret/before"), (2, "open/before")] {
        publisher.send(&publish(topic, id)).await;
        assert!(matches!(
            publisher.next_packet().await,
            Some(Packet::PubAck(_))
        ));
    }
    assert_eq!(next_topic(&mut subscriber).await, "secret/before");
    assert_eq!(next_topic(&mut subscriber).await, "open/before");

    // Anonymous clients may still write everywhere, and now read only open/... .
    std::fs::write(&acl, "topic write #\ntopic read open/#\n").unwrap();
    service.signal("HUP");
    service.notification("RELOADING=1").await;
    service.notification("READY=1").await;
    assert!(
        service.log().contains("ACL file reloaded"),
        "{}",
        service.log()
    );
    for (id, topic) in [(3, "secret/after"), (4, "open/after")] {
        publisher.send(&publish(topic, id)).await;
        assert!(matches!(
            publisher.next_packet().await,
            Some(Packet::PubAck(_))
        ));
    }
    assert_eq!(next_topic(&mut subscriber).await, "open/after");

    service.signal("INT");
    assert_eq!(service.exit_status().await.code(), Some(0));
}
