//! Idle connections: how fast the broker accepts CONNECTs and how much memory each
//! open connection costs it (resident set before and after, per connection), over
//! TCP or TLS, only connected or also subscribed to a topic of its own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use super::{add_cpu, Outcome, Target};
use crate::conn::{Conn, ConnectOptions};
use crate::record::Record;
use crate::stats::rate;

#[derive(Debug, Clone)]
pub struct Params {
    pub connections: usize,
    /// Connections being set up at once.
    pub concurrency: usize,
    /// 0 disables keep alive, so idle clients need no PINGREQ however long they stay.
    pub keep_alive_secs: u16,
    /// No new connection is started after this.
    pub duration: Duration,
    /// Each connection subscribes to `idle/<client id>` at QoS 1.
    pub subscribe: bool,
    /// How long the connections stay open after the measurement (for a heap profile of
    /// the broker meanwhile).
    pub hold: Duration,
    /// How long the connections stay idle, once all are connected, before the broker's
    /// resident memory is sampled for the figure (it is also sampled right after the
    /// last connection, as `rss_connected_kib`).
    pub settle: Duration,
}

pub async fn run(target: &Target, params: &Params) -> anyhow::Result<Outcome> {
    // `idle` is a device as fleets have them (subscribed to its own topic, keep alive);
    // `idle-bare` only connected.
    let case = &target.case(if params.subscribe {
        "idle"
    } else {
        "idle-bare"
    });
    let before = target.sample()?;
    let next = Arc::new(AtomicUsize::new(0));
    let options = ConnectOptions {
        keep_alive_secs: params.keep_alive_secs,
        clean_session: true,
    };
    let start = Instant::now();
    let until = start + params.duration;
    let workers: Vec<_> = (0..params.concurrency.clamp(1, params.connections.max(1)))
        .map(|_| {
            let (next, target, total) = (Arc::clone(&next), target.clone(), params.connections);
            let subscribe = params.subscribe;
            tokio::spawn(async move {
                let mut conns = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total || Instant::now() >= until {
                        return (conns, None);
                    }
                    let id = target.client_id("idle", index);
                    let opened = async {
                        let mut conn = Conn::connect(&target.dial, &id, options).await?;
                        if subscribe {
                            conn.subscribe(&[&format!("idle/{id}")], 1).await?;
                        }
                        anyhow::Ok(conn)
                    };
                    match opened.await {
                        Ok(conn) => conns.push(conn),
                        Err(error) => return (conns, Some(error)),
                    }
                }
            })
        })
        .collect();
    let mut conns = Vec::with_capacity(params.connections);
    let mut first_error = None;
    for worker in workers {
        let (mut opened, error) = worker.await.context("connect worker")?;
        conns.append(&mut opened);
        first_error = first_error.or(error);
    }
    let elapsed = start.elapsed();
    let connected = conns.len() as u64;
    let just_connected = target.probe.sample()?;
    let after = if params.settle.is_zero() {
        just_connected
    } else {
        tokio::time::sleep(params.settle).await;
        target.probe.sample()?
    };

    let mut record = Record::new(case, &target.label);
    record
        .number("connections", params.connections as f64)
        .number("connected", connected as f64)
        .number("keep_alive_s", f64::from(params.keep_alive_secs))
        .number("subscribed", if params.subscribe { 1.0 } else { 0.0 })
        .number("connect_per_s", rate(connected, elapsed));
    let mut memory = String::new();
    if let (Some(before), Some(after)) = (before.broker, after) {
        let grown_bytes = after.rss_kib.saturating_sub(before.rss_kib) * 1024;
        let per_conn = if connected > 0 {
            grown_bytes as f64 / connected as f64
        } else {
            0.0
        };
        record
            .number("rss_before_kib", before.rss_kib as f64)
            .number("rss_after_kib", after.rss_kib as f64)
            .number("bytes_per_conn", per_conn)
            .number("settle_s", params.settle.as_secs_f64());
        if let Some(connected_sample) = just_connected {
            record.number("rss_connected_kib", connected_sample.rss_kib as f64);
            if connected > 0 {
                let grown = connected_sample.rss_kib.saturating_sub(before.rss_kib) * 1024;
                record.number("bytes_per_conn_connected", grown as f64 / connected as f64);
            }
        }
        memory = format!(
            ", broker RSS {} -> {} KiB ({per_conn:.0} bytes/connection)",
            before.rss_kib, after.rss_kib
        );
    }
    add_cpu(&mut record, target, "cpu_us_per_conn", before, connected)?;
    if let Some(error) = &first_error {
        record.text("error", &format!("{error:#}"));
    }
    tokio::time::sleep(params.hold).await;
    // Closing ten thousand sockets is the broker's work, not part of the figures.
    drop(conns);

    let mut summary = format!(
        "{case} [{}]: {connected} of {} connections in {:.2} s ({:.0}/s){memory}",
        target.label,
        params.connections,
        elapsed.as_secs_f64(),
        rate(connected, elapsed)
    );
    if let Some(error) = first_error {
        summary += &format!("; stopped by: {error:#}");
    }
    Ok(Outcome { record, summary })
}
