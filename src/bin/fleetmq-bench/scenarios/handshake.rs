//! TLS handshakes: how many clients per second the broker takes through the TLS
//! handshake and MQTT CONNECT/CONNACK, with full handshakes or resumed sessions.
//!
//! Each worker connects, waits for CONNACK and disconnects, over and over. With
//! `resume`, the client keeps the session tickets the broker sends, so every handshake
//! after a worker's first resumes (the record says how many did); without, every one is
//! a full handshake (certificate, signature, key exchange).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    pub concurrency: usize,
    pub resume: bool,
    /// No new connection is started after this.
    pub duration: Duration,
}

pub async fn run(target: &Target, params: &Params) -> anyhow::Result<Outcome> {
    let case = if params.resume {
        "tls-handshake-resumed"
    } else {
        "tls-handshake-full"
    };
    let before = target.sample()?;
    let next = Arc::new(AtomicUsize::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let options = ConnectOptions {
        keep_alive_secs: 0,
        clean_session: true,
    };
    let start = Instant::now();
    let until = start + params.duration;
    let workers: Vec<_> = (0..params.concurrency.clamp(1, params.connections.max(1)))
        .map(|_| {
            let (next, resumed, target) = (next.clone(), resumed.clone(), target.clone());
            let total = params.connections;
            tokio::spawn(async move {
                let mut done = 0u64;
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total || Instant::now() >= until {
                        return (done, None);
                    }
                    let id = target.client_id("tls", index);
                    match Conn::connect_resumed(&target.dial, &id, options).await {
                        Ok((conn, was_resumed)) => {
                            if was_resumed {
                                resumed.fetch_add(1, Ordering::Relaxed);
                            }
                            conn.disconnect().await;
                            done += 1;
                        }
                        Err(error) => return (done, Some(error)),
                    }
                }
            })
        })
        .collect();
    let mut connected = 0;
    let mut first_error = None;
    for worker in workers {
        let (done, error) = worker.await.context("handshake worker")?;
        connected += done;
        first_error = first_error.or(error);
    }
    let elapsed = start.elapsed();
    let resumed = resumed.load(Ordering::Relaxed);

    let mut record = Record::new(case, &target.label);
    record
        .number("connections", params.connections as f64)
        .number("connected", connected as f64)
        .number("connect_per_s", rate(connected, elapsed))
        .number(
            "resumed_ratio",
            if connected > 0 {
                resumed as f64 / connected as f64
            } else {
                0.0
            },
        );
    add_cpu(&mut record, target, "cpu_us_per_conn", before, connected)?;
    if let Some(error) = &first_error {
        record.text("error", &format!("{error:#}"));
    }
    let mut summary = format!(
        "{case} [{}]: {connected} of {} connections in {:.2} s ({:.0}/s), {resumed} resumed",
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
