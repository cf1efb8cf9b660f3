//! Listeners: binding, the accept loop, and turning an accepted socket into a
//! [`ClientStream`] (TLS handshake, WebSocket upgrade) for `crate::connection`.
//!
//! Cheap checks come first. Right after `accept`, before any byte is read or any TLS
//! work is done, a connection is closed if the listener's connection rate is exceeded
//! or if the listener's or the broker's connection limit is reached. The handshake and
//! upgrade run in the connection's own task, under the CONNECT timeout, so a slow or
//! hostile client never holds up the accept loop.

mod identity;
pub mod rate;
mod stream;
pub mod tls;
mod tls_stream;
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

pub use rate::TokenBucket;
pub use stream::{ClientStream, WsStream};
pub use tls::{check_files as check_tls_files, TlsError, TlsTerminator};

/// First and largest pause after a failed accept.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What a connection task knows about the listener that accepted it.
pub struct ListenerContext {
    pub kind: ListenerKind,
    pub allow_anonymous: bool,
    pub security: Arc<Security>,
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
    _listener: Slot,
    _broker: Slot,
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
        let tcp = TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("cannot listen on {}", config.bind))?;
        Ok(Listener {
            tcp,
            tls,
            context: Arc::new(ListenerContext {
                kind: config.kind,
                allow_anonymous: config.allows_anonymous(),
                security,
            }),
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
        let mut bucket = TokenBucket::new(rate, now());
        let handshake_timeout = Duration::from_secs(broker.config().limits.connect_timeout_secs);
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
            if !bucket.try_take(now()) {
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
            };
            let slots = ConnectionSlots {
                _listener: own_slot,
                _broker: global_slot,
            };
            let context = self.context.clone();
            let broker = broker.clone();
            // Everything up to CONNACK runs in a box of its own, freed once the client is
            // connected: those futures, and what they start from, are larger than the
            // connection loop, which is all an idle client keeps.
            let opening = Box::pin(async move {
                let establish = transport.establish(tcp, peer, slots);
                let accepted = match tokio::time::timeout(handshake_timeout, establish).await {
                    Ok(Ok(accepted)) => accepted,
                    Ok(Err(error)) => {
                        broker.stats().refused(Refusal::TransportHandshake);
                        tracing::debug!(%peer, %error, "handshake failed");
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
    }
}

/// How to turn a socket of one listener into a [`ClientStream`].
struct Transport {
    kind: ListenerKind,
    tls: Option<Arc<TlsTerminator>>,
    path: String,
    max_packet_size: u32,
}

impl Transport {
    async fn establish(
        self,
        tcp: TcpStream,
        peer: SocketAddr,
        slots: ConnectionSlots,
    ) -> std::io::Result<Accepted> {
        // MQTT packets are small and already batched per wake-up; Nagle would only delay.
        let _ = tcp.set_nodelay(true);
        let missing_tls = || std::io::Error::other("TLS listener without TLS settings");
        // The TLS handshake and the WebSocket upgrade are boxed: their futures (kilobytes)
        // would otherwise size the task of every connection, plain TCP included, for as
        // long as it lives.
        let (stream, certificate_identity) = match self.kind {
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
        };
        Ok(Accepted {
            stream,
            peer,
            certificate_identity,
            slots,
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
