//! `SessionHandle`: one session as the broker shares it between its connection task, the
//! router (which enqueues into it) and the expiry scheduler.
//!
//! A handle outlives connections. Each attach bumps the handle's *generation*; a
//! connection task remembers the generation it attached with and only touches the session
//! while that generation is current. Bumping the generation is therefore also how an older
//! connection is kicked (takeover) or a discarded session is retired: every task waiting on
//! `wake` is woken and compares generations.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytestring::ByteString;

use crate::auth::ReadGate;
use crate::message::SessionKey;
use crate::protocol::Connect;
use crate::session::{RestoredParts, Session, SessionLimits};

use super::congestion::Congestion;
use super::lock;
use super::wakeup::Wakeup;

pub struct SessionHandle {
    pub key: SessionKey,
    pub client_id: ByteString,
    /// The session state machine. Held only for short, non-async critical sections.
    pub state: Mutex<Session>,
    /// Woken whenever something was enqueued; the attached connection then drains the
    /// session with `poll_outgoing`. Also woken when the generation moves and at
    /// shutdown: a connection checks both whenever woken.
    pub wake: Wakeup,
    /// Publishers waiting for this session's queue to drain (backpressure).
    pub congestion: Congestion,
    /// Whether the ACL lets this session's client read a message's topic; consulted by
    /// the router only when an ACL file is configured.
    pub read_gate: ReadGate,
    /// Changed only while `state` is locked, so a check under the lock is authoritative.
    generation: AtomicU64,
    /// Mirrors `Session::is_connected` so the router can prefer online members of a
    /// shared subscription group without locking every member.
    connected: AtomicBool,
    /// Mirrors `Session::is_persistent` so the router knows, without locking, which
    /// targets need their messages stored.
    persistent: AtomicBool,
    /// Set once the session ended; nothing queued for it any more will be delivered.
    retired: AtomicBool,
    /// The session moved here from another cluster node a short while ago: the broker
    /// drops second copies of the messages it has (`super::recent`).
    pub(super) moved_recently: AtomicBool,
    /// An operator asked the attached connection to close (MQTT 5: DISCONNECT 0x98
    /// Administrative action). Set with `state` locked, cleared by the next attach.
    kicked: AtomicBool,
}

/// What a connection task gets back from attaching to a session.
pub struct Attachment {
    /// The connection's generation: the connection is over once
    /// `SessionHandle::generation` differs.
    pub generation: u64,
}

impl SessionHandle {
    pub fn new(
        key: SessionKey,
        client_id: ByteString,
        limits: impl Into<Arc<SessionLimits>>,
    ) -> SessionHandle {
        let session = Session::new(key, limits);
        // A copy of its own: a clone of a caller's `ByteString` (made from a vector)
        // allocates a shared header beside the bytes, 32 bytes more for every session
        // whose id is never cloned again.
        let client_id = ByteString::from(&*client_id);
        SessionHandle::with_session(key, client_id, session)
    }

    /// The handle of a persistent session rebuilt from the store after a restart.
    pub fn restored(
        key: SessionKey,
        client_id: ByteString,
        limits: impl Into<Arc<SessionLimits>>,
        parts: RestoredParts,
    ) -> SessionHandle {
        let session = Session::restored(key, client_id.clone(), limits, parts);
        SessionHandle::with_session(key, client_id, session)
    }

    fn with_session(key: SessionKey, client_id: ByteString, session: Session) -> SessionHandle {
        SessionHandle {
            key,
            persistent: AtomicBool::new(session.is_persistent()),
            state: Mutex::new(session),
            client_id,
            wake: Wakeup::default(),
            congestion: Congestion::default(),
            read_gate: ReadGate::default(),
            generation: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            moved_recently: AtomicBool::new(false),
            kicked: AtomicBool::new(false),
        }
    }

    /// Whether the store keeps this session (see `Session::is_persistent`).
    pub fn is_persistent(&self) -> bool {
        self.persistent.load(Ordering::Acquire)
    }

    /// Starts or stops storing the session. Called with `session` locked from this handle.
    pub fn set_persistent_locked(&self, session: &mut Session, persistent: bool) {
        session.set_persistent(persistent.then_some(&self.client_id));
        self.persistent.store(persistent, Ordering::Release);
    }

    /// Whether the session has ended (discarded by a clean start, expired, or ended with
    /// its connection).
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Locks the session if `generation` is still the attached one; `None` once the
    /// connection holding `generation` has been taken over or the session retired.
    pub fn lock_current(&self, generation: u64) -> Option<MutexGuard<'_, Session>> {
        let guard = lock(&self.state);
        (self.generation.load(Ordering::Acquire) == generation).then_some(guard)
    }

    /// Locks the session whatever connection is attached (router, scheduler).
    pub fn lock(&self) -> MutexGuard<'_, Session> {
        lock(&self.state)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Attaches a new connection: kicks any previous one, hands the CONNECT to the session.
    pub fn attach(&self, connect: &Connect, session_expiry: Duration, now: Instant) -> Attachment {
        let mut session = lock(&self.state);
        self.kicked.store(false, Ordering::Release);
        let generation = self.bump_generation();
        session.attach(connect, session_expiry, now);
        self.connected.store(true, Ordering::Release);
        // Publishers waiting for the previous connection wait no more.
        self.congestion.relieve();
        drop(session);
        // The new connection drains redeliveries right after CONNACK; the wake-up also
        // covers a permit consumed by the connection being replaced.
        self.wake.notify_one();
        Attachment { generation }
    }

    /// Detaches the connection of the given session guard. Must be called with `session`
    /// locked from this handle.
    pub fn detach_locked(&self, session: &mut Session, now: Instant) {
        session.detach(now);
        self.connected.store(false, Ordering::Release);
        // Nobody drains an offline session: publishers stop waiting for it.
        self.congestion.relieve();
    }

    /// Retires the handle: the attached connection (if any) is kicked and no generation
    /// obtained before stays current. Called with `session` locked from this handle.
    pub fn retire_locked(&self, session: &mut Session, now: Instant) {
        if session.is_connected() {
            self.detach_locked(session, now);
        }
        // Whoever ends a persistent session removes it from the store.
        self.set_persistent_locked(session, false);
        self.retired.store(true, Ordering::Release);
        self.bump_generation();
    }

    /// Asks the attached connection, if any, to close with DISCONNECT 0x98
    /// (Administrative action) and detach as after any server-side disconnect. Called
    /// with `session` locked from this handle; returns whether a connection was attached.
    pub fn kick_locked(&self, session: &Session) -> bool {
        if !session.is_connected() {
            return false;
        }
        self.kicked.store(true, Ordering::Release);
        // A wake-up left pending: the connection may be between its checks and its
        // next wait, and must still see the kick.
        self.wake.notify_one();
        true
    }

    /// Whether an operator kicked the connection attached now (or, for a retired
    /// session, the last one).
    pub fn is_kicked(&self) -> bool {
        self.kicked.load(Ordering::Acquire)
    }

    fn bump_generation(&self) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        // A watch channel would cost every session a few hundred bytes. The new generation
        // is visible before the waiter is woken (see `Wakeup`).
        self.wake.notify_waiters();
        generation
    }
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("key", &self.key)
            .field("client_id", &self.client_id)
            .field("generation", &self.generation())
            .field("connected", &self.is_connected())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every session, connected or not, holds one handle, and every idle client one
    /// session: what these weigh is most of what an idle connection costs (BENCHMARKS.md,
    /// "Memory per idle connection"). State that few clients use, or that only a client
    /// with messages on their way uses, is allocated on first use: the outbound queue and
    /// inflight window (released again when the connection goes idle), the journal and
    /// client id copy of a persistent session, the backpressure signal, the will, the
    /// operators' view, the will and authentication method. A field that makes these
    /// larger should be a decision, not an accident. (240: the handle's allocation, 256
    /// bytes with its reference counts, fills jemalloc's 256-byte size class; one byte
    /// more takes the 320-byte class, 64 bytes more per connection.)
    #[test]
    fn a_session_stays_small() {
        assert!(
            std::mem::size_of::<Session>() <= 112,
            "Session is {} bytes",
            std::mem::size_of::<Session>()
        );
        assert!(
            std::mem::size_of::<SessionHandle>() <= 240,
            "SessionHandle is {} bytes",
            std::mem::size_of::<SessionHandle>()
        );
    }
}
