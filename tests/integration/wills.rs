//! Will messages: published when a connection ends without a normal DISCONNECT (socket
//! drop, keep alive timeout, protocol violation, MQTT 5 DISCONNECT 0x04), never after a
//! normal DISCONNECT, and after the MQTT 5 Will Delay Interval unless the client is back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::both_versions;
use crate::common::raw::RawClient;
use crate::common::wire::{self, prop, ConnectSpec, Prop, WillSpec, V311, V5};
use crate::common::{client_id, start_default, topic};

both_versions!(
    will_sent_on_socket_drop,
    will_not_sent_after_normal_disconnect,
    will_sent_after_keep_alive_timeout,
    will_sent_after_protocol_violation,
    will_retained_when_flagged,
);

/// A subscriber to `will_topic` at QoS 2.
async fn watcher(addr: SocketAddr, will_topic: &str) -> RawClient {
    let mut w = RawClient::connect(addr, V5, &client_id("watcher")).await;
    w.subscribe(will_topic, 2).await;
    w
}

/// Publishes a sentinel on `will_topic` from a fresh client.
async fn send_sentinel(addr: SocketAddr, will_topic: &str) {
    let mut c = RawClient::connect(addr, V311, &client_id("sentinel")).await;
    c.publish_simple(will_topic, 1, b"sentinel").await;
    c.disconnect().await;
}

async fn connect_with_will(addr: SocketAddr, version: u8, will: WillSpec) -> RawClient {
    RawClient::connect_ok(
        addr,
        &ConnectSpec::new(version, &client_id("mortal")).will(will),
    )
    .await
}

async fn will_sent_on_socket_drop(version: u8) {
    let broker = start_default().await;
    let t = topic("will");
    let mut w = watcher(broker.addr, &t).await;
    let c = connect_with_will(broker.addr, version, WillSpec::new(&t, b"gone", 1)).await;
    c.drop_connection().await;
    let p = w.recv_publish().await;
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice(), p.qos, p.retain),
        (t.as_str(), &b"gone"[..], 1, false)
    );
    send_sentinel(broker.addr, &t).await;
    assert_eq!(
        w.recv_publish().await.payload,
        b"sentinel",
        "the will is sent once"
    );
}

async fn will_not_sent_after_normal_disconnect(version: u8) {
    let broker = start_default().await;
    let t = topic("nowill");
    let mut w = watcher(broker.addr, &t).await;
    let c = connect_with_will(
        broker.addr,
        version,
        WillSpec::new(&t, b"must not appear", 0),
    )
    .await;
    // Waits for the broker to close the connection, so the DISCONNECT was handled.
    c.disconnect().await;
    send_sentinel(broker.addr, &t).await;
    let seen = w.payloads_until(b"sentinel").await;
    assert!(
        seen.is_empty(),
        "will sent after a normal DISCONNECT: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_will_sent_after_disconnect_with_will_message() {
    let broker = start_default().await;
    let t = topic("will04");
    let mut w = watcher(broker.addr, &t).await;
    let mut c = connect_with_will(broker.addr, V5, WillSpec::new(&t, b"asked for", 2)).await;
    c.send(&wire::disconnect_v5(0x04, &[])).await;
    c.expect_closed().await;
    let p = w.recv_publish().await;
    assert_eq!((p.payload.as_slice(), p.qos), (&b"asked for"[..], 2));
}

async fn will_sent_after_keep_alive_timeout(version: u8) {
    let broker = start_default().await;
    let t = topic("kawill");
    let mut w = watcher(broker.addr, &t).await;
    let spec = ConnectSpec::new(version, &client_id("silent"))
        .keep_alive(1)
        .will(WillSpec::new(&t, b"timed out", 1));
    let _silent = RawClient::connect_ok(broker.addr, &spec).await;
    let start = Instant::now();
    let p = w.recv_publish().await;
    assert_eq!(p.payload, b"timed out");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_secs(1),
        "will after {elapsed:?}, before the keep alive ran out"
    );
}

async fn will_sent_after_protocol_violation(version: u8) {
    let broker = start_default().await;
    let t = topic("badwill");
    let mut w = watcher(broker.addr, &t).await;
    let mut c = connect_with_will(broker.addr, version, WillSpec::new(&t, b"misbehaved", 1)).await;
    // SUBSCRIBE with reserved flags 0b0000 instead of 0b0010 is malformed.
    let mut subscribe = wire::subscribe(version, 1, &[("a/b", 0)], &[]);
    subscribe[0] = 0x80;
    c.send(&subscribe).await;
    let p = w.recv_publish().await;
    assert_eq!(p.payload, b"misbehaved");
}

async fn will_retained_when_flagged(version: u8) {
    let broker = start_default().await;
    let t = topic("retwill");
    let mut will = WillSpec::new(&t, b"last words", 1);
    will.retain = true;
    let mut w = watcher(broker.addr, &t).await;
    let c = connect_with_will(broker.addr, version, will).await;
    c.drop_connection().await;
    let live = w.recv_publish().await;
    assert_eq!(
        (live.payload.as_slice(), live.retain),
        (&b"last words"[..], false)
    );

    let mut late = RawClient::connect(broker.addr, version, &client_id("late")).await;
    late.subscribe(&t, 1).await;
    let p = late.recv_publish().await;
    assert_eq!(
        (p.payload.as_slice(), p.retain, p.qos),
        (&b"last words"[..], true, 1)
    );
}

fn delayed_will(id: &str, t: &str, payload: &[u8], delay: u32) -> ConnectSpec {
    let mut will = WillSpec::new(t, payload, 1);
    will.props.push(Prop::U32(prop::WILL_DELAY_INTERVAL, delay));
    ConnectSpec::new(V5, id)
        .clean(false)
        .session_expiry(60)
        .will(will)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_will_delay_sent_after_the_delay() {
    let broker = start_default().await;
    let t = topic("delay");
    let mut w = watcher(broker.addr, &t).await;
    let c = RawClient::connect_ok(
        broker.addr,
        &delayed_will(&client_id("late"), &t, b"delayed", 1),
    )
    .await;
    let dropped = Instant::now();
    c.drop_connection().await;
    let p = w.recv_publish().await;
    let elapsed = dropped.elapsed();
    assert_eq!(p.payload, b"delayed");
    assert!(
        elapsed >= Duration::from_secs(1),
        "will sent after {elapsed:?}, before its 1 s delay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_will_delay_cancelled_by_reconnect() {
    let broker = start_default().await;
    let t = topic("cancel");
    let mut w = watcher(broker.addr, &t).await;
    let returning_id = client_id("returning");
    let returning = RawClient::connect_ok(
        broker.addr,
        &delayed_will(&returning_id, &t, b"must not appear", 1),
    )
    .await;
    // A control client with the same delay that does not come back: its will marks the
    // moment the first one would have been due.
    let control = RawClient::connect_ok(
        broker.addr,
        &delayed_will(&client_id("control"), &t, b"control", 1),
    )
    .await;
    returning.drop_connection().await;
    control.drop_connection().await;

    let (back, connack) = RawClient::connect_with(
        broker.addr,
        &delayed_will(&returning_id, &t, b"second life", 1),
    )
    .await;
    assert!(
        matches!(
            connack,
            wire::Packet::ConnAck {
                session_present: true,
                code: 0,
                ..
            }
        ),
        "{connack:?}"
    );
    let p = w.recv_publish().await;
    assert_eq!(
        p.payload, b"control",
        "only the control client's will is published"
    );
    send_sentinel(broker.addr, &t).await;
    assert_eq!(w.recv_publish().await.payload, b"sentinel");
    drop(back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_will_properties_passed_through() {
    let broker = start_default().await;
    let t = topic("willprops");
    let mut w = watcher(broker.addr, &t).await;
    let mut will = WillSpec::new(&t, b"{\"state\":\"offline\"}", 1);
    will.props = vec![
        Prop::Byte(prop::PAYLOAD_FORMAT_INDICATOR, 1),
        Prop::Str(prop::CONTENT_TYPE, "application/json".to_string()),
        Prop::Str(prop::RESPONSE_TOPIC, "fleet/replies".to_string()),
        Prop::Bin(prop::CORRELATION_DATA, vec![9, 8, 7]),
        Prop::Pair("device".to_string(), "42".to_string()),
    ];
    let c = connect_with_will(broker.addr, V5, will).await;
    c.drop_connection().await;
    let p = w.recv_publish().await;
    assert_eq!(p.payload, b"{\"state\":\"offline\"}");
    assert_eq!(p.props.num(prop::PAYLOAD_FORMAT_INDICATOR), Some(1));
    assert_eq!(
        p.props.str(prop::CONTENT_TYPE).as_deref(),
        Some("application/json")
    );
    assert_eq!(
        p.props.str(prop::RESPONSE_TOPIC).as_deref(),
        Some("fleet/replies")
    );
    assert_eq!(p.props.bin(prop::CORRELATION_DATA), Some(vec![9, 8, 7]));
    assert_eq!(
        p.props.user_properties(),
        vec![("device".to_string(), "42".to_string())]
    );
}
