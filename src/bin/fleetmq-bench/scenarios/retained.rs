//! Retained messages: store N retained topics (QoS 1, pipelined, so all are stored
//! when the last PUBACK arrives), then time how long a new multi-level wildcard
//! subscriber takes to receive them all.
//!
//! Topics live under a prefix unique to the run and are cleared afterwards, so
//! repeated runs against one broker see the same retained set.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{add_cpu, publish_pipelined, receive, Outcome, ReceivePlan, Target, QOS0_BATCH_BYTES};
use crate::conn::{Conn, ConnectOptions};
use crate::record::Record;
use crate::stats::rate;
use crate::wire;

#[derive(Debug, Clone)]
pub struct Params {
    pub topics: u64,
    pub payload: usize,
    pub window: usize,
    /// Bound of each phase (storing, receiving).
    pub duration: Duration,
    /// The subscriber stops after this long without messages.
    pub drain_idle: Duration,
}

pub async fn run(target: &Target, params: &Params) -> anyhow::Result<Outcome> {
    let case = "retained";
    let prefix = format!("bench/retained/{}", target.run_id);
    let payload = vec![b'r'; params.payload];
    let mut topic = String::with_capacity(prefix.len() + 12);

    let before_store = target.sample()?;
    let mut publisher = Conn::connect(
        &target.dial,
        &target.client_id("pub", 0),
        ConnectOptions::default(),
    )
    .await?;
    let store_start = Instant::now();
    let stored = publish_pipelined(
        &mut publisher,
        params.window,
        params.topics,
        store_start + params.duration,
        |out, sequence, id| {
            topic.clear();
            topic.push_str(&prefix);
            topic.push('/');
            topic.push_str(&sequence.to_string());
            wire::publish(out, &topic, 1, true, id, &payload);
        },
    )
    .await?;
    let store_elapsed = stored.finished - store_start;
    let before_receive = target.sample()?;

    let mut subscriber = Conn::connect(
        &target.dial,
        &target.client_id("sub", 0),
        ConnectOptions::default(),
    )
    .await?;
    let filter = format!("{prefix}/#");
    wire::subscribe(&mut subscriber.write_buf, 1, &[filter.as_str()], 0);
    let receive_start = Instant::now();
    subscriber.flush().await?;
    let plan = ReceivePlan {
        target: Arc::new(AtomicU64::new(stored.acked)),
        idle: params.drain_idle,
        until: receive_start + params.duration,
    };
    let received = receive(&mut subscriber, &plan, |_| {}).await?;
    let receive_elapsed = received
        .last
        .map_or(Duration::ZERO, |last| last - receive_start);

    let mut record = Record::new(case, &target.label);
    record
        .number("topics", params.topics as f64)
        .number("payload_bytes", params.payload as f64)
        .number("stored", stored.acked as f64)
        .number("delivered", received.count as f64)
        .number(
            "delivery_ratio",
            received.count as f64 / stored.acked.max(1) as f64,
        )
        .number("store_per_s", rate(stored.acked, store_elapsed))
        .number("retained_per_s", rate(received.count, receive_elapsed));
    // "Time to receive them all" only exists when all arrived.
    let complete = received.count >= stored.acked;
    record.maybe(
        "receive_ms",
        complete.then_some(receive_elapsed.as_secs_f64() * 1e3),
    );
    record.maybe(
        "cpu_us_per_stored",
        crate::stats::cpu_us_per(
            &target.probe,
            before_store.broker,
            before_receive.broker,
            stored.acked,
        ),
    );
    add_cpu(
        &mut record,
        target,
        "cpu_us_per_msg",
        before_receive,
        received.count,
    )?;

    clear(&mut publisher, &prefix, params.topics.min(stored.sent)).await?;
    publisher.disconnect().await;
    subscriber.disconnect().await;

    let summary = format!(
        "{case} [{}]: stored {} topics at {:.0}/s; a '#' subscriber got {} in {:.1} ms ({:.0} msg/s)",
        target.label,
        stored.acked,
        rate(stored.acked, store_elapsed),
        received.count,
        receive_elapsed.as_secs_f64() * 1e3,
        rate(received.count, receive_elapsed)
    );
    Ok(Outcome { record, summary })
}

/// Deletes the run's retained messages (empty retained payloads, QoS 0, batched).
async fn clear(conn: &mut Conn, prefix: &str, topics: u64) -> anyhow::Result<()> {
    for index in 0..topics {
        wire::publish(
            &mut conn.write_buf,
            &format!("{prefix}/{index}"),
            0,
            true,
            0,
            &[],
        );
        if conn.write_buf.len() >= QOS0_BATCH_BYTES {
            conn.flush().await?;
        }
    }
    conn.flush().await
}
