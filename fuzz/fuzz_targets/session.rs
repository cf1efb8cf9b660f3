//! Random sequences of packets, deliveries, polls and reconnects fed to the session
//! state machine: whatever state it is in, nothing a client sends may panic it, and its
//! queues stay within their limits.
//!
//! Input: a version byte, then operations. Each operation is one byte: 0-3 a packet
//! (next byte: its length, then that many bytes, decoded by the real codec), 4 a
//! delivery from the router, 5 a poll for outgoing packets, 6 a reconnect, 7 time
//! passing.

#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fleetmq::message::Message;
use fleetmq::protocol::{decode, Connect, ConnectProperties, ProtocolVersion, QoS};
use fleetmq::session::{Delivery, Session, SessionLimits};
use libfuzzer_sys::fuzz_target;

fn connect(version: ProtocolVersion) -> Connect {
    Connect {
        protocol: version,
        clean_start: false,
        keep_alive: 30,
        client_id: "fuzz".into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties {
            receive_maximum: Some(3),
            topic_alias_maximum: Some(2),
            maximum_packet_size: Some(200),
            authentication_method: Some("SCRAM-SHA-256".into()),
            ..ConnectProperties::default()
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut ops)) = data.split_first() else {
        return;
    };
    let version = match selector % 3 {
        0 => ProtocolVersion::V3_1,
        1 => ProtocolVersion::V3_1_1,
        _ => ProtocolVersion::V5,
    };
    let limits = SessionLimits {
        max_inflight: 4,
        receive_maximum: 4,
        max_queued_messages: 8,
        max_queued_bytes: 4096,
        max_retained_backlog: 8,
        topic_alias_maximum: 4,
        outbox: None,
    };
    let mut now = Instant::now();
    let mut session = Session::new(1, limits.clone());
    session.attach(&connect(version), Duration::from_secs(60), now);
    let mut out = Vec::new();
    let mut dropped = Vec::new();
    let mut counter = 0u8;
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        match op % 8 {
            0..=3 => {
                let Some((&len, rest)) = ops.split_first() else { break };
                let len = usize::from(len).min(rest.len());
                let mut buf = BytesMut::from(&rest[..len]);
                ops = &rest[len..];
                while let Ok(Some(packet)) = decode(&mut buf, Some(version), 1024) {
                    if session.handle_packet(packet, now).is_err() {
                        // A violation closes the connection; the session lives on.
                        session.detach(now);
                        session.attach(&connect(version), Duration::from_secs(60), now);
                    }
                }
            }
            4 => {
                counter = counter.wrapping_add(1);
                let qos = match counter % 3 {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => QoS::ExactlyOnce,
                };
                let message = Message {
                    topic: format!("t/{}", counter % 5).into(),
                    payload: Bytes::from(vec![counter; usize::from(counter)]),
                    qos,
                    retain: counter % 7 == 0,
                    properties: Default::default(),
                    expires_at: (counter % 4 == 0).then(|| now + Duration::from_secs(1)),
                    publisher: None,
                    cluster_id: Default::default(),
                };
                let _ = session.enqueue(
                    Delivery {
                        message: Arc::new(message),
                        qos,
                        retain: false,
                        subscription_ids: vec![u32::from(counter) + 1],
                        stored: None,
                    },
                    now,
                );
            }
            5 => {
                out.clear();
                session.poll_outgoing(now, &mut out, &mut dropped);
            }
            6 => {
                session.detach(now);
                session.attach(&connect(version), Duration::from_secs(60), now);
            }
            _ => now += Duration::from_millis(700),
        }
        assert!(session.queued_len() <= limits.max_queued_messages);
        assert!(session.queued_bytes() <= limits.max_queued_bytes);
        assert!(session.inflight_len() <= usize::from(limits.max_inflight));
    }
});
