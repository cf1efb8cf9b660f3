//! CONNECT and CONNACK: session present, client identifiers, session takeover, protocol
//! levels, the CONNECT deadline, keep alive and the maximum packet size.

use std::time::{Duration, Instant};

use crate::common::raw::RawClient;
use crate::common::wire::{prop, ConnectSpec, Packet, PublishSpec, V31, V311, V5};
use crate::common::{assert_still_serving, client_id, start_broker, start_default, topic};
use crate::{both_versions, common::clients::V4Client};

both_versions!(
    session_present_follows_clean_flag_and_expiry,
    takeover_closes_first_connection
);

/// A CONNECT that keeps the session after disconnection: clean session 0 (3.1.1), clean
/// start 0 with a 300 s session expiry (5.0).
fn persistent(version: u8, id: &str) -> ConnectSpec {
    ConnectSpec::new(version, id)
        .clean(false)
        .session_expiry(300)
}

async fn connack_session_present(
    addr: std::net::SocketAddr,
    spec: &ConnectSpec,
) -> (RawClient, bool) {
    let (client, connack) = RawClient::connect_with(addr, spec).await;
    match connack {
        Packet::ConnAck {
            session_present,
            code: 0,
            ..
        } => (client, session_present),
        other => panic!("connection refused: {other:?}"),
    }
}

async fn session_present_follows_clean_flag_and_expiry(version: u8) {
    let broker = start_default().await;
    let id = client_id("present");

    let (c, present) = connack_session_present(broker.addr, &persistent(version, &id)).await;
    assert!(!present, "no session existed yet");
    c.disconnect().await;

    let (c, present) = connack_session_present(broker.addr, &persistent(version, &id)).await;
    assert!(present, "the persistent session survived the disconnection");
    c.disconnect().await;

    // Clean session / clean start discards the stored session.
    let clean = ConnectSpec::new(version, &id)
        .clean(true)
        .session_expiry(300);
    let (c, present) = connack_session_present(broker.addr, &clean).await;
    assert!(!present, "clean session/start never reports a session");
    c.disconnect().await;

    let (c, present) = connack_session_present(broker.addr, &persistent(version, &id)).await;
    if version == V5 {
        // Clean start with a session expiry still leaves a session behind.
        assert!(
            present,
            "clean start 1 with expiry 300 keeps the new session"
        );
    } else {
        assert!(!present, "a clean session ends with its connection");
    }
    c.disconnect().await;

    if version == V5 {
        // Session Expiry Interval absent (0): the session ends when the connection does.
        let no_expiry = ConnectSpec::new(V5, &id).clean(false);
        let (c, present) = connack_session_present(broker.addr, &no_expiry).await;
        assert!(present);
        c.disconnect().await;
        let (c, present) = connack_session_present(broker.addr, &no_expiry).await;
        assert!(!present, "a session with expiry 0 ended at disconnection");
        c.disconnect().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_session_present_exact_bytes() {
    let broker = start_default().await;
    let id = client_id("bytes");
    let spec = ConnectSpec::new(V311, &id).clean(false);
    let mut c = RawClient::open(broker.addr, V311).await;
    c.send(&spec.encode()).await;
    assert_eq!(c.recv_bytes().await, [0x20, 0x02, 0x00, 0x00]);
    c.disconnect().await;
    let mut c = RawClient::open(broker.addr, V311).await;
    c.send(&spec.encode()).await;
    assert_eq!(c.recv_bytes().await, [0x20, 0x02, 0x01, 0x00]);
    c.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_empty_client_id_gets_assigned_identifier() {
    let broker = start_default().await;
    let mut assigned = Vec::new();
    for _ in 0..2 {
        let (c, connack) = RawClient::connect_with(broker.addr, &ConnectSpec::new(V5, "")).await;
        match connack {
            Packet::ConnAck {
                session_present: false,
                code: 0,
                props,
            } => {
                let id = props
                    .str(prop::ASSIGNED_CLIENT_IDENTIFIER)
                    .expect("CONNACK carries an Assigned Client Identifier");
                assert!(!id.is_empty(), "assigned identifier is not empty");
                assigned.push((id, c));
            }
            other => panic!("expected a successful CONNACK, got {other:?}"),
        }
    }
    assert_ne!(
        assigned[0].0, assigned[1].0,
        "each client gets its own identifier"
    );
    // Both connections stay up: neither took the other over.
    for (_, mut c) in assigned {
        c.ping().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_empty_client_id_with_clean_session_accepted() {
    let broker = start_default().await;
    let mut c = RawClient::open(broker.addr, V311).await;
    c.send(&ConnectSpec::new(V311, "").clean(true).encode())
        .await;
    assert_eq!(c.recv_bytes().await, [0x20, 0x02, 0x00, 0x00]);
    c.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_empty_client_id_without_clean_session_rejected() {
    let broker = start_default().await;
    let mut c = RawClient::open(broker.addr, V311).await;
    c.send(&ConnectSpec::new(V311, "").clean(false).encode())
        .await;
    assert_eq!(
        c.recv_bytes().await,
        [0x20, 0x02, 0x00, 0x02],
        "CONNACK 0x02 identifier rejected"
    );
    c.expect_closed().await;
}

async fn takeover_closes_first_connection(version: u8) {
    let broker = start_default().await;
    let id = client_id("takeover");
    let mut first = RawClient::connect_ok(broker.addr, &persistent(version, &id)).await;
    let t = topic("takeover");
    first.subscribe(&t, 1).await;

    let (mut second, present) =
        connack_session_present(broker.addr, &persistent(version, &id)).await;
    assert!(
        present,
        "the new connection takes over the existing session"
    );
    if version == V5 {
        first.expect_disconnect(0x8E).await;
    } else {
        first.expect_closed().await;
    }

    // The subscription moved to the new connection.
    second.publish_simple(&t, 1, b"after takeover").await;
    let p = second.recv_publish().await;
    assert_eq!(p.payload, b"after takeover");
    second.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt31_connect_gets_31_connack_and_works() {
    let broker = start_default().await;
    let id = client_id("v31");
    let spec = ConnectSpec::new(V31, &id);
    let bytes = spec.encode();
    // "MQIsdp", level 3, clean session, keep alive 60.
    assert_eq!(
        &bytes[2..14],
        &[0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3C]
    );
    let mut c = RawClient::open(broker.addr, V31).await;
    c.send(&bytes).await;
    assert_eq!(c.recv_bytes().await, [0x20, 0x02, 0x00, 0x00]);

    let t = topic("v31");
    c.subscribe(&t, 2).await;
    c.publish(PublishSpec::new(&t, 2, b"three one")).await;
    let p = c.recv_publish().await;
    assert_eq!((p.qos, p.payload.as_slice()), (2, &b"three one"[..]));
    c.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt31_empty_client_id_rejected() {
    // MQTT 3.1 requires a client identifier of 1 to 23 characters.
    let broker = start_default().await;
    let mut c = RawClient::open(broker.addr, V31).await;
    c.send(&ConnectSpec::new(V31, "").encode()).await;
    assert_eq!(c.recv_bytes().await, [0x20, 0x02, 0x00, 0x02]);
    c.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocol_level_gets_connack_0x01() {
    let broker = start_default().await;
    for level in [6u8, 2] {
        let mut spec = ConnectSpec::new(V311, &client_id("level"));
        spec.version = level;
        let mut c = RawClient::open(broker.addr, V311).await;
        c.send(&spec.encode()).await;
        assert_eq!(
            c.recv_bytes().await,
            [0x20, 0x02, 0x00, 0x01],
            "CONNACK 0x01 unacceptable protocol version for level {level}"
        );
        c.expect_closed().await;
    }
    assert_still_serving(broker.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_closes_silent_socket() {
    let broker = start_broker(|c| c.limits.connect_timeout_secs = 1).await;
    let mut c = RawClient::open(broker.addr, V311).await;
    let start = Instant::now();
    c.expect_closed().await;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(950),
        "closed after {elapsed:?}, before the 1 s CONNECT deadline"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "closed only after {elapsed:?}"
    );
    assert_still_serving(broker.addr).await;
}

both_versions!(
    keep_alive_enforced_at_one_and_a_half,
    pingreq_keeps_connection_alive
);

async fn keep_alive_enforced_at_one_and_a_half(version: u8) {
    let broker = start_default().await;
    let mut c = RawClient::connect_ok(
        broker.addr,
        &ConnectSpec::new(version, &client_id("ka")).keep_alive(1),
    )
    .await;
    let start = Instant::now();
    // MQTT 5 allows DISCONNECT 0x8D (keep alive timeout) before the close.
    let elapsed = c.closed_after(start, 0x8D).await;
    assert!(
        elapsed >= Duration::from_secs(1),
        "closed after {elapsed:?}, before the keep alive"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "closed after {elapsed:?}; 1.5 x keep alive is 1.5 s"
    );
}

async fn pingreq_keeps_connection_alive(version: u8) {
    let broker = start_default().await;
    let mut c = RawClient::connect_ok(
        broker.addr,
        &ConnectSpec::new(version, &client_id("ping")).keep_alive(1),
    )
    .await;
    // 2 s of traffic paced at half the keep alive: longer than 1.5 x keep alive.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.ping().await;
    }
    c.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_server_keep_alive_caps_requested_keep_alive() {
    let broker = start_broker(|c| c.limits.max_keep_alive_secs = 10).await;
    for asked in [60u16, 0] {
        let spec = ConnectSpec::new(V5, &client_id("ska")).keep_alive(asked);
        let (_c, connack) = RawClient::connect_with(broker.addr, &spec).await;
        match connack {
            Packet::ConnAck { code: 0, props, .. } => {
                assert_eq!(
                    props.num(prop::SERVER_KEEP_ALIVE),
                    Some(10),
                    "asked for {asked}"
                )
            }
            other => panic!("expected CONNACK success, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_connack_announces_maximum_packet_size() {
    let broker = start_broker(|c| c.limits.max_packet_size = 1024).await;
    let (_c, connack) =
        RawClient::connect_with(broker.addr, &ConnectSpec::new(V5, &client_id("mps"))).await;
    match connack {
        Packet::ConnAck { code: 0, props, .. } => {
            assert_eq!(props.num(prop::MAXIMUM_PACKET_SIZE), Some(1024))
        }
        other => panic!("expected CONNACK success, got {other:?}"),
    }
}

both_versions!(oversize_publish_is_refused);

async fn oversize_publish_is_refused(version: u8) {
    let broker = start_broker(|c| c.limits.max_packet_size = 1024).await;
    let t = topic("big");
    let mut watcher = RawClient::connect(broker.addr, V311, &client_id("watch")).await;
    watcher.subscribe(&t, 0).await;

    let mut c = RawClient::connect(broker.addr, version, &client_id("big")).await;
    // A packet just under the limit passes.
    c.publish_simple(&t, 1, &[b'a'; 900]).await;
    c.send_lossy(&PublishSpec::new(&t, 1, &[b'b'; 2000]).encode(version))
        .await;
    if version == V5 {
        c.expect_disconnect(0x95).await;
    } else {
        c.expect_closed().await;
    }

    let mut sender = RawClient::connect(broker.addr, V311, &client_id("after")).await;
    sender.publish_simple(&t, 0, b"sentinel").await;
    let seen = watcher.payloads_until(b"sentinel").await;
    assert_eq!(
        seen,
        vec![vec![b'a'; 900]],
        "only the packet within the limit was routed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_client_connects() {
    let broker = start_default().await;
    let (mut c, connack) = V4Client::connect(broker.addr, &client_id("rumqttc")).await;
    assert_eq!(connack.code, rumqttc::ConnectReturnCode::Success);
    assert!(!connack.session_present);
    let t = topic("rumqttc");
    c.subscribe(&t, 1).await;
    c.publish(&t, 1, false, b"hello").await;
    let p = c.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), p.payload.as_ref(), p.qos),
        (t.as_str(), &b"hello"[..], rumqttc::QoS::AtLeastOnce)
    );
    c.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_disconnects_clients() {
    let broker = start_default().await;
    let mut v5 = RawClient::connect(broker.addr, V5, &client_id("v5")).await;
    let mut v311 = RawClient::connect(broker.addr, V311, &client_id("v311")).await;
    let addr = broker.addr;
    tokio::time::timeout(crate::common::GUARD, broker.shutdown())
        .await
        .expect("shutdown completes");
    v5.expect_disconnect(0x8B).await;
    v311.expect_closed().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

/// A 3.1.1 CONNECT: protocol name, level 4, `flags`, keep alive 60, then `payload`.
fn v311_connect(name: &[u8], flags: u8, payload: &[&[u8]]) -> Vec<u8> {
    v3_connect(name, 4, flags, payload)
}

/// A MQTT 3.x CONNECT of protocol `level`.
fn v3_connect(name: &[u8], level: u8, flags: u8, payload: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(name.len() as u16).to_be_bytes());
    body.extend_from_slice(name);
    body.extend_from_slice(&[level, flags, 0, 60]);
    for field in payload {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field);
    }
    crate::common::wire::frame(0x10, &body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_conforming_v311_connect_is_closed_without_connack() {
    let broker = start_default().await;
    // Will flag (0x04) with clean session (0x02): client id, will topic, will payload.
    let cases: [(&str, Vec<u8>); 9] = [
        (
            "empty will topic",
            v311_connect(b"MQTT", 0x06, &[b"c1", b"", b"x"]),
        ),
        (
            "will topic not UTF-8",
            v311_connect(b"MQTT", 0x06, &[b"c2", &[b'a', 0xff], b"x"]),
        ),
        (
            "wildcard in the will topic",
            v311_connect(b"MQTT", 0x06, &[b"c3", b"a/#", b"x"]),
        ),
        ("protocol name", v311_connect(b"MQTX", 0x02, &[b"c4"])),
        ("reserved flag", v311_connect(b"MQTT", 0x03, &[b"c5"])),
        (
            "will QoS without the will flag",
            v311_connect(b"MQTT", 0x0a, &[b"c6"]),
        ),
        (
            "will retain without the will flag",
            v311_connect(b"MQTT", 0x22, &[b"c7"]),
        ),
        (
            "will QoS 3",
            v311_connect(b"MQTT", 0x1e, &[b"c8", b"w", b"x"]),
        ),
        (
            "password without user name",
            v311_connect(b"MQTT", 0x42, &[b"c9", b"secret"]),
        ),
    ];
    for (what, bytes) in cases {
        let mut c = RawClient::open(broker.addr, V311).await;
        c.send_lossy(&bytes).await;
        match c.recv_or_closed().await {
            None => {}
            Some(packet) => panic!("{what}: expected a close without CONNACK, got {packet:?}"),
        }
    }
    // MQTT 3.1 follows the same rules.
    for (what, bytes) in [
        (
            "3.1 empty will topic",
            v3_connect(b"MQIsdp", 3, 0x06, &[b"c11", b"", b"x"]),
        ),
        (
            "3.1 reserved flag",
            v3_connect(b"MQIsdp", 3, 0x03, &[b"c12"]),
        ),
    ] {
        let mut c = RawClient::open(broker.addr, V31).await;
        c.send_lossy(&bytes).await;
        if let Some(packet) = c.recv_or_closed().await {
            panic!("{what}: expected a close without CONNACK, got {packet:?}");
        }
    }
    // The same CONNECT with a valid will topic is accepted, so the cases above fail for
    // the reason they name.
    let mut c = RawClient::open(broker.addr, V311).await;
    c.send(&v311_connect(b"MQTT", 0x06, &[b"c10", b"w/t", b"x"]))
        .await;
    assert!(
        matches!(c.recv().await, Packet::ConnAck { code: 0, .. }),
        "a conforming CONNECT is accepted"
    );
    assert_still_serving(broker.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_invalid_will_topic_still_gets_connack_0x90() {
    let broker = start_default().await;
    let mut spec = ConnectSpec::new(V5, &client_id("will"));
    spec.will = Some(crate::common::wire::WillSpec::new("a/+", b"x", 0));
    let mut c = RawClient::open(broker.addr, V5).await;
    c.send(&spec.encode()).await;
    match c.recv().await {
        Packet::ConnAck { code, .. } => assert_eq!(code, 0x90),
        other => panic!("expected CONNACK 0x90, got {other:?}"),
    }
    c.expect_closed().await;
}
