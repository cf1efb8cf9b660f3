//! Session lifecycle: attaching a connection (new session, resume, clean start,
//! takeover), detaching it, ending sessions, and publishing wills.
//!
//! Everything here holds the registry lock while it changes which handle a client id maps
//! to, so connect, disconnect and expiry of one client id are serialised. Wills and route
//! removal happen after the registry lock is released.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;

use crate::message::Message;
use crate::protocol::{Connect, PublishProperties, Will};
use crate::session::Session;
use crate::storage::{Completion, SessionRecord, StoreOp, EXPIRY_NEVER};

use super::scheduler::Pending;
use super::{lock, Attachment, Broker, SessionHandle, Stats};

/// A session interval this long or longer never expires (MQTT 5: 0xFFFFFFFF).
pub const NEVER_EXPIRES: Duration = Duration::from_secs(u32::MAX as u64);

/// The result of attaching a connection to its session.
pub struct Connected {
    pub handle: Arc<SessionHandle>,
    pub attachment: Attachment,
    /// CONNACK Session Present.
    pub session_present: bool,
    /// The write of the session record; CONNACK waits for it.
    pub written: Option<Completion>,
}

/// A session that ended and whose routes must go.
struct Ended {
    handle: Arc<SessionHandle>,
    filters: Vec<ByteString>,
}

pub(super) fn will_delay(will: &Will) -> Duration {
    Duration::from_secs(u64::from(will.properties.will_delay_interval.unwrap_or(0)))
}

/// Every subscription filter of a session, to remove its routes when it ends.
fn filters_of(session: &crate::session::Session) -> Vec<ByteString> {
    session
        .subscriptions()
        .map(|(filter, _)| filter.clone())
        .collect()
}

impl Broker {
    /// Attaches an accepted CONNECT to its session. `connect.client_id` must already be
    /// final (assigned if the client sent none) and `session_expiry` already clamped.
    ///
    /// A connection already attached to the session is kicked (takeover). Its will is
    /// published unless the session is resumed and the will was to be delayed: a
    /// reconnect within the Will Delay Interval cancels a will, as the spec requires.
    ///
    /// A session that outlives its connection (`session_expiry` > 0) is written to the
    /// store, with the will, so that a restart finds it; CONNACK waits for that write.
    ///
    /// `username` is who the client authenticated as (`None`: anonymous); with an ACL,
    /// messages reach the session only where that user may read.
    pub fn connect(
        &self,
        connect: &Connect,
        session_expiry: Duration,
        username: Option<&str>,
    ) -> Connected {
        let now = super::now();
        let mut wills = Vec::new();
        let mut ended = None;
        let mut ops = Vec::new();
        let mut registry = lock(&self.registry);
        let existing = registry.get(&connect.client_id).cloned();
        let (handle, session_present) = match existing {
            Some(old) => {
                // Timers of the offline session: a reconnect cancels its delayed will,
                // a clean start ends the session and so publishes it.
                let pending_will = self
                    .scheduler
                    .cancel(old.key)
                    .and_then(|pending| pending.will.map(|(_, will)| will));
                let mut session = old.lock();
                let taken_over = session.is_connected();
                let connected_will = if taken_over {
                    Stats::incr(&self.stats.takeovers);
                    tracing::info!(client_id = %old.client_id, "session taken over by a new connection");
                    session.take_will()
                } else {
                    None
                };
                if connect.clean_start {
                    let filters = filters_of(&session);
                    if session.is_persistent() {
                        ops.push(StoreOp::RemoveSession {
                            client_id: old.client_id.clone(),
                        });
                    }
                    old.retire_locked(&mut session, now);
                    drop(session);
                    wills.extend(connected_will);
                    wills.extend(pending_will);
                    ended = Some(Ended {
                        handle: old,
                        filters,
                    });
                    (self.new_handle(connect.client_id.clone()), false)
                } else {
                    if taken_over {
                        old.detach_locked(&mut session, now);
                    }
                    drop(session);
                    wills.extend(connected_will.filter(|will| will_delay(will).is_zero()));
                    (old, true)
                }
            }
            None => (self.new_handle(connect.client_id.clone()), false),
        };
        // A bridge's local session forwards what its rules say, whatever the ACL lets
        // clients read (as Mosquitto's bridges do): its gate stays open.
        let bridge = connect
            .client_id
            .starts_with(crate::bridge::LOCAL_SESSION_PREFIX);
        if self.read_checks().is_some() && !bridge {
            // Before attaching: the new client's messages are checked as its own.
            handle.read_gate.set_reader(username);
        }
        // Attaching bumps the generation, which kicks a connection still attached.
        let attachment = handle.attach(connect, session_expiry, now);
        let written = {
            let mut session = handle.lock();
            self.persistence_ops(&handle, &mut session, &mut ops);
            self.submit(ops)
        };
        registry.insert(connect.client_id.clone(), handle.clone());
        drop(registry);

        if let Some(ended) = ended {
            self.end(ended);
        }
        for will in wills {
            self.publish_will(will);
        }
        Connected {
            handle,
            attachment,
            session_present,
            written,
        }
    }

    /// The store operations that bring a just-attached session's record up to date: a
    /// session that outlives its connection is (re)written with the will of the new
    /// connection, one that ends with it is removed. A live session becoming persistent
    /// (a takeover with a longer expiry) brings its subscriptions along.
    fn persistence_ops(
        &self,
        handle: &SessionHandle,
        session: &mut Session,
        ops: &mut Vec<StoreOp>,
    ) {
        let persistent = !session.expiry_interval().is_zero();
        if persistent {
            if !session.is_persistent() {
                handle.set_persistent_locked(session, true);
                ops.push(StoreOp::PutSession(self.session_record(
                    &handle.client_id,
                    session,
                    session.will().cloned(),
                )));
                ops.extend(session.subscriptions().map(|(filter, entry)| {
                    StoreOp::AddSubscription {
                        client_id: handle.client_id.clone(),
                        filter: filter.clone(),
                        entry: *entry,
                    }
                }));
            } else {
                ops.push(StoreOp::PutSession(self.session_record(
                    &handle.client_id,
                    session,
                    session.will().cloned(),
                )));
            }
        } else if session.is_persistent() {
            handle.set_persistent_locked(session, false);
            ops.push(StoreOp::RemoveSession {
                client_id: handle.client_id.clone(),
            });
        }
    }

    /// The stored form of `client_id`'s session, with the will a restart still owes (if
    /// any).
    pub(crate) fn session_record(
        &self,
        client_id: &ByteString,
        session: &Session,
        will: Option<Will>,
    ) -> SessionRecord {
        let expiry = session.expiry_interval();
        SessionRecord {
            client_id: client_id.clone(),
            protocol: session.protocol(),
            expiry_interval: if expiry >= NEVER_EXPIRES {
                EXPIRY_NEVER
            } else {
                u32::try_from(expiry.as_secs()).unwrap_or(EXPIRY_NEVER)
            },
            will,
            disconnected_at: session
                .detached_at()
                .map(|at| self.clock.to_unix_millis(at)),
        }
    }

    /// Detaches the connection holding `generation` from its session. The will is
    /// published (now, or after its delay) only if `publish_will`. A session with expiry
    /// 0 ends here; others get their expiry timer. Nothing happens if the connection was
    /// already taken over.
    pub fn disconnect(&self, handle: &Arc<SessionHandle>, generation: u64, publish_will: bool) {
        let now = super::now();
        let mut registry = lock(&self.registry);
        let Some(mut session) = handle.lock_current(generation) else {
            return;
        };
        // Taken in any case: a will not published now must not survive into the next
        // connection (which brings its own).
        let will = session.take_will().filter(|_| publish_will);
        handle.detach_locked(&mut session, now);
        // A bridge's session (its outbox) is not capped: it lives as long as its bridge.
        if session.protocol().is_v5() && session.limits().outbox.is_none() {
            // DISCONNECT may have raised the interval past what CONNECT was granted.
            let max =
                Duration::from_secs(u64::from(self.config().sessions.max_session_expiry_secs));
            if session.expiry_interval() > max {
                session.set_expiry_interval(max);
            }
        }
        let expiry = session.expiry_interval();

        if expiry.is_zero() {
            let filters = filters_of(&session);
            if session.is_persistent() {
                // DISCONNECT lowered the interval to 0: the session ends now.
                self.submit_detached(vec![StoreOp::RemoveSession {
                    client_id: handle.client_id.clone(),
                }]);
            }
            handle.retire_locked(&mut session, now);
            drop(session);
            if registry
                .get(&handle.client_id)
                .is_some_and(|current| Arc::ptr_eq(current, handle))
            {
                registry.remove(&handle.client_id);
            }
            drop(registry);
            self.end(Ended {
                handle: handle.clone(),
                filters,
            });
            if let Some(will) = will {
                self.publish_will(will);
            }
            return;
        }

        let expires_at = (expiry < NEVER_EXPIRES)
            .then(|| now.checked_add(expiry))
            .flatten();
        let (immediate_will, delayed_will) = match will {
            Some(will) if !will_delay(&will).is_zero() => {
                let delay = will_delay(&will).min(expiry);
                match now.checked_add(delay) {
                    Some(at) => (None, Some((at, will))),
                    None => (Some(will), None),
                }
            }
            will => (will, None),
        };
        if session.is_persistent() {
            // The record keeps a delayed will: a restart before it is due still owes it.
            let owed = delayed_will.as_ref().map(|(_, will)| will.clone());
            let record = self.session_record(&handle.client_id, &session, owed);
            self.submit_detached(vec![StoreOp::PutSession(record)]);
        }
        drop(session);
        self.scheduler.schedule(Pending {
            handle: handle.clone(),
            generation: handle.generation(),
            will: delayed_will,
            expires_at,
        });
        drop(registry);
        if let Some(will) = immediate_will {
            self.publish_will(will);
        }
    }

    /// Ends an offline session whose expiry timer ran out, unless it reconnected since.
    pub(crate) fn expire(&self, handle: &Arc<SessionHandle>, generation: u64, will: Option<Will>) {
        let now = super::now();
        let mut registry = lock(&self.registry);
        let current = registry
            .get(&handle.client_id)
            .is_some_and(|current| Arc::ptr_eq(current, handle));
        if !current || handle.generation() != generation || handle.is_connected() {
            return;
        }
        registry.remove(&handle.client_id);
        let filters = {
            let mut session = handle.lock();
            let filters = filters_of(&session);
            if session.is_persistent() {
                self.submit_detached(vec![StoreOp::RemoveSession {
                    client_id: handle.client_id.clone(),
                }]);
            }
            handle.retire_locked(&mut session, now);
            filters
        };
        drop(registry);
        Stats::incr(&self.stats.sessions_expired);
        tracing::debug!(client_id = %handle.client_id, "session expired");
        self.end(Ended {
            handle: handle.clone(),
            filters,
        });
        if let Some(will) = will {
            self.publish_will_of(&handle.client_id, will);
        }
    }

    /// A delayed will came due while its session is still offline: publish it, and drop
    /// it from the stored record so a restart does not publish it again.
    pub(crate) fn publish_delayed_will(
        &self,
        handle: &Arc<SessionHandle>,
        generation: u64,
        will: Will,
    ) {
        {
            let registry = lock(&self.registry);
            let session = handle.lock();
            if handle.generation() != generation || session.is_connected() {
                return;
            }
            if session.is_persistent() {
                let record = self.session_record(&handle.client_id, &session, None);
                self.submit_detached(vec![StoreOp::PutSession(record)]);
            }
            drop(session);
            drop(registry);
        }
        self.publish_will_of(&handle.client_id, will);
    }

    fn end(&self, ended: Ended) {
        self.remove_routes(ended.handle.key, &ended.filters);
        if let Some(cluster) = self.cluster.get() {
            cluster.session_ended(&ended.handle.client_id);
        }
    }

    /// Publishes a will as an application message from no session.
    pub(crate) fn publish_will(&self, will: Will) {
        if crate::topic::validate_topic_name(&will.topic).is_err() {
            return;
        }
        Stats::incr(&self.stats.wills_published);
        let message = Arc::new(will_message(will, super::now()));
        self.publish(&message);
    }
}

/// Builds the application message of a will (spec 3.1.3.2: its properties are forwarded
/// like those of a PUBLISH).
pub fn will_message(will: Will, now: Instant) -> Message {
    let properties = will.properties;
    Message {
        topic: will.topic,
        payload: will.payload,
        qos: will.qos,
        retain: will.retain,
        properties: PublishProperties {
            payload_format_indicator: properties.payload_format_indicator,
            response_topic: properties.response_topic,
            correlation_data: properties.correlation_data,
            user_properties: properties.user_properties,
            content_type: properties.content_type,
            ..PublishProperties::default()
        },
        expires_at: properties
            .message_expiry_interval
            .and_then(|secs| now.checked_add(Duration::from_secs(u64::from(secs)))),
        publisher: None,
        cluster_id: Default::default(),
    }
}
