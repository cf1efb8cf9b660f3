//! The node-to-node link: one TCP connection per pair of nodes (the node with the lower
//! id dials, the other accepts), carrying Raft RPCs, proposals forwarded to the leader,
//! and forwarded PUBLISHes, multiplexed as frames.
//!
//! Frame: `u32` big-endian length of what follows, a kind byte, the body.
//! - `HELLO` (first frame each way): the sender's node id, `u64` BE.
//! - `REQUEST`/`RESPONSE`: a `u64` request id, then JSON (`super::rpc`).
//! - `FORWARD`: a QoS 0 message for the receiver's local subscribers (`super::forward`),
//!   at most once.
//! - `FORWARD_ACKED`: a QoS 1/2 message, same body; the receiver answers `FORWARD_ACK`
//!   once every store write it caused there is durable, and the sender keeps it until
//!   then, sending it again on every new connection (`unacked`).
//! - `FORWARD_ACK`: the ids of acknowledged messages (`unacked`).
//! - `FORWARD_MOVED`: forwarded messages the receiver could not keep for sessions that
//!   moved away from it meanwhile, with those sessions and their nodes (JSON, `unacked`):
//!   the sender hands each to those nodes (`LinkHandler::moved`). A node without it
//!   ignores the frame (its publishers time out and send again, as before).
//! - `PING` (empty): sent at least once per heartbeat, so that the peer hears from this
//!   node at least that often even when the link is idle (and knows that it does).
//!
//! Each peer has one bounded outbox (`cluster.link_buffer_bytes`): a writer task drains
//! everything queued into one buffer and writes it with one call (batching under load).
//! A frame that does not fit, or that is queued while the peer is disconnected, is
//! dropped, counted and logged (rate-limited); a dropped request fails at once so Raft
//! retries it. A connection that received nothing for `cluster.link_timeout_ms` (a
//! black-holed peer: no frame, no FIN, no RST) is closed and redialled like a failed
//! one. The dialing side reconnects with exponential backoff (50 ms to 2 s). With
//! `[cluster.tls]` every link is TLS (`super::link_tls`).
//!
//! Flow control: a forwarded QoS 1/2 message queued while the outbox holds more than
//! half its limit (the high-water mark) gets a completion its publisher's acknowledgement
//! waits for; it resolves once the writer has drained the outbox to a quarter of its
//! limit (the low-water mark). All such publishers share one completion per peer, made
//! when the outbox crosses the mark, so a publisher's window (receive maximum, in-flight
//! limit) paces it to the link, as TCP does. A pause lasts at most
//! `limits.slow_consumer_timeout_ms` (`Liveness::publisher_pause`): then the waiting
//! publishers go on (their messages are queued) and nobody waits for this peer until its
//! outbox drained. A link that fails while publishers wait releases the pause: their
//! messages are kept until the peer acknowledges them (`unacked`), which their
//! acknowledgements wait for; the caller refuses a QoS 1/2 message that did not fit
//! (`NotQueued::OutboxFull`). On the
//! receiving side, `LinkHandler::forwarded` may hold the reader (`ReadPause`, a local
//! subscriber left congested) for at most `Links::read_pause_bound`, so that TCP carries
//! the subscriber's pace back to the sending node's outbox.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};

use crate::broker::log_throttle::LogThrottle;
use crate::storage::{write_promise, Completion, SharedCompletion, StoreError, WritePromise};

use super::config::NodeId;
use super::link_tls::LinkTls;

mod peer;
mod unacked;

use peer::Outbox;
pub use peer::{NotQueued, PeerLink};
use unacked::Unacked;
pub use unacked::{
    encode_acks, encode_moved, MovedAck, MovedForward, Reroute, MAX_UNACKED_FORWARDS,
};

pub const HELLO: u8 = 1;
pub const REQUEST: u8 = 2;
pub const RESPONSE: u8 = 3;
pub const FORWARD: u8 = 4;
pub const PING: u8 = 5;
pub const FORWARD_ACKED: u8 = 6;
pub const FORWARD_ACK: u8 = 7;
pub const FORWARD_MOVED: u8 = 8;

/// Largest frame accepted from a peer (a snapshot of a large retained set travels in one).
const MAX_FRAME: usize = 256 * 1024 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Most bytes one write takes from the outbox.
const WRITE_BATCH_BYTES: usize = 1024 * 1024;

/// What the node does with what arrives on a link.
pub trait LinkHandler: Send + Sync + 'static {
    /// A request from `from`; the returned bytes are sent back as the response.
    fn request(
        &self,
        from: NodeId,
        body: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send + '_>>;
    /// A forwarded message from `from`; `acknowledge` (a QoS 1/2 message): answer it
    /// with a `FORWARD_ACK` once its writes here are durable. What the link's reader
    /// waits for before it reads on (a local subscriber left congested), if anything.
    fn forwarded(&self, from: NodeId, body: Bytes, acknowledge: bool) -> Option<ReadPause>;
    /// Forwarded messages `from` could not keep for sessions that moved from it to other
    /// nodes (`FORWARD_MOVED`): each is to go to those nodes, its publisher's
    /// acknowledgement settled once they have it (`MovedForward::settle`). Without a
    /// handler they fail their publishers, as a failed write does.
    fn moved(&self, from: NodeId, moved: Vec<MovedForward>) {
        for forward in moved {
            forward.fail(from);
        }
    }
}

/// What a link's reader waits for before it reads the next frame: the peer's writer then
/// blocks, its outbox fills and its publishers are paced (see the module header).
pub type ReadPause = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Counters of one peer's link, for metrics and `cluster status`.
#[derive(Default)]
pub struct LinkStats {
    pub connected: AtomicBool,
    pub connects: AtomicU64,
    pub dropped_frames: AtomicU64,
    pub forwarded_messages: AtomicU64,
    pub forwarded_bytes: AtomicU64,
    /// Connections closed because the peer sent nothing for `link_timeout_ms`.
    pub timeouts: AtomicU64,
    /// QoS 1/2 PUBLISHes whose acknowledgement waited for this peer's outbox to drain.
    pub paused_publishes: AtomicU64,
    /// Pauses that outlasted their bound (the publishers went on without waiting).
    pub pause_timeouts: AtomicU64,
    /// QoS 1/2 messages the peer acknowledged (stored durably there).
    pub acked_forwards: AtomicU64,
    /// Unacknowledged messages sent again on a new connection.
    pub resent_forwards: AtomicU64,
    /// Messages sent to another node while the peer was down (it took the routes).
    pub rerouted_forwards: AtomicU64,
    /// Messages without an acknowledgement within `cluster.forward_ack_timeout_ms`
    /// (their publishers were not acknowledged).
    pub timed_out_forwards: AtomicU64,
    /// QoS 1/2 messages refused: too many already waited for the peer's acknowledgement.
    pub unacked_refused: AtomicU64,
    /// Messages the peer could not keep for sessions that moved away from it, handed to
    /// those sessions' new nodes.
    pub moved_forwards: AtomicU64,
}

/// Any stream a link runs over: TCP, or TLS over TCP.
pub trait LinkStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> LinkStream for T {}

/// How often an idle writer sends a `PING`, and how long a connection may receive
/// nothing before it is closed.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub ping_interval: Duration,
    pub timeout: Duration,
    /// Longest wait of publishers for a peer's outbox to drain
    /// (`limits.slow_consumer_timeout_ms`; zero: they never wait).
    pub publisher_pause: Duration,
}

pub struct Links {
    me: NodeId,
    tls: Option<LinkTls>,
    peers: Mutex<HashMap<NodeId, Arc<PeerLink>>>,
    /// Requests waiting for their response: the node asked, and where the answer goes.
    pending: Mutex<HashMap<u64, (NodeId, oneshot::Sender<Bytes>)>>,
    next_request: AtomicU64,
    handler: OnceLock<Arc<dyn LinkHandler>>,
    limit: usize,
    liveness: Liveness,
    /// TLS handshakes that failed, logged rate-limited.
    tls_failures: LogThrottle,
    shutdown: tokio::sync::watch::Sender<bool>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A frame: length, kind, body.
pub fn frame(kind: u8, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + body.len());
    out.put_u32(body.len() as u32 + 1);
    out.put_u8(kind);
    out.put_slice(body);
    out.freeze()
}

impl Links {
    pub fn new(me: NodeId, limit: usize, liveness: Liveness, tls: Option<LinkTls>) -> Arc<Links> {
        let (shutdown, _) = tokio::sync::watch::channel(false);
        Arc::new(Links {
            me,
            tls,
            peers: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            handler: OnceLock::new(),
            limit,
            liveness,
            tls_failures: LogThrottle::default(),
            shutdown,
        })
    }

    /// The links' TLS, when `[cluster.tls]` is set.
    pub fn tls(&self) -> Option<&LinkTls> {
        self.tls.as_ref()
    }

    pub fn set_handler(&self, handler: Arc<dyn LinkHandler>) {
        let _ = self.handler.set(handler);
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Longest wait of a link's reader for a congested local subscriber: one heartbeat
    /// (Raft traffic waits behind it), at most `limits.slow_consumer_timeout_ms`.
    pub fn read_pause_bound(&self) -> Duration {
        self.liveness
            .ping_interval
            .min(self.liveness.publisher_pause)
    }

    pub fn peer(&self, id: NodeId) -> Option<Arc<PeerLink>> {
        lock(&self.peers).get(&id).cloned()
    }

    pub fn peers(&self) -> Vec<Arc<PeerLink>> {
        let mut peers: Vec<_> = lock(&self.peers).values().cloned().collect();
        peers.sort_by_key(|peer| peer.id);
        peers
    }

    /// Adds a peer not known yet; the lower id of the pair starts dialing it. A known
    /// peer keeps its address: the one in this node's `peers` wins over the membership's
    /// (so a node may reach a peer through its own route, e.g. a proxy).
    pub fn ensure_peer(self: &Arc<Self>, id: NodeId, addr: &str) -> Arc<PeerLink> {
        if id == self.me {
            // Never a link to oneself; callers skip it, this keeps it harmless.
            return Arc::new(self.new_peer(id, addr));
        }
        let mut peers = lock(&self.peers);
        if let Some(peer) = peers.get(&id) {
            return peer.clone();
        }
        let peer = Arc::new(self.new_peer(id, addr));
        peers.insert(id, peer.clone());
        drop(peers);
        if self.me < id {
            tokio::spawn(self.clone().dial_loop(peer.clone()));
        }
        peer
    }

    /// Forgets a peer removed from the cluster (its dialer stops at the next failure).
    pub fn remove_peer(&self, id: NodeId) {
        if let Some(peer) = lock(&self.peers).remove(&id) {
            peer.stats.connected.store(false, Ordering::Relaxed);
            let mut outbox = lock(&peer.outbox);
            outbox.connection += 1;
            outbox.clear();
            drop(outbox);
            // Their publishers are not acknowledged: the node left.
            *lock(&peer.unacked) = Unacked::default();
            peer.ready.notify_waiters();
        }
    }

    fn new_peer(&self, id: NodeId, addr: &str) -> PeerLink {
        PeerLink {
            id,
            addr: Mutex::new(addr.to_string()),
            outbox: Mutex::new(Outbox {
                frames: VecDeque::new(),
                bytes: 0,
                connection: 0,
                pause: None,
                stalled: false,
            }),
            unacked: Mutex::new(Unacked::default()),
            ready: Notify::new(),
            stats: LinkStats::default(),
            limit: self.limit,
            publisher_pause: self.liveness.publisher_pause,
            drops_logged: LogThrottle::default(),
            stalls_logged: LogThrottle::default(),
        }
    }

    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Sends a request and waits for its response, at most `timeout`.
    pub async fn request(
        &self,
        to: NodeId,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Bytes, String> {
        let peer = self
            .peer(to)
            .ok_or_else(|| format!("node {to} is not a known peer"))?;
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        lock(&self.pending).insert(id, (to, sender));
        let mut framed = Vec::with_capacity(8 + body.len());
        framed.extend_from_slice(&id.to_be_bytes());
        framed.extend_from_slice(body);
        if !peer.send(frame(REQUEST, &framed)) {
            lock(&self.pending).remove(&id);
            return Err(format!("node {to} is unreachable"));
        }
        let result = tokio::time::timeout(timeout, receiver).await;
        lock(&self.pending).remove(&id);
        match result {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(_)) => Err(format!("node {to}: the link closed")),
            Err(_) => Err(format!("node {to}: no answer within {timeout:?}")),
        }
    }

    /// Accepts links from peers with a higher id than... any id: the dialer is whichever
    /// has the lower id, so everything arriving here comes from a lower id.
    pub async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        let mut shutdown = self.shutdown.subscribe();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            match accepted {
                Ok((stream, _)) => {
                    let links = self.clone();
                    tokio::spawn(async move {
                        if let Err(error) = links.serve_incoming(stream).await {
                            tracing::debug!(%error, "cluster link closed");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "cluster link accept failed");
                    tokio::time::sleep(BACKOFF_MIN).await;
                }
            }
        }
    }

    async fn serve_incoming(self: Arc<Self>, tcp: TcpStream) -> std::io::Result<()> {
        let _ = tcp.set_nodelay(true);
        let mut stream: Box<dyn LinkStream> = match &self.tls {
            Some(tls) => {
                let handshake = tokio::time::timeout(Duration::from_secs(5), tls.accept(tcp)).await;
                match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        self.tls_failed(None, &error);
                        return Err(error);
                    }
                    Err(_) => return Err(std::io::Error::other("no TLS handshake within 5 s")),
                }
            }
            None => Box::new(tcp),
        };
        let from = tokio::time::timeout(Duration::from_secs(5), read_hello(&mut stream))
            .await
            .map_err(|_| std::io::Error::other("no hello within 5 s"))??;
        stream
            .write_all(&frame(HELLO, &self.me.to_be_bytes()))
            .await?;
        let Some(peer) = self.peer(from) else {
            return Err(std::io::Error::other(format!(
                "node {from} is not a member of this cluster"
            )));
        };
        self.run_connection(peer, stream).await
    }

    async fn dial_loop(self: Arc<Self>, peer: Arc<PeerLink>) {
        let mut backoff = BACKOFF_MIN;
        let mut shutdown = self.shutdown.subscribe();
        loop {
            if *shutdown.borrow() || self.peer(peer.id).is_none_or(|p| !Arc::ptr_eq(&p, &peer)) {
                return;
            }
            let attempt = async {
                let addr = peer.addr();
                let tcp = TcpStream::connect(&addr).await?;
                let _ = tcp.set_nodelay(true);
                let mut stream: Box<dyn LinkStream> = match &self.tls {
                    Some(tls) => tls.connect(&addr, tcp).await.inspect_err(|error| {
                        self.tls_failed(Some(&peer), error);
                    })?,
                    None => Box::new(tcp),
                };
                stream
                    .write_all(&frame(HELLO, &self.me.to_be_bytes()))
                    .await?;
                let from = tokio::time::timeout(Duration::from_secs(5), read_hello(&mut stream))
                    .await
                    .map_err(|_| std::io::Error::other("no hello within 5 s"))??;
                if from != peer.id {
                    return Err(std::io::Error::other(format!(
                        "{} answered as node {from}, expected node {}",
                        peer.addr(),
                        peer.id
                    )));
                }
                std::io::Result::Ok(stream)
            };
            let connected = tokio::select! {
                connected = attempt => connected,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            match connected {
                Ok(stream) => {
                    backoff = BACKOFF_MIN;
                    if let Err(error) = self.clone().run_connection(peer.clone(), stream).await {
                        tracing::debug!(peer = peer.id, %error, "cluster link closed");
                    }
                }
                Err(error) => {
                    tracing::debug!(peer = peer.id, addr = %peer.addr(), %error, "cluster link connect failed");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Logs a failed TLS handshake (rate-limited): a certificate that does not chain to
    /// the CA, an expired one, a wrong host name.
    fn tls_failed(&self, dialled: Option<&PeerLink>, error: &std::io::Error) {
        // A connection that closed or reset during the handshake is the network's
        // doing, logged with the other link failures.
        let refused = error
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
        if !refused {
            return;
        }
        if let Some(count) = self.tls_failures.occurred(Instant::now()) {
            match dialled {
                Some(peer) => tracing::warn!(
                    peer = peer.id, addr = %peer.addr(), %error, count,
                    "cluster link TLS handshake failed (check cluster.tls: cert, key and ca on both nodes)"
                ),
                None => tracing::warn!(
                    %error, count,
                    "incoming cluster link TLS handshake failed (check cluster.tls: cert, key and ca on both nodes)"
                ),
            }
        }
    }

    /// Runs one established connection until it fails, the peer falls silent for
    /// `liveness.timeout`, or a newer connection replaces it.
    async fn run_connection(
        self: Arc<Self>,
        peer: Arc<PeerLink>,
        stream: Box<dyn LinkStream>,
    ) -> std::io::Result<()> {
        let connection = {
            // Unacknowledged messages go first, in order; `connected` is set under the
            // entries' lock, so a message forwarded meanwhile is queued once.
            let unacked = lock(&peer.unacked);
            let mut outbox = lock(&peer.outbox);
            outbox.connection += 1;
            outbox.clear();
            peer.requeue_unacked(&unacked, &mut outbox);
            peer.stats.connected.store(true, Ordering::Relaxed);
            outbox.connection
        };
        peer.ready.notify_waiters();
        peer.stats.connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(peer = peer.id, "cluster link up");
        let (reader, mut writer) = tokio::io::split(stream);
        let started = Instant::now();
        let heard = Arc::new(Heard::default());
        let mut reader = Watched {
            inner: reader,
            started,
            heard: heard.clone(),
        };
        let liveness = self.liveness;
        let writer_peer = peer.clone();
        let mut shutdown = self.shutdown.subscribe();
        let write_loop = async move {
            let mut buffer = Vec::with_capacity(64 * 1024);
            let mut last_ping: Option<Instant> = None;
            loop {
                let notified = writer_peer.ready.notified();
                if !writer_peer.take_batch(connection, &mut buffer) {
                    return Ok::<(), std::io::Error>(());
                }
                if buffer.is_empty()
                    && last_ping.is_some()
                    && tokio::time::timeout(liveness.ping_interval, notified)
                        .await
                        .is_ok()
                {
                    continue;
                }
                // A PING first (so the peer learns at once that this node sends them and
                // may time the link out), then at least every interval, busy or idle.
                if last_ping.is_none_or(|sent: Instant| sent.elapsed() >= liveness.ping_interval) {
                    buffer.extend_from_slice(&frame(PING, &[]));
                    last_ping = Some(Instant::now());
                }
                if buffer.is_empty() {
                    continue;
                }
                writer.write_all(&buffer).await?;
                buffer.clear();
            }
        };
        let read_loop = async {
            loop {
                let (kind, body) = read_frame(&mut reader).await?;
                if kind == PING {
                    reader.heard.pinged.store(true, Ordering::Relaxed);
                    continue;
                }
                // A node still starting (its handler not set) cannot take a message it
                // must acknowledge: the connection closes, and the peer sends it again
                // on the next one.
                if kind == FORWARD_ACKED && self.handler.get().is_none() {
                    return Err(std::io::Error::other(
                        "a forwarded message arrived before this node was ready",
                    ));
                }
                if let Some(pause) = self.dispatch(&peer, kind, body) {
                    pause.await;
                }
            }
        };
        let watchdog = async {
            let mut ticks = tokio::time::interval(liveness.ping_interval);
            loop {
                ticks.tick().await;
                peer.stall_if_late();
                // A peer that never sent a PING (an older fleetmq) may be silent while
                // idle; it is not timed out.
                if !heard.pinged.load(Ordering::Relaxed) {
                    continue;
                }
                let last = Duration::from_millis(heard.last_ms.load(Ordering::Relaxed));
                let silent = started.elapsed().saturating_sub(last);
                if silent >= liveness.timeout {
                    peer.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        peer = peer.id,
                        silent_ms = silent.as_millis() as u64,
                        "cluster link silent for longer than cluster.link_timeout_ms; closing it to redial"
                    );
                    return Err::<(), _>(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the peer fell silent",
                    ));
                }
            }
        };
        let result = tokio::select! {
            result = write_loop => result,
            result = read_loop => result,
            result = watchdog => result,
            _ = shutdown.wait_for(|stop| *stop) => Ok(()),
        };
        let mut outbox = lock(&peer.outbox);
        if outbox.connection == connection {
            peer.stats.connected.store(false, Ordering::Relaxed);
            outbox.clear();
            drop(outbox);
            tracing::warn!(peer = peer.id, "cluster link down");
            // Their answers would have come on this connection: they fail now rather
            // than at their timeout. A proposal forwarded to a leader that just died
            // held a CONNECT for the whole 3 s before the client was refused (and came
            // back to a new leader).
            lock(&self.pending).retain(|_, (to, _)| *to != peer.id);
        }
        result
    }

    fn dispatch(
        self: &Arc<Self>,
        peer: &Arc<PeerLink>,
        kind: u8,
        mut body: Bytes,
    ) -> Option<ReadPause> {
        match kind {
            REQUEST if body.len() >= 8 => {
                let id = body.get_u64();
                let handler = self.handler.get().cloned()?;
                let peer = peer.clone();
                let from = peer.id;
                tokio::spawn(async move {
                    let answer = handler.request(from, body).await;
                    let mut framed = Vec::with_capacity(8 + answer.len());
                    framed.extend_from_slice(&id.to_be_bytes());
                    framed.extend_from_slice(&answer);
                    peer.send(frame(RESPONSE, &framed));
                });
            }
            RESPONSE if body.len() >= 8 => {
                let id = body.get_u64();
                if let Some((_, waiter)) = lock(&self.pending).remove(&id) {
                    let _ = waiter.send(body);
                }
            }
            FORWARD | FORWARD_ACKED => {
                if let Some(handler) = self.handler.get() {
                    return handler.forwarded(peer.id, body, kind == FORWARD_ACKED);
                }
            }
            FORWARD_ACK => peer.acknowledged(body),
            FORWARD_MOVED => {
                let moved = peer.take_moved(&body);
                if !moved.is_empty() {
                    match self.handler.get() {
                        Some(handler) => handler.moved(peer.id, moved),
                        None => moved.into_iter().for_each(|forward| forward.fail(peer.id)),
                    }
                }
            }
            _ => tracing::debug!(peer = peer.id, kind, "unknown cluster frame ignored"),
        }
        None
    }
}

async fn read_frame(
    reader: &mut (impl tokio::io::AsyncRead + Unpin),
) -> std::io::Result<(u8, Bytes)> {
    let length = reader.read_u32().await? as usize;
    if length == 0 || length > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "frame of {length} bytes refused"
        )));
    }
    let kind = reader.read_u8().await?;
    let mut body = vec![0; length - 1];
    reader.read_exact(&mut body).await?;
    Ok((kind, Bytes::from(body)))
}

async fn read_hello(stream: &mut Box<dyn LinkStream>) -> std::io::Result<NodeId> {
    let (kind, mut body) = read_frame(stream).await?;
    if kind != HELLO || body.len() != 8 {
        return Err(std::io::Error::other("the first frame is not a hello"));
    }
    Ok(body.get_u64())
}

/// When a connection last received bytes, and whether its peer sends `PING`s.
#[derive(Default)]
struct Heard {
    /// Milliseconds since the connection started.
    last_ms: AtomicU64,
    pinged: AtomicBool,
}

/// The reading half of a connection, noting when bytes last arrived (a large frame
/// arriving slowly still counts as hearing from the peer).
struct Watched<R> {
    inner: R,
    started: Instant,
    heard: Arc<Heard>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Watched<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let now = self.started.elapsed().as_millis() as u64;
            self.heard.last_ms.store(now, Ordering::Relaxed);
        }
        polled
    }
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
