//! A reconnect storm: many devices connecting at once, as after a broker restart or a
//! network blip, while one client that is already connected measures its round trips.
//!
//! `concurrency` connection attempts run at a time (all devices at once by default); a
//! device the broker refuses or drops before CONNACK (a connection rate limit closes the
//! socket right after accept) tries again after a back-off of 100 ms to 1 s, spread per
//! device, until it is connected or the deadline passes. The broker's resident memory is
//! sampled every 20 ms: the peak against the figure once everyone is connected shows
//! whether admitting the storm costs more memory than the connections themselves. The
//! connected client sends PINGREQ every 10 ms; its round-trip percentiles are the
//! latency a connected client sees during the storm.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use super::{add_cpu, Outcome, Target};
use crate::conn::{Conn, ConnectOptions};
use crate::record::Record;
use crate::stats::{rate, summarize};

#[derive(Debug, Clone)]
pub struct Params {
    pub connections: usize,
    /// Connection attempts in progress at once.
    pub concurrency: usize,
    pub keep_alive_secs: u16,
    /// No attempt is started after this.
    pub duration: Duration,
}

const RSS_SAMPLE: Duration = Duration::from_millis(20);
const PROBE_INTERVAL: Duration = Duration::from_millis(10);

pub async fn run(target: &Target, params: &Params) -> anyhow::Result<Outcome> {
    let case = &target.case("storm");
    let options = ConnectOptions {
        keep_alive_secs: params.keep_alive_secs,
        clean_session: true,
    };
    let mut probe = Conn::connect(&target.dial, &target.client_id("probe", 0), options)
        .await
        .context("connecting the probe client")?;
    let before = target.sample()?;
    let stop = Arc::new(AtomicBool::new(false));

    let sampler = {
        let (stop, probe) = (stop.clone(), target.probe);
        tokio::spawn(async move {
            let mut peak_kib = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Some(sample)) = probe.sample() {
                    peak_kib = peak_kib.max(sample.rss_kib);
                }
                tokio::time::sleep(RSS_SAMPLE).await;
            }
            peak_kib
        })
    };
    let pinger = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut round_trips = Vec::new();
            let mut error = None;
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                match probe.ping().await {
                    Ok(()) => round_trips.push(sent.elapsed().as_micros() as u64),
                    Err(failed) => {
                        error = Some(failed);
                        break;
                    }
                }
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
            (round_trips, error)
        })
    };

    let next = Arc::new(AtomicUsize::new(0));
    let attempts = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + params.duration;
    let workers: Vec<_> = (0..params.concurrency.clamp(1, params.connections.max(1)))
        .map(|_| {
            let (next, attempts, target) = (next.clone(), attempts.clone(), target.clone());
            let total = params.connections;
            tokio::spawn(async move {
                let mut conns = Vec::new();
                let mut last_error = None;
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total {
                        return (conns, last_error);
                    }
                    let id = target.client_id("storm", index);
                    for attempt in 0u64.. {
                        if Instant::now() >= until {
                            return (conns, last_error);
                        }
                        attempts.fetch_add(1, Ordering::Relaxed);
                        match Conn::connect(&target.dial, &id, options).await {
                            Ok(conn) => {
                                conns.push(conn);
                                break;
                            }
                            Err(error) => {
                                last_error = Some(error);
                                // 100 ms to 1 s, different per device and attempt.
                                let spread = (index as u64 * 7_919 + attempt * 104_729) % 900;
                                tokio::time::sleep(Duration::from_millis(100 + spread)).await;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let mut conns = Vec::with_capacity(params.connections);
    let mut last_error = None;
    for worker in workers {
        let (mut opened, error) = worker.await.context("storm worker")?;
        conns.append(&mut opened);
        last_error = error.or(last_error);
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let peak_kib = sampler.await.context("memory sampler")?;
    let (round_trips, probe_error) = pinger.await.context("probe client")?;
    let after = target.probe.sample()?;
    let connected = conns.len() as u64;
    let attempts = attempts.load(Ordering::Relaxed);

    let mut record = Record::new(case, &target.label);
    record
        .number("connections", params.connections as f64)
        .number("connected", connected as f64)
        .number("attempts", attempts as f64)
        .number("admitted_per_s", rate(connected, elapsed))
        .number("all_connected_ms", elapsed.as_secs_f64() * 1000.0);
    let mut memory = String::new();
    if let (Some(before), Some(after)) = (before.broker, after) {
        let per_conn =
            |kib: u64| (kib.saturating_sub(before.rss_kib) * 1024) as f64 / connected.max(1) as f64;
        let peak_kib = peak_kib.max(after.rss_kib);
        record
            .number("rss_before_kib", before.rss_kib as f64)
            .number("rss_peak_kib", peak_kib as f64)
            .number("rss_after_kib", after.rss_kib as f64)
            .number("bytes_per_conn", per_conn(after.rss_kib))
            .number("peak_bytes_per_conn", per_conn(peak_kib));
        memory = format!(
            ", broker RSS {} -> peak {} -> {} KiB",
            before.rss_kib, peak_kib, after.rss_kib
        );
    }
    let mut probe_text = String::new();
    if let Some(trips) = summarize(round_trips) {
        record
            .number("probe_p50_us", trips.p50 as f64)
            .number("probe_p99_us", trips.p99 as f64)
            .number("probe_max_us", trips.max as f64);
        probe_text = format!(
            ", connected client's PINGREQ p50 {} µs p99 {} µs",
            trips.p50, trips.p99
        );
    }
    add_cpu(&mut record, target, "cpu_us_per_conn", before, connected)?;
    if let Some(error) = &probe_error {
        record.text("error", &format!("probe: {error:#}"));
    } else if connected < params.connections as u64 {
        if let Some(error) = &last_error {
            record.text("error", &format!("{error:#}"));
        }
    }
    drop(conns);
    let summary = format!(
        "{case} [{}]: {connected} of {} connected in {:.2} s after {attempts} attempts ({:.0}/s){memory}{probe_text}",
        target.label,
        params.connections,
        elapsed.as_secs_f64(),
        rate(connected, elapsed)
    );
    Ok(Outcome { record, summary })
}
