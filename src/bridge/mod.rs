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
//! `Bridges` owns the tasks: it starts them, applies changed settings on reload
//! (restarting only the changed bridges' links; the outbox stays in the store), and
//! gives operators a status snapshot.

mod dial;
mod forward;
mod link;
mod status;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytestring::ByteString;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::broker::{lock, log_throttle, Broker};
use crate::config::{BridgeConfig, BridgeProtocol, Config, WhenFull};
use crate::protocol::{
    Connect, ConnectProperties, Disconnect, Packet, ProtocolVersion, RetainHandling, Subscribe,
    SubscribeFilter, SubscriptionOptions, Unsubscribe,
};
use crate::session::{OutboxDrops, OutboxMode, SessionLimits};

pub use forward::{Rules, Stop};
pub use link::{Link, LinkError};
pub use status::{BridgeStats, BridgeStatus, DroppedCounts};

/// Client ids of bridges' local sessions start with this; clients may not use it.
pub const LOCAL_SESSION_PREFIX: &str = "$bridge/";

/// How long a remote has to accept the connection and answer CONNECT.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);

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

/// Connects the local session once, subscribes it, and disconnects.
async fn prime_local(broker: &Arc<Broker>, config: &BridgeConfig) -> Result<(), LinkError> {
    let (mut local, task) = open_local(broker, config, config.outbox.max_inflight, None).await?;
    let expected = subscribe_local(&mut local, broker, config);
    if expected {
        tokio::time::timeout(CONNECT_DEADLINE, async {
            local.flush().await?;
            loop {
                if let Packet::SubAck(_) = local.recv().await? {
                    return Ok::<(), LinkError>(());
                }
            }
        })
        .await
        .map_err(|_| LinkError::Timeout(CONNECT_DEADLINE))??;
    }
    local.queue(&Packet::Disconnect(Disconnect::default()));
    local.close().await;
    let _ = task.await;
    Ok(())
}

/// Connects the bridge's local session (in-process, MQTT 5, persistent, never expiring).
async fn open_local(
    broker: &Arc<Broker>,
    config: &BridgeConfig,
    receive_maximum: u16,
    maximum_packet_size: Option<u32>,
) -> Result<(Link, JoinHandle<()>), LinkError> {
    let limits = broker.config().limits.clone();
    let (stream, task) = dial::dial_local(broker);
    let mut local = Link::new(
        stream,
        ProtocolVersion::V5,
        limits.max_packet_size,
        CONNECT_DEADLINE,
    );
    let connect = Connect {
        protocol: ProtocolVersion::V5,
        clean_start: false,
        keep_alive: 0,
        client_id: ByteString::from(local_client_id(&config.name)),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties {
            session_expiry_interval: Some(u32::MAX),
            receive_maximum: Some(receive_maximum.max(1)),
            // What the remote cannot take is dropped (and counted) by the outbox
            // instead of being sent again and again.
            maximum_packet_size,
            ..ConnectProperties::default()
        },
    };
    local.connect(&connect, false, CONNECT_DEADLINE).await?;
    Ok((local, task))
}

/// Queues SUBSCRIBE for the out-bound rules (and UNSUBSCRIBE for filters the session
/// still holds from removed rules) on the local link. Whether a SUBACK is to come.
fn subscribe_local(local: &mut Link, broker: &Broker, config: &BridgeConfig) -> bool {
    let wanted: Vec<SubscribeFilter> = config
        .topics
        .iter()
        .filter(|rule| rule.direction.out())
        .map(|rule| SubscribeFilter {
            filter: ByteString::from(rule.local_filter()),
            options: SubscriptionOptions {
                qos: rule.qos(),
                no_local: true,
                retain_as_published: rule.retain,
                retain_handling: RetainHandling::SendIfNew,
            },
        })
        .collect();
    let stale: Vec<ByteString> = broker
        .session(&local_client_id(&config.name))
        .map(|handle| {
            handle
                .lock()
                .subscriptions()
                .map(|(filter, _)| filter.clone())
                .filter(|filter| !wanted.iter().any(|wanted| wanted.filter == *filter))
                .collect()
        })
        .unwrap_or_default();
    if !stale.is_empty() {
        local.queue(&Packet::Unsubscribe(Unsubscribe {
            packet_id: 2,
            filters: stale,
            user_properties: Vec::new(),
        }));
    }
    if wanted.is_empty() {
        return false;
    }
    local.queue(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: wanted,
        subscription_identifier: None,
        user_properties: Vec::new(),
    }));
    true
}

/// In-bound QoS 2 packet ids the bridge's local session holds (received, PUBREL not
/// yet seen). Scans the id space only when there are any.
fn stale_incoming_ids(broker: &Broker, config: &BridgeConfig) -> Vec<u16> {
    let Some(handle) = broker.session(&local_client_id(&config.name)) else {
        return Vec::new();
    };
    let session = handle.lock();
    if session.incoming_qos2_len() == 0 {
        return Vec::new();
    }
    (1..=u16::MAX)
        .filter(|packet_id| session.awaits_release(*packet_id))
        .collect()
}

/// Queues SUBSCRIBE for the in-bound rules on the remote link.
fn subscribe_remote(remote: &mut Link, config: &BridgeConfig) {
    let filters: Vec<SubscribeFilter> = config
        .topics
        .iter()
        .filter(|rule| rule.direction.inward())
        .map(|rule| SubscribeFilter {
            filter: ByteString::from(rule.remote_filter()),
            options: SubscriptionOptions {
                qos: rule.qos(),
                // MQTT 5: the remote does not send back what the bridge published.
                no_local: true,
                retain_as_published: rule.retain,
                retain_handling: RetainHandling::SendAtSubscribe,
            },
        })
        .collect();
    if filters.is_empty() {
        return;
    }
    remote.queue(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters,
        subscription_identifier: None,
        user_properties: Vec::new(),
    }));
}

/// One connection attempt and, if it succeeds, the relay until the link ends.
struct Attempt<'a> {
    broker: &'a Arc<Broker>,
    config: &'a BridgeConfig,
    stats: &'a BridgeStats,
    next_address: &'a mut usize,
    /// Both links came up.
    up: bool,
}

impl Attempt<'_> {
    async fn run(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        restart: &Notify,
    ) -> Result<Stop, LinkError> {
        let config = self.config;
        let (mut remote, connack) = self.connect_remote().await?;
        let keep_alive = connack
            .properties
            .server_keep_alive
            .filter(|secs| *secs > 0)
            .unwrap_or(config.keep_alive_secs);
        let keep_alive = Duration::from_secs(u64::from(keep_alive.max(1)));
        let remote_window = connack.properties.receive_maximum.unwrap_or(u16::MAX);
        let window = config.outbox.max_inflight.min(remote_window);
        let (mut local, local_task) = open_local(
            self.broker,
            config,
            window,
            connack.properties.maximum_packet_size,
        )
        .await?;
        self.up = true;
        self.stats.connected.store(true, Ordering::Relaxed);
        if self.stats.ever_up.swap(true, Ordering::Relaxed) {
            BridgeStats::incr(&self.stats.reconnects);
        }
        tracing::info!(bridge = %config.name, session_present = connack.session_present, "bridge link up");
        subscribe_remote(&mut remote, config);
        subscribe_local(&mut local, self.broker, config);
        let rules = Rules::new(&config.topics);
        let outcome = async {
            remote.flush().await?;
            local.flush().await?;
            let mut relay =
                forward::Relay::new(config, &rules, self.stats, local, remote, keep_alive);
            if !connack.session_present {
                relay.release_stale(&stale_incoming_ids(self.broker, config));
            }
            if let Some(maximum) = connack.properties.maximum_qos {
                relay.limit_qos(maximum);
            }
            let outcome = relay.run(shutdown, restart).await;
            if matches!(outcome, Ok(Stop::Shutdown)) {
                relay
                    .remote
                    .queue(&Packet::Disconnect(Disconnect::default()));
            }
            let forward::Relay { local, remote, .. } = relay;
            // Closing the local link takes the session offline: it keeps queueing.
            local.close().await;
            remote.close().await;
            outcome
        }
        .await;
        self.stats.connected.store(false, Ordering::Relaxed);
        // The local connection records its disconnect before the bridge goes on.
        let _ = tokio::time::timeout(CONNECT_DEADLINE, local_task).await;
        outcome
    }

    /// Connects to the first remote address that answers, from the configured start.
    async fn connect_remote(&mut self) -> Result<(Link, crate::protocol::ConnAck), LinkError> {
        let config = self.config;
        let tls = match &config.tls {
            Some(tls) => {
                Some(dial::client_tls(tls).map_err(|error| LinkError::Setup(error.to_string()))?)
            }
            None => None,
        };
        let server_name = config
            .tls
            .as_ref()
            .and_then(|tls| tls.server_name.as_deref());
        let count = config.addresses.len();
        let start = if config.round_robin {
            *self.next_address % count.max(1)
        } else {
            0
        };
        let mut last_error = LinkError::Setup("no address configured".to_string());
        for offset in 0..count {
            let index = (start + offset) % count;
            let address = &config.addresses[index];
            if config.round_robin {
                *self.next_address = index + 1;
            }
            let stream = match dial::dial_remote(
                address,
                tls.as_ref().map(|tls| (tls, server_name)),
                CONNECT_DEADLINE,
            )
            .await
            {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(bridge = %config.name, %address, %error, "remote address failed");
                    last_error = error;
                    continue;
                }
            };
            let keep_alive = Duration::from_secs(u64::from(config.keep_alive_secs.max(1)));
            let version = match config.protocol {
                BridgeProtocol::Mqttv311 => ProtocolVersion::V3_1_1,
                BridgeProtocol::Mqttv5 => ProtocolVersion::V5,
            };
            let max_packet_size = self.broker.config().limits.max_packet_size;
            let mut remote = Link::new(stream, version, max_packet_size, keep_alive);
            let connect = self.remote_connect(version, max_packet_size);
            match remote
                .connect(&connect, config.try_private, CONNECT_DEADLINE)
                .await
            {
                Ok(connack) => {
                    self.stats
                        .address_index
                        .store(index as u64, Ordering::Relaxed);
                    return Ok((remote, connack));
                }
                Err(error) => {
                    tracing::debug!(bridge = %config.name, %address, %error, "remote refused the bridge");
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }

    fn remote_connect(&self, version: ProtocolVersion, max_packet_size: u32) -> Connect {
        let config = self.config;
        let receive_maximum = self.broker.config().limits.receive_maximum;
        Connect {
            protocol: version,
            clean_start: config.clean_start,
            keep_alive: config.keep_alive_secs,
            client_id: ByteString::from(config.remote_client_id()),
            will: None,
            username: config.username.as_deref().map(ByteString::from),
            password: config
                .password
                .as_ref()
                .map(|password| bytes::Bytes::from(password.clone().into_bytes())),
            properties: ConnectProperties {
                session_expiry_interval: Some(config.session_expiry_secs),
                receive_maximum: Some(receive_maximum),
                maximum_packet_size: Some(max_packet_size),
                ..ConnectProperties::default()
            },
        }
    }
}
