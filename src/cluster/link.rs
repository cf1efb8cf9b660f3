//! The node-to-node link: one TCP connection per pair of nodes (the node with the lower
//! id dials, the other accepts), carrying Raft RPCs, proposals forwarded to the leader,
//! and forwarded PUBLISHes, multiplexed as frames.
//!
//! Frame: `u32` big-endian length of what follows, a kind byte, the body.
//! - `HELLO` (first frame each way): the sender's node id, `u64` BE.
//! - `REQUEST`/`RESPONSE`: a `u64` request id, then JSON (`super::rpc`).
//! - `FORWARD`: messages for the receiver's local subscribers (`super::forward`).
//!
//! Each peer has one bounded outbox (`cluster.link_buffer_bytes`): a writer task drains
//! everything queued into one buffer and writes it with one call (batching under load).
//! A frame that does not fit, or that is queued while the peer is disconnected, is
//! dropped and counted; a dropped request fails at once so Raft retries it. The dialing
//! side reconnects with exponential backoff (50 ms to 2 s). With `[cluster.tls]` every
//! link is TLS (mutual TLS with `client_auth = "require"`), the listeners' settings.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};

use crate::config::{ClientAuth, TlsConfig};
use crate::listener::TlsTerminator;

use super::config::NodeId;

pub const HELLO: u8 = 1;
pub const REQUEST: u8 = 2;
pub const RESPONSE: u8 = 3;
pub const FORWARD: u8 = 4;

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
    /// Forwarded messages from `from`.
    fn forwarded(&self, from: NodeId, body: Bytes);
}

/// Counters of one peer's link, for metrics and `cluster status`.
#[derive(Default)]
pub struct LinkStats {
    pub connected: AtomicBool,
    pub connects: AtomicU64,
    pub dropped_frames: AtomicU64,
    pub forwarded_messages: AtomicU64,
    pub forwarded_bytes: AtomicU64,
}

struct Outbox {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// Bumped per connection, so a writer of an old connection stops taking frames.
    connection: u64,
}

pub struct PeerLink {
    pub id: NodeId,
    addr: Mutex<String>,
    outbox: Mutex<Outbox>,
    ready: Notify,
    pub stats: LinkStats,
    limit: usize,
}

impl PeerLink {
    pub fn addr(&self) -> String {
        lock(&self.addr).clone()
    }

    pub fn is_connected(&self) -> bool {
        self.stats.connected.load(Ordering::Relaxed)
    }

    /// Queues a frame; false (and counted) when the peer is down or the outbox full.
    pub fn send(&self, frame: Bytes) -> bool {
        if !self.is_connected() {
            self.stats.dropped_frames.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        {
            let mut outbox = lock(&self.outbox);
            if outbox.bytes + frame.len() > self.limit {
                drop(outbox);
                self.stats.dropped_frames.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            outbox.bytes += frame.len();
            outbox.frames.push_back(frame);
        }
        self.ready.notify_one();
        true
    }
}

/// Any stream a link runs over: TCP, or TLS over TCP.
pub trait LinkStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> LinkStream for T {}

/// TLS on the links: the accepting side is a listener's terminator, the dialling side
/// verifies the peer against the same CA and (mutual TLS) presents the same certificate.
pub struct LinkTls {
    acceptor: TlsTerminator,
    connector: tokio_rustls::TlsConnector,
}

impl LinkTls {
    pub fn new(config: &TlsConfig) -> anyhow::Result<LinkTls> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let acceptor = TlsTerminator::new(config)?;
        let ca = config
            .ca
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("cluster.tls.ca is required"))?;
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_file_iter(ca)
            .map_err(|error| anyhow::anyhow!("{}: {error}", ca.display()))?
        {
            let certificate =
                certificate.map_err(|error| anyhow::anyhow!("{}: {error}", ca.display()))?;
            roots
                .add(certificate)
                .map_err(|error| anyhow::anyhow!("{}: {error}", ca.display()))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots);
        let client = if config.client_auth == ClientAuth::None {
            builder.with_no_client_auth()
        } else {
            let chain = CertificateDer::pem_file_iter(&config.cert)
                .map_err(|error| anyhow::anyhow!("{}: {error}", config.cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| anyhow::anyhow!("{}: {error}", config.cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(&config.key)
                .map_err(|error| anyhow::anyhow!("{}: {error}", config.key.display()))?;
            builder.with_client_auth_cert(chain, key)?
        };
        Ok(LinkTls {
            acceptor,
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        })
    }
}

pub struct Links {
    me: NodeId,
    tls: Option<LinkTls>,
    peers: Mutex<HashMap<NodeId, Arc<PeerLink>>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Bytes>>>,
    next_request: AtomicU64,
    handler: OnceLock<Arc<dyn LinkHandler>>,
    limit: usize,
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
    pub fn new(me: NodeId, limit: usize, tls: Option<LinkTls>) -> Arc<Links> {
        let (shutdown, _) = tokio::sync::watch::channel(false);
        Arc::new(Links {
            me,
            tls,
            peers: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            handler: OnceLock::new(),
            limit,
            shutdown,
        })
    }

    pub fn set_handler(&self, handler: Arc<dyn LinkHandler>) {
        let _ = self.handler.set(handler);
    }

    pub fn me(&self) -> NodeId {
        self.me
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
            lock(&peer.outbox).connection += 1;
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
            }),
            ready: Notify::new(),
            stats: LinkStats::default(),
            limit: self.limit,
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
        lock(&self.pending).insert(id, sender);
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
            Some(tls) => Box::new(
                tokio::time::timeout(Duration::from_secs(5), tls.acceptor.accept(tcp))
                    .await
                    .map_err(|_| std::io::Error::other("no TLS handshake within 5 s"))??
                    .0,
            ),
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
                    Some(tls) => {
                        let host = addr
                            .rsplit_once(':')
                            .map_or(addr.as_str(), |(host, _)| host);
                        let host = host.trim_start_matches('[').trim_end_matches(']');
                        let name = rustls::pki_types::ServerName::try_from(host.to_string())
                            .map_err(|error| std::io::Error::other(format!("{host}: {error}")))?;
                        Box::new(tls.connector.connect(name, tcp).await?)
                    }
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

    /// Runs one established connection until it fails or a newer one replaces it.
    async fn run_connection(
        self: Arc<Self>,
        peer: Arc<PeerLink>,
        stream: Box<dyn LinkStream>,
    ) -> std::io::Result<()> {
        let connection = {
            let mut outbox = lock(&peer.outbox);
            outbox.connection += 1;
            outbox.frames.clear();
            outbox.bytes = 0;
            outbox.connection
        };
        peer.ready.notify_waiters();
        peer.stats.connected.store(true, Ordering::Relaxed);
        peer.stats.connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(peer = peer.id, "cluster link up");
        let (mut reader, mut writer) = tokio::io::split(stream);
        let writer_peer = peer.clone();
        let mut shutdown = self.shutdown.subscribe();
        let write_loop = async move {
            let mut buffer = Vec::with_capacity(64 * 1024);
            loop {
                let notified = writer_peer.ready.notified();
                {
                    let mut outbox = lock(&writer_peer.outbox);
                    if outbox.connection != connection {
                        return Ok::<(), std::io::Error>(());
                    }
                    while buffer.len() < WRITE_BATCH_BYTES {
                        let Some(frame) = outbox.frames.pop_front() else {
                            break;
                        };
                        outbox.bytes -= frame.len();
                        buffer.extend_from_slice(&frame);
                    }
                }
                if buffer.is_empty() {
                    notified.await;
                    continue;
                }
                writer.write_all(&buffer).await?;
                buffer.clear();
            }
        };
        let read_loop = async {
            loop {
                let (kind, body) = read_frame(&mut reader).await?;
                self.dispatch(&peer, kind, body);
            }
        };
        let result = tokio::select! {
            result = write_loop => result,
            result = read_loop => result,
            _ = shutdown.wait_for(|stop| *stop) => Ok(()),
        };
        let mut outbox = lock(&peer.outbox);
        if outbox.connection == connection {
            peer.stats.connected.store(false, Ordering::Relaxed);
            outbox.frames.clear();
            outbox.bytes = 0;
            tracing::warn!(peer = peer.id, "cluster link down");
        }
        result
    }

    fn dispatch(self: &Arc<Self>, peer: &Arc<PeerLink>, kind: u8, mut body: Bytes) {
        match kind {
            REQUEST if body.len() >= 8 => {
                let id = body.get_u64();
                let Some(handler) = self.handler.get().cloned() else {
                    return;
                };
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
                if let Some(waiter) = lock(&self.pending).remove(&id) {
                    let _ = waiter.send(body);
                }
            }
            FORWARD => {
                if let Some(handler) = self.handler.get() {
                    handler.forwarded(peer.id, body);
                }
            }
            _ => tracing::debug!(peer = peer.id, kind, "unknown cluster frame ignored"),
        }
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
