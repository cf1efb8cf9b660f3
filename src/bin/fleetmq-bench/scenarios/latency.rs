//! End-to-end latency at a fixed QoS 1 rate: each payload carries the time it was
//! written, the subscriber computes the difference on arrival.
//!
//! Publisher and subscriber live in one process, so both read one monotonic clock.
//! Messages of the warm-up period are sent but not counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use super::{
    add_cpu, receive, InFlight, Outcome, ReceivePlan, Target, ACK_DRAIN, POLL, TARGET_UNKNOWN,
};
use crate::conn::{Conn, ConnectOptions};
use crate::record::Record;
use crate::stats::{rate, summarize};
use crate::wire::PublishTemplate;

const TOPIC: &str = "bench/latency";
/// The send time stamp: nanoseconds since the run's base instant, little endian.
const STAMP_LEN: usize = 8;

#[derive(Debug, Clone)]
pub struct Params {
    pub rate: u64,
    pub duration: Duration,
    pub warmup: Duration,
    pub payload: usize,
    pub window: usize,
}

pub async fn run(target: &Target, params: &Params) -> anyhow::Result<Outcome> {
    let case = &target.case("latency-q1");
    let before = target.sample()?;
    let mut subscriber = Conn::connect(
        &target.subscriber_dial,
        &target.client_id("sub", 0),
        ConnectOptions::default(),
    )
    .await?;
    subscriber.subscribe(&[TOPIC], 1).await?;
    let mut publisher = Conn::connect(
        &target.dial,
        &target.client_id("pub", 0),
        ConnectOptions::default(),
    )
    .await?;

    let rate_per_s = params.rate.max(1);
    let total = (rate_per_s as f64 * (params.warmup + params.duration).as_secs_f64()) as u64;
    let template = PublishTemplate::new(TOPIC, 1, false, &vec![0; params.payload.max(STAMP_LEN)]);
    let base = Instant::now();
    let warmup_nanos = params.warmup.as_nanos() as u64;
    let hard_until = base + params.warmup + params.duration + ACK_DRAIN;
    let plan = ReceivePlan {
        target: Arc::new(AtomicU64::new(TARGET_UNKNOWN)),
        idle: Duration::from_secs(2),
        until: hard_until,
    };
    let target_count = Arc::clone(&plan.target);
    let receiver = tokio::spawn(async move {
        let mut samples = Vec::with_capacity(total as usize);
        let received = receive(&mut subscriber, &plan, |payload| {
            let Some(stamp) = payload.get(..STAMP_LEN) else {
                return;
            };
            let mut bytes = [0; STAMP_LEN];
            bytes.copy_from_slice(stamp);
            let sent_at = u64::from_le_bytes(bytes);
            let now = base.elapsed().as_nanos() as u64;
            if sent_at >= warmup_nanos && samples.len() < samples.capacity() {
                samples.push(now.saturating_sub(sent_at) / 1000);
            }
        })
        .await;
        (received, samples, subscriber)
    });

    let mut in_flight = InFlight::new(params.window);
    let mut sent = 0u64;
    // Rounds where messages were due but the window was full: the broker fell behind.
    let mut window_stalls = 0u64;
    loop {
        let due = ((base.elapsed().as_secs_f64() * rate_per_s as f64) as u64).min(total);
        if sent < due && !in_flight.has_room() {
            window_stalls += 1;
        }
        while sent < due && in_flight.has_room() {
            let id = in_flight.take();
            let at = template.append(&mut publisher.write_buf, id);
            let stamp = (base.elapsed().as_nanos() as u64).to_le_bytes();
            publisher.write_buf[at..at + STAMP_LEN].copy_from_slice(&stamp);
            sent += 1;
        }
        publisher.flush().await?;
        let now = Instant::now();
        if (sent >= total && in_flight.count == 0) || now >= hard_until {
            break;
        }
        let next_due = base + Duration::from_secs_f64((sent + 1) as f64 / rate_per_s as f64);
        let wait = if in_flight.has_room() && sent < total {
            next_due.saturating_duration_since(now).min(POLL)
        } else {
            POLL
        };
        if !wait.is_zero() && publisher.read_some(wait).await? {
            publisher
                .drain_frames(|frame, replies| in_flight.on_frame(frame, replies).map(drop))?;
        }
    }
    let send_elapsed = base.elapsed();
    target_count.store(sent, Ordering::Release);
    let (received, samples, subscriber) = receiver.await.context("subscriber task")?;
    let received = received.context("subscriber")?;
    let summary_stats = summarize(samples);

    let mut record = Record::new(case, &target.label);
    record
        .number("rate_target_per_s", rate_per_s as f64)
        .number("payload_bytes", params.payload.max(STAMP_LEN) as f64)
        .number("sent", sent as f64)
        .number("delivered", received.count as f64)
        .number("sent_per_s", rate(sent, send_elapsed))
        .number("window_stalls", window_stalls as f64);
    if let Some(s) = summary_stats {
        record
            .number("samples", s.count as f64)
            .number("p50_us", s.p50 as f64)
            .number("p99_us", s.p99 as f64)
            .number("p999_us", s.p999 as f64)
            .number("max_us", s.max as f64)
            .number("mean_us", s.mean);
    }
    add_cpu(
        &mut record,
        target,
        "cpu_us_per_msg",
        before,
        received.count,
    )?;
    publisher.disconnect().await;
    subscriber.disconnect().await;

    let summary = match summary_stats {
        Some(s) => format!(
            "{case} [{}]: {} msg/s for {:?}: p50 {} us, p99 {} us, p99.9 {} us, max {} us ({} of {sent} delivered)",
            target.label, rate_per_s, params.duration, s.p50, s.p99, s.p999, s.max, received.count
        ),
        None => format!("{case} [{}]: no message arrived ({sent} sent)", target.label),
    };
    Ok(Outcome { record, summary })
}
