//! The relay between a bridge's two links while both are up.
//!
//! The bridge holds no message state of its own. Out-bound messages come from the
//! bridge's persistent local session (its queue is the durable outbox) and go to the
//! remote with the local session's packet id; the remote's PUBACK / PUBREC / PUBCOMP
//! go back to the local session with the same id, which only then removes the message
//! (or moves it to PUBREL). In-bound messages do the same the other way: the remote's
//! PUBLISH is published locally with the remote's packet id, and the local broker's
//! acknowledgement, sent once the message is durable, is what the remote receives.
//!
//! Reusing packet ids across the hop is what makes a link failure harmless: after a
//! reconnect each broker resends what it has in flight (PUBLISH with DUP, or PUBREL)
//! under the same id, and the receiving broker's QoS 2 state recognises it, so QoS 1 is
//! delivered at least once and QoS 2 exactly once, in the local session's order.
//!
//! Messages no rule maps any more (a rule removed by a reload) are acknowledged by the
//! bridge itself and counted as dropped.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytestring::ByteString;
use tokio::sync::{watch, Notify};

use super::link::{Link, LinkError};
use super::signalled;
use super::status::BridgeStats;
use crate::config::{BridgeConfig, BridgeTopic};
use crate::protocol::{reason, Packet, PubResponse, Publish, QoS};
use crate::topic;

/// Most out-bound QoS 1/2 send times kept for the round-trip measure.
const MAX_TIMED: usize = 1024;

/// Maps topics between the two sides according to a bridge's rules.
#[derive(Debug, Clone)]
pub struct Rules {
    topics: Vec<BridgeTopic>,
}

impl Rules {
    pub fn new(topics: &[BridgeTopic]) -> Rules {
        Rules {
            topics: topics.to_vec(),
        }
    }

    /// The remote topic of a local message, and whether its RETAIN flag passes: the
    /// first out-bound rule whose local filter matches.
    pub fn outgoing(&self, local_topic: &str) -> Option<(String, bool)> {
        self.topics
            .iter()
            .filter(|rule| rule.direction.out())
            .find(|rule| topic::matches(local_topic, &rule.local_filter()))
            .and_then(|rule| {
                let rest = local_topic.strip_prefix(rule.local_prefix.as_str())?;
                Some((format!("{}{rest}", rule.remote_prefix), rule.retain))
            })
    }

    /// The local topic of a remote message, and whether its RETAIN flag passes.
    pub fn incoming(&self, remote_topic: &str) -> Option<(String, bool)> {
        self.topics
            .iter()
            .filter(|rule| rule.direction.inward())
            .find(|rule| topic::matches(remote_topic, &rule.remote_filter()))
            .and_then(|rule| {
                let rest = remote_topic.strip_prefix(rule.remote_prefix.as_str())?;
                Some((format!("{}{rest}", rule.local_prefix), rule.retain))
            })
    }
}

/// A simple token bucket for `outbox.max_rate_per_sec`.
struct DrainRate {
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl DrainRate {
    fn new(per_sec: u32) -> DrainRate {
        DrainRate {
            per_sec: f64::from(per_sec),
            tokens: f64::from(per_sec).min(1.0),
            last: Instant::now(),
        }
    }

    /// How long to wait before one more message may go.
    fn take(&mut self) -> Duration {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.per_sec.max(1.0));
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_sec)
        }
    }
}

/// Why the relay returned without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The broker is shutting down.
    Shutdown,
    /// The bridge's settings changed: reconnect with the new ones.
    Restart,
}

/// Both links of a bridge and the little state the relay keeps.
pub struct Relay<'a> {
    pub config: &'a BridgeConfig,
    pub rules: &'a Rules,
    pub stats: &'a BridgeStats,
    pub local: Link,
    pub remote: Link,
    /// Keep alive towards the remote; the local side is pinged on the same clock.
    pub keep_alive: Duration,
    /// QoS 2 messages from the local session the bridge acknowledged itself (no rule):
    /// their PUBREL is answered here.
    local_terminated: HashSet<u16>,
    /// The same for QoS 2 messages from the remote.
    remote_terminated: HashSet<u16>,
    /// In-bound QoS 2 ids the bridge released on the local session itself (the remote
    /// lost its session, so their PUBREL will never come): their PUBCOMP stays here.
    released_locally: HashSet<u16>,
    /// The highest QoS the remote accepts (MQTT 5 CONNACK Maximum QoS).
    remote_max_qos: QoS,
    /// Out-bound QoS 2 messages sent as QoS 1 to a remote that takes no QoS 2: its
    /// PUBACK becomes the local PUBREC, and the local PUBREL is answered here.
    downgraded: HashSet<u16>,
    /// Send times of out-bound QoS 1/2 messages, for the round-trip time.
    sent_at: HashMap<u16, Instant>,
    rate: Option<DrainRate>,
}

impl<'a> Relay<'a> {
    pub fn new(
        config: &'a BridgeConfig,
        rules: &'a Rules,
        stats: &'a BridgeStats,
        local: Link,
        remote: Link,
        keep_alive: Duration,
    ) -> Relay<'a> {
        Relay {
            config,
            rules,
            stats,
            local,
            remote,
            keep_alive,
            local_terminated: HashSet::new(),
            remote_terminated: HashSet::new(),
            released_locally: HashSet::new(),
            remote_max_qos: QoS::ExactlyOnce,
            downgraded: HashSet::new(),
            sent_at: HashMap::new(),
            rate: config.outbox.max_rate_per_sec.map(DrainRate::new),
        }
    }

    /// The remote's Maximum QoS (MQTT 5 CONNACK): out-bound messages above it go at
    /// it, QoS 2 as QoS 1 (at least once), anything as QoS 0 to a QoS 0 remote (at most
    /// once, acknowledged locally when sent).
    pub fn limit_qos(&mut self, maximum: QoS) {
        self.remote_max_qos = maximum;
    }

    /// Releases in-bound QoS 2 ids the local session still holds from a remote session
    /// that no longer exists: the remote would reuse those ids for new messages, which
    /// the local session would then take for duplicates and drop.
    pub fn release_stale(&mut self, packet_ids: &[u16]) {
        for packet_id in packet_ids {
            self.local.queue(&Packet::PubRel(response(*packet_id)));
            self.released_locally.insert(*packet_id);
        }
    }

    /// Relays until a link fails (`Err`), the broker shuts down or the settings change.
    pub async fn run(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        restart: &Notify,
    ) -> Result<Stop, LinkError> {
        let silence_limit = self.keep_alive + self.keep_alive / 2;
        let mut last_heard = Instant::now();
        let mut last_ping = Instant::now();
        let mut ticks = tokio::time::interval(self.keep_alive / 4);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                packet = self.local.recv() => {
                    self.handle_local(packet?).await?;
                }
                packet = self.remote.recv() => {
                    last_heard = Instant::now();
                    self.handle_remote(packet?)?;
                }
                _ = ticks.tick() => {
                    if last_heard.elapsed() > silence_limit {
                        return Err(LinkError::Timeout(silence_limit));
                    }
                    if last_ping.elapsed() >= self.keep_alive / 2 {
                        last_ping = Instant::now();
                        self.remote.queue(&Packet::PingReq);
                        self.local.queue(&Packet::PingReq);
                    }
                }
                _ = signalled(shutdown) => return Ok(Stop::Shutdown),
                _ = restart.notified() => return Ok(Stop::Restart),
            }
            self.remote.flush().await?;
            self.local.flush().await?;
        }
    }

    /// A packet from the local broker: an out-bound message, the acknowledgement of an
    /// in-bound one, or the PUBREL of an out-bound QoS 2 message.
    async fn handle_local(&mut self, packet: Packet) -> Result<(), LinkError> {
        match packet {
            Packet::Publish(publish) => self.forward_out(publish).await,
            Packet::PubAck(ack) | Packet::PubRec(ack) if ack.reason_code >= 0x80 => {
                // The local broker could not store an in-bound message: reconnecting
                // makes the remote send it again.
                Err(LinkError::LocalRefused(ack.reason_code))
            }
            Packet::PubAck(ack) => {
                self.remote.queue(&Packet::PubAck(ack));
                Ok(())
            }
            Packet::PubRec(ack) => {
                self.remote.queue(&Packet::PubRec(ack));
                Ok(())
            }
            Packet::PubComp(ack) => {
                if !self.released_locally.remove(&ack.packet_id) {
                    self.remote.queue(&Packet::PubComp(ack));
                }
                Ok(())
            }
            Packet::PubRel(release) => {
                if self.local_terminated.remove(&release.packet_id)
                    || self.downgraded.remove(&release.packet_id)
                {
                    self.local
                        .queue(&Packet::PubComp(response(release.packet_id)));
                } else {
                    self.remote.queue(&Packet::PubRel(release));
                }
                Ok(())
            }
            Packet::SubAck(suback) => {
                log_refused_filters("local", &self.config.name, &suback.reason_codes);
                Ok(())
            }
            Packet::PingResp | Packet::UnsubAck(_) => Ok(()),
            Packet::Disconnect(disconnect) => Err(LinkError::Disconnected(disconnect.reason_code)),
            _ => Err(LinkError::Unexpected(
                "a client-only packet from the local broker",
            )),
        }
    }

    async fn forward_out(&mut self, mut publish: Publish) -> Result<(), LinkError> {
        let Some((remote_topic, keep_retain)) = self.rules.outgoing(&publish.topic) else {
            BridgeStats::incr(&self.stats.dropped_no_rule);
            acknowledge_self(&mut self.local, &mut self.local_terminated, &publish);
            return Ok(());
        };
        if let Some(rate) = &mut self.rate {
            let wait = rate.take();
            if !wait.is_zero() {
                // Send what is queued (acknowledgements) before pausing.
                self.remote.flush().await?;
                self.local.flush().await?;
                tokio::time::sleep(wait).await;
            }
        }
        publish.topic = ByteString::from(remote_topic);
        publish.retain &= keep_retain;
        publish.properties.subscription_identifiers.clear();
        publish.properties.topic_alias = None;
        if publish.qos > self.remote_max_qos {
            if self.remote_max_qos == QoS::AtMostOnce {
                acknowledge_self(&mut self.local, &mut self.local_terminated, &publish);
                publish.packet_id = 0;
            } else {
                self.downgraded.insert(publish.packet_id);
            }
            publish.qos = self.remote_max_qos;
        }
        if publish.qos != QoS::AtMostOnce && self.sent_at.len() < MAX_TIMED {
            self.sent_at.insert(publish.packet_id, Instant::now());
        }
        self.remote.queue(&Packet::Publish(publish));
        BridgeStats::incr(&self.stats.sent);
        Ok(())
    }

    /// A packet from the remote broker: an in-bound message, the acknowledgement of an
    /// out-bound one, or the PUBREL of an in-bound QoS 2 message.
    fn handle_remote(&mut self, packet: Packet) -> Result<(), LinkError> {
        match packet {
            Packet::Publish(mut publish) => {
                let Some((local_topic, keep_retain)) = self.rules.incoming(&publish.topic) else {
                    BridgeStats::incr(&self.stats.dropped_no_rule);
                    acknowledge_self(&mut self.remote, &mut self.remote_terminated, &publish);
                    return Ok(());
                };
                publish.topic = ByteString::from(local_topic);
                publish.retain &= keep_retain;
                publish.properties.subscription_identifiers.clear();
                publish.properties.topic_alias = None;
                self.local.queue(&Packet::Publish(publish));
                BridgeStats::incr(&self.stats.received);
            }
            Packet::PubAck(ack) => {
                self.acknowledged(&ack);
                let downgraded = if ack.reason_code >= 0x80 {
                    // A refusal ends the exchange: no PUBREL follows.
                    self.downgraded.remove(&ack.packet_id)
                } else {
                    self.downgraded.contains(&ack.packet_id)
                };
                if downgraded {
                    // A QoS 2 message sent as QoS 1: the local session goes on to PUBREL.
                    self.local.queue(&Packet::PubRec(ack));
                } else {
                    self.local.queue(&Packet::PubAck(ack));
                }
            }
            Packet::PubRec(ack) => {
                if ack.reason_code >= 0x80 {
                    // The exchange ends here: the local session drops the message.
                    self.acknowledged(&ack);
                }
                self.local.queue(&Packet::PubRec(ack));
            }
            Packet::PubComp(ack) => {
                // A PUBCOMP ends the exchange whatever its code: 0x92 answers a PUBREL
                // resent after a reconnect for a message the remote already completed.
                self.acknowledged(&PubResponse {
                    reason_code: reason::SUCCESS,
                    ..ack.clone()
                });
                self.local.queue(&Packet::PubComp(ack));
            }
            Packet::PubRel(release) => {
                if self.remote_terminated.remove(&release.packet_id) {
                    self.remote
                        .queue(&Packet::PubComp(response(release.packet_id)));
                } else {
                    self.local.queue(&Packet::PubRel(release));
                }
            }
            Packet::SubAck(suback) => {
                log_refused_filters("remote", &self.config.name, &suback.reason_codes);
            }
            Packet::PingResp | Packet::UnsubAck(_) => {}
            Packet::Disconnect(disconnect) => {
                return Err(LinkError::Disconnected(disconnect.reason_code))
            }
            _ => {
                return Err(LinkError::Unexpected(
                    "a client-only packet from the remote",
                ))
            }
        }
        Ok(())
    }

    /// The remote has taken an out-bound message (or refused it for good).
    fn acknowledged(&mut self, ack: &PubResponse) {
        if ack.reason_code >= 0x80 {
            BridgeStats::incr(&self.stats.dropped_remote_refused);
        } else {
            BridgeStats::incr(&self.stats.acknowledged);
        }
        if let Some(sent) = self.sent_at.remove(&ack.packet_id) {
            let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.stats
                .round_trip_micros
                .store(micros, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

fn response(packet_id: u16) -> PubResponse {
    PubResponse {
        packet_id,
        reason_code: reason::SUCCESS,
        ..PubResponse::default()
    }
}

/// Acknowledges a message no rule maps, on the link it came from.
fn acknowledge_self(link: &mut Link, terminated: &mut HashSet<u16>, publish: &Publish) {
    match publish.qos {
        QoS::AtMostOnce => {}
        QoS::AtLeastOnce => link.queue(&Packet::PubAck(response(publish.packet_id))),
        QoS::ExactlyOnce => {
            terminated.insert(publish.packet_id);
            link.queue(&Packet::PubRec(response(publish.packet_id)));
        }
    }
}

/// Subscriptions are made once per link, so this logs at most once per connect.
fn log_refused_filters(side: &str, bridge: &str, reason_codes: &[u8]) {
    if let Some(code) = reason_codes.iter().find(|code| **code >= 0x80) {
        tracing::warn!(
            bridge,
            side,
            reason_code = code,
            "a bridge subscription was refused"
        );
    }
}
