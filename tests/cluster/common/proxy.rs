//! A TCP proxy in front of a node's link that can cut the link or black-hole it.
//!
//! - Cut: it closes every connection through it and closes new ones at once, as a
//!   partition with resets would look to the nodes (they see the link fail and keep
//!   reconnecting).
//! - Black hole: it keeps every connection open but passes nothing on, in either
//!   direction, and accepts new connections that lead nowhere: a peer that stopped
//!   answering without FIN or RST (a dropped route, a frozen host). Only the nodes' own
//!   liveness checks can notice it. Reopened, it closes the connections it swallowed
//!   (their streams lost bytes) and passes new ones on again.
//! - Pause: it stops reading either side and holds what it has, like a congested
//!   network; once resumed, everything passes on, nothing lost. The nodes' writers block
//!   once the sockets' buffers are full, and their outboxes fill.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Open,
    Cut,
    BlackHole,
    Paused,
}

pub struct Proxy {
    addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::Open);
        let mode = Arc::new(mode);
        let state = mode.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                match *state.borrow() {
                    Mode::Cut => continue,
                    Mode::BlackHole => {
                        tokio::spawn(swallow(inbound, state.subscribe()));
                    }
                    Mode::Open | Mode::Paused => {
                        tokio::spawn(relay(inbound, target, state.subscribe()));
                    }
                }
            }
        });
        Proxy { addr, mode, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_cut(&self, cut: bool) {
        self.mode
            .send_replace(if cut { Mode::Cut } else { Mode::Open });
    }

    /// Pauses (or resumes) every connection through the proxy: nothing is read until
    /// resumed, nothing is lost.
    pub fn set_paused(&self, paused: bool) {
        self.mode
            .send_replace(if paused { Mode::Paused } else { Mode::Open });
    }

    pub fn set_black_hole(&self, black_hole: bool) {
        self.mode.send_replace(if black_hole {
            Mode::BlackHole
        } else {
            Mode::Open
        });
    }
}

/// A connection made while black-holed: read and discarded until the proxy reopens or
/// cuts.
async fn swallow(mut inbound: TcpStream, mut mode: watch::Receiver<Mode>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = inbound.read(&mut buffer) => {
                if matches!(read, Ok(0) | Err(_)) {
                    return;
                }
            }
            changed = mode.changed() => {
                if changed.is_err() || *mode.borrow_and_update() != Mode::BlackHole {
                    return;
                }
            }
        }
    }
}

/// Passes bytes both ways until either side closes, the proxy cuts, or (after a black
/// hole swallowed some of them) it reopens. While black-holed, a side closing is not
/// passed on either: the other side keeps an open, silent connection.
async fn relay(inbound: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let (mut in_read, mut in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    let mut from_in = vec![0u8; 16 * 1024];
    let mut from_out = vec![0u8; 16 * 1024];
    let mut black_holed = *mode.borrow_and_update() == Mode::BlackHole;
    let mut paused = *mode.borrow() == Mode::Paused;
    let (mut in_open, mut out_open) = (true, true);
    loop {
        if !in_open && !out_open {
            return;
        }
        // Biased, mode changes first: once paused or cut, nothing read later passes.
        tokio::select! {
            biased;
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                match *mode.borrow_and_update() {
                    Mode::Cut => return,
                    Mode::BlackHole => black_holed = true,
                    Mode::Open if black_holed => return,
                    Mode::Open => paused = false,
                    Mode::Paused => paused = true,
                }
            }
            read = in_read.read(&mut from_in), if in_open && !paused => {
                match read {
                    Ok(0) | Err(_) if black_holed => in_open = false,
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if !black_holed && out_write.write_all(&from_in[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
            read = out_read.read(&mut from_out), if out_open && !paused => {
                match read {
                    Ok(0) | Err(_) if black_holed => out_open = false,
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if !black_holed && in_write.write_all(&from_out[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
