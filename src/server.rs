//! Starting and stopping the broker: binds the listeners, runs the accept loops, and
//! hands each connection to `crate::connection`.

use std::net::SocketAddr;

use crate::config::Config;

/// A running broker. Dropping it does not stop the broker; call `shutdown`.
pub struct ServerHandle {
    _private: (),
}

impl ServerHandle {
    /// The bound address of the first listener (useful with port 0 in tests).
    pub fn local_addr(&self) -> SocketAddr {
        todo!("runtime")
    }

    /// The bound address of every listener, in config order.
    pub fn listener_addrs(&self) -> Vec<SocketAddr> {
        todo!("runtime")
    }

    /// Stops accepting, disconnects clients (MQTT 5: DISCONNECT 0x8B) and waits for the
    /// connection tasks to end.
    pub async fn shutdown(self) {
        todo!("runtime")
    }
}

/// Binds every listener and starts serving. Returns once the listeners accept.
pub async fn start(config: Config) -> anyhow::Result<ServerHandle> {
    let _ = config;
    todo!("runtime")
}
