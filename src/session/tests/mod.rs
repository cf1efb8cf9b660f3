//! Socket-free tests of the session: packets and time go in, actions and packets come out.

mod control;
mod inbound;
mod model;
mod outbound;
mod outbox;
mod outgoing;
mod retained_backlog;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Action, Delivery, DropReason, Session, SessionLimits};
use crate::message::Message;
use crate::protocol::{
    Connect, ConnectProperties, Packet, ProtocolVersion, PubResponse, Publish, PublishProperties,
    QoS, Will,
};

const KEY: u64 = 7;

fn limits() -> SessionLimits {
    SessionLimits {
        max_inflight: 2,
        receive_maximum: 2,
        max_queued_messages: 5,
        max_queued_bytes: 10_000,
        max_retained_backlog: 20,
        topic_alias_maximum: 3,
        outbox: None,
    }
}

fn connect(protocol: ProtocolVersion) -> Connect {
    Connect {
        protocol,
        clean_start: false,
        keep_alive: 60,
        client_id: "device-1".into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

fn will() -> Will {
    Will {
        topic: "devices/1/status".into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Default::default(),
    }
}

/// A session attached with `connect`, and the time it was attached at.
fn attached_with(connect: &Connect, limits: SessionLimits) -> (Session, Instant) {
    let now = Instant::now();
    let mut session = Session::new(KEY, limits);
    session.attach(connect, Duration::from_secs(60), now);
    (session, now)
}

fn attached(protocol: ProtocolVersion) -> (Session, Instant) {
    attached_with(&connect(protocol), limits())
}

fn publish(topic: &str, qos: QoS, packet_id: u16) -> Publish {
    Publish {
        qos,
        topic: topic.into(),
        packet_id,
        payload: Bytes::from_static(b"21.5"),
        ..Publish::default()
    }
}

fn message(topic: &str, qos: QoS) -> Message {
    Message {
        topic: topic.into(),
        payload: Bytes::from_static(b"21.5"),
        qos,
        retain: false,
        properties: PublishProperties::default(),
        expires_at: None,
        publisher: Some(99),
        cluster_id: Default::default(),
    }
}

fn delivery_of(message: Message, qos: QoS) -> Delivery {
    Delivery {
        message: Arc::new(message),
        qos,
        retain: false,
        subscription_ids: Vec::new(),
        stored: None,
    }
}

fn delivery(topic: &str, qos: QoS) -> Delivery {
    delivery_of(message(topic, qos), qos)
}

fn response(packet_id: u16) -> PubResponse {
    PubResponse {
        packet_id,
        ..PubResponse::default()
    }
}

fn response_with(packet_id: u16, reason_code: u8) -> PubResponse {
    PubResponse {
        packet_id,
        reason_code,
        ..PubResponse::default()
    }
}

fn poll(session: &mut Session, now: Instant) -> (Vec<Packet>, Vec<DropReason>) {
    let mut out = Vec::new();
    let mut dropped = Vec::new();
    session.poll_outgoing(now, &mut out, &mut dropped);
    (out, dropped)
}

/// The PUBLISH packets of `packets`, panicking on anything else.
fn publishes(packets: Vec<Packet>) -> Vec<Publish> {
    packets
        .into_iter()
        .map(|packet| match packet {
            Packet::Publish(publish) => publish,
            other => panic!("expected PUBLISH, got {other:?}"),
        })
        .collect()
}

fn packet_ids(packets: Vec<Packet>) -> Vec<u16> {
    publishes(packets)
        .iter()
        .map(|publish| publish.packet_id)
        .collect()
}

fn handle(session: &mut Session, packet: Packet, now: Instant) -> Vec<Action> {
    match session.handle_packet(packet, now) {
        Ok(actions) => actions,
        Err(violation) => panic!("unexpected violation: {violation}"),
    }
}

fn violation_code(session: &mut Session, packet: Packet, now: Instant) -> u8 {
    match session.handle_packet(packet, now) {
        Ok(actions) => panic!("expected a violation, got {actions:?}"),
        Err(violation) => violation.reason_code,
    }
}

const BOTH: [ProtocolVersion; 2] = [ProtocolVersion::V3_1_1, ProtocolVersion::V5];
