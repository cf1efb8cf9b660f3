//! Timers of offline sessions: delayed wills (MQTT 5 Will Delay Interval) and session
//! expiry, run by one task for the whole broker.
//!
//! Each offline session has at most one entry holding up to two deadlines. Deadlines sit
//! in an ordered set so the task sleeps until the earliest one; scheduling or cancelling
//! wakes it to re-plan. A reconnect cancels the entry (the delayed will is then not sent);
//! an entry whose session moved on meanwhile is recognised by its generation and ignored.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use crate::message::SessionKey;
use crate::protocol::Will;

use super::{lock, Broker, SessionHandle};

/// The timers of one offline session.
pub(crate) struct Pending {
    pub handle: Arc<SessionHandle>,
    /// The handle's generation when its connection went away.
    pub generation: u64,
    pub will: Option<(Instant, Will)>,
    /// `None`: the session never expires.
    pub expires_at: Option<Instant>,
}

/// Work that came due.
pub(crate) enum Due {
    Will {
        handle: Arc<SessionHandle>,
        generation: u64,
        will: Will,
    },
    Expire {
        handle: Arc<SessionHandle>,
        generation: u64,
        /// A will whose delay had not run out yet: the session ending publishes it.
        will: Option<Will>,
    },
}

#[derive(Default)]
struct Timers {
    deadlines: BTreeSet<(Instant, SessionKey)>,
    entries: HashMap<SessionKey, Pending>,
}

impl Timers {
    fn unlink(&mut self, pending: &Pending) {
        let key = pending.handle.key;
        if let Some((at, _)) = &pending.will {
            self.deadlines.remove(&(*at, key));
        }
        if let Some(at) = pending.expires_at {
            self.deadlines.remove(&(at, key));
        }
    }
}

#[derive(Default)]
pub(crate) struct Scheduler {
    timers: Mutex<Timers>,
    changed: Notify,
}

impl Scheduler {
    /// Installs the timers of an offline session, replacing any it had.
    pub fn schedule(&self, pending: Pending) {
        if pending.will.is_none() && pending.expires_at.is_none() {
            return;
        }
        let key = pending.handle.key;
        let mut timers = lock(&self.timers);
        if let Some(previous) = timers.entries.remove(&key) {
            timers.unlink(&previous);
        }
        if let Some((at, _)) = &pending.will {
            timers.deadlines.insert((*at, key));
        }
        if let Some(at) = pending.expires_at {
            timers.deadlines.insert((at, key));
        }
        timers.entries.insert(key, pending);
        drop(timers);
        self.changed.notify_one();
    }

    /// Removes the timers of a session (it reconnected or ended otherwise).
    pub fn cancel(&self, key: SessionKey) -> Option<Pending> {
        let mut timers = lock(&self.timers);
        let pending = timers.entries.remove(&key)?;
        timers.unlink(&pending);
        Some(pending)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        lock(&self.timers).deadlines.first().map(|(at, _)| *at)
    }

    pub fn len(&self) -> usize {
        lock(&self.timers).entries.len()
    }

    /// Takes everything due at `now`.
    pub fn take_due(&self, now: Instant) -> Vec<Due> {
        let mut due = Vec::new();
        let mut timers = lock(&self.timers);
        while let Some(&(at, key)) = timers.deadlines.first() {
            if at > now {
                break;
            }
            timers.deadlines.remove(&(at, key));
            let Some(pending) = timers.entries.get_mut(&key) else {
                continue;
            };
            if pending.expires_at.is_some_and(|at| at <= now) {
                if let Some(pending) = timers.entries.remove(&key) {
                    timers.unlink(&pending);
                    due.push(Due::Expire {
                        handle: pending.handle,
                        generation: pending.generation,
                        will: pending.will.map(|(_, will)| will),
                    });
                }
            } else if pending.will.as_ref().is_some_and(|(at, _)| *at <= now) {
                if let Some((_, will)) = pending.will.take() {
                    due.push(Due::Will {
                        handle: pending.handle.clone(),
                        generation: pending.generation,
                        will,
                    });
                }
                if pending.expires_at.is_none() {
                    timers.entries.remove(&key);
                }
            }
        }
        due
    }
}

impl Broker {
    /// Runs the timers until the server shuts down.
    pub async fn run_scheduler(self: Arc<Self>) {
        let mut shutdown = self.shutdown_signal();
        loop {
            if *shutdown.borrow_and_update() {
                return;
            }
            let next = self.scheduler.next_deadline();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = self.scheduler.changed.notified() => {}
                _ = shutdown.changed() => {}
            }
            for due in self.scheduler.take_due(super::now()) {
                self.fire(due);
            }
        }
    }

    fn fire(&self, due: Due) {
        match due {
            Due::Will {
                handle,
                generation,
                will,
            } => self.publish_delayed_will(&handle, generation, will),
            Due::Expire {
                handle,
                generation,
                will,
            } => self.expire(&handle, generation, will),
        }
    }

    /// Offline sessions waiting for a delayed will or their expiry.
    pub fn sessions_with_timers(&self) -> usize {
        self.scheduler.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionLimits;
    use std::time::Duration;

    fn will() -> Will {
        Will {
            topic: "w".into(),
            payload: bytes::Bytes::from_static(b"gone"),
            qos: crate::protocol::QoS::AtMostOnce,
            retain: false,
            properties: Default::default(),
        }
    }

    fn handle(key: SessionKey) -> Arc<SessionHandle> {
        let limits = SessionLimits {
            max_inflight: 10,
            receive_maximum: 10,
            max_queued_messages: 10,
            max_queued_bytes: 1000,
            max_retained_backlog: 10,
            topic_alias_maximum: 0,
            outbox: None,
        };
        Arc::new(SessionHandle::new(key, "c".into(), limits))
    }

    #[test]
    fn will_then_expiry_come_due_in_order() {
        let scheduler = Scheduler::default();
        let start = Instant::now();
        scheduler.schedule(Pending {
            handle: handle(1),
            generation: 1,
            will: Some((start + Duration::from_secs(5), will())),
            expires_at: Some(start + Duration::from_secs(10)),
        });
        assert_eq!(
            scheduler.next_deadline(),
            Some(start + Duration::from_secs(5))
        );
        assert!(scheduler.take_due(start).is_empty());
        let due = scheduler.take_due(start + Duration::from_secs(5));
        assert!(matches!(due.as_slice(), [Due::Will { .. }]));
        assert_eq!(scheduler.len(), 1);
        let due = scheduler.take_due(start + Duration::from_secs(10));
        assert!(matches!(due.as_slice(), [Due::Expire { will: None, .. }]));
        assert_eq!(scheduler.len(), 0);
        assert_eq!(scheduler.next_deadline(), None);
    }

    #[test]
    fn expiry_before_will_delay_carries_the_will() {
        let scheduler = Scheduler::default();
        let start = Instant::now();
        scheduler.schedule(Pending {
            handle: handle(1),
            generation: 1,
            will: Some((start + Duration::from_secs(10), will())),
            expires_at: Some(start + Duration::from_secs(3)),
        });
        let due = scheduler.take_due(start + Duration::from_secs(3));
        assert!(matches!(
            due.as_slice(),
            [Due::Expire { will: Some(_), .. }]
        ));
        assert_eq!(scheduler.next_deadline(), None);
    }

    #[test]
    fn cancel_removes_every_deadline() {
        let scheduler = Scheduler::default();
        let start = Instant::now();
        scheduler.schedule(Pending {
            handle: handle(7),
            generation: 1,
            will: Some((start + Duration::from_secs(1), will())),
            expires_at: Some(start + Duration::from_secs(2)),
        });
        assert!(scheduler.cancel(7).is_some());
        assert_eq!(scheduler.next_deadline(), None);
        assert!(scheduler
            .take_due(start + Duration::from_secs(60))
            .is_empty());
    }
}
