//! What a connected client may do, checked on the connection task: ACLs on PUBLISH and
//! SUBSCRIBE, no PUBLISH to `$` topics, the publish rate, the number of subscriptions,
//! topic size limits, and MQTT 5 re-authentication (AUTH after CONNACK).
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

/// Publish rate state: a soft bucket at the configured rate (over it, messages are
/// refused) and a hard one at twice the rate (over it, the client is disconnected).
pub(super) struct PublishRate {
    soft: crate::listener::TokenBucket,
    hard: crate::listener::TokenBucket,
}

impl PublishRate {
    pub(super) fn new(rate: u32, now: Instant) -> PublishRate {
        PublishRate {
            soft: crate::listener::TokenBucket::new(rate, now),
            hard: crate::listener::TokenBucket::new(rate.saturating_mul(2), now),
        }
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
        if !self.rate.hard.try_take(now) {
            tracing::info!(client_id = %self.handle.client_id, "publish rate far above the limit");
            return Err(Exit::Violation {
                reason_code: reason::MESSAGE_RATE_TOO_HIGH,
            });
        }
        if !self.rate.soft.try_take(now) {
            return Ok(Some(reason::QUOTA_EXCEEDED));
        }
        let allowed = self.security.allows(
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
            } else if !self.security.allows(
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
        let Some(method) = self.auth_method.clone() else {
            return Err(protocol_error);
        };
        if auth.properties.authentication_method.as_ref() != Some(&method) {
            return Err(protocol_error);
        }
        let data = auth.properties.authentication_data.unwrap_or_default();
        let step = match (auth.reason_code, self.exchange.as_mut()) {
            (reason::RE_AUTHENTICATE, None) => {
                let Some(authenticator) = self.security.authenticator(&method) else {
                    return Err(Exit::Violation {
                        reason_code: reason::NOT_AUTHORIZED,
                    });
                };
                let exchange = self.exchange.insert(authenticator.start());
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
                self.exchange = None;
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
