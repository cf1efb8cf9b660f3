//! What operators see and do through the admin API (`crate::admin`): clients with their
//! queues, subscriptions and retained messages; disconnecting a client (optionally
//! ending its session) and deleting a retained message.
//!
//! Nothing here is on the message path. A listing copies the registry's handles (or
//! the retained tree's message pointers) under the lock, sorts outside it, and then
//! locks only the sessions it reports, one at a time. The caller serialises the result
//! with no lock held.

use std::sync::Arc;

use bytestring::ByteString;
use serde::Serialize;

use crate::message::Message;
use crate::storage::{Completion, StoreOp};

use super::lifecycle::NEVER_EXPIRES;
use super::{lock, read, write, Broker, SessionHandle};

/// One page of a listing.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    /// Items matching the request, all pages together.
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub items: Vec<T>,
}

/// Which clients a listing includes; `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct ClientFilter {
    pub id_prefix: Option<String>,
    pub username: Option<String>,
    pub connected: Option<bool>,
}

/// A client (a session and its connection, if any) as the admin API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ClientSummary {
    pub client_id: String,
    pub connected: bool,
    /// The authenticated username of the current (or last) connection.
    pub username: Option<String>,
    /// The peer address of the current (or last) connection.
    pub peer: Option<String>,
    /// MQTT protocol level: 3 (3.1), 4 (3.1.1) or 5.
    pub protocol: u8,
    /// Unix milliseconds.
    pub connected_since_ms: Option<u64>,
    pub disconnected_at_ms: Option<u64>,
    pub keep_alive_secs: Option<u16>,
    pub clean_start: Option<bool>,
    /// `None`: the session never expires.
    pub session_expiry_secs: Option<u64>,
    /// Whether the store keeps the session (it outlives its connection).
    pub persistent: bool,
    pub subscriptions: usize,
    pub queued_messages: usize,
    pub queued_bytes: usize,
    pub inflight_messages: usize,
    pub inflight_bytes: usize,
    pub retained_backlog: usize,
    pub incoming_qos2_pending: usize,
    pub dropped_messages: u64,
}

/// One subscription of one session.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionView {
    pub client_id: String,
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0: send at subscribe, 1: only if new, 2: never.
    pub retain_handling: u8,
    pub subscription_id: Option<u32>,
}

/// The outcome of an operator's disconnect.
#[derive(Debug)]
pub struct Kicked {
    /// A connection was attached and was told to close.
    pub was_connected: bool,
    /// The session and its stored state were ended too.
    pub session_ended: bool,
    /// The removal of the stored session; the answer waits for it.
    pub written: Option<Completion>,
}

impl Broker {
    /// One page of the clients matching `filter`, ordered by client id.
    pub fn list_clients(
        &self,
        filter: &ClientFilter,
        offset: usize,
        limit: usize,
    ) -> Page<ClientSummary> {
        let mut handles: Vec<Arc<SessionHandle>> = self
            .sessions()
            .into_iter()
            .filter(|handle| {
                filter
                    .id_prefix
                    .as_deref()
                    .is_none_or(|prefix| handle.client_id.starts_with(prefix))
                    && filter
                        .connected
                        .is_none_or(|connected| handle.is_connected() == connected)
            })
            .collect();
        handles.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        let Some(username) = filter.username.as_deref() else {
            let items = handles
                .iter()
                .skip(offset)
                .take(limit)
                .map(|handle| self.summary(handle))
                .collect();
            return Page {
                total: handles.len(),
                offset,
                limit,
                items,
            };
        };
        // The username lives in the session: every candidate is looked at.
        let mut total = 0;
        let mut items = Vec::new();
        for handle in &handles {
            let summary = self.summary(handle);
            if summary.username.as_deref() != Some(username) {
                continue;
            }
            if total >= offset && items.len() < limit {
                items.push(summary);
            }
            total += 1;
        }
        Page {
            total,
            offset,
            limit,
            items,
        }
    }

    /// The client `client_id` with its subscriptions (ordered by filter).
    pub fn client_detail(&self, client_id: &str) -> Option<(ClientSummary, Vec<SubscriptionView>)> {
        let handle = self.session(client_id)?;
        let summary = self.summary(&handle);
        Some((summary, subscriptions_of(&handle)))
    }

    /// One page of the subscriptions of every session (or of `client_id` only), those
    /// with exactly the filter `filter` if given, ordered by client id then filter.
    pub fn list_subscriptions(
        &self,
        client_id: Option<&str>,
        filter: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Page<SubscriptionView> {
        let mut handles: Vec<Arc<SessionHandle>> = match client_id {
            Some(id) => self.session(id).into_iter().collect(),
            None => self.sessions(),
        };
        handles.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        let mut total = 0;
        let mut items = Vec::new();
        for handle in &handles {
            for view in subscriptions_of(handle) {
                if filter.is_some_and(|wanted| view.filter != wanted) {
                    continue;
                }
                if total >= offset && items.len() < limit {
                    items.push(view);
                }
                total += 1;
            }
        }
        Page {
            total,
            offset,
            limit,
            items,
        }
    }

    /// One page of the retained messages whose topics match `filter`, ordered by topic.
    pub fn list_retained(&self, filter: &str, offset: usize, limit: usize) -> Page<Arc<Message>> {
        let mut matching: Vec<Arc<Message>> = Vec::new();
        read(&self.retained).for_each_matching(filter, |message| matching.push(message.clone()));
        matching.sort_by(|a, b| a.topic.cmp(&b.topic));
        let total = matching.len();
        let items = matching.into_iter().skip(offset).take(limit).collect();
        Page {
            total,
            offset,
            limit,
            items,
        }
    }

    /// Deletes the retained message of `topic`, as a retained PUBLISH with an empty
    /// payload would; `None` when there is none. The completion resolves once the
    /// deletion is durable.
    pub fn delete_retained(&self, topic: &str) -> Option<Completion> {
        let mut retained = write(&self.retained);
        retained.remove(topic)?;
        Some(self.store.submit(vec![StoreOp::ClearRetained {
            topic: ByteString::from(topic),
        }]))
    }

    /// Disconnects the client `client_id` (MQTT 5: DISCONNECT 0x98 Administrative
    /// action); its will is published as after any disconnect the client did not ask
    /// for. With `end_session`, the session ends too, with its subscriptions, queue and
    /// stored state, as a clean start would end it. `None`: no such session.
    pub fn kick(&self, client_id: &str, end_session: bool) -> Option<Kicked> {
        let now = super::now();
        let mut registry = lock(&self.registry);
        let handle = registry.get(client_id)?.clone();
        let pending_will = if end_session {
            self.scheduler
                .cancel(handle.key)
                .and_then(|pending| pending.will.map(|(_, will)| will))
        } else {
            None
        };
        let mut session = handle.lock();
        let was_connected = handle.kick_locked(&session);
        if !end_session {
            return Some(Kicked {
                was_connected,
                session_ended: false,
                written: None,
            });
        }
        let connected_will = if was_connected {
            session.take_will()
        } else {
            None
        };
        let filters: Vec<ByteString> = session
            .subscriptions()
            .map(|(filter, _)| filter.clone())
            .collect();
        let written = if session.is_persistent() {
            self.submit(vec![StoreOp::RemoveSession {
                client_id: handle.client_id.clone(),
            }])
        } else {
            None
        };
        handle.retire_locked(&mut session, now);
        drop(session);
        registry.remove(client_id);
        drop(registry);
        tracing::info!(client_id, "session ended by an operator");
        self.remove_routes(handle.key, &filters);
        for will in connected_will.into_iter().chain(pending_will) {
            self.publish_will(will);
        }
        Some(Kicked {
            was_connected,
            session_ended: true,
            written,
        })
    }

    fn summary(&self, handle: &SessionHandle) -> ClientSummary {
        let session = handle.lock();
        let connected = session.is_connected();
        let info = session.client_info();
        let expiry = session.expiry_interval();
        ClientSummary {
            client_id: handle.client_id.to_string(),
            connected,
            username: info.and_then(|info| info.username.as_deref().map(String::from)),
            peer: info.map(|info| info.peer.to_string()),
            protocol: session.protocol().level(),
            connected_since_ms: info.filter(|_| connected).map(|info| info.connected_at_ms),
            disconnected_at_ms: session
                .detached_at()
                .map(|at| self.clock.to_unix_millis(at)),
            keep_alive_secs: info.map(|info| info.keep_alive),
            clean_start: info.map(|info| info.clean_start),
            session_expiry_secs: (expiry < NEVER_EXPIRES).then_some(expiry.as_secs()),
            persistent: session.is_persistent(),
            subscriptions: session.subscriptions().count(),
            queued_messages: session.queued_len(),
            queued_bytes: session.queued_bytes(),
            inflight_messages: session.inflight_len(),
            inflight_bytes: session.inflight_bytes(),
            retained_backlog: session.retained_backlog_len(),
            incoming_qos2_pending: session.incoming_qos2_len(),
            dropped_messages: session.dropped_count(),
        }
    }
}

fn subscriptions_of(handle: &SessionHandle) -> Vec<SubscriptionView> {
    let session = handle.lock();
    let mut views: Vec<SubscriptionView> = session
        .subscriptions()
        .map(|(filter, entry)| SubscriptionView {
            client_id: handle.client_id.to_string(),
            filter: filter.to_string(),
            qos: entry.options.qos as u8,
            no_local: entry.options.no_local,
            retain_as_published: entry.options.retain_as_published,
            retain_handling: entry.options.retain_handling as u8,
            subscription_id: entry.subscription_id,
        })
        .collect();
    drop(session);
    views.sort_by(|a, b| a.filter.cmp(&b.filter));
    views
}

/// The remaining expiry of a retained message in whole seconds, if it has one.
pub fn remaining_expiry(message: &Message) -> Option<u32> {
    message.remaining_expiry(super::now())
}
