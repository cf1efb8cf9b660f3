//! Closing a connection: settling the session, the last packets owed to the client (held
//! acknowledgements, a MQTT 5 DISCONNECT with the reason), and closing the socket so
//! that they arrive.
//!
//! After its last packets, a connection shuts its sending side down and reads and
//! discards what the client still sends, until the client closes its side, for at most
//! `CLOSE_DRAIN_TIMEOUT` and `CLOSE_DRAIN_BYTES`: a socket closed with unread input is
//! reset, and a reset can throw away what was written before it (the sender's unsent
//! queue, and data the client's kernel holds unread). The discarded bytes pass through
//! the thread's scratch buffer (`buffer`), so this costs no memory per connection.

use std::future::poll_fn;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{buffer, Connection, Exit};
use crate::broker::{Dropped, Stats};
use crate::listener::ClientStream;
use crate::protocol::{encode, Disconnect, Packet};

/// How long a closing connection may take to deliver its last packets (CONNACK refusal,
/// DISCONNECT with a reason) before the socket is dropped anyway.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long, at most, a closing connection goes on reading (and discarding) what the
/// client still sends after the last packets were written, and how much of it.
const CLOSE_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
const CLOSE_DRAIN_BYTES: usize = 1024 * 1024;

/// Writes `buf` whole, flushes (TLS and WebSocket buffer), counts it as sent, and closes
/// the sending side.
async fn write_counted(
    stream: &mut (impl AsyncWrite + Unpin),
    buf: &[u8],
    stats: &Stats,
) -> std::io::Result<()> {
    stream.write_all(buf).await?;
    stream.flush().await?;
    Stats::add(&stats.bytes_sent, buf.len() as u64);
    stream.shutdown().await
}

/// Delivers a closing connection's last packets (`buf`: a refusing CONNACK,
/// acknowledgements, a DISCONNECT with a reason) and closes.
///
/// Writes and flushes them, shuts the sending side down, then reads and discards what
/// the client still sends until it closes its side, for at most `CLOSE_DRAIN_TIMEOUT`
/// and `CLOSE_DRAIN_BYTES`. Closing a socket with unread input makes the kernel answer
/// with a reset, and a reset can make the client's kernel discard what it received and
/// the client has not read yet: a client that keeps sending (one over Receive Maximum
/// with QoS 2) would lose the DISCONNECT telling it why. Discarded bytes pass through
/// the thread's scratch buffer, so this costs no memory per connection.
pub(super) async fn send_last_and_close<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &[u8],
    stats: &Stats,
) {
    let written =
        tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, write_counted(stream, buf, stats)).await;
    if buf.is_empty() || !matches!(written, Ok(Ok(()))) {
        return;
    }
    let _ = tokio::time::timeout(
        CLOSE_DRAIN_TIMEOUT,
        buffer::discard_input(stream, CLOSE_DRAIN_BYTES, stats),
    )
    .await;
}

impl Connection {
    async fn settle_all_held(&mut self) {
        while !self.held.is_empty() {
            poll_fn(|cx| self.held.poll_front_settled(cx)).await;
            if self.release_held().is_err() {
                return;
            }
        }
    }

    /// Ends the connection: settles the session first (so a fast reconnect finds it
    /// detached), then flushes what is owed to the client and closes the socket.
    pub(super) async fn close(&mut self, stream: &mut ClientStream, exit: Exit) {
        let client_id = &self.handle.client_id;
        match exit {
            Exit::TakenOver => {
                // This task may have consumed a wake-up meant for the new connection.
                self.handle.wake.notify_one();
            }
            _ => self
                .broker
                .disconnect(&self.handle, self.generation, exit.publishes_will()),
        }
        match exit {
            Exit::SlowConsumer => {
                Stats::incr(&self.broker.stats().slow_consumers);
                self.broker
                    .stats()
                    .dropped_many(Dropped::SlowConsumer, self.qos0_unwritten);
                tracing::warn!(client_id = %client_id, peer = %self.peer, "slow consumer disconnected");
                self.write_buf.clear();
                return;
            }
            Exit::KeepAliveTimeout => Stats::incr(&self.broker.stats().keep_alive_timeouts),
            Exit::Violation { .. } => Stats::incr(&self.broker.stats().protocol_violations),
            _ => {}
        }
        tracing::info!(client_id = %client_id, peer = %self.peer, reason = ?exit, "client disconnected");
        if exit == Exit::SocketClosed {
            return;
        }
        if exit != Exit::StorageFailed {
            // Acknowledgements still waiting for their writes go out if the writes
            // complete in time; otherwise the client sends those messages again.
            let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, self.settle_all_held()).await;
        }
        for packet in self.out.drain(..) {
            Stats::incr(&self.broker.stats().packets_sent);
            encode(&packet, self.version, &mut self.write_buf);
        }
        if self.version.is_v5() {
            if let Some(reason_code) = exit.disconnect_reason() {
                let disconnect = Disconnect {
                    reason_code,
                    ..Disconnect::default()
                };
                Stats::incr(&self.broker.stats().packets_sent);
                encode(
                    &Packet::Disconnect(disconnect),
                    self.version,
                    &mut self.write_buf,
                );
            }
        }
        // Unprocessed input is not needed any more.
        self.read_buf = BytesMut::new();
        send_last_and_close(stream, &self.write_buf, self.broker.stats()).await;
    }
}
