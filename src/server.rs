//! Starting and stopping the broker: binds the listeners, runs the accept loops, and
//! hands each connection to `crate::connection`.
//!
//! Each listener has its own accept loop, which owns the tasks of the connections it
//! accepted (a `JoinSet`), so shutdown can wait for them. Accept errors (out of file
//! descriptors, aborted handshakes) are logged and retried after a short, growing pause
//! instead of spinning.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::broker::Broker;
use crate::config::Config;
use crate::storage::MemoryStore;

/// How long shutdown waits for connection tasks to finish before aborting them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// First and largest pause after a failed accept.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A running broker. Dropping it does not stop the broker; call `shutdown`.
pub struct ServerHandle {
    addrs: Vec<SocketAddr>,
    broker: Arc<Broker>,
    accept_loops: Vec<JoinHandle<()>>,
    scheduler: JoinHandle<()>,
}

impl ServerHandle {
    /// The bound address of the first listener (useful with port 0 in tests).
    pub fn local_addr(&self) -> SocketAddr {
        // `start` refuses a configuration without listeners, so there is a first one.
        self.addrs[0]
    }

    /// The bound address of every listener, in config order.
    pub fn listener_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// The shared broker state (statistics, sessions), for operators and tests.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Stops accepting, disconnects clients (MQTT 5: DISCONNECT 0x8B) and waits for the
    /// connection tasks to end.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.broker.begin_shutdown();
        for accept_loop in self.accept_loops {
            let _ = accept_loop.await;
        }
        let _ = self.scheduler.await;
    }
}

/// Binds every listener and starts serving. Returns once the listeners accept.
pub async fn start(config: Config) -> anyhow::Result<ServerHandle> {
    anyhow::ensure!(!config.listeners.is_empty(), "no listener configured");
    let mut listeners = Vec::with_capacity(config.listeners.len());
    for listener in &config.listeners {
        let bound = TcpListener::bind(listener.bind)
            .await
            .with_context(|| format!("cannot listen on {}", listener.bind))?;
        listeners.push(bound);
    }
    let addrs = listeners
        .iter()
        .map(|listener| listener.local_addr())
        .collect::<Result<Vec<_>, _>>()
        .context("cannot read a listener's bound address")?;

    let broker = Broker::new(config, Arc::new(MemoryStore::new()));
    let scheduler = tokio::spawn(broker.clone().run_scheduler());
    let accept_loops = listeners
        .into_iter()
        .zip(&addrs)
        .map(|(listener, addr)| {
            tracing::info!(%addr, "listening (mqtt/tcp)");
            tokio::spawn(accept_loop(listener, broker.clone()))
        })
        .collect();
    Ok(ServerHandle {
        addrs,
        broker,
        accept_loops,
        scheduler,
    })
}

async fn accept_loop(listener: TcpListener, broker: Arc<Broker>) {
    let mut shutdown = broker.shutdown_signal();
    let mut connections = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        // Reap finished connection tasks so the set stays the size of the live ones.
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stopping| *stopping) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                connections.spawn(crate::connection::serve(stream, peer, broker.clone()));
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed; pausing");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|stopping| *stopping) => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "connections still open after the grace period; aborting them"
        );
        connections.shutdown().await;
    }
}
