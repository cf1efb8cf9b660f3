//! Persistent QoS 1 (or 2): publishers to `bench/{i}`, each keeping a small window of
//! unacknowledged messages (1 by default), and one subscriber with a persistent session
//! (clean session = false) subscribed to `bench/+` at the same QoS, connected and
//! consuming, on the subscriber address (another cluster node, if given). With
//! `persistent_publishers` the publishers keep sessions too, as devices that publish at
//! QoS 2 do: a broker then stores each incoming QoS 2 packet id as well.
//!
//! Every message is queued for a persistent session, so a broker that persists
//! sessions writes each one before it acknowledges it (how durably depends on the
//! broker and its configuration). The figures are the acknowledged publish rate and
//! the PUBACK latency: the time from writing a PUBLISH to reading its PUBACK (QoS 2: its
//! PUBREC, the broker's promise; the window slot is freed by PUBCOMP).
//!
//! At the end the subscriber's session is discarded (a clean-session connect with the
//! same client id), so repeated runs against one broker do not accumulate sessions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use super::{add_cpu, add_load_cores, receive, InFlight, Outcome, ReceivePlan, Received, Target};
use super::{ACK_DRAIN, POLL, TARGET_UNKNOWN};
use crate::conn::{Conn, ConnectOptions};
use crate::record::Record;
use crate::stats::{rate, summarize};
use crate::wire::{self, PublishTemplate};

const FILTER: &str = "bench/+";

#[derive(Debug, Clone)]
pub struct Params {
    pub publishers: usize,
    pub duration: Duration,
    /// Upper bound of messages per publisher.
    pub messages: u64,
    pub payload: usize,
    /// Unacknowledged messages per publisher.
    pub window: usize,
    /// 1 or 2.
    pub qos: u8,
    /// Publishers connect with clean session = false.
    pub persistent_publishers: bool,
    /// The subscriber stops after this long without messages once publishers are done.
    pub drain_idle: Duration,
}

/// What one publisher did, with the PUBACK latency of every acknowledged message.
struct Timed {
    sent: u64,
    acked: u64,
    /// When the last PUBACK arrived.
    finished: Instant,
    latencies_us: Vec<u64>,
}

pub async fn run(target: &Target, params: &Params) -> anyhow::Result<Outcome> {
    let case = format!("persist-q{}", params.qos);
    let case = case.as_str();
    let publishers = params.publishers.max(1);
    let before = target.sample()?;

    let subscriber_id = target.client_id("psub", 0);
    let persistent = ConnectOptions {
        clean_session: false,
        ..ConnectOptions::default()
    };
    let mut subscriber = Conn::connect(&target.subscriber_dial, &subscriber_id, persistent).await?;
    subscriber.subscribe(&[FILTER], params.qos).await?;
    wait_for_route(target, &mut subscriber).await?;
    let mut publisher_conns = Vec::with_capacity(publishers);
    let mut publisher_ids = Vec::with_capacity(publishers);
    for index in 0..publishers {
        let id = target.client_id("pub", index);
        let options = if params.persistent_publishers {
            persistent
        } else {
            ConnectOptions::default()
        };
        publisher_conns.push(Conn::connect(&target.dial, &id, options).await?);
        publisher_ids.push(id);
    }

    let payload = vec![b'p'; params.payload];
    let load_before = target.sample()?;
    let start = Instant::now();
    let until = start + params.duration;
    let plan = Arc::new(ReceivePlan {
        target: Arc::new(AtomicU64::new(TARGET_UNKNOWN)),
        idle: params.drain_idle,
        until: until + ACK_DRAIN + params.drain_idle,
    });
    let subscriber_task = {
        let plan = Arc::clone(&plan);
        tokio::spawn(async move {
            let received = receive(&mut subscriber, &plan, |_| {}).await;
            (received, subscriber)
        })
    };
    let publisher_tasks: Vec<_> = publisher_conns
        .into_iter()
        .enumerate()
        .map(|(index, mut conn)| {
            let template =
                PublishTemplate::new(&format!("bench/{index}"), params.qos, false, &payload);
            let (window, messages) = (params.window, params.messages);
            tokio::spawn(async move {
                let timed = publish_timed(&mut conn, &template, window, messages, until).await;
                (timed, conn)
            })
        })
        .collect();

    let (mut sent, mut acked, mut finished) = (0u64, 0u64, start);
    let mut latencies = Vec::new();
    let mut conns = Vec::new();
    for task in publisher_tasks {
        let (timed, conn) = task.await.context("publisher task")?;
        let timed = timed.context("publisher")?;
        sent += timed.sent;
        acked += timed.acked;
        finished = finished.max(timed.finished);
        latencies.extend(timed.latencies_us);
        conns.push(conn);
    }
    plan.target.store(sent, Ordering::Release);
    let load_after = target.sample()?;
    let (received, subscriber) = subscriber_task.await.context("subscriber task")?;
    let received: Received = received.context("subscriber")?;
    let stats = summarize(latencies);

    let acked_per_s = rate(acked, finished - start);
    let delivered_per_s = rate(
        received.count,
        received.last.map_or(Duration::ZERO, |l| l - start),
    );
    let mut record = Record::new(case, &target.label);
    record
        .number("qos", f64::from(params.qos))
        .number(
            "persistent_publishers",
            f64::from(u8::from(params.persistent_publishers)),
        )
        .number("publishers", publishers as f64)
        .number("window", params.window.max(1) as f64)
        .number("payload_bytes", params.payload as f64)
        .number("published", sent as f64)
        .number("acked", acked as f64)
        .number("delivered", received.count as f64)
        .number("acked_per_s", acked_per_s)
        .number("delivered_per_s", delivered_per_s)
        .number("delivery_ratio", received.count as f64 / sent.max(1) as f64);
    if let Some(s) = stats {
        record
            .number("puback_p50_us", s.p50 as f64)
            .number("puback_p99_us", s.p99 as f64)
            .number("puback_p999_us", s.p999 as f64)
            .number("puback_max_us", s.max as f64)
            .number("puback_mean_us", s.mean);
    }
    let units = if received.count > 0 {
        received.count
    } else {
        acked
    };
    add_cpu(&mut record, target, "cpu_us_per_msg", before, units)?;
    add_load_cores(&mut record, target, load_before, load_after);
    for conn in conns {
        conn.disconnect().await;
    }
    subscriber.disconnect().await;
    discard_session(&target.subscriber_dial, &subscriber_id).await;
    if params.persistent_publishers {
        for id in &publisher_ids {
            discard_session(&target.dial, id).await;
        }
    }

    let mut summary = format!(
        "{case} [{}]: {publishers} publishers, window {}: acked {acked_per_s:.0} msg/s, delivered {delivered_per_s:.0} msg/s ({} of {sent})",
        target.label,
        params.window.max(1),
        received.count
    );
    if let Some(s) = stats {
        summary += &format!(", PUBACK p50 {} us, p99 {} us", s.p50, s.p99);
    }
    if let Some(crate::record::Value::Number(cpu)) = record.get("cpu_us_per_msg") {
        summary += &format!(", broker CPU {cpu:.2} us/msg");
    }
    Ok(Outcome { record, summary })
}

/// Publishes QoS 0 probes to `bench/probe` on the publishers' address until
/// `subscriber` receives one, then lets the stragglers arrive. On a cluster a
/// subscription reaches the other nodes through consensus a moment after its SUBACK;
/// what the publishers' node takes before that has no subscriber there (acknowledged,
/// never forwarded), which made an across-nodes run fast and its delivery ratio low.
async fn wait_for_route(target: &Target, subscriber: &mut Conn) -> anyhow::Result<()> {
    const PROBE_WAIT: Duration = Duration::from_millis(100);
    let mut prober = Conn::connect(
        &target.dial,
        &target.client_id("probe", 0),
        ConnectOptions::default(),
    )
    .await?;
    let probe = PublishTemplate::new("bench/probe", 0, false, b"probe");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut arrived = false;
    while !arrived {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the subscription did not reach the publishers' node within 30 s"
        );
        probe.append(&mut prober.write_buf, 0);
        prober.flush().await?;
        if subscriber.read_some(PROBE_WAIT).await? {
            subscriber.drain_frames(|frame, _| {
                arrived |= frame.packet_type == wire::PUBLISH;
                Ok(())
            })?;
        }
    }
    prober.disconnect().await;
    // Probes sent before the one that arrived and still on their way.
    while subscriber.read_some(PROBE_WAIT * 3).await? {
        subscriber.drain_frames(|_, _| Ok(()))?;
    }
    Ok(())
}

/// Ends the persistent session: a clean-session CONNECT with its client id discards it.
/// Failures only leave a session behind, so they are reported and otherwise ignored.
async fn discard_session(dial: &crate::conn::Dial, client_id: &str) {
    match Conn::connect(dial, client_id, ConnectOptions::default()).await {
        Ok(conn) => conn.disconnect().await,
        Err(error) => eprintln!("persist: could not discard session {client_id}: {error:#}"),
    }
}

/// Publishes copies of `template` (QoS 1 or 2) with at most `window` unacknowledged,
/// until `max` are sent or `until` passes, and times each PUBACK (QoS 2: PUBREC) from
/// the write of its PUBLISH to the read that returned it; a QoS 2 message keeps its
/// window slot until its PUBCOMP.
async fn publish_timed(
    conn: &mut Conn,
    template: &PublishTemplate,
    window: usize,
    max: u64,
    until: Instant,
) -> anyhow::Result<Timed> {
    let mut in_flight = InFlight::new(window);
    let base = Instant::now();
    // Send time of each outstanding packet identifier, ns since `base`.
    let mut sent_at = vec![0u64; 65_536];
    let mut batch = Vec::with_capacity(in_flight.window);
    let mut timed = Timed {
        sent: 0,
        acked: 0,
        finished: base,
        latencies_us: Vec::new(),
    };
    let drain_until = until + ACK_DRAIN;
    loop {
        let sending = timed.sent < max && Instant::now() < until;
        while sending && timed.sent < max && in_flight.has_room() {
            let id = in_flight.take();
            template.append(&mut conn.write_buf, id);
            batch.push(id);
            timed.sent += 1;
        }
        let written_at = base.elapsed().as_nanos() as u64;
        for id in batch.drain(..) {
            sent_at[usize::from(id)] = written_at;
        }
        conn.flush().await?;
        if in_flight.count == 0 && !sending {
            break;
        }
        let now = Instant::now();
        if now >= drain_until {
            break;
        }
        if !conn.read_some(POLL.min(drain_until - now)).await? {
            continue;
        }
        let read_at = Instant::now();
        let read_ns = (read_at - base).as_nanos() as u64;
        let before = timed.acked;
        conn.drain_frames(|frame, replies| {
            let mut taken = |id: u16| {
                timed.acked += 1;
                let latency = read_ns.saturating_sub(sent_at[usize::from(id)]);
                timed.latencies_us.push(latency / 1000);
            };
            match frame.packet_type {
                wire::PUBACK => {
                    let id = frame.packet_id()?;
                    if in_flight.release(id) {
                        taken(id);
                    }
                }
                wire::PUBREC => {
                    let id = frame.packet_id()?;
                    wire::ack(replies, wire::PUBREL, id);
                    taken(id);
                }
                wire::PUBCOMP => {
                    in_flight.release(frame.packet_id()?);
                }
                _ => {}
            }
            Ok(())
        })?;
        if timed.acked > before {
            timed.finished = read_at;
        }
    }
    Ok(timed)
}
