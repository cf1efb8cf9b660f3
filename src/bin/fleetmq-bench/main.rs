//! `fleetmq-bench`: the load generator for comparing MQTT brokers.
//!
//! Each scenario connects raw MQTT 3.1.1 clients to one broker, runs for a bounded time
//! and prints one JSON line on stdout (for `report` and scripts) and one line for
//! humans on stderr. `discard-server` is a sink that shows the generator's ceiling;
//! `report` turns JSON lines of repeated runs into medians and ratios.
//! `bench/run.sh` drives A/B comparisons; BENCHMARKS.md explains the figures.

mod conn;
mod discard;
mod record;
mod report;
mod scenarios;
mod stats;
mod wire;

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::record::Record;
use crate::scenarios::{
    handshake, idle, latency, persist, retained, storm, throughput, Outcome, Target,
};
use crate::stats::ProcProbe;

#[derive(Parser)]
#[command(name = "fleetmq-bench", about = "MQTT broker load generator")]
struct Cli {
    /// Runtime worker threads (default: the CPUs this process may run on).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    addr: SocketAddr,
    /// Where the subscribers connect, when not to `--addr`: another node of a cluster,
    /// or the remote broker of a bridge (with publishers on the local one).
    #[arg(long, alias = "sub-addr")]
    subscriber_addr: Option<SocketAddr>,
    /// Broker process id: enables broker CPU and memory figures (read from /proc).
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Name of the broker in the results.
    #[arg(long, default_value = "broker")]
    label: String,
    /// Kernel clock ticks per second (`getconf CLK_TCK`), the unit of /proc/PID/stat.
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
    /// Connect with TLS (server name `localhost`), trusting the CA certificates in this
    /// PEM file.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// With `--tls-ca`: offer TLS 1.2 only (its suites in rustls's order, AES-256-GCM
    /// first), as older embedded clients do; the scenario's name then has `-tls12`.
    #[arg(long, requires = "tls_ca")]
    tls12: bool,
    /// Connections come from 127.0.0.1 .. 127.0.0.N in turn (1: the kernel chooses).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=250))]
    sources: u8,
}

#[derive(Args, Clone)]
struct Flow {
    /// QoS of publishes and subscriptions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Seconds publishers run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Upper bound of messages per publisher.
    #[arg(long, default_value_t = 10_000_000)]
    messages: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Unacknowledged QoS 1/2 messages per publisher.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Subscribers stop after this many ms without messages once publishers are done.
    #[arg(long, default_value_t = 2000)]
    drain_idle_ms: u64,
    /// Subscribers stop at the latest this many ms after the publishers' deadline
    /// (default: 10 s for outstanding acknowledgements plus --drain-idle-ms).
    #[arg(long)]
    drain_max_ms: Option<u64>,
}

#[derive(Subcommand)]
enum Command {
    /// Many publishers to bench/{i}, one subscriber on bench/+ (or several that split
    /// the topics between them).
    Fanin {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        flow: Flow,
        #[arg(long, default_value_t = 8)]
        publishers: usize,
        /// Subscribers; with more than one, subscriber j takes the topics bench/{i}
        /// with i % subscribers == j, so each message is still delivered once.
        #[arg(long, default_value_t = 1)]
        subscribers: usize,
    },
    /// One publisher, many subscribers on one topic.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        flow: Flow,
        #[arg(long, default_value_t = 16)]
        subscribers: usize,
    },
    /// End-to-end latency percentiles at a fixed QoS 1 rate.
    Latency {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 5000)]
        rate: u64,
        /// Measured seconds (after the warm-up).
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        #[arg(long, default_value_t = 32)]
        window: usize,
    },
    /// Open many idle connections: connect rate and broker memory per connection.
    Idle {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// CONNECT keep alive; 0 means none.
        #[arg(long, default_value_t = 0)]
        keep_alive: u16,
        /// Seconds after which no new connection is started.
        #[arg(long, default_value_t = 60.0)]
        duration: f64,
        /// Each connection subscribes to a topic of its own (`idle/<client id>`, QoS 1),
        /// as a device listening for its commands does.
        #[arg(long)]
        subscribe: bool,
        /// Seconds the connections stay open after the measurement.
        #[arg(long, default_value_t = 0.0)]
        hold: f64,
        /// Seconds the connections stay idle, once all are connected, before the
        /// broker's memory is measured (resident memory right after connecting is
        /// reported too): a broker may shrink idle connections after a while.
        #[arg(long, default_value_t = 0.0)]
        settle: f64,
    },
    /// A reconnect storm: many clients connecting at once (retrying when refused) while
    /// a connected client measures PINGREQ round trips; admitted rate and peak memory.
    Storm {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Connection attempts in progress at once (default: all of them).
        #[arg(long)]
        concurrency: Option<usize>,
        #[arg(long, default_value_t = 60)]
        keep_alive: u16,
        /// Seconds after which no attempt is started.
        #[arg(long, default_value_t = 120.0)]
        duration: f64,
    },
    /// TLS handshakes: connect (TLS and MQTT CONNECT/CONNACK) and disconnect, over and
    /// over; full handshakes, or resumed ones with `--resume`. Needs `--tls-ca`.
    TlsHandshake {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 2_000)]
        connections: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Resume TLS sessions (tickets) after each worker's first handshake.
        #[arg(long)]
        resume: bool,
        /// Seconds after which no new connection is started.
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
    },
    /// QoS 1 (or 2) publishers to a persistent (clean session = false) subscriber at the
    /// same QoS: acknowledged msg/s and PUBACK (PUBREC) latency.
    Persist {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 8)]
        publishers: usize,
        /// Seconds publishers run.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Upper bound of messages per publisher.
        #[arg(long, default_value_t = 10_000_000)]
        messages: u64,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Unacknowledged messages per publisher (1: each waits for its PUBACK).
        #[arg(long, default_value_t = 1)]
        window: usize,
        #[arg(long, default_value_t = 2000)]
        drain_idle_ms: u64,
        /// QoS of the publishes and the subscription (1 or 2).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
        qos: u8,
        /// Publishers keep sessions (clean session = false), as QoS 2 devices do.
        #[arg(long)]
        persistent_publishers: bool,
    },
    /// Store many retained topics, then time a wildcard subscriber receiving them.
    Retained {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 100_000)]
        topics: u64,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        #[arg(long, default_value_t = 32)]
        window: usize,
        /// Bound of each phase in seconds.
        #[arg(long, default_value_t = 60.0)]
        duration: f64,
        #[arg(long, default_value_t = 2000)]
        drain_idle_ms: u64,
    },
    /// A sink that answers the handshakes and acknowledgements and drops messages.
    DiscardServer {
        #[arg(long, default_value = "127.0.0.1:1883")]
        bind: SocketAddr,
        /// Seconds before it stops by itself.
        #[arg(long, default_value_t = 3600.0)]
        max_seconds: f64,
    },
    /// Medians and ratios from JSON lines (files, or stdin when none).
    Report {
        files: Vec<PathBuf>,
        /// The broker whose figures are divided (the numerator of the ratio).
        #[arg(long, default_value = "fleetmq")]
        a: String,
        /// The reference broker (the denominator).
        #[arg(long, default_value = "mosquitto")]
        b: String,
        /// More ratio columns, "A/B" (repeatable); the first is always a/b.
        #[arg(long = "ratio", value_name = "A/B")]
        ratios: Vec<String>,
        /// Only these scenarios (space or comma separated case names, e.g. "persist-q1").
        #[arg(long, default_value = "")]
        cases: String,
        /// Leave these scenarios out.
        #[arg(long, default_value = "")]
        skip_cases: String,
        /// Print a markdown table instead of text.
        #[arg(long)]
        markdown: bool,
    },
}

fn seconds(value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| format!("invalid duration {value}"))
}

fn target(common: &Common) -> anyhow::Result<Target> {
    target_with(common, true)
}

fn target_with(common: &Common, resume: bool) -> anyhow::Result<Target> {
    let tls = common
        .tls_ca
        .as_deref()
        .map(|ca| conn::tls_connector(ca, resume, common.tls12))
        .transpose()?;
    Ok(Target {
        dial: std::sync::Arc::new(conn::Dial::new(common.addr, tls.clone(), common.sources)),
        subscriber_dial: std::sync::Arc::new(conn::Dial::new(
            common.subscriber_addr.unwrap_or(common.addr),
            tls,
            common.sources,
        )),
        label: common.label.clone(),
        tls_name: if common.tls12 { "tls12" } else { "tls" },
        probe: ProcProbe::new(common.broker_pid, common.clk_tck),
        own: ProcProbe::new(Some(std::process::id()), common.clk_tck),
        run_id: format!("{}-{}", std::process::id(), unique_suffix()),
    })
}

/// Differs between runs started within the same process id (rare, but possible).
fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() % 1_000_000)
}

fn flow_params(
    flow: &Flow,
    shape: throughput::Shape,
    publishers: usize,
    subscribers: usize,
) -> anyhow::Result<throughput::Params> {
    Ok(throughput::Params {
        shape,
        qos: flow.qos,
        publishers,
        subscribers,
        duration: seconds(flow.duration)?,
        messages: flow.messages,
        payload: flow.payload,
        window: flow.window,
        drain_idle: Duration::from_millis(flow.drain_idle_ms),
        drain_max: flow.drain_max_ms.map(Duration::from_millis),
    })
}

async fn run_scenario(command: Command) -> anyhow::Result<Option<Outcome>> {
    let outcome = match command {
        Command::Fanin {
            common,
            flow,
            publishers,
            subscribers,
        } => {
            let params = flow_params(&flow, throughput::Shape::FanIn, publishers, subscribers)?;
            throughput::run(&target(&common)?, &params).await?
        }
        Command::Fanout {
            common,
            flow,
            subscribers,
        } => {
            let params = flow_params(&flow, throughput::Shape::FanOut, 1, subscribers)?;
            throughput::run(&target(&common)?, &params).await?
        }
        Command::Latency {
            common,
            rate,
            duration,
            warmup,
            payload,
            window,
        } => {
            let params = latency::Params {
                rate,
                duration: seconds(duration)?,
                warmup: seconds(warmup)?,
                payload,
                window,
            };
            latency::run(&target(&common)?, &params).await?
        }
        Command::Idle {
            common,
            connections,
            concurrency,
            keep_alive,
            duration,
            subscribe,
            hold,
            settle,
        } => {
            let params = idle::Params {
                connections,
                concurrency,
                keep_alive_secs: keep_alive,
                duration: seconds(duration)?,
                subscribe,
                hold: seconds(hold)?,
                settle: seconds(settle)?,
            };
            idle::run(&target(&common)?, &params).await?
        }
        Command::Storm {
            common,
            connections,
            concurrency,
            keep_alive,
            duration,
        } => {
            let params = storm::Params {
                connections,
                concurrency: concurrency.unwrap_or(connections),
                keep_alive_secs: keep_alive,
                duration: seconds(duration)?,
            };
            storm::run(&target(&common)?, &params).await?
        }
        Command::TlsHandshake {
            common,
            connections,
            concurrency,
            resume,
            duration,
        } => {
            anyhow::ensure!(common.tls_ca.is_some(), "tls-handshake needs --tls-ca");
            let params = handshake::Params {
                connections,
                concurrency,
                resume,
                duration: seconds(duration)?,
            };
            handshake::run(&target_with(&common, resume)?, &params).await?
        }
        Command::Persist {
            common,
            publishers,
            duration,
            messages,
            payload,
            window,
            drain_idle_ms,
            qos,
            persistent_publishers,
        } => {
            let params = persist::Params {
                publishers,
                duration: seconds(duration)?,
                messages,
                payload,
                window,
                qos,
                persistent_publishers,
                drain_idle: Duration::from_millis(drain_idle_ms),
            };
            persist::run(&target(&common)?, &params).await?
        }
        Command::Retained {
            common,
            topics,
            payload,
            window,
            duration,
            drain_idle_ms,
        } => {
            let params = retained::Params {
                topics,
                payload,
                window,
                duration: seconds(duration)?,
                drain_idle: Duration::from_millis(drain_idle_ms),
            };
            retained::run(&target(&common)?, &params).await?
        }
        Command::DiscardServer { bind, max_seconds } => {
            discard::serve(bind, seconds(max_seconds)?).await?;
            return Ok(None);
        }
        Command::Report {
            files,
            a,
            b,
            ratios,
            cases,
            skip_cases,
            markdown,
        } => {
            let mut pairs = vec![(a, b)];
            for text in &ratios {
                pairs.push(
                    report::parse_pair(text)
                        .with_context(|| format!("--ratio {text:?}: expected A/B"))?,
                );
            }
            let filter = report::CaseFilter {
                only: words(&cases),
                skip: words(&skip_cases),
            };
            report(&files, &pairs, &filter, markdown)?;
            return Ok(None);
        }
    };
    Ok(Some(outcome))
}

fn words(list: &str) -> Vec<String> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

fn report(
    files: &[PathBuf],
    pairs: &[report::Pair],
    filter: &report::CaseFilter,
    markdown: bool,
) -> anyhow::Result<()> {
    let mut lines = Vec::new();
    if files.is_empty() {
        for line in std::io::stdin().lock().lines() {
            lines.push(line?);
        }
    }
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        lines.extend(text.lines().map(str::to_owned));
    }
    let records: Vec<Record> = lines
        .iter()
        .filter_map(|line| Record::parse(line))
        .collect();
    let skipped = lines.iter().filter(|l| !l.trim().is_empty()).count() - records.len();
    if skipped > 0 {
        eprintln!("report: skipped {skipped} lines that are not result records");
    }
    let brokers = report::brokers_of(&records, pairs, filter);
    let rows = report::rows(&records, &brokers, pairs, filter);
    let out = if markdown {
        report::render_markdown(&rows, &brokers, pairs)
    } else {
        report::render_text(&rows, &brokers, pairs)
    };
    print!("{out}");
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line with the causes, no backtrace: the usual failure is a broker
            // that closed or refused the connection.
            eprintln!("fleetmq-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let threads = cli
        .threads
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    if let Some(outcome) = runtime.block_on(run_scenario(cli.command))? {
        eprintln!("{}", outcome.summary);
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", outcome.record.to_json())?;
    }
    Ok(())
}
