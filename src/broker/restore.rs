//! Rebuilding the broker from the store at start-up, before any listener opens.
//!
//! Every stored session comes back offline with its subscriptions (routes), queue,
//! inflight messages (redelivered when its client reconnects) and incoming QoS 2 packet
//! ids; its expiry timer and any will it still owes are scheduled from the time it went
//! away, so time spent stopped counts. Retained messages go back into the tree. Wills of
//! sessions that expired while the broker was down, and delayed wills that came due
//! meanwhile, are published once everything is back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;

use crate::message::Message;
use crate::protocol::Will;
use crate::session::{Delivery, RestoredParts};
use crate::storage::{
    MessageId, RestoredDelivery, RestoredSession, RestoredState, StoreOp, UnixMillis, EXPIRY_NEVER,
};

use super::lifecycle::{will_delay, NEVER_EXPIRES};
use super::routing::trie_key;
use super::scheduler::Pending;
use super::{lock, write, Broker, Route, SessionHandle};

/// What a restore brought back, for the start-up log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    pub sessions: usize,
    pub subscriptions: usize,
    pub queued_messages: usize,
    pub inflight_messages: usize,
    pub retained_messages: usize,
    /// Wills published because they came due while the broker was down.
    pub wills_published: usize,
}

impl Broker {
    /// Loads `state` (from `Store::restore`) into an empty broker. Call once, before the
    /// listeners open.
    pub fn restore(&self, state: RestoredState) -> Restored {
        let now = super::now();
        let clock = self.clock;
        let now_ms = clock.to_unix_millis(now);
        let mut summary = Restored {
            retained_messages: state.retained.len(),
            ..Restored::default()
        };
        {
            let mut retained = write(&self.retained);
            for message in &state.retained {
                retained.insert(&message.topic, Arc::new(message.to_message(&clock)));
            }
        }

        // One live `Message` per stored body, shared by every session that holds it.
        let mut bodies: HashMap<MessageId, Arc<Message>> = HashMap::new();
        let mut delivery_of = |restored: RestoredDelivery| Delivery {
            message: bodies
                .entry(restored.message_id)
                .or_insert_with(|| Arc::new(restored.message.to_message(&clock)))
                .clone(),
            qos: restored.qos,
            retain: restored.retain,
            subscription_ids: restored.subscription_ids,
            stored: Some(restored.message_id),
        };

        let mut wills_due: Vec<(ByteString, Will)> = Vec::new();
        let mut ops = Vec::new();
        let mut registry = lock(&self.registry);
        // A cluster node may have died with forwards of a received QoS 2 message unsent.
        let clustered = self.config().cluster.is_some();
        for restored in state.sessions {
            let unconfirmed_incoming = if clustered {
                restored.incoming_qos2.clone()
            } else {
                Vec::new()
            };
            summary.sessions += 1;
            summary.subscriptions += restored.subscriptions.len();
            summary.queued_messages += restored.queue.len();
            summary.inflight_messages += restored.inflight.len();
            let installed = self.install_session(
                restored,
                now_ms,
                &mut delivery_of,
                &mut ops,
                unconfirmed_incoming,
            );
            let client_id = &installed.handle.client_id;
            wills_due.extend(installed.will_due.map(|will| (client_id.clone(), will)));
            registry.insert(installed.handle.client_id.clone(), installed.handle);
        }
        drop(registry);
        if !ops.is_empty() {
            // Best effort: if this write is lost, the next start derives the same.
            self.submit_detached(ops);
        }
        wills_due.extend(
            state
                .expired_sessions
                .into_iter()
                .filter_map(|record| record.will.map(|will| (record.client_id, will))),
        );
        summary.wills_published = wills_due.len();
        for (client_id, will) in wills_due {
            self.publish_will_of(&client_id, will);
        }
        summary
    }

    /// Rebuilds one stored session offline (not yet in the registry): its handle with
    /// queue, inflight messages and incoming QoS 2 ids, its routes, its expiry timer and
    /// the delayed will it still owes. A will already due is returned to be published;
    /// store operations that bring its record up to date go to `ops`. A resend of an
    /// incoming QoS 2 message of `unconfirmed_incoming` is routed again, under its
    /// recorded cluster id if any (`RestoredSession::incoming_ids`,
    /// `session::RestoredParts::incoming_qos2_unconfirmed`).
    pub(super) fn install_session(
        &self,
        restored: RestoredSession,
        now_ms: UnixMillis,
        delivery_of: &mut impl FnMut(RestoredDelivery) -> Delivery,
        ops: &mut Vec<StoreOp>,
        unconfirmed_incoming: Vec<u16>,
    ) -> Installed {
        let clock = self.clock;
        let mut record = restored.record;
        let expiry = if record.expiry_interval == EXPIRY_NEVER {
            NEVER_EXPIRES
        } else {
            Duration::from_secs(u64::from(record.expiry_interval))
        };
        // A session whose client was connected when the broker stopped lost its
        // connection then; as the store cannot know when, it counts from now.
        let detached_ms = match record.disconnected_at {
            Some(at) => at,
            None => {
                record.disconnected_at = Some(now_ms);
                ops.push(StoreOp::PutSession(record.clone()));
                now_ms
            }
        };
        let detached_at = clock.to_instant(detached_ms);
        let mut will_due = None;
        let will = match record.will.take() {
            Some(will) => {
                let delay = will_delay(&will).min(expiry);
                let due_ms = detached_ms
                    .saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
                if due_ms <= now_ms {
                    will_due = Some(will);
                    ops.push(StoreOp::PutSession(record.clone()));
                    None
                } else {
                    Some((clock.to_instant(due_ms), will))
                }
            }
            None => None,
        };
        let parts = RestoredParts {
            protocol: record.protocol,
            expiry_interval: expiry,
            detached_at,
            subscriptions: restored.subscriptions.clone(),
            queue: restored.queue.into_iter().map(&mut *delivery_of).collect(),
            inflight: restored
                .inflight
                .into_iter()
                .map(|inflight| {
                    (
                        delivery_of(inflight.delivery),
                        inflight.packet_id,
                        inflight.state,
                    )
                })
                .collect(),
            incoming_qos2: restored.incoming_qos2,
            incoming_qos2_unconfirmed: unconfirmed_incoming,
            incoming_qos2_ids: restored.incoming_ids,
        };
        let key = self.next_session_key();
        let handle = Arc::new(SessionHandle::restored(
            key,
            record.client_id.clone(),
            self.limits_for(&record.client_id),
            parts,
        ));
        {
            let mut routes = write(&self.routes);
            for (filter, entry) in &restored.subscriptions {
                if let Some((plain, group)) = trie_key(filter) {
                    let route = Route::new(handle.clone(), entry.options, entry.subscription_id);
                    routes.insert(plain, group, key, route);
                }
            }
        }
        let expires_at = (expiry < NEVER_EXPIRES)
            .then(|| detached_at.checked_add(expiry))
            .flatten();
        self.scheduler.schedule(Pending {
            handle: handle.clone(),
            generation: handle.generation(),
            will,
            expires_at,
        });
        Installed { handle, will_due }
    }
}

/// A session `install_session` rebuilt.
pub(super) struct Installed {
    pub(super) handle: Arc<SessionHandle>,
    /// A will that came due while the session was away, to publish.
    pub(super) will_due: Option<Will>,
}
