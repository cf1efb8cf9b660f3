//! Starting and stopping the broker: loads the security files, binds the listeners
//! (`crate::listener` runs their accept loops and hands each connection to
//! `crate::connection`), and reloads certificates, passwords and ACLs on request.
//!
//! Each listener's accept loop owns the tasks of the connections it accepted, so
//! shutdown can wait for them.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinHandle;

use crate::auth::Security;
use crate::broker::Broker;
use crate::config::Config;
use crate::listener::{ConnectionCounter, Listener, TlsTerminator};
use crate::storage::MemoryStore;

/// A running broker. Dropping it does not stop the broker; call `shutdown`.
pub struct ServerHandle {
    addrs: Vec<SocketAddr>,
    broker: Arc<Broker>,
    accept_loops: Vec<JoinHandle<()>>,
    scheduler: JoinHandle<()>,
    sys_topics: JoinHandle<()>,
    security: Arc<Security>,
    tls: Vec<(SocketAddr, Arc<TlsTerminator>)>,
    connections: Arc<ConnectionCounter>,
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

    /// Whether every task of the broker still runs and its registry can be locked (a
    /// deadlock would block this call, which stops the systemd watchdog pings).
    pub fn is_healthy(&self) -> bool {
        let _ = self.broker.session_count();
        !self.scheduler.is_finished()
            && !self.sys_topics.is_finished()
            && self.accept_loops.iter().all(|task| !task.is_finished())
    }

    /// Open client connections, all listeners together.
    pub fn open_connections(&self) -> u32 {
        self.connections.open()
    }

    /// Reads certificates, keys, CA files, the password file and the ACL file again
    /// (SIGHUP). Connected clients stay connected. A file that fails to load keeps the
    /// version in force; each failure is logged and returned as a message.
    pub fn reload(&self) -> Vec<String> {
        let mut errors: Vec<String> = self
            .security
            .reload()
            .into_iter()
            .map(|error| error.to_string())
            .collect();
        for (addr, tls) in &self.tls {
            match tls.reload() {
                Ok(()) => tracing::info!(%addr, "TLS certificates reloaded"),
                Err(error) => {
                    tracing::error!(%addr, %error, "TLS reload failed; keeping the previous certificates");
                    errors.push(format!("listener {addr}: {error}"));
                }
            }
        }
        errors
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
        let _ = self.sys_topics.await;
    }
}

/// Binds every listener and starts serving. Returns once the listeners accept.
pub async fn start(config: Config) -> anyhow::Result<ServerHandle> {
    anyhow::ensure!(!config.listeners.is_empty(), "no listener configured");
    let security =
        Arc::new(Security::load(&config.auth).context("cannot load the security files")?);
    let mut listeners = Vec::with_capacity(config.listeners.len());
    for listener in &config.listeners {
        listeners
            .push(Listener::bind(listener, security.clone(), config.limits.max_connections).await?);
    }
    let addrs = listeners
        .iter()
        .map(|listener| listener.local_addr())
        .collect::<Result<Vec<_>, _>>()
        .context("cannot read a listener's bound address")?;
    let tls = listeners
        .iter()
        .zip(&addrs)
        .filter_map(|(listener, addr)| listener.tls().map(|tls| (*addr, tls)))
        .collect();
    let connections = ConnectionCounter::new(config.limits.max_connections);
    let kinds: Vec<_> = config
        .listeners
        .iter()
        .map(|listener| listener.kind)
        .collect();

    let broker = Broker::new(config, Arc::new(MemoryStore::new()));
    let scheduler = tokio::spawn(broker.clone().run_scheduler());
    let sys_topics = tokio::spawn(crate::sys_topics::run(broker.clone()));
    let accept_loops = listeners
        .into_iter()
        .zip(addrs.iter().zip(kinds))
        .map(|(listener, (addr, kind))| {
            tracing::info!(%addr, transport = ?kind, "listening");
            tokio::spawn(listener.run(broker.clone(), connections.clone()))
        })
        .collect();
    Ok(ServerHandle {
        addrs,
        broker,
        accept_loops,
        scheduler,
        sys_topics,
        security,
        tls,
        connections,
    })
}
