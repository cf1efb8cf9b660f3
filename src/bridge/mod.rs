//! Bridges: connections from this broker to remote brokers that forward topics out
//! (local to remote), in (remote to local) or both ways, configured in `[[bridges]]`.
//!
//! Each bridge is one task that keeps two MQTT links up: one to the remote broker
//! (`dial::dial_remote`, TCP or TLS, addresses in order or round robin, reconnecting
//! with jittered exponential backoff) and one, in-process, to this broker
//! (`dial::dial_local`), where the bridge is the persistent session `$bridge/<name>`.
//! That session's queue is the bridge's outbox: the router stores each matching QoS 1/2
//! message for it in the publisher's own durable write, before the publisher is
//! acknowledged, and the store removes it only when the relay (`forward`) passes the
//! remote's PUBACK / PUBCOMP back. The outbox's bounds and policy are the session's
//! limits (`outbox_limits`); it never makes publishers wait (`OutboxMode`).
//!
//! When either link fails, both are closed: the local session goes offline and keeps
//! queueing, and after the next connect each side resends what it had in flight.
//!
//! `attempt` makes one connection (both links, subscriptions) and runs the relay until
//! it ends; `supervise` here repeats attempts with backoff. `Bridges` owns the tasks: it starts them, applies changed settings on reload
//! (restarting only the changed bridges' links; the outbox stays in the store), and
//! gives operators a status snapshot.

mod attempt;
mod dial;
mod forward;
mod link;
mod status;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::broker::{lock, log_throttle, Broker};
use crate::config::{BridgeConfig, Config, WhenFull};
use crate::session::{OutboxDrops, OutboxMode, SessionLimits};

use attempt::{prime_local, Attempt};

pub use forward::{Rules, Stop};
pub use link::{Link, LinkError};
pub use status::{BridgeStats, BridgeStatus, DroppedCounts};

/// Client ids of bridges' local sessions start with this; clients may not use it.
pub const LOCAL_SESSION_PREFIX: &str = "$bridge/";

fn new_stats(config: &BridgeConfig) -> Arc<BridgeStats> {
    Arc::new(BridgeStats {
        name: config.name.clone(),
        local_client_id: local_client_id(&config.name),
        ..BridgeStats::default()
    })
}

/// Gives the bridge's local session its outbox limits and its counters to metrics.
fn register_outbox(broker: &Broker, config: &BridgeConfig, stats: &Arc<BridgeStats>) {
    broker.set_outbox_limits(
        &stats.local_client_id,
        outbox_limits(broker.client_limits(), config, stats.outbox_drops.clone()),
    );
    broker.add_bridge_stats(stats.clone());
}

/// Resolves once `signal` is true (shutdown, bridge removed) or its sender is gone.
/// Holds no borrow of the value, so the futures that wait on it stay `Send`.
pub(crate) async fn signalled(signal: &mut watch::Receiver<bool>) {
    let _ = signal.wait_for(|set| *set).await;
}

/// The local session (outbox) of bridge `name`.
pub fn local_client_id(name: &str) -> String {
    format!("{LOCAL_SESSION_PREFIX}{name}")
}

/// The limits of a bridge's local session: the outbox bounds and policy of `config`,
/// the client limits for the rest.
fn outbox_limits(
    base: SessionLimits,
    config: &BridgeConfig,
    drops: Arc<OutboxDrops>,
) -> SessionLimits {
    SessionLimits {
        max_inflight: config.outbox.max_inflight,
        max_queued_messages: config.outbox.max_messages,
        max_queued_bytes: config.outbox.max_bytes,
        outbox: Some(OutboxMode {
            drop_oldest: config.outbox.when_full == WhenFull::DropOldest,
            drops,
        }),
        ..base
    }
}

/// One bridge's task and what it shares with it.
struct Running {
    config: Arc<Mutex<Arc<BridgeConfig>>>,
    stats: Arc<BridgeStats>,
    restart: Arc<Notify>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Every configured bridge.
pub struct Bridges {
    broker: Arc<Broker>,
    running: Mutex<Vec<Running>>,
}

impl Bridges {
    /// Registers the outbox limits of every bridge's local session. Call before the
    /// broker restores its state, so restored outboxes get them from the start.
    pub fn prepare(broker: &Broker, config: &Config) -> HashMap<String, Arc<BridgeStats>> {
        let mut stats = HashMap::new();
        for bridge in &config.bridges {
            let bridge_stats = new_stats(bridge);
            broker.set_outbox_limits(
                &bridge_stats.local_client_id,
                outbox_limits(
                    broker.client_limits(),
                    bridge,
                    bridge_stats.outbox_drops.clone(),
                ),
            );
            stats.insert(bridge.name.clone(), bridge_stats);
        }
        stats
    }

    /// Subscribes each bridge's local session (so its outbox collects from now on, even
    /// before the remote is first reached) and starts a task per bridge. `prepared`
    /// comes from `prepare`. Call before the listeners accept clients.
    pub async fn start(
        broker: Arc<Broker>,
        config: &Config,
        mut prepared: HashMap<String, Arc<BridgeStats>>,
    ) -> Arc<Bridges> {
        let bridges = Arc::new(Bridges {
            broker: broker.clone(),
            running: Mutex::new(Vec::new()),
        });
        for bridge in &config.bridges {
            let stats = prepared
                .remove(&bridge.name)
                .unwrap_or_else(|| new_stats(bridge));
            register_outbox(&broker, bridge, &stats);
            if let Err(error) = prime_local(&broker, bridge).await {
                tracing::warn!(bridge = %bridge.name, %error, "cannot subscribe the bridge's local session");
            }
            bridges.launch(bridge.clone(), stats, true);
        }
        bridges
    }

    /// Starts the task of one bridge; `primed`: its local session is subscribed already.
    fn launch(&self, config: BridgeConfig, stats: Arc<BridgeStats>, primed: bool) {
        register_outbox(&self.broker, &config, &stats);
        let shared_config = Arc::new(Mutex::new(Arc::new(config)));
        let restart = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(report_drops(
            self.broker.clone(),
            stats.clone(),
            stopped.clone(),
        ));
        let task = tokio::spawn(supervise(
            self.broker.clone(),
            shared_config.clone(),
            stats.clone(),
            restart.clone(),
            stopped,
            primed,
        ));
        lock(&self.running).push(Running {
            config: shared_config,
            stats,
            restart,
            stop,
            task,
        });
    }

    /// The state of every bridge now.
    pub fn status(&self) -> Vec<BridgeStatus> {
        lock(&self.running)
            .iter()
            .map(|running| running.stats.status(&self.broker))
            .collect()
    }

    /// Applies the bridges of a reloaded configuration: a changed bridge reconnects
    /// with its new settings, a removed one stops, a new one starts. Outboxes stay.
    pub fn reload(&self, config: &Config) {
        let mut running = lock(&self.running);
        let mut kept = Vec::new();
        for current in running.drain(..) {
            let name = current.stats.name.clone();
            match config.bridges.iter().find(|bridge| bridge.name == name) {
                Some(new) => {
                    let changed = **lock(&current.config) != *new;
                    if changed {
                        tracing::info!(bridge = %name, "bridge settings changed; reconnecting");
                        self.broker.set_outbox_limits(
                            &current.stats.local_client_id,
                            outbox_limits(
                                self.broker.client_limits(),
                                new,
                                current.stats.outbox_drops.clone(),
                            ),
                        );
                        *lock(&current.config) = Arc::new(new.clone());
                        current.restart.notify_one();
                    }
                    kept.push(current);
                }
                None => {
                    tracing::info!(bridge = %name, "bridge removed; its outbox stays stored");
                    current.stop.send_replace(true);
                    self.broker.remove_bridge_stats(&name);
                }
            }
        }
        *running = kept;
        let new: Vec<BridgeConfig> = config
            .bridges
            .iter()
            .filter(|bridge| !running.iter().any(|r| r.stats.name == bridge.name))
            .cloned()
            .collect();
        drop(running);
        for bridge in new {
            tracing::info!(bridge = %bridge.name, "bridge added");
            // Subscribed by its task: a reload does not wait for it.
            self.launch(bridge.clone(), new_stats(&bridge), false);
        }
    }

    /// Waits for every bridge task to end (after the broker began shutting down), so
    /// that their local sessions have recorded their disconnects before the store's
    /// last flush.
    pub async fn stopped(&self) {
        let tasks: Vec<JoinHandle<()>> = lock(&self.running)
            .drain(..)
            .map(|running| running.task)
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl crate::reload::Reloadable for Bridges {
    fn name(&self) -> &str {
        "bridges"
    }

    fn keys(&self) -> &[&str] {
        &["bridges"]
    }

    fn reload(&self, config: &Config) -> anyhow::Result<()> {
        Bridges::reload(self, config);
        Ok(())
    }
}

/// Logs a bridge's drops at most once per `LOG_INTERVAL`, with the counts by reason
/// since the last line (the counters themselves are exact).
async fn report_drops(
    broker: Arc<Broker>,
    stats: Arc<BridgeStats>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut shutdown = broker.shutdown_signal();
    let mut ticks = tokio::time::interval(log_throttle::LOG_INTERVAL);
    let mut before = stats.status(&broker).dropped;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = signalled(&mut shutdown) => return,
            _ = signalled(&mut stopped) => return,
        }
        let now = stats.status(&broker).dropped;
        let increases: Vec<String> = now
            .by_reason()
            .iter()
            .zip(before.by_reason())
            .filter(|((_, count), (_, earlier))| count > earlier)
            .map(|((reason, count), (_, earlier))| format!("{reason}: {}", count - earlier))
            .collect();
        if !increases.is_empty() {
            tracing::warn!(bridge = %stats.name, dropped = %increases.join(", "), "bridge dropped messages");
        }
        before = now;
    }
}

/// Keeps one bridge's links up until the broker shuts down or the bridge is removed.
async fn supervise(
    broker: Arc<Broker>,
    config: Arc<Mutex<Arc<BridgeConfig>>>,
    stats: Arc<BridgeStats>,
    restart: Arc<Notify>,
    mut stopped: watch::Receiver<bool>,
    primed: bool,
) {
    let mut shutdown = broker.shutdown_signal();
    if !primed {
        let first = lock(&config).clone();
        if let Err(error) = prime_local(&broker, &first).await {
            tracing::warn!(bridge = %first.name, %error, "cannot subscribe the bridge's local session");
        }
    }
    let mut failures: u32 = 0;
    let mut next_address = 0usize;
    loop {
        if *shutdown.borrow() || *stopped.borrow() {
            break;
        }
        let current = lock(&config).clone();
        let mut attempt = Attempt {
            broker: &broker,
            config: &current,
            stats: &stats,
            next_address: &mut next_address,
            up: false,
        };
        // A connection attempt can take up to CONNECT_DEADLINE: shutdown does not wait.
        let mut stopping = broker.shutdown_signal();
        let outcome = tokio::select! {
            outcome = attempt.run(&mut shutdown, &restart) => outcome,
            _ = signalled(&mut stopped) => Ok(Stop::Shutdown),
            _ = signalled(&mut stopping) => Ok(Stop::Shutdown),
        };
        let was_up = attempt.up;
        if was_up {
            failures = 0;
        }
        match outcome {
            Ok(Stop::Shutdown) => break,
            Ok(Stop::Restart) => continue,
            Err(error) => {
                BridgeStats::incr(&stats.link_failures);
                failures = failures.saturating_add(1);
                let pause = backoff(&current, failures);
                if was_up {
                    tracing::warn!(bridge = %current.name, %error, "bridge link down; reconnecting in {pause:?}");
                } else if let Some(attempts) = stats.connect_failure_log.occurred(Instant::now()) {
                    tracing::warn!(bridge = %current.name, %error, attempts, "bridge cannot connect; retrying in {pause:?}");
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = restart.notified() => {}
                    _ = signalled(&mut shutdown) => break,
                    _ = signalled(&mut stopped) => break,
                }
            }
        }
    }
    stats.connected.store(false, Ordering::Relaxed);
}

/// The pause before the next attempt after `failures` failures in a row: doubling from
/// `reconnect_min_ms` up to `reconnect_max_ms`, plus up to half of it at random.
fn backoff(config: &BridgeConfig, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    let base = config
        .reconnect_min_ms
        .saturating_mul(1u64 << doublings)
        .min(config.reconnect_max_ms);
    let jitter = random_u64() % (base / 2 + 1);
    Duration::from_millis(base + jitter)
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// `GET /api/v1/bridges` and the dashboard's bridge section.
impl crate::admin::StatusProvider for Bridges {
    fn name(&self) -> &str {
        "bridges"
    }

    fn status(&self) -> serde_json::Value {
        serde_json::to_value(Bridges::status(self)).unwrap_or_else(|error| {
            serde_json::json!({ "error": format!("bridge status not serialisable: {error}") })
        })
    }
}
