//! The benchmark scenarios and the two loops they share: a pipelined publisher with a
//! bounded window of unacknowledged messages, and a subscriber that acknowledges what
//! it receives in batches.
//!
//! Every loop has two bounds: a message count and a wall-clock deadline.

pub mod handshake;
pub mod idle;
pub mod latency;
pub mod persist;
pub mod retained;
pub mod storm;
pub mod throughput;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::conn::{Conn, Dial};
use crate::record::Record;
use crate::stats::{cores_busy, cpu_us_per, ProcProbe, ProcSample};
use crate::wire::{self, Frame, PublishTemplate, WireError};

/// What every scenario needs to know about the broker under test.
#[derive(Clone)]
pub struct Target {
    /// Address, transport (TLS or not) and source addresses of its connections.
    pub dial: Arc<Dial>,
    /// Where subscribers connect: the same as `dial`, unless another cluster node or a
    /// bridge's remote is given.
    pub subscriber_dial: Arc<Dial>,
    /// Name printed with the results ("fleetmq", "mosquitto", "discard").
    pub label: String,
    /// What a scenario over TLS adds to its name: "tls", or "tls12" when the client
    /// offers TLS 1.2 only.
    pub tls_name: &'static str,
    pub probe: ProcProbe,
    /// The generator itself, to show its cost per message beside the broker's.
    pub own: ProcProbe,
    /// Makes client ids unique between runs against one broker.
    pub run_id: String,
}

/// Counters of the broker and of the generator at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Samples {
    pub broker: Option<ProcSample>,
    pub own: Option<ProcSample>,
    pub at: Instant,
}

impl Target {
    pub fn sample(&self) -> anyhow::Result<Samples> {
        Ok(Samples {
            broker: self.probe.sample()?,
            own: self.own.sample()?,
            at: Instant::now(),
        })
    }

    /// The scenario's name in the results: `-tls` (`-tls12` for TLS 1.2 only) follows
    /// its first word over TLS (`idle-tls`, `fanin-tls-q1`, `idle-tls12`).
    pub fn case(&self, name: &str) -> String {
        if self.dial.tls.is_none() {
            return name.to_string();
        }
        let tls = self.tls_name;
        match name.split_once('-') {
            Some((first, rest)) => format!("{first}-{tls}-{rest}"),
            None => format!("{name}-{tls}"),
        }
    }

    pub fn client_id(&self, role: &str, index: usize) -> String {
        format!("fmqb-{}-{role}-{index}", self.run_id)
    }
}

/// A scenario's result: the JSON record and the line for humans.
pub struct Outcome {
    pub record: Record,
    pub summary: String,
}

/// How long to wait for QoS 1/2 acknowledgements after the last send.
const ACK_DRAIN: Duration = Duration::from_secs(10);
/// Read timeout inside loops, so deadlines are checked even when nothing arrives.
const POLL: Duration = Duration::from_millis(100);
/// Bytes of QoS 0 publishes written per syscall.
const QOS0_BATCH_BYTES: usize = 64 * 1024;

/// Packet identifiers of outgoing QoS 1/2 messages not yet completed.
pub struct InFlight {
    outstanding: Vec<bool>,
    next_id: u16,
    pub count: usize,
    pub window: usize,
}

impl InFlight {
    pub fn new(window: usize) -> InFlight {
        InFlight {
            outstanding: vec![false; 65_536],
            next_id: 0,
            count: 0,
            // Half the identifier space, so a free identifier is always found quickly.
            window: window.clamp(1, 32_768),
        }
    }

    pub fn has_room(&self) -> bool {
        self.count < self.window
    }

    /// Takes a free identifier (1..=65535, 0 is not a valid packet identifier).
    pub fn take(&mut self) -> u16 {
        loop {
            self.next_id = self.next_id.wrapping_add(1).max(1);
            let slot = &mut self.outstanding[usize::from(self.next_id)];
            if !*slot {
                *slot = true;
                self.count += 1;
                return self.next_id;
            }
        }
    }

    /// Completes an identifier; false for one that was not outstanding (a duplicate).
    pub fn release(&mut self, id: u16) -> bool {
        let slot = &mut self.outstanding[usize::from(id)];
        let was = std::mem::replace(slot, false);
        self.count -= usize::from(was);
        was
    }

    /// Handles the broker's side of the publisher's QoS flows. Returns true when a
    /// message completed (PUBACK for QoS 1, PUBCOMP for QoS 2).
    pub fn on_frame(&mut self, frame: Frame<'_>, replies: &mut Vec<u8>) -> Result<bool, WireError> {
        match frame.packet_type {
            wire::PUBACK | wire::PUBCOMP => Ok(self.release(frame.packet_id()?)),
            wire::PUBREC => {
                wire::ack(replies, wire::PUBREL, frame.packet_id()?);
                Ok(false)
            }
            _ => Ok(false),
        }
    }
}

/// What a publisher did.
#[derive(Debug, Clone, Copy)]
pub struct Published {
    pub sent: u64,
    pub acked: u64,
    /// When the last publish was written (QoS 0) or acknowledged (QoS 1/2).
    pub finished: Instant,
}

/// Publishes copies of `template` as fast as the broker takes them, until `max` are
/// sent or `until` passes; at QoS 1/2 at most `window` are unacknowledged.
pub async fn publish_flat_out(
    conn: &mut Conn,
    template: &PublishTemplate,
    qos: u8,
    window: usize,
    max: u64,
    until: Instant,
) -> anyhow::Result<Published> {
    if qos == 0 {
        let per_batch = (QOS0_BATCH_BYTES / template.len().max(1)).max(1) as u64;
        let mut batch = Vec::with_capacity(QOS0_BATCH_BYTES + template.len());
        for _ in 0..per_batch {
            template.append(&mut batch, 0);
        }
        let mut sent = 0;
        while sent < max && Instant::now() < until {
            let count = per_batch.min(max - sent);
            let bytes = count as usize * template.len();
            conn.write_all(&batch[..bytes]).await?;
            sent += count;
        }
        return Ok(Published {
            sent,
            acked: 0,
            finished: Instant::now(),
        });
    }
    publish_pipelined(conn, window, max, until, |out, _, id| {
        template.append(out, id);
    })
    .await
}

/// The QoS 1/2 publisher: `encode(out, sequence, packet_id)` appends message number
/// `sequence`. Keeps the window full, one write per batch, one read per ack batch.
pub async fn publish_pipelined<F>(
    conn: &mut Conn,
    window: usize,
    max: u64,
    until: Instant,
    mut encode: F,
) -> anyhow::Result<Published>
where
    F: FnMut(&mut Vec<u8>, u64, u16),
{
    let mut in_flight = InFlight::new(window);
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut finished = Instant::now();
    let drain_until = until + ACK_DRAIN;
    loop {
        let sending = sent < max && Instant::now() < until;
        while sending && sent < max && in_flight.has_room() {
            let id = in_flight.take();
            encode(&mut conn.write_buf, sent, id);
            sent += 1;
        }
        conn.flush().await?;
        if in_flight.count == 0 && !sending {
            break;
        }
        let now = Instant::now();
        if now >= drain_until {
            break;
        }
        if conn.read_some(POLL.min(drain_until - now)).await? {
            let before = acked;
            conn.drain_frames(|frame, replies| {
                if in_flight.on_frame(frame, replies)? {
                    acked += 1;
                }
                Ok(())
            })?;
            if acked > before {
                finished = Instant::now();
            }
        }
    }
    Ok(Published {
        sent,
        acked,
        finished,
    })
}

/// When a subscriber stops: after `target` messages once it is known (publishers
/// store it when they finish), after `idle` without messages once it is known, or at
/// `until` in any case.
pub struct ReceivePlan {
    pub target: Arc<AtomicU64>,
    pub idle: Duration,
    pub until: Instant,
}

/// Target value meaning "publishers still running".
pub const TARGET_UNKNOWN: u64 = u64::MAX;

#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub count: u64,
    pub last: Option<Instant>,
}

/// Receives PUBLISH packets, acknowledging QoS 1 and 2, and hands each payload to
/// `on_payload`.
pub async fn receive<F>(
    conn: &mut Conn,
    plan: &ReceivePlan,
    mut on_payload: F,
) -> anyhow::Result<Received>
where
    F: FnMut(&[u8]),
{
    let mut count = 0u64;
    let mut last = None;
    let mut target_seen_at: Option<Instant> = None;
    loop {
        let target = plan.target.load(Ordering::Acquire);
        if count >= target {
            break;
        }
        let now = Instant::now();
        if target != TARGET_UNKNOWN {
            let since = *target_seen_at.get_or_insert(now);
            let quiet_from = last.map_or(since, |l: Instant| l.max(since));
            if now.duration_since(quiet_from) >= plan.idle {
                break;
            }
        }
        if now >= plan.until {
            break;
        }
        if !conn.read_some(POLL.min(plan.until - now)).await? {
            continue;
        }
        let before = count;
        conn.drain_frames(|frame, replies| {
            match frame.packet_type {
                wire::PUBLISH => {
                    let publish = frame.publish()?;
                    count += 1;
                    on_payload(publish.payload);
                    match (frame.qos(), publish.packet_id) {
                        (1, Some(id)) => wire::ack(replies, wire::PUBACK, id),
                        (2, Some(id)) => wire::ack(replies, wire::PUBREC, id),
                        _ => {}
                    }
                }
                wire::PUBREL => wire::ack(replies, wire::PUBCOMP, frame.packet_id()?),
                _ => {}
            }
            Ok(())
        })?;
        conn.flush().await?;
        if count > before {
            last = Some(Instant::now());
        }
    }
    Ok(Received { count, last })
}

/// Adds the CPU figures to a record: `key` is microseconds of broker CPU per one of
/// `units` since `before`, `bench_{key}` the same for the generator; how many cores
/// each kept busy meanwhile (a generator far from its CPU share is not the
/// bottleneck); and the broker's resident memory now.
pub fn add_cpu(
    record: &mut Record,
    target: &Target,
    key: &str,
    before: Samples,
    units: u64,
) -> anyhow::Result<()> {
    let after = target.sample()?;
    record.maybe(
        key,
        cpu_us_per(&target.probe, before.broker, after.broker, units),
    );
    let own = cpu_us_per(&target.own, before.own, after.own, units);
    record.maybe(&format!("bench_{key}"), own);
    let wall = after.at - before.at;
    record.maybe(
        "broker_cpu_cores",
        cores_busy(&target.probe, before.broker, after.broker, wall),
    );
    record.maybe(
        "bench_cpu_cores",
        cores_busy(&target.own, before.own, after.own, wall),
    );
    if let Some(after) = after.broker {
        record.number("broker_rss_kib", after.rss_kib as f64);
    }
    Ok(())
}

/// Cores kept busy by the broker and by the generator between two samples taken
/// while the publishers ran (`broker_load_cores`, `bench_load_cores`): unlike the
/// whole-run figures of `add_cpu`, they leave out connection setup and the drain.
pub fn add_load_cores(record: &mut Record, target: &Target, from: Samples, to: Samples) {
    let wall = to.at - from.at;
    record.maybe(
        "broker_load_cores",
        cores_busy(&target.probe, from.broker, to.broker, wall),
    );
    record.maybe(
        "bench_load_cores",
        cores_busy(&target.own, from.own, to.own, wall),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_never_hands_out_an_outstanding_id() {
        let mut in_flight = InFlight::new(3);
        let ids: Vec<u16> = (0..3).map(|_| in_flight.take()).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert!(!in_flight.has_room());
        assert!(in_flight.release(2));
        assert!(!in_flight.release(2), "a duplicate ack completes nothing");
        assert_eq!(in_flight.count, 2);
        // Wrap around the identifier space while 1 and 3 stay outstanding.
        for _ in 0..70_000 {
            let id = in_flight.take();
            assert!(id != 0 && id != 1 && id != 3);
            assert!(in_flight.release(id));
        }
        assert_eq!(in_flight.count, 2);
    }

    #[test]
    fn qos2_flow_completes_on_pubcomp_only() {
        let mut in_flight = InFlight::new(8);
        let id = in_flight.take();
        let mut replies = Vec::new();
        let rec = [0, id as u8];
        let pubrec = Frame {
            packet_type: wire::PUBREC,
            flags: 0,
            body: &rec,
        };
        assert!(!in_flight.on_frame(pubrec, &mut replies).unwrap());
        assert_eq!(replies, [0x62, 2, 0, id as u8]);
        let pubcomp = Frame {
            packet_type: wire::PUBCOMP,
            flags: 0,
            body: &rec,
        };
        assert!(in_flight.on_frame(pubcomp, &mut replies).unwrap());
        assert_eq!(in_flight.count, 0);
        let short = Frame {
            packet_type: wire::PUBACK,
            flags: 0,
            body: &[],
        };
        assert!(in_flight.on_frame(short, &mut replies).is_err());
    }
}
