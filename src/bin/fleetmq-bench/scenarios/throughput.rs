//! Throughput scenarios: fan-in (many publishers, one wildcard subscriber) and fan-out
//! (one publisher, many subscribers of the same topic), publishers running flat out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use super::{
    add_cpu, add_load_cores, publish_flat_out, receive, Outcome, Published, ReceivePlan, Received,
    Target, ACK_DRAIN, TARGET_UNKNOWN,
};
use crate::conn::{Conn, ConnectOptions};
use crate::record::Record;
use crate::stats::rate;
use crate::wire::PublishTemplate;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `publishers` clients publish to `bench/{i}`; one subscriber on `bench/+`, or with
    /// several subscribers, subscriber `j` on every `bench/{i}` with `i % subscribers == j`
    /// (each message is delivered once either way).
    FanIn,
    /// One publisher to `bench/fanout`; `subscribers` clients subscribed to it.
    FanOut,
}

#[derive(Debug, Clone)]
pub struct Params {
    pub shape: Shape,
    pub qos: u8,
    pub publishers: usize,
    pub subscribers: usize,
    pub duration: Duration,
    /// Upper bound of messages per publisher.
    pub messages: u64,
    pub payload: usize,
    pub window: usize,
    /// A subscriber stops after this long without messages once publishers are done.
    pub drain_idle: Duration,
    /// Subscribers stop at the latest this long after the publishers' deadline
    /// (`None`: the acknowledgement drain plus `drain_idle`).
    pub drain_max: Option<Duration>,
}

/// The filters of subscriber `index` of `subscribers`.
fn filters(shape: Shape, index: usize, subscribers: usize, publishers: usize) -> Vec<String> {
    match shape {
        Shape::FanOut => vec!["bench/fanout".to_owned()],
        Shape::FanIn if subscribers == 1 => vec!["bench/+".to_owned()],
        Shape::FanIn => (index..publishers)
            .step_by(subscribers)
            .map(|publisher| format!("bench/{publisher}"))
            .collect(),
    }
}

pub async fn run(target: &Target, params: &Params) -> anyhow::Result<Outcome> {
    let (case_name, publishers, subscribers) = match params.shape {
        Shape::FanIn => {
            let publishers = params.publishers.max(1);
            ("fanin", publishers, params.subscribers.clamp(1, publishers))
        }
        Shape::FanOut => ("fanout", 1, params.subscribers.max(1)),
    };
    let case = target.case(&format!("{case_name}-q{}", params.qos));
    let before = target.sample()?;

    let mut subscriber_conns = Vec::with_capacity(subscribers);
    for index in 0..subscribers {
        let id = target.client_id("sub", index);
        let mut conn =
            Conn::connect(&target.subscriber_dial, &id, ConnectOptions::default()).await?;
        let filters = filters(params.shape, index, subscribers, publishers);
        let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
        conn.subscribe(&filters, params.qos).await?;
        subscriber_conns.push(conn);
    }
    let mut publisher_conns = Vec::with_capacity(publishers);
    for index in 0..publishers {
        let id = target.client_id("pub", index);
        publisher_conns.push(Conn::connect(&target.dial, &id, ConnectOptions::default()).await?);
    }

    let payload = vec![b'x'; params.payload];
    let load_before = target.sample()?;
    let start = Instant::now();
    let until = start + params.duration;
    let plan = Arc::new(ReceivePlan {
        target: Arc::new(AtomicU64::new(TARGET_UNKNOWN)),
        idle: params.drain_idle,
        until: until + params.drain_max.unwrap_or(ACK_DRAIN + params.drain_idle),
    });
    let subscriber_tasks: Vec<_> = subscriber_conns
        .into_iter()
        .map(|mut conn| {
            let plan = Arc::clone(&plan);
            tokio::spawn(async move {
                let received = receive(&mut conn, &plan, |_| {}).await;
                (received, conn)
            })
        })
        .collect();
    let publisher_tasks: Vec<_> = publisher_conns
        .into_iter()
        .enumerate()
        .map(|(index, mut conn)| {
            let topic = match params.shape {
                Shape::FanIn => format!("bench/{index}"),
                Shape::FanOut => "bench/fanout".to_owned(),
            };
            let template = PublishTemplate::new(&topic, params.qos, false, &payload);
            let (qos, window, messages) = (params.qos, params.window, params.messages);
            tokio::spawn(async move {
                let published =
                    publish_flat_out(&mut conn, &template, qos, window, messages, until).await;
                (published, conn)
            })
        })
        .collect();

    let mut totals = Published {
        sent: 0,
        acked: 0,
        finished: start,
    };
    let mut conns = Vec::new();
    for task in publisher_tasks {
        let (published, conn) = task.await.context("publisher task")?;
        let published = published.context("publisher")?;
        totals.sent += published.sent;
        totals.acked += published.acked;
        totals.finished = totals.finished.max(published.finished);
        conns.push(conn);
    }
    plan.target.store(totals.sent, Ordering::Release);
    let load_after = target.sample()?;
    let mut delivered = Received {
        count: 0,
        last: None,
    };
    for task in subscriber_tasks {
        let (received, conn) = task.await.context("subscriber task")?;
        let received = received.context("subscriber")?;
        delivered.count += received.count;
        delivered.last = delivered.last.max(received.last);
        conns.push(conn);
    }

    let expected = match params.shape {
        Shape::FanIn => totals.sent,
        Shape::FanOut => totals.sent * subscribers as u64,
    };
    let published_per_s = rate(totals.sent, totals.finished - start);
    let delivered_per_s = rate(
        delivered.count,
        delivered.last.map_or(Duration::ZERO, |l| l - start),
    );
    let mut record = Record::new(&case, &target.label);
    record
        .number("qos", f64::from(params.qos))
        .number("publishers", publishers as f64)
        .number("subscribers", subscribers as f64)
        .number("payload_bytes", params.payload as f64)
        .number("published", totals.sent as f64)
        .number("delivered", delivered.count as f64)
        .number("published_per_s", published_per_s)
        .number("delivered_per_s", delivered_per_s)
        .number(
            "delivery_ratio",
            if expected > 0 {
                delivered.count as f64 / expected as f64
            } else {
                0.0
            },
        );
    if params.qos > 0 {
        record.number("acked_per_s", rate(totals.acked, totals.finished - start));
    }
    // The discard server delivers nothing; then the broker's work is per message taken.
    let units = if delivered.count > 0 {
        delivered.count
    } else {
        totals.sent
    };
    add_cpu(&mut record, target, "cpu_us_per_msg", before, units)?;
    add_load_cores(&mut record, target, load_before, load_after);
    for conn in conns {
        conn.disconnect().await;
    }

    let mut summary = format!(
        "{case} [{}]: published {published_per_s:.0} msg/s, delivered {delivered_per_s:.0} msg/s ({} of {expected})",
        target.label, delivered.count
    );
    if params.qos > 0 {
        summary += &format!(
            ", acked {:.0} msg/s",
            rate(totals.acked, totals.finished - start)
        );
    }
    if let Some(crate::record::Value::Number(cpu)) = record.get("cpu_us_per_msg") {
        summary += &format!(", broker CPU {cpu:.2} us/msg");
    }
    Ok(Outcome { record, summary })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_in_subscribers_split_the_publishers_between_them() {
        assert_eq!(filters(Shape::FanIn, 0, 1, 64), ["bench/+"]);
        assert_eq!(filters(Shape::FanOut, 3, 16, 1), ["bench/fanout"]);
        assert_eq!(
            filters(Shape::FanIn, 1, 3, 8),
            ["bench/1", "bench/4", "bench/7"]
        );
        let mut all: Vec<String> = (0..3)
            .flat_map(|j| filters(Shape::FanIn, j, 3, 8))
            .collect();
        all.sort();
        assert_eq!(all.len(), 8);
        all.dedup();
        assert_eq!(
            all.len(),
            8,
            "each publisher's topic goes to exactly one subscriber"
        );
    }
}
