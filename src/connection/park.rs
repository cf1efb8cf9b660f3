//! Parked connections: an idle plain-TCP or TLS client kept as its socket, without a task.
//!
//! Most of a fleet is idle most of the time, and an idle connection's task costs more
//! than its session: tokio's I/O registration (cache-line aligned), the task cell, the
//! keep-alive timer and the `Connection` with its buffers. A connection that stayed idle
//! for `limits.park_after_ms` (nothing to read, write, deliver or wait for: see
//! `Connection::can_park`) hands its socket to a parking table of its listener and ends
//! its task. The table keeps, per connection, a small entry (`Parked`: the socket, the
//! session handle and generation, the configuration and the connection slots, the
//! keep-alive deadline in ticks of 0.1 s) and registers the socket in its own epoll
//! instance (mio): the kernel keeps watching it, no per-socket state stays in tokio.
//!
//! A parked connection comes back (a new `Connection` and task over the same socket,
//! with the same keep-alive deadline) when:
//! - its socket becomes readable (the client sent something, or closed, or failed);
//! - its session's wake-up rings (`crate::broker::wakeup`): a message to deliver, a
//!   takeover, an operator's kick or server shutdown; the wake-up then asks the table
//!   to unpark it (`UnparkQueue`);
//! - its keep-alive deadline passes: the table's timer wheel (one bucket per tick of 0.1 s)
//!   unparks it, and the connection closes as a keep-alive timeout, will included.
//!   Deadlines are rounded up to the tick: never early, at most a tick late.
//!
//! Whatever the connection does next is exactly what a connection that was never parked
//! would do. Each table runs as one task (`ParkingTableTask`), one table per worker
//! thread, whose epoll descriptor is registered with tokio's reactor like a socket.
//!
//! Parking and unparking race with wake-ups from any thread. An entry is inserted and
//! its wake-up registered under the table's lock, so the table cannot unpark it before
//! the wake-up is in place; a wake-up pending or a generation changed meanwhile refuses
//! parking (the connection stays a task). Tokens name an entry and its stamp, so a
//! request for an entry unparked since (or a slot reused) is ignored, and the pending
//! flag of the wake-up, which only the connection's task takes, loses nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use mio::{Interest, Registry, Token};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::time::Instant as TokioInstant;

use super::chunked::Chunked;
use super::held::HeldPackets;
use super::{policy, Connection};
use crate::broker::wakeup::UnparkQueue;
use crate::broker::{lock, now, Broker, ForwardOrder, SessionHandle, Stats};
use crate::config::Config;
use crate::listener::{ClientStream, ConnectionSlots, ListenerContext, ParkedTls, TlsStream};
use crate::protocol::ProtocolVersion;

/// The keep-alive wheel's bucket: deadlines of parked connections are rounded up to it.
const TICK: Duration = Duration::from_millis(100);

/// Readiness events taken from a table's epoll instance at once.
const EVENTS_PER_POLL: usize = 256;

/// `Parked::keep_alive_at` of a connection without keep alive.
const NO_DEADLINE: u32 = u32::MAX;

/// The parking tables of one listener, one per worker thread.
pub struct ParkingLot {
    tables: Box<[Arc<ParkTable>]>,
    /// The tables' epoll instances, until their tasks take them.
    polls: Mutex<Vec<mio::Poll>>,
}

/// One table: its parked connections, its epoll registry and its requests.
struct ParkTable {
    registry: Registry,
    queue: Arc<UnparkQueue>,
    state: Mutex<TableState>,
    /// Keep-alive deadlines are counted in ticks after this.
    epoch: TokioInstant,
    /// Index of this table, the upper bits of its tokens' stamps are not needed: tokens
    /// are per table.
    next_stamp: AtomicUsize,
}

#[derive(Default)]
struct TableState {
    entries: Chunked<Parked>,
    /// Vacant indices of `entries`.
    free: Vec<u32>,
    /// Tokens by keep-alive deadline (ticks after the epoch): one per parked
    /// connection with keep alive, removed when it is unparked.
    wheel: BTreeMap<u32, Vec<u64>>,
    /// The table's task has ended: nothing more is parked here.
    closed: bool,
}

impl TableState {
    /// Takes `token` out of the wheel's bucket `at` (gone already when the deadline
    /// passed). A bucket holds the connections parked with a deadline in one tick.
    fn forget_deadline(&mut self, at: u32, token: u64) {
        if at == NO_DEADLINE {
            return;
        }
        if let Some(bucket) = self.wheel.get_mut(&at) {
            if let Some(position) = bucket.iter().position(|known| *known == token) {
                bucket.swap_remove(position);
            }
            if bucket.is_empty() {
                self.wheel.remove(&at);
            }
        }
    }
}

/// What stays of a parked connection. Everything else of `Connection` is either empty
/// while idle or rebuilt from this, the listener and the session when it comes back.
struct Parked {
    socket: mio::net::TcpStream,
    /// Tells this entry from earlier ones in the same slot (the token's upper half).
    stamp: u32,
    /// Deadline in ticks after the table's epoch, `NO_DEADLINE` without keep alive.
    keep_alive_at: u32,
    /// The keep alive in force, seconds.
    keep_alive_secs: u16,
    handle: Arc<SessionHandle>,
    generation: u64,
    config: Arc<Config>,
    slots: ConnectionSlots,
    /// The client's address where it is not the socket's peer (PROXY protocol).
    proxied_peer: Option<Box<SocketAddr>>,
    /// rustls's state of a TLS connection; `None` for plain TCP.
    tls: Option<Box<ParkedTls>>,
    version: ProtocolVersion,
}

/// Why a connection was not parked.
pub(super) enum NotParked {
    /// Something happened meanwhile (a wake-up, a takeover): serve on.
    Busy(Box<Connection>, ClientStream),
    /// The socket could not be taken from tokio's reactor; it is closed.
    SocketLost(Box<Connection>),
}

fn token(index: u32, stamp: u32) -> u64 {
    (u64::from(stamp) << 32) | u64::from(index)
}

fn split(token: u64) -> (u32, u32) {
    (token as u32, (token >> 32) as u32)
}

impl ParkingLot {
    /// One table per worker thread of the current runtime.
    pub fn new() -> std::io::Result<ParkingLot> {
        let workers = tokio::runtime::Handle::try_current()
            .map(|runtime| runtime.metrics().num_workers())
            .unwrap_or(1)
            .max(1);
        let mut tables = Vec::with_capacity(workers);
        let mut polls = Vec::with_capacity(workers);
        for _ in 0..workers {
            let poll = mio::Poll::new()?;
            tables.push(Arc::new(ParkTable {
                registry: poll.registry().try_clone()?,
                queue: Arc::new(UnparkQueue::default()),
                state: Mutex::new(TableState::default()),
                epoch: TokioInstant::now(),
                next_stamp: AtomicUsize::new(0),
            }));
            polls.push(poll);
        }
        Ok(ParkingLot {
            tables: tables.into_boxed_slice(),
            polls: Mutex::new(polls),
        })
    }

    /// The tasks of the tables, to be spawned once by the listener; they run until
    /// `close`.
    pub fn tasks(
        &self,
        broker: &Arc<Broker>,
        listener: &Arc<ListenerContext>,
    ) -> std::io::Result<Vec<ParkingTableTask>> {
        let polls = std::mem::take(&mut *lock(&self.polls));
        polls
            .into_iter()
            .zip(self.tables.iter())
            .map(|(poll, table)| {
                // SAFETY: the `mio::Poll` owns its epoll descriptor and closes it only when
                // dropped; the `AsyncFd` owns the `Poll`, so the descriptor stays valid
                // and is never replaced while registered (tokio's I/O-safety condition).
                let poll = unsafe {
                    AsyncFd::register_with_interest(poll, tokio::io::Interest::READABLE)?
                };
                Ok(ParkingTableTask {
                    table: table.clone(),
                    poll,
                    broker: broker.clone(),
                    listener: listener.clone(),
                })
            })
            .collect()
    }

    /// Brings every parked connection back (they then see the shutdown) and parks no
    /// more.
    pub fn close(&self) {
        for table in self.tables.iter() {
            lock(&table.state).closed = true;
            table.queue.ready.notify_one();
        }
    }

    fn table_for(&self, handle: &Arc<SessionHandle>) -> &Arc<ParkTable> {
        let index = (Arc::as_ptr(handle) as usize >> 6) % self.tables.len();
        &self.tables[index]
    }
}

/// Parks `connection`, which `Connection::can_park` found idle, with its plain-TCP or TLS
/// `stream`.
pub(super) fn park(
    mut connection: Box<Connection>,
    stream: ClientStream,
    keep_alive_deadline: Option<TokioInstant>,
) -> Result<(), NotParked> {
    let Some(lot) = connection.listener.parking.clone() else {
        return Err(NotParked::Busy(connection, stream));
    };
    let (tcp, tls) = match stream {
        ClientStream::Tcp(tcp) => (tcp, None),
        ClientStream::Tls(tls) if tls.is_idle() => {
            let (tcp, parked) = tls.park();
            (tcp, Some(Box::new(parked)))
        }
        other => return Err(NotParked::Busy(connection, other)),
    };
    let table = lot.table_for(&connection.handle).clone();
    let peer_of_socket = tcp.peer_addr().ok();
    let std_socket = match tcp.into_std() {
        Ok(socket) => socket,
        Err(error) => {
            tracing::debug!(client_id = %connection.handle.client_id, %error, "socket lost while parking");
            return Err(NotParked::SocketLost(connection));
        }
    };
    let mut socket = mio::net::TcpStream::from_std(std_socket);
    let keep_alive_at = match keep_alive_deadline {
        // Rounded up: a parked connection is never timed out early.
        Some(deadline) => {
            let after = deadline.saturating_duration_since(table.epoch).as_nanos();
            let ticks = after.div_ceil(TICK.as_nanos());
            u32::try_from(ticks).unwrap_or(NO_DEADLINE - 1)
        }
        None => NO_DEADLINE,
    };
    let mut state = lock(&table.state);
    let refused = state.closed;
    let index = match state.free.pop() {
        Some(index) => index,
        None => state.entries.len() as u32,
    };
    let stamp = table.next_stamp.fetch_add(1, Ordering::Relaxed) as u32;
    let token = token(index, stamp);
    let generation = connection.generation;
    let handle = &connection.handle;
    let registered = !refused
        && table
            .registry
            .register(&mut socket, Token(token as usize), Interest::READABLE)
            .is_ok();
    let waiting = registered
        && handle
            .wake
            .park(&table.queue, token, || handle.generation() == generation);
    if !waiting {
        if registered {
            let _ = table.registry.deregister(&mut socket);
        }
        if index as usize != state.entries.len() {
            state.free.push(index);
        }
        drop(state);
        return match into_tokio(socket) {
            Ok(tcp) => Err(NotParked::Busy(connection, client_stream(tcp, tls))),
            Err(_) => Err(NotParked::SocketLost(connection)),
        };
    }
    let proxied_peer = (peer_of_socket != Some(connection.peer)).then(|| Box::new(connection.peer));
    let parked = Parked {
        socket,
        stamp,
        keep_alive_at,
        keep_alive_secs: connection.keep_alive_secs,
        handle: connection.handle.clone(),
        generation,
        config: connection.config.clone(),
        slots: std::mem::replace(&mut connection.slots, ConnectionSlots::internal()),
        proxied_peer,
        tls,
        version: connection.version,
    };
    if index as usize == state.entries.len() {
        state.entries.push(parked);
    } else if let Some(slot) = state.entries.get_mut(index as usize) {
        *slot = Some(parked);
    }
    if keep_alive_at != NO_DEADLINE {
        state.wheel.entry(keep_alive_at).or_default().push(token);
    }
    // Counted under the table's lock, which the unparking side takes before it counts
    // the connection out: the gauge never goes below zero.
    Stats::incr(&connection.broker.stats().connections_parked);
    drop(state);
    // Shutdown sets its flag before it rings every session's wake-up: registered after
    // the ring, the flag is seen here.
    if connection.broker.is_shutting_down() {
        table.queue.request(token);
    }
    connection.parked = true;
    table.queue.ready.notify_one();
    Ok(())
}

/// The stream of a connection taken out of (or refused by) its table.
fn client_stream(tcp: TcpStream, tls: Option<Box<ParkedTls>>) -> ClientStream {
    match tls {
        None => ClientStream::Tcp(tcp),
        Some(parked) => ClientStream::Tls(Box::new(TlsStream::unpark(tcp, *parked))),
    }
}

/// A socket given back to tokio's reactor.
fn into_tokio(socket: mio::net::TcpStream) -> std::io::Result<TcpStream> {
    TcpStream::from_std(std::net::TcpStream::from(OwnedFd::from(socket)))
}

/// The task of one parking table: unparks connections whose socket became readable,
/// whose session woke them, or whose keep alive expired.
pub struct ParkingTableTask {
    table: Arc<ParkTable>,
    poll: AsyncFd<mio::Poll>,
    broker: Arc<Broker>,
    listener: Arc<ListenerContext>,
}

impl ParkingTableTask {
    pub async fn run(self) {
        let ParkingTableTask {
            table,
            mut poll,
            broker,
            listener,
        } = self;
        let unparker = Unparker {
            table,
            broker,
            listener,
        };
        let table = &unparker.table;
        let mut events = mio::Events::with_capacity(EVENTS_PER_POLL);
        let mut due = Vec::new();
        loop {
            let next_deadline = {
                let state = lock(&table.state);
                if state.closed {
                    break;
                }
                state.wheel.keys().next().copied()
            };
            let wheel_at = next_deadline.map(|ticks| table.epoch + TICK * ticks);
            tokio::select! {
                ready = poll.readable_mut() => {
                    let Ok(mut guard) = ready else { break };
                    loop {
                        let polled = guard.get_inner_mut().poll(&mut events, Some(Duration::ZERO));
                        if polled.is_err() || events.is_empty() {
                            guard.clear_ready();
                            break;
                        }
                        due.extend(events.iter().map(|event| event.token().0 as u64));
                        if due.len() >= EVENTS_PER_POLL * 16 {
                            break;
                        }
                    }
                }
                _ = table.queue.ready.notified() => {}
                _ = sleep_until_some(wheel_at) => {}
            }
            due.extend(table.queue.take());
            unparker.take_expired(&mut due);
            for token in due.drain(..) {
                unparker.unpark(token);
            }
        }
        let this = unparker;
        // Closed: what is still parked comes back to see the shutdown.
        let tokens: Vec<u64> = {
            let state = lock(&this.table.state);
            state
                .entries
                .iter()
                .enumerate()
                .filter_map(|(index, entry)| {
                    entry
                        .as_ref()
                        .map(|parked| token(index as u32, parked.stamp))
                })
                .collect()
        };
        for token in tokens {
            this.unpark(token);
        }
    }
}

/// What a table's task needs to bring connections back.
struct Unparker {
    table: Arc<ParkTable>,
    broker: Arc<Broker>,
    listener: Arc<ListenerContext>,
}

impl Unparker {
    /// Adds the tokens whose keep-alive deadline passed.
    fn take_expired(&self, due: &mut Vec<u64>) {
        let elapsed = TokioInstant::now().saturating_duration_since(self.table.epoch);
        let now_ticks =
            u32::try_from(elapsed.as_nanos() / TICK.as_nanos()).unwrap_or(NO_DEADLINE - 1);
        let mut state = lock(&self.table.state);
        while let Some(entry) = state.wheel.first_entry() {
            if *entry.key() > now_ticks {
                break;
            }
            due.extend(entry.remove());
        }
    }

    /// Takes the entry `token` names, if it is still parked, and serves it again.
    fn unpark(&self, token: u64) {
        let (index, stamp) = split(token);
        let parked = {
            let mut state = lock(&self.table.state);
            let slot = state.entries.get_mut(index as usize);
            match slot {
                Some(entry) if entry.as_ref().is_some_and(|parked| parked.stamp == stamp) => {
                    let parked = entry.take();
                    state.free.push(index);
                    if let Some(at) = parked.as_ref().map(|parked| parked.keep_alive_at) {
                        state.forget_deadline(at, token);
                    }
                    parked
                }
                _ => None,
            }
        };
        let Some(mut parked) = parked else {
            return;
        };
        Stats::decr(&self.broker.stats().connections_parked);
        let _ = self.table.registry.deregister(&mut parked.socket);
        let keep_alive_deadline = (parked.keep_alive_at != NO_DEADLINE)
            .then(|| self.table.epoch + TICK * parked.keep_alive_at);
        let Parked {
            socket,
            keep_alive_secs,
            handle,
            generation,
            config,
            slots,
            proxied_peer,
            tls,
            version,
            ..
        } = parked;
        let tcp = match into_tokio(socket) {
            Ok(tcp) => tcp,
            Err(error) => {
                // The socket is closed: the client is gone, as if it had closed it.
                tracing::debug!(client_id = %handle.client_id, %error, "parked socket lost");
                Stats::incr(&self.broker.stats().connections_closed);
                self.broker.disconnect(&handle, generation, true);
                return;
            }
        };
        let peer = match proxied_peer {
            Some(peer) => *peer,
            None => tcp
                .peer_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
        };
        // The username is the session's record of who connected (a connection no longer
        // current only closes, and needs none).
        let username = handle.lock_current(generation).and_then(|session| {
            session
                .client_info()
                .and_then(|info| info.username.as_deref().map(String::from))
        });
        let connection = Box::new(Connection {
            broker: self.broker.clone(),
            rate: policy::PublishRate::new(config.limits.max_publish_rate, now()),
            config,
            handle,
            generation,
            version,
            peer,
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            out: Vec::new(),
            held: HeldPackets::default(),
            keep_alive_secs,
            qos0_unwritten: 0,
            unflushed: false,
            listener: self.listener.clone(),
            username,
            enhanced_auth: None,
            paused: None,
            outbox_deadline: None,
            output_waiting: false,
            slots,
            parked: false,
            forward_order: ForwardOrder::default(),
        });
        let serving = Box::pin(connection.run(client_stream(tcp, tls), keep_alive_deadline, false));
        tokio::spawn(serving);
    }
}

async fn sleep_until_some(at: Option<TokioInstant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Connection {
    /// How long this connection must stay idle to be parked; `None` when it never is
    /// (WebSocket, in-process bridges, `park_after_ms = 0`).
    pub(super) fn park_after(&self, stream: &ClientStream) -> Option<Duration> {
        let millis = self.config.limits.park_after_ms;
        let parkable = matches!(stream, ClientStream::Tcp(_) | ClientStream::Tls(_));
        (millis > 0 && parkable && self.listener.parking.is_some())
            .then(|| Duration::from_millis(millis))
    }

    /// Whether nothing of this connection needs a task now: no bytes to decode or to
    /// write, no acknowledgement waiting for its write, no backpressure, nothing the
    /// session may send, no re-authentication, a publish rate at rest, and no wake-up
    /// waiting to be taken. A session found idle gives back its outbound state's memory
    /// here (`Session::release_idle_memory`), whether or not the table then takes the
    /// connection: that state is built again by the next message.
    pub(super) fn can_park(&self, stream: &ClientStream) -> bool {
        let idle = stream.can_park()
            && self.listener.parking.is_some()
            && self.read_buf.is_empty()
            && self.write_buf.is_empty()
            && !self.unflushed
            && self.out.is_empty()
            && self.held.is_empty()
            && self.paused.is_none()
            && self.outbox_deadline.is_none()
            && !self.output_waiting
            && self.enhanced_auth.is_none()
            && self.rate.is_full(now())
            && !self.handle.wake.is_pending();
        idle && self
            .handle
            .lock_current(self.generation)
            .is_some_and(|mut session| {
                let nothing_to_send = !session.has_outgoing();
                if nothing_to_send {
                    session.release_idle_memory();
                }
                nothing_to_send
            })
    }

    /// Ends a connection whose socket was lost while parking, as a closed socket.
    pub(super) fn close_lost_socket(self: Box<Self>) {
        self.broker.disconnect(&self.handle, self.generation, true);
        tracing::info!(client_id = %self.handle.client_id, peer = %self.peer, reason = ?super::Exit::SocketClosed, "client disconnected");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every parked connection holds one entry: it is what an idle device costs beside
    /// its session (see `crate::broker::handle`'s size test for why this is guarded).
    /// 72 bytes; debug builds add mio's 8-byte selector check to the socket, aligned
    /// to 16.
    #[test]
    fn a_parked_entry_stays_small() {
        let limit = if cfg!(debug_assertions) { 88 } else { 72 };
        assert!(
            std::mem::size_of::<Option<Parked>>() <= limit,
            "a parked entry is {} bytes",
            std::mem::size_of::<Option<Parked>>()
        );
    }

    #[test]
    fn an_unparked_connection_leaves_nothing_in_the_wheel() {
        let mut state = TableState::default();
        state
            .wheel
            .entry(5)
            .or_default()
            .extend([token(1, 1), token(2, 1)]);
        state.forget_deadline(5, token(1, 1));
        assert_eq!(state.wheel.get(&5), Some(&vec![token(2, 1)]));
        // Expired already: nothing to take.
        state.forget_deadline(6, token(3, 1));
        state.forget_deadline(NO_DEADLINE, token(4, 1));
        state.forget_deadline(5, token(2, 1));
        assert!(state.wheel.is_empty(), "an empty bucket goes too");
    }

    #[test]
    fn tokens_carry_index_and_stamp() {
        assert_eq!(split(token(7, u32::MAX)), (7, u32::MAX));
        assert_eq!(split(token(u32::MAX, 0)), (u32::MAX, 0));
    }
}
