//! What a connected client may do, checked on the connection task: ACLs on PUBLISH and
//! SUBSCRIBE (a filter no rule could ever let read is refused; what may be read is then
//! checked per message by the router, `auth::read_gate`), no PUBLISH to `$` topics, the
//! publish rate (off by default), the number of subscriptions, topic size limits, and
//! MQTT 5 re-authentication (AUTH after CONNACK).
//!
//! PUBLISH is checked where the session hands the message out for routing, after topic
//! aliases are resolved, so an alias cannot bypass a rule. A refused message is not
//! routed; MQTT 5 clients see the reason in PUBACK/PUBREC, MQTT 3 clients get the
//! normal acknowledgement (as Mosquitto does), since 3.x has no way to say no.

use std::time::Instant;

use crate::auth::{Step, Want};
use crate::config::LimitsConfig;
use crate::message::Message;
use crate::protocol::{reason, Auth, Packet, PubResponse};
use crate::session::SubscribeRequest;

use super::authenticate::auth_packet;
use super::{Connection, Exit};

/// Whether a topic name or filter is within the configured length and depth.
pub(super) fn topic_within_limits(topic: &str, limits: &LimitsConfig) -> bool {
    topic.len() <= usize::from(limits.max_topic_length)
        && topic.split('/').count() <= usize::from(limits.max_topic_levels)
}

/// Publish rate state: a soft token bucket at the configured rate (over it, messages are
/// refused) and a hard one at twice the rate (over it, the client is disconnected). Both
/// refill at the same moments, so they share the rate and the clock: every connection
/// holds one. A rate of 0 (the default) allows everything.
pub(super) struct PublishRate {
    /// Messages per second; the soft bucket holds up to this, the hard one twice this.
    /// 0: no limit.
    rate: f64,
    soft: f64,
    hard: f64,
    last: Instant,
}

/// What the publish rate says about one more message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RateCheck {
    Allowed,
    /// Over the configured rate: refuse the message.
    OverRate,
    /// Over twice the rate: disconnect the client.
    FarOverRate,
}

impl PublishRate {
    /// Full buckets for `rate` messages per second; 0 for no limit.
    pub(super) fn new(rate: u32, now: Instant) -> PublishRate {
        let rate = f64::from(rate);
        PublishRate {
            rate,
            soft: rate,
            hard: 2.0 * rate,
            last: now,
        }
    }

    /// Whether both buckets are full by `now`: a new `PublishRate` would then decide
    /// every later message the same way (what lets a parked connection keep none).
    pub(super) fn is_full(&self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.rate == 0.0
            || (refill >= self.rate - self.soft && 2.0 * refill >= 2.0 * self.rate - self.hard)
    }

    /// Takes a token from the hard bucket, then from the soft one.
    pub(super) fn check(&mut self, now: Instant) -> RateCheck {
        if self.rate == 0.0 {
            return RateCheck::Allowed;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.soft = (self.soft + elapsed * self.rate).min(self.rate);
        self.hard = (self.hard + elapsed * 2.0 * self.rate).min(2.0 * self.rate);
        if self.hard < 1.0 {
            return RateCheck::FarOverRate;
        }
        self.hard -= 1.0;
        if self.soft < 1.0 {
            return RateCheck::OverRate;
        }
        self.soft -= 1.0;
        RateCheck::Allowed
    }
}

impl Connection {
    /// Decides a PUBLISH about to be routed. `Ok(None)`: route it; `Ok(Some(code))`: do
    /// not route, acknowledge with `code` (MQTT 5); `Err`: close the connection.
    pub(super) fn check_publish(
        &mut self,
        message: &Message,
        now: Instant,
    ) -> Result<Option<u8>, Exit> {
        if !topic_within_limits(&message.topic, &self.config.limits) {
            return Err(Exit::Violation {
                reason_code: reason::TOPIC_NAME_INVALID,
            });
        }
        match self.rate.check(now) {
            RateCheck::Allowed => {}
            RateCheck::OverRate => return Ok(Some(reason::QUOTA_EXCEEDED)),
            RateCheck::FarOverRate => {
                tracing::info!(client_id = %self.handle.client_id, "publish rate far above the limit");
                return Err(Exit::Violation {
                    reason_code: reason::MESSAGE_RATE_TOO_HIGH,
                });
            }
        }
        let allowed = self.listener.security.allows(
            self.username.as_deref(),
            &self.handle.client_id,
            Want::Publish,
            &message.topic,
        );
        if allowed {
            Ok(None)
        } else {
            tracing::debug!(client_id = %self.handle.client_id, topic = %message.topic, "publish denied");
            Ok(Some(reason::NOT_AUTHORIZED))
        }
    }

    /// Applies a refusal to the acknowledgement of the refused PUBLISH. A refused QoS 2
    /// message must not stay "awaiting PUBREL" in the session (the client will not send
    /// one after a failure code), so it is released there.
    pub(super) fn refuse_ack(&mut self, packet: &mut Packet, code: u8) -> Result<(), Exit> {
        if !self.version.is_v5() {
            return Ok(());
        }
        match packet {
            Packet::PubAck(ack) => ack.reason_code = code,
            Packet::PubRec(ack) => {
                ack.reason_code = code;
                let release = Packet::PubRel(PubResponse {
                    packet_id: ack.packet_id,
                    reason_code: reason::SUCCESS,
                    properties: Default::default(),
                });
                let mut session = self
                    .handle
                    .lock_current(self.generation)
                    .ok_or(Exit::TakenOver)?;
                // Its PUBCOMP is for nobody: the client never sent PUBREL.
                let _ = session.handle_packet(release, crate::broker::now());
                let _ = self.broker.submit_journal(&mut session);
            }
            _ => {}
        }
        Ok(())
    }

    /// Refuses the filters of a SUBSCRIBE that break a limit or the ACL, before the
    /// broker installs any route.
    pub(super) fn check_subscribe(&self, request: &mut SubscribeRequest) -> Result<(), Exit> {
        let limits = &self.config.limits;
        let mut held = {
            let session = self
                .handle
                .lock_current(self.generation)
                .ok_or(Exit::TakenOver)?;
            session.subscriptions().count()
        };
        for filter in &mut request.filters {
            let Ok(existed) = filter.result else { continue };
            if !topic_within_limits(&filter.filter, limits) {
                filter.result = Err(reason::TOPIC_FILTER_INVALID);
            } else if !self.listener.security.allows(
                self.username.as_deref(),
                &self.handle.client_id,
                Want::Subscribe,
                &filter.filter,
            ) {
                tracing::debug!(client_id = %self.handle.client_id, filter = %filter.filter, "subscribe denied");
                filter.result = Err(reason::NOT_AUTHORIZED);
            } else if !existed {
                if held >= limits.max_subscriptions as usize {
                    filter.result = Err(reason::QUOTA_EXCEEDED);
                } else {
                    held += 1;
                }
            }
        }
        Ok(())
    }

    /// AUTH after CONNACK: re-authentication with the method of CONNECT (MQTT 5 4.12.1).
    /// A failure, or a different user, ends the connection with 0x87.
    pub(super) fn handle_auth(&mut self, auth: Auth) -> Result<(), Exit> {
        let protocol_error = Exit::Violation {
            reason_code: reason::PROTOCOL_ERROR,
        };
        let Some(enhanced) = self.enhanced_auth.as_mut() else {
            return Err(protocol_error);
        };
        let method = enhanced.method.clone();
        if auth.properties.authentication_method.as_ref() != Some(&method) {
            return Err(protocol_error);
        }
        let data = auth.properties.authentication_data.unwrap_or_default();
        let step = match (auth.reason_code, enhanced.exchange.as_mut()) {
            (reason::RE_AUTHENTICATE, None) => {
                let Some(authenticator) = self.listener.security.authenticator(&method) else {
                    return Err(Exit::Violation {
                        reason_code: reason::NOT_AUTHORIZED,
                    });
                };
                let exchange = enhanced.exchange.insert(authenticator.start());
                exchange.step(&data)
            }
            (reason::CONTINUE_AUTHENTICATION, Some(exchange)) => exchange.step(&data),
            _ => return Err(protocol_error),
        };
        match step {
            Step::Continue(challenge) => {
                self.out.push(auth_packet(
                    reason::CONTINUE_AUTHENTICATION,
                    &method,
                    challenge,
                ));
                Ok(())
            }
            Step::Success { username, data } if Some(&username) == self.username.as_ref() => {
                enhanced.exchange = None;
                self.out.push(auth_packet(reason::SUCCESS, &method, data));
                Ok(())
            }
            Step::Success { .. } | Step::Failure => {
                tracing::info!(client_id = %self.handle.client_id, "re-authentication failed");
                Err(Exit::Violation {
                    reason_code: reason::NOT_AUTHORIZED,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn publish_rate_refuses_over_the_rate_and_disconnects_over_twice_it() {
        let start = Instant::now();
        let mut rate = PublishRate::new(5, start);
        let checks: Vec<RateCheck> = (0..11).map(|_| rate.check(start)).collect();
        // A burst of the rate passes, the next as many are refused, then the client is
        // far over the rate.
        assert!(checks[..5].iter().all(|check| *check == RateCheck::Allowed));
        assert!(checks[5..10]
            .iter()
            .all(|check| *check == RateCheck::OverRate));
        assert_eq!(checks[10], RateCheck::FarOverRate);
        // 400 ms refill 2 soft tokens and 4 hard ones.
        let later = start + Duration::from_millis(400);
        let checks: Vec<RateCheck> = (0..5).map(|_| rate.check(later)).collect();
        assert_eq!(
            checks,
            [
                RateCheck::Allowed,
                RateCheck::Allowed,
                RateCheck::OverRate,
                RateCheck::OverRate,
                RateCheck::FarOverRate
            ]
        );
        // A quiet minute refills both to their size, no more.
        let much_later = later + Duration::from_secs(60);
        let allowed = (0..20)
            .map(|_| rate.check(much_later))
            .filter(|check| *check == RateCheck::Allowed)
            .count();
        assert_eq!(allowed, 5);
    }

    #[test]
    fn a_publish_rate_of_zero_allows_everything() {
        let start = Instant::now();
        let mut rate = PublishRate::new(0, start);
        assert!((0..100_000).all(|_| rate.check(start) == RateCheck::Allowed));
    }
}
