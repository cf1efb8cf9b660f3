//! Shared broker state: the session registry, the routes, retained messages and wills.
//!
//! Map of the runtime (one `Arc<Broker>` shared by every task):
//! - `crate::server` binds the listeners and spawns one task per accepted socket.
//! - `crate::connection` is that task: one poll function over the socket, the session's
//!   wake-up (also rung for a takeover and at shutdown) and the keep-alive deadline. It decodes
//!   packets, drives the sans-IO `Session`, and carries out the resulting actions here.
//! - `registry` (client id -> `SessionHandle`) is locked on connect, disconnect and expiry
//!   only ([`lifecycle`]: clean start, resume, takeover, wills, session end).
//! - `routes` (a `SubscriptionTrie` behind an `RwLock`) is read-locked by the publishing
//!   connection itself to fan a message out ([`routing`]); deliveries are pushed into
//!   each target session's bounded queue and its connection is woken. No router task.
//! - `retained` (a `RetainedTree`) is written by retained PUBLISHes and read on SUBSCRIBE.
//! - [`scheduler`] runs delayed wills and session expiry on one timer task.
//! - [`stats`] counts connections, takeovers and every dropped message by reason;
//!   `crate::metrics` and `crate::sys_topics` export those counts.
//! - `config` is swapped whole on reload (SIGHUP): a connection keeps the snapshot it
//!   was accepted with, new connections and sessions get the new limits.
//! - `store` (`crate::storage`) receives every change of durable state as `StoreOp`s,
//!   submitted while holding the lock that orders the change (a session's own changes
//!   under its lock, retained messages under the tree's lock, session records under the
//!   registry lock); [`restore`] rebuilds everything from it at start-up.
//!
//! Lock order (never held across `.await`): `registry` -> one session's `state` ->
//! `routes` / `retained` / scheduler. The router takes `routes` alone, releases it, then
//! locks target sessions one at a time.

pub mod congestion;
pub mod forward_order;
pub mod handle;
mod handover;
mod held_wills;
pub mod inspect;
pub mod lifecycle;
pub mod log_throttle;
mod recent;
pub mod registry;
pub mod remote;
pub mod restore;
pub mod routing;
pub mod scheduler;
pub mod stats;
pub mod wakeup;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{
    Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::time::Instant;

use bytestring::ByteString;
use tokio::sync::watch;

use crate::auth::Security;
use crate::config::Config;
use crate::message::{Message, SessionKey};
use crate::metrics::Metrics;
use crate::reload::Reloadable;
use crate::session::{Session, SessionLimits};
use crate::storage::{Completion, Store, StoreOp, WallClock};
use crate::topic::{RetainedTree, SubscriptionTrie};

pub use forward_order::ForwardOrder;
pub use handle::{Attachment, SessionHandle};
pub use handover::{HandedOver, Relayed, MOVE_WINDOW};
pub use lifecycle::Connected;
pub use remote::{Claimed, ClusterHook};
pub use restore::Restored;
pub use routing::{Published, Route};
pub use stats::{Dropped, Refusal, Stats, StatsSnapshot};

use scheduler::Scheduler;

pub struct Broker {
    /// The configuration in force and the session limits derived from it, replaced
    /// together on reload.
    live: RwLock<(Arc<Config>, Arc<SessionLimits>)>,
    /// Parts (password file, ACL, certificates) that re-read their own files on reload.
    reloadables: Mutex<Vec<Arc<dyn Reloadable>>>,
    /// The password file and ACL in force, set once at start when an ACL file is
    /// configured: the router then checks read access per delivery (`auth::read_gate`).
    read_checks: OnceLock<Arc<Security>>,
    metrics: Metrics,
    registry: Mutex<registry::Registry>,
    routes: RwLock<SubscriptionTrie<SessionKey, Route>>,
    retained: RwLock<RetainedTree<Arc<Message>>>,
    scheduler: Scheduler,
    stats: Stats,
    store: Arc<dyn Store>,
    /// Converts the broker's `Instant`s to the wall-clock times the store keeps.
    clock: WallClock,
    next_session_key: AtomicU64,
    next_client_number: AtomicU64,
    shutdown: watch::Sender<bool>,
    /// What `/health` and `/ready` report (`crate::health`).
    health: crate::health::HealthState,
    /// Limits of the local sessions of bridges (their outboxes), by client id.
    outboxes: RwLock<HashMap<ByteString, Arc<SessionLimits>>>,
    /// Counters of the running bridges, for metrics and `$SYS`.
    bridge_stats: RwLock<Vec<Arc<crate::bridge::BridgeStats>>>,
    /// The cluster this node belongs to (`crate::cluster`); unset on a single node, where
    /// the only cost is one check per PUBLISH.
    cluster: OnceLock<Arc<dyn ClusterHook>>,
    /// What sessions that moved here from another cluster node a short while ago hold
    /// (`recent`), by session key; empty on a single node.
    recent: Mutex<HashMap<SessionKey, recent::RecentIds>>,
    /// Wills held back while a restarted cluster node catches up (`held_wills`); `None`
    /// when wills are published at once.
    held_wills: Mutex<Option<Vec<(ByteString, crate::protocol::Will)>>>,
}

impl Broker {
    pub fn new(config: Config, store: Arc<dyn Store>) -> Arc<Broker> {
        Broker::with_metrics(config, store, Metrics::new())
    }

    /// Like `new`, with metrics created beforehand (so a store can be handed its
    /// `Metrics::storage()` recorder before the broker exists).
    pub fn with_metrics(config: Config, store: Arc<dyn Store>, metrics: Metrics) -> Arc<Broker> {
        let (shutdown, _) = watch::channel(false);
        Arc::new(Broker {
            live: RwLock::new((Arc::new(config.clone()), Arc::new(session_limits(&config)))),
            reloadables: Mutex::new(Vec::new()),
            read_checks: OnceLock::new(),
            metrics,
            registry: Mutex::new(registry::Registry::default()),
            routes: RwLock::new(SubscriptionTrie::new()),
            retained: RwLock::new(RetainedTree::new()),
            scheduler: Scheduler::default(),
            stats: Stats::default(),
            store,
            clock: WallClock::new(now(), std::time::SystemTime::now()),
            next_session_key: AtomicU64::new(1),
            next_client_number: AtomicU64::new(1),
            shutdown,
            health: crate::health::HealthState::default(),
            outboxes: RwLock::new(HashMap::new()),
            recent: Mutex::new(HashMap::new()),
            held_wills: Mutex::new(None),
            bridge_stats: RwLock::new(Vec::new()),
            cluster: OnceLock::new(),
        })
    }

    /// The configuration in force. A connection takes it once, when accepted.
    pub fn config(&self) -> Arc<Config> {
        read(&self.live).0.clone()
    }

    /// Puts `config` in force for connections and sessions created from now on.
    /// Listeners, storage and the metrics endpoint keep what they were started with.
    pub fn replace_config(&self, config: Config) {
        let limits = Arc::new(session_limits(&config));
        *write(&self.live) = (Arc::new(config), limits);
    }

    /// Makes every delivery depend on the subscriber's read access under `security`'s
    /// ACL, when it has an ACL file (otherwise nothing changes). Called once, at start.
    pub fn check_reads_with(&self, security: Arc<Security>) {
        if security.checks_reads() {
            let _ = self.read_checks.set(security);
        }
    }

    /// The security files, when deliveries are checked against an ACL.
    pub(crate) fn read_checks(&self) -> Option<&Security> {
        self.read_checks.get().map(Arc::as_ref)
    }

    /// Registers a part that re-reads its own files on reload (see `crate::reload`).
    pub fn add_reloadable(&self, reloadable: Arc<dyn Reloadable>) {
        lock(&self.reloadables).push(reloadable);
    }

    pub fn reloadables(&self) -> Vec<Arc<dyn Reloadable>> {
        lock(&self.reloadables).clone()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Readiness and the tasks that stopped (see `crate::health`).
    pub fn health(&self) -> &crate::health::HealthState {
        &self.health
    }

    /// How far the scheduler is behind its earliest timer; `None` when it is not
    /// behind. A running scheduler fires a timer within milliseconds of its deadline.
    pub fn scheduler_lag(&self) -> Option<std::time::Duration> {
        let deadline = self.scheduler.next_deadline()?;
        now().checked_duration_since(deadline)
    }

    /// Every session the broker holds, to sample gauges (queues, subscriptions) one
    /// session at a time without holding the registry lock.
    pub fn sessions(&self) -> Vec<Arc<SessionHandle>> {
        lock(&self.registry).values().cloned().collect()
    }

    /// Number of sessions the broker holds (connected or not).
    pub fn session_count(&self) -> usize {
        lock(&self.registry).len()
    }

    /// The session of `client_id`, if the broker holds one.
    pub fn session(&self, client_id: &str) -> Option<Arc<SessionHandle>> {
        lock(&self.registry).get(client_id).cloned()
    }

    pub fn retained_count(&self) -> usize {
        read(&self.retained).len()
    }

    /// Resolves when the server begins shutting down (immediately if it already has).
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells every connection task and the scheduler to stop.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
        // Connected clients wait on their session's wake-up rather than on the signal
        // (a receiver's wait would add to every connection's task); they check the
        // signal whenever woken.
        for handle in self.sessions() {
            handle.wake.notify_waiters();
        }
    }

    /// Whether `begin_shutdown` was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// A fresh, unique client identifier for a client that connected without one.
    pub fn assign_client_id(&self) -> ByteString {
        use std::hash::{BuildHasher, Hasher};
        let number = self.next_client_number.fetch_add(1, Ordering::Relaxed);
        // RandomState is seeded per instance from the OS: a cheap source of unguessable
        // bits, so assigned ids do not repeat across broker restarts either.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        ByteString::from(format!("fleetmq-{number}-{random:016x}"))
    }

    fn next_session_key(&self) -> crate::message::SessionKey {
        self.next_session_key.fetch_add(1, Ordering::Relaxed)
    }

    fn new_handle(&self, client_id: ByteString) -> Arc<SessionHandle> {
        let key = self.next_session_key();
        let limits = self.limits_for(&client_id);
        Arc::new(SessionHandle::new(key, client_id, limits))
    }

    /// The limits of a new session of `client_id`: a bridge's outbox settings for the
    /// local session of a bridge, the configured client limits for everyone else.
    pub(crate) fn limits_for(&self, client_id: &str) -> Arc<SessionLimits> {
        if client_id.starts_with(crate::bridge::LOCAL_SESSION_PREFIX) {
            if let Some(limits) = read(&self.outboxes).get(client_id) {
                return limits.clone();
            }
        }
        read(&self.live).1.clone()
    }

    /// Makes `client_id` the local session of a bridge whose outbox has these bounds and
    /// policy (`limits.outbox`); applies them to its session now if the broker holds one
    /// (restored at start, or kept across a reload).
    pub fn set_outbox_limits(&self, client_id: &str, limits: SessionLimits) {
        let limits = Arc::new(limits);
        write(&self.outboxes).insert(ByteString::from(client_id), limits.clone());
        if let Some(handle) = self.session(client_id) {
            handle.lock().set_limits(limits);
        }
    }

    /// Makes a bridge's counters visible to metrics and `$SYS` (replacing any of the
    /// same name).
    pub fn add_bridge_stats(&self, stats: Arc<crate::bridge::BridgeStats>) {
        let mut all = write(&self.bridge_stats);
        all.retain(|existing| existing.name != stats.name);
        all.push(stats);
    }

    pub fn remove_bridge_stats(&self, name: &str) {
        write(&self.bridge_stats).retain(|existing| existing.name != name);
    }

    /// The counters of every running bridge.
    pub fn bridge_stats(&self) -> Vec<Arc<crate::bridge::BridgeStats>> {
        read(&self.bridge_stats).clone()
    }

    /// The client limits in force (the base of a bridge's outbox limits).
    pub fn client_limits(&self) -> SessionLimits {
        (*read(&self.live).1).clone()
    }

    /// The store the broker writes its durable state to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Submits `ops` as one atomic write; `None` when there is nothing to write.
    pub(crate) fn submit(&self, ops: Vec<StoreOp>) -> Option<Completion> {
        (!ops.is_empty()).then(|| self.store.submit(ops))
    }

    /// Submits `ops` without waiting for them: nothing is acknowledged on their behalf,
    /// and a failed write is counted and logged by the store.
    pub(crate) fn submit_detached(&self, ops: Vec<StoreOp>) {
        drop(self.store.submit(ops));
    }

    /// Submits what a session journaled. Call with the session locked, after changing it.
    pub(crate) fn submit_journal(&self, session: &mut Session) -> Option<Completion> {
        self.submit(session.take_journal())
    }

    /// Waits until everything submitted so far is on stable storage (shutdown).
    pub async fn flush_store(&self) {
        if let Err(error) = self.store.flush().await {
            self.stats.storage_failed(&error);
        }
    }
}

fn session_limits(config: &Config) -> SessionLimits {
    let limits = &config.limits;
    SessionLimits {
        max_inflight: limits.max_inflight_messages,
        receive_maximum: limits.receive_maximum,
        max_queued_messages: limits.max_queued_messages,
        max_queued_bytes: limits.max_queued_bytes,
        max_retained_backlog: limits.max_retained_backlog,
        topic_alias_maximum: limits.topic_alias_maximum,
        outbox: None,
    }
}

/// The broker's clock. Taken from tokio so tests with paused time control expiry too.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A panic while holding a broker lock leaves plain data behind, still consistent enough
/// to keep serving the other clients; poisoning is therefore ignored.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod restore_tests;

#[cfg(test)]
mod incoming_write_tests;
#[cfg(test)]
mod remote_tests;
