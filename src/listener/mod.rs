//! Listeners: binding, the accept loop, and turning an accepted socket into a
//! [`ClientStream`] (TLS handshake, WebSocket upgrade) for `crate::connection`.
//!
//! Cheap checks come first. Right after `accept`, before any byte is read or any TLS
//! work is done, a connection is closed if the listener's connection rate is exceeded
//! or if the listener's or the broker's connection limit is reached. The handshake and
//! upgrade run in the connection's own task, under the CONNECT timeout, so a slow or
//! hostile client never holds up the accept loop.
//!
//! A listener behind a load balancer (`proxy_protocol = true`) closes at accept every
//! connection that does not come from a trusted balancer, then reads the PROXY header
//! (`proxy_protocol`) first thing in the connection's task, before TLS or WebSocket;
//! the client address it names replaces the socket's from then on.

mod identity;
pub mod proxy_protocol;
pub mod rate;
mod stream;
pub mod tls;
mod tls_keys;
mod tls_stream;
pub mod tls_suites;
mod websocket;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::auth::Security;
use crate::broker::{now, Broker, Refusal};
use crate::config::{ListenerConfig, ListenerKind};
use crate::connection::ParkingLot;

pub use proxy_protocol::{ProxyHeaderError, TrustedSources};
pub use rate::TokenBucket;
pub use stream::{ClientStream, ParkedTls, WsStream};
pub use tls::{check_files as check_tls_files, TlsError, TlsTerminator};
pub use tls_stream::TlsStream;

/// First and largest pause after a failed accept.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Connections the kernel completes for a listener before it accepts them (capped by
/// `net.core.somaxconn`, 4096 on current kernels). A fleet reconnecting at once after
/// an outage is a burst of thousands of handshakes: past the queue the kernel drops
/// them, and each client waits out TCP's retransmission backoff (1, 2, 4, ... s; over a
/// minute for some of 5,000 clients with the 1,024 that `TcpListener::bind` asks for).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener with `LISTEN_BACKLOG` (and `SO_REUSEADDR`, as `TcpListener::bind`
/// sets it, so a restarted broker binds while old connections linger in TIME_WAIT).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// What a connection task knows about the listener that accepted it.
pub struct ListenerContext {
    pub kind: ListenerKind,
    pub allow_anonymous: bool,
    /// Anonymous clients are admitted only from loopback client addresses: a listener
    /// without an explicit `allow_anonymous` that is bound to loopback, behind the PROXY
    /// protocol (a balancer on the same machine relays clients from anywhere).
    pub anonymous_only_from_loopback: bool,
    pub security: Arc<Security>,
    /// The in-process connections of bridges: the only ones that may use a bridge's
    /// local session (`$bridge/<name>`).
    pub internal: bool,
    /// Where this listener's idle plain-TCP and TLS connections are parked
    /// (`crate::connection`'s `park`); `None` where they are not.
    pub parking: Option<Arc<ParkingLot>>,
}

impl ListenerContext {
    /// Whether a client without credentials from `client` (its real address) may connect.
    pub fn admits_anonymous(&self, client: SocketAddr) -> bool {
        self.allow_anonymous
            && (!self.anonymous_only_from_loopback || client.ip().to_canonical().is_loopback())
    }
}

/// A socket accepted and made ready to carry MQTT.
pub struct Accepted {
    pub stream: ClientStream,
    pub peer: SocketAddr,
    /// The verified client certificate's identity, when the listener uses it as the
    /// username.
    pub certificate_identity: Option<String>,
    /// Held for as long as the connection lives.
    pub slots: ConnectionSlots,
}

/// A connection's place under the listener's and the broker's connection limits, given
/// back when dropped.
pub struct ConnectionSlots {
    _listener: Option<Slot>,
    _broker: Option<Slot>,
}

impl ConnectionSlots {
    /// An in-process connection of a bridge: it counts against no listener and no
    /// connection limit (a full broker must still forward its outbox).
    pub fn internal() -> ConnectionSlots {
        ConnectionSlots {
            _listener: None,
            _broker: None,
        }
    }
}

/// Open connections against a maximum; a slot is given back when dropped.
pub struct ConnectionCounter {
    open: AtomicU32,
    max: u32,
    /// Woken (all waiters) when the last slot is given back.
    emptied: Notify,
}

impl ConnectionCounter {
    pub fn new(max: u32) -> Arc<ConnectionCounter> {
        Arc::new(ConnectionCounter {
            open: AtomicU32::new(0),
            max,
            emptied: Notify::new(),
        })
    }

    /// Resolves once no slot is held.
    async fn wait_until_empty(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            // Registered before the count is read, so a last slot given back in between
            // still wakes it.
            emptied.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            emptied.await;
        }
    }

    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }

    fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()?;
        Some(Slot(self.clone()))
    }
}

struct Slot(Arc<ConnectionCounter>);

impl Drop for Slot {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.emptied.notify_waiters();
        }
    }
}

/// A bound listener, ready to run its accept loop.
pub struct Listener {
    tcp: TcpListener,
    config: ListenerConfig,
    tls: Option<Arc<TlsTerminator>>,
    context: Arc<ListenerContext>,
    own_connections: Arc<ConnectionCounter>,
    /// The balancers whose PROXY headers this listener reads; `None` when it does not
    /// use the PROXY protocol.
    proxies: Option<Arc<TrustedSources>>,
}

impl Listener {
    /// Loads the listener's certificates and binds its address.
    pub async fn bind(
        config: &ListenerConfig,
        security: Arc<Security>,
        default_max_connections: u32,
    ) -> anyhow::Result<Listener> {
        let tls = match &config.tls {
            Some(tls) if config.uses_tls() => {
                Some(Arc::new(TlsTerminator::new(tls).with_context(|| {
                    format!("cannot set up TLS for {}", config.bind)
                })?))
            }
            _ => None,
        };
        let proxies = if config.proxy_protocol {
            let trusted = TrustedSources::parse(&config.proxy_protocol_trusted)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("proxy_protocol_trusted of {}", config.bind))?;
            Some(Arc::new(trusted))
        } else {
            None
        };
        let tcp =
            listen(config.bind).with_context(|| format!("cannot listen on {}", config.bind))?;
        // Plain TCP and TLS connections are parked (TLS with rustls's state kept); a
        // WebSocket stream keeps more above the socket.
        let parking = match config.kind {
            ListenerKind::Tcp | ListenerKind::Tls => Some(Arc::new(
                ParkingLot::new().context("cannot set up the parking table")?,
            )),
            _ => None,
        };
        Ok(Listener {
            tcp,
            tls,
            context: Arc::new(ListenerContext {
                kind: config.kind,
                allow_anonymous: config.allows_anonymous(),
                anonymous_only_from_loopback: config.proxy_protocol
                    && config.allow_anonymous.is_none(),
                security,
                internal: false,
                parking,
            }),
            proxies,
            own_connections: ConnectionCounter::new(
                config.max_connections.unwrap_or(default_max_connections),
            ),
            config: config.clone(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The TLS side, for certificate reloads.
    pub fn tls(&self) -> Option<Arc<TlsTerminator>> {
        self.tls.clone()
    }

    /// Accepts until shutdown, then waits (up to `shutdown.grace_secs`) for its connections.
    ///
    /// Connection tasks are spawned detached, not into a `JoinSet` (whose entry would
    /// cost every connection 56 bytes more): the listener waits for their slots, which
    /// each connection holds until its task ends, and every connection closes by itself
    /// within bounded time once it sees the shutdown.
    pub async fn run(self, broker: Arc<Broker>, all_connections: Arc<ConnectionCounter>) {
        let mut shutdown = broker.shutdown_signal();
        let mut backoff = ACCEPT_BACKOFF_MIN;
        let rate = self
            .config
            .max_connection_rate
            .unwrap_or(broker.config().limits.max_connection_rate);
        // 0: no connection rate limit (the default).
        let mut bucket = (rate > 0).then(|| TokenBucket::new(rate, now()));
        let handshake_timeout = Duration::from_secs(broker.config().limits.connect_timeout_secs);
        if let Some(lot) = &self.context.parking {
            match lot.tasks(&broker, &self.context) {
                Ok(tasks) => {
                    for task in tasks {
                        tokio::spawn(task.run());
                    }
                }
                Err(error) => {
                    // Closed, it parks nothing: connections stay tasks.
                    tracing::warn!(%error, "parking table unavailable");
                    lot.close();
                }
            }
        }
        loop {
            let accepted = tokio::select! {
                accepted = self.tcp.accept() => accepted,
                _ = shutdown.wait_for(|stopping| *stopping) => break,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed; pausing");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.wait_for(|stopping| *stopping) => break,
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            backoff = ACCEPT_BACKOFF_MIN;
            if let Some(proxies) = &self.proxies {
                if !proxies.contains(peer.ip()) {
                    broker.stats().refused(Refusal::UntrustedProxy);
                    tracing::debug!(%peer, "not a trusted PROXY protocol source; closed");
                    continue;
                }
            }
            if bucket
                .as_mut()
                .is_some_and(|bucket| !bucket.try_take(now()))
            {
                broker.stats().refused(Refusal::ConnectionRate);
                continue;
            }
            let Some(own_slot) = self.own_connections.try_acquire() else {
                broker.stats().refused(Refusal::ConnectionLimit);
                continue;
            };
            let Some(global_slot) = all_connections.try_acquire() else {
                broker.stats().refused(Refusal::ConnectionLimit);
                continue;
            };
            let transport = Transport {
                kind: self.config.kind,
                tls: self.tls.clone(),
                path: self.config.websocket_path().to_string(),
                max_packet_size: broker.config().limits.max_packet_size,
                proxy_protocol: self.proxies.is_some(),
            };
            let slots = ConnectionSlots {
                _listener: Some(own_slot),
                _broker: Some(global_slot),
            };
            let context = self.context.clone();
            let broker = broker.clone();
            // Everything up to CONNACK runs in a box of its own, freed once the client is
            // connected: those futures, and what they start from, are larger than the
            // connection loop, which is all an idle client keeps.
            let opening = Box::pin(async move {
                let deadline = tokio::time::Instant::now() + handshake_timeout;
                let establish = transport.establish(tcp, peer, slots, deadline);
                let accepted = match tokio::time::timeout_at(deadline, establish).await {
                    Ok(Ok(accepted)) => accepted,
                    Ok(Err(EstablishError::Proxy(error))) => {
                        broker.stats().refused(Refusal::ProxyHeader);
                        tracing::debug!(%peer, %error, "PROXY protocol header refused");
                        return None;
                    }
                    Ok(Err(EstablishError::Transport { error, client })) => {
                        broker.stats().refused(Refusal::TransportHandshake);
                        tracing::debug!(peer = %client, %error, "handshake failed");
                        return None;
                    }
                    Err(_) => {
                        broker.stats().refused(Refusal::TransportHandshake);
                        tracing::debug!(%peer, "handshake timed out");
                        return None;
                    }
                };
                crate::connection::open(accepted, broker, context).await
            });
            // The connection holds its slots; the task holds nothing but the two boxes,
            // so tokio's task cell stays at its smallest size.
            let task = async move {
                let Some(connected) = opening.await else {
                    return;
                };
                // Boxed too: the task then holds two pointers, not two copies of what
                // the future moved.
                let serving = Box::pin(connected.serve());
                serving.await;
            };
            tokio::spawn(task);
        }
        drop(self.tcp);
        let grace = Duration::from_secs(broker.config().shutdown.grace_secs);
        let drained = tokio::time::timeout(grace, self.own_connections.wait_until_empty()).await;
        if drained.is_err() {
            tracing::warn!(
                remaining = self.own_connections.open(),
                "connections still open after the grace period; leaving them to the runtime's end"
            );
        }
        if let Some(lot) = &self.context.parking {
            lot.close();
        }
    }
}

/// How to turn a socket of one listener into a [`ClientStream`].
struct Transport {
    kind: ListenerKind,
    tls: Option<Arc<TlsTerminator>>,
    path: String,
    max_packet_size: u32,
    /// Read a PROXY protocol header first.
    proxy_protocol: bool,
}

/// Why a socket did not become a [`ClientStream`].
enum EstablishError {
    Proxy(ProxyHeaderError),
    /// The TLS handshake or WebSocket upgrade of `client` (the address behind the PROXY
    /// header, if any) failed.
    Transport {
        error: std::io::Error,
        client: SocketAddr,
    },
}

impl Transport {
    async fn establish(
        self,
        mut tcp: TcpStream,
        mut peer: SocketAddr,
        slots: ConnectionSlots,
        deadline: tokio::time::Instant,
    ) -> Result<Accepted, EstablishError> {
        // MQTT packets are small and already batched per wake-up; Nagle would only delay.
        let _ = tcp.set_nodelay(true);
        if self.proxy_protocol {
            // Boxed like the handshakes below: only PROXY listeners pay for its future.
            // Under the connection's own deadline (the caller's, polled after this one),
            // so a header that never completes is counted as a PROXY refusal.
            let reading = Box::pin(proxy_protocol::read_header(&mut tcp));
            let header = tokio::time::timeout_at(deadline, reading)
                .await
                .map_err(|_| EstablishError::Proxy(ProxyHeaderError::TimedOut))?
                .map_err(EstablishError::Proxy)?;
            if let proxy_protocol::Header::Proxied(client) = header {
                tracing::debug!(balancer = %peer, %client, "PROXY protocol client address");
                peer = client;
            }
        }
        let (stream, certificate_identity) =
            self.handshake(tcp)
                .await
                .map_err(|error| EstablishError::Transport {
                    error,
                    client: peer,
                })?;
        Ok(Accepted {
            stream,
            peer,
            certificate_identity,
            slots,
        })
    }

    /// The TLS handshake and WebSocket upgrade the listener's kind asks for.
    async fn handshake(self, tcp: TcpStream) -> std::io::Result<(ClientStream, Option<String>)> {
        let missing_tls = || std::io::Error::other("TLS listener without TLS settings");
        // The TLS handshake and the WebSocket upgrade are boxed: their futures (kilobytes)
        // would otherwise size the task of every connection, plain TCP included, for as
        // long as it lives.
        Ok(match self.kind {
            ListenerKind::Tcp => (ClientStream::Tcp(tcp), None),
            ListenerKind::Tls => {
                let tls = self.tls.ok_or_else(missing_tls)?;
                let (tls, identity) = Box::pin(tls.accept(tcp)).await?;
                (ClientStream::Tls(Box::new(tls)), identity)
            }
            ListenerKind::Ws => {
                let ws =
                    Box::pin(websocket::upgrade(tcp, &self.path, self.max_packet_size)).await?;
                (ClientStream::Ws(Box::new(ws)), None)
            }
            ListenerKind::Wss => {
                let tls = self.tls.ok_or_else(missing_tls)?;
                let (tls, identity) = Box::pin(tls.accept(tcp)).await?;
                let ws =
                    Box::pin(websocket::upgrade(tls, &self.path, self.max_packet_size)).await?;
                (ClientStream::Wss(Box::new(ws)), identity)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The listener's wait at shutdown ends once the last connection gave its slot
    /// back, and not before.
    #[tokio::test]
    async fn waiting_until_empty_ends_with_the_last_slot() {
        let counter = ConnectionCounter::new(10);
        let first = counter.try_acquire().unwrap();
        let second = counter.try_acquire().unwrap();
        let waiting = tokio::spawn({
            let counter = counter.clone();
            async move { counter.wait_until_empty().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one connection is still open");
        assert_eq!(counter.open(), 1);
        drop(second);
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the wait ends once every slot is back")
            .unwrap();
        // Nothing open: resolves at once.
        counter.wait_until_empty().await;
    }
}
