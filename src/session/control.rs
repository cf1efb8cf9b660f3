//! The client's control packets that are not about one message: SUBSCRIBE, UNSUBSCRIBE,
//! DISCONNECT and AUTH.
//!
//! SUBSCRIBE and UNSUBSCRIBE are checked and turned into requests; the broker decides
//! which filters it accepts (ACLs, shared subscription support) and records those with
//! `Session::add_subscription`, so the session's map never holds a filter without a route.

use std::collections::HashSet;
use std::time::Duration;

use super::{Action, FilterRequest, Session, SubscribeRequest, SubscriptionEntry};
use super::{UnsubscribeRequest, Violation};
use crate::protocol::reason;
use crate::protocol::{Auth, Disconnect, Subscribe, Unsubscribe};
use crate::topic::{parse_shared, validate_topic_filter};

pub(super) fn protocol_error(message: &'static str) -> Violation {
    Violation {
        reason_code: reason::PROTOCOL_ERROR,
        message,
    }
}

impl Session {
    pub(super) fn handle_subscribe(
        &mut self,
        subscribe: Subscribe,
    ) -> Result<Vec<Action>, Violation> {
        if subscribe.filters.is_empty() {
            return Err(protocol_error("SUBSCRIBE without topic filters"));
        }
        let v5 = self.params.protocol.is_v5();
        // Subscription identifiers are MQTT 5 only; 0 is not a valid one (spec 3.8.2.1.2).
        let subscription_id = if v5 {
            subscribe.subscription_identifier
        } else {
            None
        };
        if subscription_id == Some(0) {
            return Err(protocol_error("subscription identifier 0"));
        }
        // A filter repeated within one SUBSCRIBE replaces the first: the second one
        // "existed before" for Retain Handling.
        let mut seen = HashSet::with_capacity(subscribe.filters.len());
        let mut filters = Vec::with_capacity(subscribe.filters.len());
        for requested in subscribe.filters {
            let valid = validate_topic_filter(&requested.filter).is_ok();
            if valid
                && requested.options.no_local
                && matches!(parse_shared(&requested.filter), Ok(Some(_)))
            {
                // Spec 3.8.3.1: No Local on a shared subscription is a Protocol Error.
                return Err(protocol_error("No Local set on a shared subscription"));
            }
            let result = if valid {
                let existed = self.subscriptions.contains_key(&*requested.filter)
                    || !seen.insert(requested.filter.clone());
                Ok(existed)
            } else {
                Err(reason::TOPIC_FILTER_INVALID)
            };
            filters.push(FilterRequest {
                filter: requested.filter,
                entry: SubscriptionEntry {
                    options: requested.options,
                    subscription_id,
                },
                result,
            });
        }
        Ok(vec![Action::Subscribe(SubscribeRequest {
            packet_id: subscribe.packet_id,
            filters,
        })])
    }

    pub(super) fn handle_unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Vec<Action> {
        let filters = unsubscribe
            .filters
            .into_iter()
            .map(|filter| {
                let existed = self.subscriptions.remove(&*filter).is_some();
                (filter, existed)
            })
            .collect();
        vec![Action::Unsubscribe(UnsubscribeRequest {
            packet_id: unsubscribe.packet_id,
            filters,
        })]
    }

    /// DISCONNECT: MQTT 5 may update the session expiry and ask for the will (0x04);
    /// any other clean disconnect discards the will.
    pub(super) fn handle_disconnect(
        &mut self,
        disconnect: Disconnect,
    ) -> Result<Vec<Action>, Violation> {
        let v5 = self.params.protocol.is_v5();
        if v5 {
            if let Some(seconds) = disconnect.properties.session_expiry_interval {
                if seconds != 0 && self.params.connect_expiry_was_zero {
                    // Spec 3.14.2.2.2: a session that was to end with the connection
                    // cannot be kept alive from DISCONNECT.
                    return Err(protocol_error(
                        "DISCONNECT sets a session expiry after CONNECT set 0",
                    ));
                }
                self.set_expiry_interval(Duration::from_secs(u64::from(seconds)));
            }
        }
        let publish_will = v5
            && disconnect.reason_code == reason::DISCONNECT_WITH_WILL_MESSAGE
            && self.will().is_some();
        if !publish_will {
            self.take_will();
        }
        Ok(vec![Action::Disconnect { publish_will }])
    }

    /// AUTH: re-authentication needs the method CONNECT chose; without one, or with
    /// another one, it is a Protocol Error. No authentication method is implemented yet,
    /// so an AUTH that gets past those checks is refused as a bad method.
    pub(super) fn handle_auth(&mut self, auth: Auth) -> Result<Vec<Action>, Violation> {
        let method = self
            .extras
            .as_deref()
            .and_then(|extras| extras.authentication_method.as_ref());
        let Some(method) = method else {
            return Err(protocol_error(
                "AUTH without an authentication method in CONNECT",
            ));
        };
        if auth.properties.authentication_method.as_ref() != Some(method) {
            return Err(protocol_error("AUTH with another authentication method"));
        }
        Err(Violation {
            reason_code: reason::BAD_AUTHENTICATION_METHOD,
            message: "re-authentication is not supported",
        })
    }
}
