//! A crash loop: a publisher streams numbered messages, many in flight at once, while the
//! broker is killed with SIGKILL and restarted again and again (once even while it opens
//! its database). The publisher reconnects to its persistent session each time and
//! resends what was not acknowledged, as a client must. Afterwards a persistent
//! subscriber, offline all along, receives every message the publisher saw acknowledged:
//! at least once and in order for QoS 1, exactly once and in order for QoS 2.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use fleetmq::protocol::reason::PACKET_IDENTIFIER_NOT_FOUND;
use fleetmq::protocol::{Packet, ProtocolVersion, QoS};

use crate::client::{
    ack, check_ack, first_occurrences, publish, Client, Identity, Inbox, V311, V5,
};
use crate::common::{Node, Settings};

/// Messages in flight at once (below the broker's Receive Maximum).
const WINDOW: usize = 32;
/// Per cycle: acknowledgements to wait for before the next window is sent and the broker
/// is killed with it in flight.
const CYCLES: [usize; 5] = [40, 150, 5, 250, 90];
const SENTINEL: &[u8] = b"end";

#[tokio::test]
async fn qos1_crash_loop_loses_nothing_acknowledged() {
    crash_loop(QoS::AtLeastOnce, V311, V5).await;
}

#[tokio::test]
async fn qos2_crash_loop_delivers_everything_exactly_once() {
    crash_loop(QoS::ExactlyOnce, V5, V311).await;
}

/// A message sent and not yet completed.
#[derive(Debug, Clone, Copy)]
struct Pending {
    seq: u32,
    /// QoS 2: PUBREC received, PUBREL sent (or due).
    released: bool,
    /// QoS 2: the PUBREL was sent again after a reconnection. The broker may have
    /// completed the flow before it was killed; then it answers PUBCOMP with 0x92
    /// (packet identifier not found).
    release_resent: bool,
}

/// The publisher's side of the session: what is outstanding survives reconnections.
struct Stream {
    topic: &'static str,
    qos: QoS,
    next_seq: u32,
    outstanding: BTreeMap<u16, Pending>,
    /// Sequence numbers acknowledged by PUBACK (QoS 1) or PUBREC (QoS 2).
    acknowledged: BTreeSet<u32>,
    /// PUBLISH and PUBREL packets sent again after a reconnection.
    resent: usize,
}

/// Message `seq` of a stream: payload `seq` in decimal, packet id `seq + 1`.
fn numbered_publish(topic: &str, qos: QoS, seq: u32, dup: bool) -> Packet {
    let mut message = publish(
        topic,
        qos,
        Stream::packet_id(seq),
        Bytes::from(seq.to_string()),
    );
    message.dup = dup;
    Packet::Publish(message)
}

/// The connection to the broker broke (it was killed).
struct Lost;

impl Stream {
    fn packet_id(seq: u32) -> u16 {
        u16::try_from(seq + 1).expect("fewer than 65535 messages")
    }

    fn publish(&self, seq: u32, dup: bool) -> Packet {
        numbered_publish(self.topic, self.qos, seq, dup)
    }

    /// After a reconnection: PUBLISH again (DUP=1, same packet id) what was not
    /// acknowledged, PUBREL again what was.
    async fn resend(&mut self, client: &mut Client) {
        for (packet_id, pending) in &mut self.outstanding {
            let packet = if pending.released {
                pending.release_resent = true;
                Packet::PubRel(ack(*packet_id))
            } else {
                numbered_publish(self.topic, self.qos, pending.seq, true)
            };
            client.send(&packet).await;
            self.resent += 1;
        }
    }

    /// Sends new messages until the window is full.
    async fn fill(&mut self, client: &mut Client) -> Result<(), Lost> {
        while self.outstanding.len() < WINDOW {
            let seq = self.next_seq;
            client
                .try_send(&self.publish(seq, false))
                .await
                .map_err(|_| Lost)?;
            self.next_seq += 1;
            self.outstanding.insert(
                Stream::packet_id(seq),
                Pending {
                    seq,
                    released: false,
                    release_resent: false,
                },
            );
        }
        Ok(())
    }

    /// Handles an acknowledgement from the broker.
    async fn handle(&mut self, client: &mut Client, packet: Packet) -> Result<(), Lost> {
        match (self.qos, packet) {
            (QoS::AtLeastOnce, Packet::PubAck(puback)) => {
                check_ack(&puback, puback.packet_id, "PUBACK");
                let pending = self
                    .outstanding
                    .remove(&puback.packet_id)
                    .unwrap_or_else(|| panic!("PUBACK for nothing outstanding: {puback:?}"));
                self.acknowledged.insert(pending.seq);
            }
            (QoS::ExactlyOnce, Packet::PubRec(pubrec)) => {
                check_ack(&pubrec, pubrec.packet_id, "PUBREC");
                let pending = self
                    .outstanding
                    .get_mut(&pubrec.packet_id)
                    .unwrap_or_else(|| panic!("PUBREC for nothing outstanding: {pubrec:?}"));
                pending.released = true;
                self.acknowledged.insert(pending.seq);
                client
                    .try_send(&Packet::PubRel(ack(pubrec.packet_id)))
                    .await
                    .map_err(|_| Lost)?;
            }
            (QoS::ExactlyOnce, Packet::PubComp(pubcomp)) => {
                let pending = self
                    .outstanding
                    .remove(&pubcomp.packet_id)
                    .unwrap_or_else(|| panic!("PUBCOMP for nothing outstanding: {pubcomp:?}"));
                assert!(pending.released, "PUBCOMP before PUBREL: {pubcomp:?}");
                if !(pending.release_resent && pubcomp.reason_code == PACKET_IDENTIFIER_NOT_FOUND) {
                    check_ack(&pubcomp, pubcomp.packet_id, "PUBCOMP");
                }
            }
            (_, other) => panic!("unexpected packet for the publisher: {other:?}"),
        }
        Ok(())
    }

    /// Keeps the window full until `count` more acknowledgements arrived.
    async fn pump(&mut self, client: &mut Client, count: usize) {
        let target = self.acknowledged.len() + count;
        while self.acknowledged.len() < target {
            self.fill(client)
                .await
                .unwrap_or_else(|_| panic!("connection lost"));
            let packet = client.recv().await;
            if self.handle(client, packet).await.is_err() {
                panic!("connection lost");
            }
        }
    }

    /// Waits until every outstanding flow is complete, sending nothing new.
    async fn complete(&mut self, client: &mut Client) {
        while !self.outstanding.is_empty() {
            let packet = client.recv().await;
            if self.handle(client, packet).await.is_err() {
                panic!("connection lost");
            }
        }
    }

    /// After the broker was killed: takes in whatever acknowledgements it had sent.
    async fn drain(&mut self, client: &mut Client) {
        while let Some(packet) = client.try_recv().await {
            if self.handle(client, packet).await.is_err() {
                return;
            }
        }
    }
}

async fn crash_loop(
    qos: QoS,
    publisher_version: ProtocolVersion,
    subscriber_version: ProtocolVersion,
) {
    let topic = match qos {
        QoS::ExactlyOnce => "restart/crash/q2",
        _ => "restart/crash/q1",
    };
    let name = format!("crash-q{}", qos as u8);
    let mut node = Node::new(Settings::default());
    let subscriber = Identity::persistent(&format!("{name}-sub"), subscriber_version);
    let publisher = Identity::persistent(&format!("{name}-pub"), publisher_version);
    let mut stream = Stream {
        topic,
        qos,
        next_seq: 0,
        outstanding: BTreeMap::new(),
        acknowledged: BTreeSet::new(),
        resent: 0,
    };

    let broker = node.start().await;
    let mut client = Client::connect_expecting(broker.addr, &subscriber, false).await;
    client.subscribe(&[(topic, qos)]).await;
    client.disconnect().await;
    let mut broker = Some(broker);

    for (cycle, count) in CYCLES.into_iter().enumerate() {
        let running = match broker.take() {
            Some(running) => running,
            None => node.start().await,
        };
        let mut client = Client::connect_expecting(running.addr, &publisher, cycle > 0).await;
        stream.resend(&mut client).await;
        stream.pump(&mut client, count).await;
        // A full window in flight when the broker dies.
        let _ = stream.fill(&mut client).await;
        running.kill().await;
        stream.drain(&mut client).await;
        if cycle == 1 {
            node.start_and_kill_at_once().await;
        }
    }

    let running = node.start().await;
    let mut client = Client::connect_expecting(running.addr, &publisher, true).await;
    stream.resend(&mut client).await;
    stream.complete(&mut client).await;
    client
        .publish_acknowledged(publish(topic, qos, 0, SENTINEL))
        .await;
    client.disconnect().await;
    let sent = stream.next_seq;
    let resent = stream.resent;
    assert_eq!(
        stream.acknowledged.len(),
        sent as usize,
        "every message is acknowledged in the end"
    );

    let mut client = Client::connect_expecting(running.addr, &subscriber, true).await;
    let mut inbox = Inbox::new();
    inbox.receive_through(&mut client, topic, SENTINEL).await;
    client.disconnect().await;
    running.terminate().await;

    let received = inbox.topic(topic);
    eprintln!(
        "{name}: {sent} messages, {resent} resent after a crash, {} deliveries",
        received.len() - 1
    );
    let expected: Vec<Bytes> = (0..sent).map(|seq| Bytes::from(seq.to_string())).collect();
    let distinct = first_occurrences(&received, &[SENTINEL]);
    let missing: Vec<u32> = (0..sent)
        .filter(|seq| !distinct.contains(&Bytes::from(seq.to_string())))
        .collect();
    assert!(
        missing.is_empty(),
        "{sent} messages acknowledged, {} never delivered: {missing:?}",
        missing.len()
    );
    assert_eq!(distinct, expected, "first deliveries in publishing order");
    if qos == QoS::ExactlyOnce {
        let duplicates = received.len() - 1 - distinct.len();
        assert_eq!(duplicates, 0, "QoS 2 delivered {duplicates} duplicates");
    }
}
