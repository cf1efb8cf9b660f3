//! Broker tests without sockets: sessions are attached through `Broker::connect` and
//! drained with `poll_outgoing`, exactly as the connection task does.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::protocol::{
    Connect, ConnectProperties, Packet, ProtocolVersion, Publish, PublishProperties, QoS,
    RetainHandling, Subscribe, SubscribeFilter, SubscriptionOptions, Unsubscribe, Will,
    WillProperties,
};
use crate::session::Action;
use crate::storage::MemoryStore;

fn broker() -> Arc<Broker> {
    Broker::new(Config::default(), Arc::new(MemoryStore::new()))
}

fn connect_packet(client_id: &str, clean_start: bool, expiry: Option<u32>) -> Connect {
    Connect {
        protocol: ProtocolVersion::V5,
        clean_start,
        keep_alive: 30,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties {
            session_expiry_interval: expiry,
            ..ConnectProperties::default()
        },
    }
}

fn will(delay: Option<u32>) -> Will {
    Will {
        topic: "wills/device".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: delay,
            ..WillProperties::default()
        },
    }
}

fn attach(broker: &Broker, connect: &Connect) -> Connected {
    let expiry = connect.properties.session_expiry_interval.unwrap_or(0);
    broker.connect(connect, Duration::from_secs(u64::from(expiry)), None)
}

fn client(broker: &Broker, client_id: &str) -> Connected {
    attach(broker, &connect_packet(client_id, true, None))
}

fn options(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

/// Sends SUBSCRIBE through the session and the broker, as the connection task does.
fn subscribe(
    broker: &Broker,
    client: &Connected,
    filter: &str,
    options: SubscriptionOptions,
    id: Option<u32>,
) -> Vec<u8> {
    let subscribe = Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter {
            filter: filter.into(),
            options,
        }],
        subscription_identifier: id,
        user_properties: Vec::new(),
    };
    let actions = client
        .handle
        .lock()
        .handle_packet(Packet::Subscribe(subscribe), now())
        .unwrap();
    let [Action::Subscribe(request)] = <[Action; 1]>::try_from(actions).unwrap() else {
        panic!("SUBSCRIBE yields one Subscribe action");
    };
    let generation = client.attachment.generation;
    broker
        .subscribe(&client.handle, generation, request)
        .unwrap()
        .0
        .reason_codes
}

fn message(topic: &str, qos: QoS, retain: bool, payload: &'static [u8]) -> Arc<Message> {
    Arc::new(Message {
        topic: topic.into(),
        payload: Bytes::from_static(payload),
        qos,
        retain,
        properties: PublishProperties::default(),
        expires_at: None,
        publisher: None,
        cluster_id: Default::default(),
    })
}

/// Everything the session would write to its client now.
fn drain(client: &Connected) -> Vec<Publish> {
    let mut out = Vec::new();
    let mut dropped = Vec::new();
    client
        .handle
        .lock()
        .poll_outgoing(now(), &mut out, &mut dropped);
    assert!(dropped.is_empty(), "unexpected drops: {dropped:?}");
    out.into_iter()
        .map(|packet| match packet {
            Packet::Publish(publish) => publish,
            other => panic!("expected PUBLISH, got {other:?}"),
        })
        .collect()
}

#[test]
fn overlapping_subscriptions_deliver_once_with_the_highest_qos_and_every_id() {
    let broker = broker();
    let sub = client(&broker, "sub");
    subscribe(&broker, &sub, "a/+", options(QoS::AtMostOnce), Some(1));
    subscribe(&broker, &sub, "a/#", options(QoS::AtLeastOnce), Some(2));
    assert_eq!(
        broker.publish(&message("a/b", QoS::ExactlyOnce, false, b"x")),
        1
    );
    let delivered = drain(&sub);
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].qos, QoS::AtLeastOnce);
    let mut ids = delivered[0].properties.subscription_identifiers.clone();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2]);
}

#[test]
fn overlapping_subscriptions_of_many_sessions_deliver_once_each() {
    // More targets than the linear merge handles: the hash index merges them. Two
    // messages in a row also reuse the thread's target list.
    let broker = broker();
    let subscribers: Vec<_> = (0..40)
        .map(|i| client(&broker, &format!("sub{i}")))
        .collect();
    for sub in &subscribers {
        subscribe(&broker, sub, "a/+", options(QoS::AtMostOnce), None);
        subscribe(&broker, sub, "a/#", options(QoS::AtLeastOnce), None);
    }
    for payload in [b"first", b"other"] {
        assert_eq!(
            broker.publish(&message("a/b", QoS::AtLeastOnce, false, payload)),
            subscribers.len()
        );
        for sub in &subscribers {
            let delivered = drain(sub);
            assert_eq!(delivered.len(), 1, "one copy for {}", sub.handle.client_id);
            assert_eq!(delivered[0].qos, QoS::AtLeastOnce);
            assert_eq!(&delivered[0].payload[..], payload);
        }
    }
}

#[test]
fn no_local_skips_the_publishing_session_only() {
    let broker = broker();
    let me = client(&broker, "me");
    let other = client(&broker, "other");
    let no_local = SubscriptionOptions {
        no_local: true,
        ..options(QoS::AtMostOnce)
    };
    subscribe(&broker, &me, "t", no_local, None);
    subscribe(&broker, &other, "t", no_local, None);
    let mut own = (*message("t", QoS::AtMostOnce, false, b"x")).clone();
    own.publisher = Some(me.handle.key);
    assert_eq!(broker.publish(&Arc::new(own)), 1);
    assert!(drain(&me).is_empty());
    assert_eq!(drain(&other).len(), 1);
}

#[test]
fn retain_flag_is_forwarded_only_with_retain_as_published() {
    let broker = broker();
    let plain = client(&broker, "plain");
    let as_published = client(&broker, "rap");
    subscribe(&broker, &plain, "r", options(QoS::AtMostOnce), None);
    let rap = SubscriptionOptions {
        retain_as_published: true,
        ..options(QoS::AtMostOnce)
    };
    subscribe(&broker, &as_published, "r", rap, None);
    broker.publish(&message("r", QoS::AtMostOnce, true, b"v"));
    assert!(!drain(&plain)[0].retain);
    assert!(drain(&as_published)[0].retain);
}

#[test]
fn retained_messages_follow_subscribe_and_retain_handling() {
    let broker = broker();
    broker.publish(&message("s/1", QoS::AtLeastOnce, true, b"one"));
    broker.publish(&message("s/2", QoS::AtMostOnce, true, b"two"));
    broker.publish(&message("s/2", QoS::AtMostOnce, true, b""));
    assert_eq!(broker.retained_count(), 1, "empty payload clears");

    let sub = client(&broker, "sub");
    let if_new = SubscriptionOptions {
        retain_handling: RetainHandling::SendIfNew,
        ..options(QoS::ExactlyOnce)
    };
    assert_eq!(subscribe(&broker, &sub, "s/+", if_new, None), [2]);
    let first = drain(&sub);
    assert_eq!(first.len(), 1);
    assert!(first[0].retain);
    assert_eq!(first[0].qos, QoS::AtLeastOnce, "min(retained QoS, granted)");
    assert_eq!(first[0].payload.as_ref(), b"one");

    subscribe(&broker, &sub, "s/+", if_new, None);
    assert!(
        drain(&sub).is_empty(),
        "existing subscription: not sent again"
    );
    let never = SubscriptionOptions {
        retain_handling: RetainHandling::DoNotSend,
        ..options(QoS::AtMostOnce)
    };
    subscribe(&broker, &sub, "s/#", never, None);
    assert!(drain(&sub).is_empty());
}

#[test]
fn shared_group_delivers_each_message_to_one_member() {
    let broker = broker();
    let first = client(&broker, "first");
    let second = client(&broker, "second");
    subscribe(
        &broker,
        &first,
        "$share/g/jobs",
        options(QoS::AtMostOnce),
        None,
    );
    subscribe(
        &broker,
        &second,
        "$share/g/jobs",
        options(QoS::AtMostOnce),
        None,
    );
    for _ in 0..4 {
        assert_eq!(
            broker.publish(&message("jobs", QoS::AtMostOnce, false, b"j")),
            1
        );
    }
    assert_eq!(drain(&first).len(), 2);
    assert_eq!(drain(&second).len(), 2);
}

#[test]
fn unsubscribe_removes_the_route() {
    let broker = broker();
    let sub = client(&broker, "sub");
    subscribe(&broker, &sub, "u/#", options(QoS::AtMostOnce), None);
    let unsubscribe = Unsubscribe {
        packet_id: 2,
        filters: vec!["u/#".into(), "never".into()],
        user_properties: Vec::new(),
    };
    let actions = sub
        .handle
        .lock()
        .handle_packet(Packet::Unsubscribe(unsubscribe), now())
        .unwrap();
    let [Action::Unsubscribe(request)] = <[Action; 1]>::try_from(actions).unwrap() else {
        panic!("UNSUBSCRIBE yields one Unsubscribe action");
    };
    let (unsuback, _) = broker
        .unsubscribe(&sub.handle, sub.attachment.generation, request)
        .unwrap();
    assert_eq!(unsuback.reason_codes, [0x00, 0x11]);
    assert_eq!(
        broker.publish(&message("u/x", QoS::AtMostOnce, false, b"x")),
        0
    );
}

#[test]
fn session_with_expiry_zero_ends_at_disconnect_with_its_routes_and_will() {
    let broker = broker();
    let watcher = client(&broker, "watcher");
    subscribe(
        &broker,
        &watcher,
        "wills/#",
        options(QoS::AtLeastOnce),
        None,
    );
    let mut connect = connect_packet("device", true, None);
    connect.will = Some(will(None));
    let device = attach(&broker, &connect);
    subscribe(&broker, &device, "cmd", options(QoS::AtLeastOnce), None);
    assert_eq!(broker.session_count(), 2);

    broker.disconnect(&device.handle, device.attachment.generation, true);
    assert_eq!(broker.session_count(), 1);
    assert_eq!(
        broker.publish(&message("cmd", QoS::AtLeastOnce, false, b"c")),
        0
    );
    let wills = drain(&watcher);
    assert_eq!(wills.len(), 1);
    assert_eq!(wills[0].payload.as_ref(), b"gone");
}

#[test]
fn normal_disconnect_discards_the_will_and_keeps_a_persistent_session() {
    let broker = broker();
    let watcher = client(&broker, "watcher");
    subscribe(
        &broker,
        &watcher,
        "wills/#",
        options(QoS::AtLeastOnce),
        None,
    );
    let mut connect = connect_packet("device", false, Some(60));
    connect.will = Some(will(None));
    let device = attach(&broker, &connect);
    subscribe(&broker, &device, "cmd", options(QoS::AtLeastOnce), None);
    broker.disconnect(&device.handle, device.attachment.generation, false);
    assert!(drain(&watcher).is_empty());
    assert_eq!(broker.session_count(), 2);
    // Offline, the persistent session still receives QoS 1 messages...
    assert_eq!(
        broker.publish(&message("cmd", QoS::AtLeastOnce, false, b"c")),
        1
    );
    // ...which a resuming connection gets.
    let resumed = attach(&broker, &connect_packet("device", false, Some(60)));
    assert!(resumed.session_present);
    assert!(Arc::ptr_eq(&resumed.handle, &device.handle));
    assert_eq!(drain(&resumed).len(), 1);
}

#[test]
fn takeover_kicks_the_old_connection_and_clean_start_drops_the_old_routes() {
    let broker = broker();
    let first = attach(&broker, &connect_packet("device", false, Some(60)));
    subscribe(&broker, &first, "cmd", options(QoS::AtLeastOnce), None);
    let second = attach(&broker, &connect_packet("device", true, None));
    assert!(!second.session_present);
    assert_ne!(first.handle.generation(), first.attachment.generation);
    assert!(first
        .handle
        .lock_current(first.attachment.generation)
        .is_none());
    assert_eq!(broker.stats().snapshot().takeovers, 1);
    assert_eq!(
        broker.publish(&message("cmd", QoS::AtLeastOnce, false, b"c")),
        0
    );
    // The kicked connection's own disconnect must not disturb the new session.
    broker.disconnect(&first.handle, first.attachment.generation, true);
    assert_eq!(broker.session_count(), 1);
    assert!(second.handle.is_connected());
}

#[tokio::test(start_paused = true)]
async fn delayed_will_and_session_expiry_run_on_the_scheduler() {
    let broker = broker();
    let scheduler = tokio::spawn(broker.clone().run_scheduler());
    let watcher = client(&broker, "watcher");
    subscribe(
        &broker,
        &watcher,
        "wills/#",
        options(QoS::AtLeastOnce),
        None,
    );
    let mut connect = connect_packet("device", false, Some(10));
    connect.will = Some(will(Some(5)));
    let device = attach(&broker, &connect);
    broker.disconnect(&device.handle, device.attachment.generation, true);
    assert!(drain(&watcher).is_empty(), "will is delayed");

    // Virtual time: the scheduler's timers fire while the test's own timer waits.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(drain(&watcher).len(), 1, "will after its delay");
    assert_eq!(broker.session_count(), 2);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(broker.session_count(), 1, "session expired");
    assert_eq!(broker.stats().snapshot().sessions_expired, 1);

    broker.begin_shutdown();
    scheduler.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn reconnecting_within_the_will_delay_cancels_the_will() {
    let broker = broker();
    let scheduler = tokio::spawn(broker.clone().run_scheduler());
    let watcher = client(&broker, "watcher");
    subscribe(
        &broker,
        &watcher,
        "wills/#",
        options(QoS::AtLeastOnce),
        None,
    );
    let mut connect = connect_packet("device", false, Some(100));
    connect.will = Some(will(Some(5)));
    let device = attach(&broker, &connect);
    broker.disconnect(&device.handle, device.attachment.generation, true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let resumed = attach(&broker, &connect_packet("device", false, Some(100)));
    assert!(resumed.session_present);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(drain(&watcher).is_empty());
    assert_eq!(broker.sessions_with_timers(), 0);

    broker.begin_shutdown();
    scheduler.await.unwrap();
}

#[test]
fn every_retained_message_reaches_a_new_subscriber_whatever_the_queue_limit() {
    let mut config = Config::default();
    config.limits.max_queued_messages = 10;
    config.limits.max_retained_backlog = 2_500;
    let broker = Broker::new(config, Arc::new(MemoryStore::new()));
    for index in 0..3_000 {
        let topic = format!("fleet/{index}");
        broker.publish(&Arc::new(Message {
            topic: topic.as_str().into(),
            ..(*message("x", QoS::AtLeastOnce, true, b"state")).clone()
        }));
    }
    let sub = client(&broker, "sub");
    subscribe(&broker, &sub, "fleet/#", options(QoS::AtLeastOnce), None);
    // Beyond the backlog limit, counted.
    let stats = broker.stats().snapshot();
    assert_eq!(stats.dropped(Dropped::RetainedBacklogFull), 500);
    assert_eq!(stats.dropped(Dropped::QueueFull), 0);
    let mut received = 0;
    loop {
        let batch = drain(&sub);
        if batch.is_empty() {
            break;
        }
        for publish in batch {
            assert!(publish.retain);
            received += 1;
            sub.handle
                .lock()
                .handle_packet(
                    Packet::PubAck(crate::protocol::PubResponse {
                        packet_id: publish.packet_id,
                        ..Default::default()
                    }),
                    now(),
                )
                .unwrap();
        }
    }
    assert_eq!(received, 2_500);
}

#[test]
fn a_nearly_full_online_queue_is_reported_congested_until_relieved_or_stalled() {
    let mut config = Config::default();
    config.limits.max_queued_messages = 8;
    let broker = Broker::new(config, Arc::new(MemoryStore::new()));
    let sub = client(&broker, "sub");
    subscribe(&broker, &sub, "c", options(QoS::AtMostOnce), None);
    let congested: Vec<bool> = (0..8)
        .map(|_| {
            let published = broker.publish_durably(&message("c", QoS::AtMostOnce, false, b"m"));
            published
                .congested
                .is_some_and(|handle| Arc::ptr_eq(&handle, &sub.handle))
        })
        .collect();
    // 7/8 of 8 is 7.
    assert_eq!(
        congested,
        [false, false, false, false, false, false, true, true]
    );
    assert!(sub.handle.congestion.needs_relief());
    assert_eq!(drain(&sub).len(), 8);
    assert!(sub.handle.lock().queue_relieved());
    sub.handle.congestion.relieve();
    assert!(!sub.handle.congestion.needs_relief());

    // A stalled subscriber is not waited for: its messages are dropped as before.
    for _ in 0..6 {
        let _ = broker.publish_durably(&message("c", QoS::AtMostOnce, false, b"m"));
    }
    sub.handle.congestion.stall();
    for _ in 0..4 {
        let published = broker.publish_durably(&message("c", QoS::AtMostOnce, false, b"m"));
        assert!(published.congested.is_none());
    }
    assert_eq!(broker.stats().snapshot().dropped(Dropped::QueueFull), 2);
}

#[test]
fn an_offline_session_never_holds_publishers_back() {
    let mut config = Config::default();
    config.limits.max_queued_messages = 4;
    let broker = Broker::new(config, Arc::new(MemoryStore::new()));
    let sub = attach(&broker, &connect_packet("offline", false, Some(600)));
    subscribe(&broker, &sub, "o", options(QoS::AtLeastOnce), None);
    broker.disconnect(&sub.handle, sub.attachment.generation, false);
    for _ in 0..6 {
        let published = broker.publish_durably(&message("o", QoS::AtLeastOnce, false, b"m"));
        assert!(published.congested.is_none());
    }
    assert!(!sub.handle.congestion.needs_relief());
}
