//! What a connection sends: acknowledgements held until the writes they promise are
//! durable (`held`), then the session's deliveries, encoded into the write buffer.
//! Split from the connection's event loop (`mod.rs`), which calls `drain_session`
//! whenever input was handled or the session has something to send.

use tokio::time::{sleep, Instant as TokioInstant};

use super::held::Settled;
use super::{Connection, Exit};
use crate::broker::{now, Stats};
use crate::protocol::{reason, Packet, QoS};
use crate::session::{EncodedOutgoing, Outgoing};
use crate::storage::Completion;

thread_local! {
    /// The emptied packet list of the last drain on this thread. Connections reuse its
    /// allocation for the packets their input produces (acknowledgements) rather than
    /// grow a list of their own each time, and an idle connection keeps none.
    static SPARE_PACKETS: std::cell::Cell<Vec<Packet>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Connection {
    /// Queues a packet for the client, or holds it until `writes` are durable (and behind
    /// anything held before it, to keep acknowledgements in order).
    pub(super) fn send(&mut self, packet: Packet, writes: Vec<Completion>) {
        if self.held.must_hold(&writes) {
            self.held.hold(packet, writes);
        } else {
            self.push_out(packet);
        }
    }

    /// Adds a packet to `out`, reusing the list this thread's last drain emptied.
    pub(super) fn push_out(&mut self, packet: Packet) {
        if self.out.capacity() == 0 {
            self.out = SPARE_PACKETS.take();
        }
        self.out.push(packet);
    }

    /// Moves held packets whose writes resolved to the output. A failed write means the
    /// packet must not confirm anything: a MQTT 5 PUBACK or PUBREC then carries 0x80
    /// Unspecified error (and the QoS 2 flow ends there); anything else closes the
    /// connection without it, so the client sends again after reconnecting.
    pub(super) fn release_held(&mut self) -> Result<(), Exit> {
        let mut settled = Vec::new();
        self.held.take_settled(&mut settled);
        for Settled {
            mut packet,
            failure,
        } in settled
        {
            if let Some(error) = failure {
                self.broker.stats().storage_failed(&error);
                let refusable =
                    self.version.is_v5() && matches!(packet, Packet::PubAck(_) | Packet::PubRec(_));
                if !refusable {
                    return Err(Exit::StorageFailed);
                }
                self.refuse_ack(&mut packet, reason::UNSPECIFIED_ERROR)?;
            }
            self.push_out(packet);
        }
        Ok(())
    }

    /// Encodes pending acknowledgements (those whose writes are durable), then everything
    /// the session may send now.
    ///
    /// While the unwritten backlog is at `max_outbox_bytes` or more, nothing more is
    /// taken from the session; if queued messages then wait for longer than
    /// `slow_consumer_timeout_ms`, the client is not keeping up and is disconnected as a
    /// slow consumer. One batch may overshoot the limit (it is bounded by the inflight
    /// window and the session's queue limits); retained messages from the backlog are
    /// taken only up to the limit, and a waiting retained backlog alone is never a reason
    /// to disconnect. Publishers waiting for this session go on once the poll left its
    /// queue at half or less.
    ///
    /// In a cluster that replicates sessions, a QoS 2 PUBLISH to a persistent session is
    /// shown to the client only once its in-flight record is durable on the backups
    /// (held like an acknowledgement, with everything after it): a node that takes the
    /// session over from a backup's copy then knows the client may have it, and resends
    /// it with DUP, or PUBREL, instead of sending it again as new. While such a PUBLISH
    /// is held, nothing more is taken from the session.
    pub(super) fn drain_session(&mut self) -> Result<(), Exit> {
        self.release_held()?;
        let mut dropped = Vec::new();
        let max_outbox = self.config.limits.max_outbox_bytes;
        let durable_qos2 = self
            .config
            .cluster
            .as_ref()
            .is_some_and(|cluster| cluster.replication_factor >= 2)
            && self.handle.is_persistent();
        let backlog_full =
            self.write_buf.len() >= max_outbox || (durable_qos2 && !self.held.is_empty());
        let budget = max_outbox.saturating_sub(self.write_buf.len());
        let stats = self.broker.stats();
        let timeout = self.slow_consumer_timeout();
        // Acknowledgements and other packets produced by input go first, in order.
        let mut output = EncodedOutgoing::new(&mut self.write_buf, self.version);
        for packet in self.out.drain(..) {
            output.packet(packet);
        }
        let mut durable_wait: Option<(Vec<Packet>, Option<Completion>)> = None;
        {
            let mut session = self
                .handle
                .lock_current(self.generation)
                .ok_or(Exit::TakenOver)?;
            if !backlog_full && durable_qos2 {
                self.outbox_deadline = None;
                let mut packets = Vec::new();
                session.poll_outgoing_within(now(), budget, &mut packets, &mut dropped);
                let written = self.broker.submit_journal(&mut session);
                durable_wait = Some((packets, written));
            } else if !backlog_full {
                self.outbox_deadline = None;
                session.poll_outgoing_within(now(), budget, &mut output, &mut dropped);
                // What went in flight or was dropped: nothing waits for these writes.
                let _ = self.broker.submit_journal(&mut session);
            } else if session.has_queued_outgoing() {
                let deadline = self
                    .outbox_deadline
                    .get_or_insert_with(|| Box::pin(sleep(timeout)));
                if deadline.deadline() <= TokioInstant::now() {
                    return Err(Exit::SlowConsumer);
                }
            } else {
                self.outbox_deadline = None;
            }
            self.output_waiting = session.has_outgoing();
            if self.handle.congestion.needs_relief() && session.queue_relieved() {
                self.handle.congestion.relieve();
            }
        }
        for reason in dropped {
            stats.dropped(reason);
        }
        let (mut packets, mut publishes) = (output.packets, output.publishes);
        if let Some((deliveries, written)) = durable_wait {
            let (more_packets, more_publishes) =
                self.send_behind_in_flight_records(deliveries, written);
            packets += more_packets;
            for (total, more) in publishes.iter_mut().zip(more_publishes) {
                *total += more;
            }
        }
        if packets > 0 {
            let stats = self.broker.stats();
            Stats::add(&stats.packets_sent, packets);
            stats.messages_sent(publishes);
        }
        self.qos0_unwritten += publishes[QoS::AtMostOnce as usize];
        // The list's allocation goes back to this thread for the next connection's
        // acknowledgements; an idle connection keeps none.
        let spent = std::mem::take(&mut self.out);
        if spent.capacity() > 0 {
            SPARE_PACKETS.set(spent);
        }
        Ok(())
    }

    /// Sends a durable drain's deliveries (`drain_session`): the first new QoS 2 PUBLISH
    /// waits for the drain's in-flight records (`written`), everything after it waits
    /// behind it; what need not wait is encoded now. The packets and PUBLISHes (by QoS)
    /// encoded.
    fn send_behind_in_flight_records(
        &mut self,
        deliveries: Vec<Packet>,
        mut written: Option<Completion>,
    ) -> (u64, [u64; 3]) {
        for packet in deliveries {
            let new_qos2 = matches!(&packet, Packet::Publish(publish) if publish.qos == QoS::ExactlyOnce && !publish.dup);
            let writes = match written.take_if(|_| new_qos2) {
                Some(written) => vec![written],
                None => Vec::new(),
            };
            self.send(packet, writes);
        }
        let mut output = EncodedOutgoing::new(&mut self.write_buf, self.version);
        for packet in self.out.drain(..) {
            output.packet(packet);
        }
        (output.packets, output.publishes)
    }
}
