//! One connection attempt of a bridge: the remote link (addresses in order or round
//! robin, CONNECT with the bridge's settings), the in-process local link to the
//! bridge's persistent session, the subscriptions on both sides, and the relay until
//! the link ends. Also the one-off subscription of the local session at start, so the
//! outbox collects before the remote is first reached.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::forward::{self, Rules, Stop};
use super::link::{Link, LinkError};
use super::status::BridgeStats;
use super::{dial, local_client_id};
use crate::broker::Broker;
use crate::config::{BridgeConfig, BridgeProtocol};
use crate::protocol::{
    Connect, ConnectProperties, Disconnect, Packet, ProtocolVersion, RetainHandling, Subscribe,
    SubscribeFilter, SubscriptionOptions, Unsubscribe,
};

/// How long a remote has to accept the connection and answer CONNECT.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);

/// Connects the local session once, subscribes it, and disconnects.
pub(super) async fn prime_local(
    broker: &Arc<Broker>,
    config: &BridgeConfig,
) -> Result<(), LinkError> {
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
pub(super) struct Attempt<'a> {
    pub(super) broker: &'a Arc<Broker>,
    pub(super) config: &'a BridgeConfig,
    pub(super) stats: &'a BridgeStats,
    pub(super) next_address: &'a mut usize,
    /// Both links came up.
    pub(super) up: bool,
}

impl Attempt<'_> {
    pub(super) async fn run(
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
