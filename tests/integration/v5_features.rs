//! MQTT 5 features: topic aliases both ways, message expiry, application properties
//! passed through unchanged, CONNACK capabilities and the client's maximum packet size.

use std::time::Duration;

use crate::common::clients::V5Client;
use crate::common::raw::RawClient;
use crate::common::wire::{prop, ConnectSpec, Packet, Prop, PublishSpec, V311, V5};
use crate::common::{assert_still_serving, client_id, start_broker, start_default, topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_alias_from_client_resolved_for_subscribers() {
    let broker = start_default().await;
    let t = topic("alias");
    let mut sub5 = RawClient::connect(broker.addr, V5, &client_id("sub5")).await;
    sub5.subscribe(&t, 1).await;
    let mut sub3 = RawClient::connect(broker.addr, V311, &client_id("sub3")).await;
    sub3.subscribe(&t, 1).await;

    let mut publisher = RawClient::connect(broker.addr, V5, &client_id("pub")).await;
    publisher
        .publish(PublishSpec::new(&t, 1, b"with topic").prop(Prop::U16(prop::TOPIC_ALIAS, 1)))
        .await;
    publisher
        .publish(PublishSpec::new("", 1, b"alias only").prop(Prop::U16(prop::TOPIC_ALIAS, 1)))
        .await;
    publisher
        .publish(PublishSpec::new("", 0, b"alias again").prop(Prop::U16(prop::TOPIC_ALIAS, 1)))
        .await;

    for sub in [&mut sub5, &mut sub3] {
        for payload in [&b"with topic"[..], b"alias only", b"alias again"] {
            let p = sub.recv_publish().await;
            assert_eq!(
                (p.topic.as_str(), p.payload.as_slice()),
                (t.as_str(), payload)
            );
            // The subscriber set no Topic Alias Maximum: it must never see an alias.
            assert_eq!(p.props.num(prop::TOPIC_ALIAS), None);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_alias_remapped_by_client() {
    let broker = start_default().await;
    let base = topic("remap");
    let (first, second) = (format!("{base}/first"), format!("{base}/second"));
    let mut sub = RawClient::connect(broker.addr, V5, &client_id("sub")).await;
    sub.subscribe(&format!("{base}/#"), 0).await;
    let mut publisher = RawClient::connect(broker.addr, V5, &client_id("pub")).await;
    let alias = || Prop::U16(prop::TOPIC_ALIAS, 2);
    publisher
        .publish(PublishSpec::new(&first, 0, b"1").prop(alias()))
        .await;
    publisher
        .publish(PublishSpec::new(&second, 0, b"2").prop(alias()))
        .await;
    publisher
        .publish(PublishSpec::new("", 0, b"3").prop(alias()))
        .await;
    let topics: Vec<String> = [
        sub.recv_publish().await,
        sub.recv_publish().await,
        sub.recv_publish().await,
    ]
    .into_iter()
    .map(|p| p.topic)
    .collect();
    assert_eq!(topics, vec![first, second.clone(), second]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_alias_above_maximum_is_rejected() {
    let broker = start_broker(|c| c.limits.topic_alias_maximum = 2).await;
    let (mut c, connack) =
        RawClient::connect_with(broker.addr, &ConnectSpec::new(V5, &client_id("alias"))).await;
    match connack {
        Packet::ConnAck { code: 0, props, .. } => {
            assert_eq!(props.num(prop::TOPIC_ALIAS_MAXIMUM), Some(2))
        }
        other => panic!("{other:?}"),
    }
    c.publish(PublishSpec::new("a/t", 1, b"ok").prop(Prop::U16(prop::TOPIC_ALIAS, 2)))
        .await;
    c.send(
        &PublishSpec::new("a/t", 1, b"too high")
            .prop(Prop::U16(prop::TOPIC_ALIAS, 3))
            .encode(V5),
    )
    .await;
    c.expect_disconnect(0x94).await;
    assert_still_serving(broker.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_alias_zero_is_rejected() {
    let broker = start_default().await;
    let mut c = RawClient::connect(broker.addr, V5, &client_id("zero")).await;
    c.send(
        &PublishSpec::new("a/t", 0, b"x")
            .prop(Prop::U16(prop::TOPIC_ALIAS, 0))
            .encode(V5),
    )
    .await;
    // The specification forbids alias 0 without naming a code: Topic Alias invalid or
    // Protocol Error both describe it.
    c.expect_disconnect_one_of(&[0x94, 0x82]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topic_alias_is_a_protocol_error() {
    let broker = start_default().await;
    let mut c = RawClient::connect(broker.addr, V5, &client_id("unknown")).await;
    c.send(
        &PublishSpec::new("", 0, b"x")
            .prop(Prop::U16(prop::TOPIC_ALIAS, 1))
            .encode(V5),
    )
    .await;
    c.expect_disconnect(0x82).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_uses_topic_aliases_when_client_allows() {
    let broker = start_default().await;
    let t = topic("outalias");
    let spec =
        ConnectSpec::new(V5, &client_id("sub")).prop(Prop::U16(prop::TOPIC_ALIAS_MAXIMUM, 5));
    let mut sub = RawClient::connect_ok(broker.addr, &spec).await;
    sub.subscribe(&t, 1).await;
    let mut publisher = RawClient::connect(broker.addr, V311, &client_id("pub")).await;
    publisher.publish_simple(&t, 1, b"first").await;
    publisher.publish_simple(&t, 1, b"second").await;

    let first = sub.recv_publish().await;
    assert_eq!(first.topic, t, "the first delivery names the topic");
    let alias = first
        .props
        .num(prop::TOPIC_ALIAS)
        .expect("the first delivery establishes an alias");
    assert!(
        (1..=5).contains(&alias),
        "alias {alias} within the client's maximum"
    );
    let second = sub.recv_publish().await;
    assert_eq!(second.payload, b"second");
    assert_eq!(second.topic, "", "the second delivery uses the alias alone");
    assert_eq!(second.props.num(prop::TOPIC_ALIAS), Some(alias));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_expiry_drops_expired_and_decreases_interval() {
    let broker = start_default().await;
    let id = client_id("expiry");
    let t = topic("expiry");
    let persistent = ConnectSpec::new(V5, &id).clean(false).session_expiry(300);
    let mut sub = RawClient::connect_ok(broker.addr, &persistent).await;
    sub.subscribe(&t, 1).await;
    sub.disconnect().await;

    let mut publisher = RawClient::connect(broker.addr, V5, &client_id("pub")).await;
    let expiring = |payload: &[u8], secs| {
        PublishSpec::new(&t, 1, payload).prop(Prop::U32(prop::MESSAGE_EXPIRY_INTERVAL, secs))
    };
    publisher.publish(expiring(b"short lived", 1)).await;
    publisher.publish(expiring(b"long lived", 60)).await;
    publisher.publish_simple(&t, 1, b"immortal").await;
    // Message expiry is about time passing: wait beyond the 1 s interval.
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let mut sub = RawClient::connect_ok(broker.addr, &persistent).await;
    let p = sub.recv_publish().await;
    assert_eq!(
        p.payload, b"long lived",
        "the expired message was not delivered"
    );
    let left = p
        .props
        .num(prop::MESSAGE_EXPIRY_INTERVAL)
        .expect("expiry forwarded");
    assert!(
        (50..=58).contains(&left),
        "interval decreased by the 2 s spent queued, got {left}"
    );
    let p = sub.recv_publish().await;
    assert_eq!(p.payload, b"immortal");
    assert_eq!(p.props.num(prop::MESSAGE_EXPIRY_INTERVAL), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_properties_passed_through_unchanged() {
    let broker = start_default().await;
    let t = topic("props");
    let mut sub = RawClient::connect(broker.addr, V5, &client_id("sub")).await;
    sub.subscribe(&t, 1).await;
    let mut sub3 = RawClient::connect(broker.addr, V311, &client_id("sub3")).await;
    sub3.subscribe(&t, 1).await;

    let sent = vec![
        Prop::Byte(prop::PAYLOAD_FORMAT_INDICATOR, 1),
        Prop::Str(prop::CONTENT_TYPE, "application/json".to_string()),
        Prop::Str(prop::RESPONSE_TOPIC, "reply/here".to_string()),
        Prop::Bin(prop::CORRELATION_DATA, vec![0, 1, 2, 0xFF]),
        Prop::Pair("k".to_string(), "v1".to_string()),
        Prop::Pair("k".to_string(), "v2".to_string()),
        Prop::Pair("a".to_string(), "b".to_string()),
    ];
    let mut spec = PublishSpec::new(&t, 1, b"{\"x\":1}");
    spec.props = sent.clone();
    let mut publisher = RawClient::connect(broker.addr, V5, &client_id("pub")).await;
    publisher.publish(spec).await;

    let p = sub.recv_publish().await;
    assert_eq!(p.payload, b"{\"x\":1}");
    assert_eq!(p.props.num(prop::PAYLOAD_FORMAT_INDICATOR), Some(1));
    assert_eq!(
        p.props.str(prop::CONTENT_TYPE).as_deref(),
        Some("application/json")
    );
    assert_eq!(
        p.props.str(prop::RESPONSE_TOPIC).as_deref(),
        Some("reply/here")
    );
    assert_eq!(
        p.props.bin(prop::CORRELATION_DATA),
        Some(vec![0, 1, 2, 0xFF])
    );
    assert_eq!(
        p.props.user_properties(),
        vec![
            ("k".into(), "v1".into()),
            ("k".into(), "v2".into()),
            ("a".into(), "b".into())
        ],
        "user properties keep their order and repetitions"
    );
    let known = [
        prop::PAYLOAD_FORMAT_INDICATOR,
        prop::CONTENT_TYPE,
        prop::RESPONSE_TOPIC,
        prop::CORRELATION_DATA,
        prop::USER_PROPERTY,
    ];
    let extra: Vec<&Prop> = p
        .props
        .0
        .iter()
        .filter(|q| !known.contains(&q.id()))
        .collect();
    assert!(extra.is_empty(), "unexpected properties added: {extra:?}");

    let p3 = sub3.recv_publish().await;
    assert_eq!(
        p3.payload, b"{\"x\":1}",
        "a 3.1.1 subscriber gets the bare message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_announces_capabilities() {
    let broker = start_broker(|c| {
        c.limits.receive_maximum = 20;
        c.limits.topic_alias_maximum = 7;
        c.limits.max_packet_size = 4096;
    })
    .await;
    let (_c, connack) =
        RawClient::connect_with(broker.addr, &ConnectSpec::new(V5, &client_id("caps"))).await;
    let props = match connack {
        Packet::ConnAck {
            code: 0,
            session_present: false,
            props,
        } => props,
        other => panic!("{other:?}"),
    };
    assert_eq!(props.num(prop::RECEIVE_MAXIMUM), Some(20));
    assert_eq!(props.num(prop::TOPIC_ALIAS_MAXIMUM), Some(7));
    assert_eq!(props.num(prop::MAXIMUM_PACKET_SIZE), Some(4096));
    // Absent means available; if present it must say 1. QoS 2 is supported, so Maximum
    // QoS is absent.
    for capability in [
        prop::RETAIN_AVAILABLE,
        prop::WILDCARD_SUBSCRIPTION_AVAILABLE,
        prop::SUBSCRIPTION_IDENTIFIERS_AVAILABLE,
        prop::SHARED_SUBSCRIPTION_AVAILABLE,
    ] {
        assert!(
            matches!(props.num(capability), None | Some(1)),
            "capability 0x{capability:02x} = {:?}",
            props.num(capability)
        );
    }
    assert_eq!(props.num(prop::MAXIMUM_QOS), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_capped_by_server() {
    let broker = start_broker(|c| c.sessions.max_session_expiry_secs = 100).await;
    let spec = ConnectSpec::new(V5, &client_id("cap")).session_expiry(1000);
    let (_c, connack) = RawClient::connect_with(broker.addr, &spec).await;
    match connack {
        Packet::ConnAck { code: 0, props, .. } => {
            assert_eq!(props.num(prop::SESSION_EXPIRY_INTERVAL), Some(100))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_above_client_maximum_are_not_sent() {
    let broker = start_default().await;
    let t = topic("clientmax");
    let spec =
        ConnectSpec::new(V5, &client_id("small")).prop(Prop::U32(prop::MAXIMUM_PACKET_SIZE, 128));
    let mut sub = RawClient::connect_ok(broker.addr, &spec).await;
    sub.subscribe(&t, 1).await;
    let mut publisher = RawClient::connect(broker.addr, V311, &client_id("pub")).await;
    publisher.publish_simple(&t, 1, &[b'x'; 300]).await;
    publisher.publish_simple(&t, 1, b"sentinel").await;
    let seen = sub.payloads_until(b"sentinel").await;
    assert!(
        seen.is_empty(),
        "a packet above the client's maximum was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_properties_round_trip() {
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    let broker = start_default().await;
    let t = topic("lib5");
    let (mut sub, connack) = V5Client::connect(broker.addr, &client_id("sub")).await;
    assert!(!connack.session_present);
    sub.subscribe(&t, 1).await;
    let (publisher, _) = V5Client::connect(broker.addr, &client_id("pub")).await;
    let properties = PublishProperties {
        content_type: Some("text/plain".to_string()),
        user_properties: vec![("source".to_string(), "rumqttc".to_string())],
        ..Default::default()
    };
    publisher
        .client
        .publish_with_properties(
            &t,
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "payload",
            properties,
        )
        .await
        .expect("queue PUBLISH");
    let mut publisher = publisher;
    let done = tokio::spawn(async move {
        // Drive the publisher's event loop until the broker acknowledged.
        loop {
            match publisher.eventloop.poll().await {
                Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::PubAck(_))) => {
                    break
                }
                Ok(_) => {}
                Err(e) => panic!("publisher failed: {e}"),
            }
        }
    });
    let p = sub.next_publish().await;
    tokio::time::timeout(crate::common::GUARD, done)
        .await
        .expect("PUBACK in time")
        .expect("publisher task");
    let props = p.properties.expect("properties forwarded");
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        props.user_properties,
        vec![("source".to_string(), "rumqttc".to_string())]
    );
    assert_eq!(p.payload.as_ref(), b"payload");
    sub.disconnect().await;
}
