//! One raw MQTT 3.1.1 client connection over tokio TCP: connect, subscribe, batched
//! writes and a read buffer that hands out borrowed frames.
//!
//! Reads go into one large buffer and every complete frame in it is processed before
//! the next read, so one syscall serves hundreds of packets. Replies (acks) are
//! collected into the write buffer while frames are processed and sent in one write.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wire::{self, Frame, WireError};

/// Largest frame the generator accepts; the scenarios never receive anything near it.
const MAX_FRAME: usize = 1 << 20;
/// Read buffer space offered to the kernel per read: it starts small so ten thousand
/// idle connections stay cheap, and doubles while reads fill it, up to the maximum.
const MIN_READ_CHUNK: usize = 4 * 1024;
const MAX_READ_CHUNK: usize = 256 * 1024;
/// How long CONNECT and SUBSCRIBE may take before the scenario fails.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of CONNECT.
#[derive(Debug, Clone, Copy)]
pub struct ConnectOptions {
    pub keep_alive_secs: u16,
    pub clean_session: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        // Long enough that no bounded run needs a PINGREQ.
        ConnectOptions {
            keep_alive_secs: 300,
            clean_session: true,
        }
    }
}

pub struct Conn {
    stream: TcpStream,
    read_buf: BytesMut,
    read_chunk: usize,
    /// Packets to send at the next `flush`.
    pub write_buf: Vec<u8>,
}

impl Conn {
    /// Opens TCP, sends CONNECT and waits for a successful CONNACK.
    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
        options: ConnectOptions,
    ) -> anyhow::Result<Conn> {
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("TCP connect timed out")?
            .with_context(|| format!("TCP connect to {addr}"))?;
        let mut conn = Conn::from_stream(stream)?;
        wire::connect(
            &mut conn.write_buf,
            client_id,
            options.keep_alive_secs,
            options.clean_session,
        );
        conn.flush().await?;
        let mut return_code = None;
        conn.until(HANDSHAKE_TIMEOUT, |frame, _| {
            if frame.packet_type != wire::CONNACK {
                return Ok(false);
            }
            return_code = frame.body.get(1).copied();
            Ok(true)
        })
        .await
        .context("waiting for CONNACK")?;
        match return_code {
            Some(0) => Ok(conn),
            Some(code) => bail!("CONNACK refused the connection with return code {code}"),
            None => bail!("CONNACK too short"),
        }
    }

    /// Wraps an established stream (the discard server's accepted sockets).
    pub fn from_stream(stream: TcpStream) -> anyhow::Result<Conn> {
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            read_buf: BytesMut::new(),
            read_chunk: MIN_READ_CHUNK,
            write_buf: Vec::new(),
        })
    }

    /// Sends SUBSCRIBE and waits for its SUBACK; fails if any filter was refused.
    pub async fn subscribe(&mut self, filters: &[&str], qos: u8) -> anyhow::Result<()> {
        wire::subscribe(&mut self.write_buf, 1, filters, qos);
        self.flush().await?;
        let mut granted = Vec::new();
        self.until(HANDSHAKE_TIMEOUT, |frame, _| {
            if frame.packet_type != wire::SUBACK {
                return Ok(false);
            }
            granted.extend_from_slice(frame.body.get(2..).unwrap_or_default());
            Ok(true)
        })
        .await
        .context("waiting for SUBACK")?;
        if granted.len() != filters.len() || granted.iter().any(|&code| code > 2) {
            bail!("SUBACK refused a subscription: {granted:?}");
        }
        Ok(())
    }

    /// Writes bytes that were built outside the write buffer (pre-encoded batches).
    pub async fn write_all(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Writes and clears the write buffer.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.write_buf.is_empty() {
            self.stream.write_all(&self.write_buf).await?;
            self.write_buf.clear();
        }
        Ok(())
    }

    /// One read from the socket, bounded by `timeout`. `Ok(false)` on timeout.
    pub async fn read_some(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        self.read_buf.reserve(self.read_chunk);
        let offered = self.read_buf.capacity() - self.read_buf.len();
        match tokio::time::timeout(timeout, self.stream.read_buf(&mut self.read_buf)).await {
            Err(_) => Ok(false),
            Ok(Ok(0)) => bail!("connection closed by the peer"),
            Ok(Ok(read)) => {
                if read == offered {
                    self.read_chunk = (self.read_chunk * 2).min(MAX_READ_CHUNK);
                }
                Ok(true)
            }
            Ok(Err(error)) => Err(error.into()),
        }
    }

    /// Hands every complete buffered frame to `handle` with the write buffer for
    /// replies, and drops them from the read buffer.
    pub fn drain_frames<F>(&mut self, mut handle: F) -> anyhow::Result<()>
    where
        F: FnMut(Frame<'_>, &mut Vec<u8>) -> Result<(), WireError>,
    {
        let mut used = 0;
        while let Some((frame, len)) = wire::split_frame(&self.read_buf[used..], MAX_FRAME)? {
            handle(frame, &mut self.write_buf)?;
            used += len;
        }
        self.read_buf.advance(used);
        Ok(())
    }

    /// Reads and processes frames until `handle` returns true for one of them; frames
    /// after that one stay buffered for the caller.
    async fn until<F>(&mut self, timeout: Duration, mut handle: F) -> anyhow::Result<()>
    where
        F: FnMut(Frame<'_>, &mut Vec<u8>) -> Result<bool, WireError>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut used = 0;
            while let Some((frame, len)) = wire::split_frame(&self.read_buf[used..], MAX_FRAME)? {
                used += len;
                if handle(frame, &mut self.write_buf)? {
                    self.read_buf.advance(used);
                    return self.flush().await;
                }
            }
            self.read_buf.advance(used);
            self.flush().await?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || !self.read_some(left).await? {
                bail!("no answer within {timeout:?}");
            }
        }
    }

    /// Sends DISCONNECT; errors are irrelevant at the end of a run.
    pub async fn disconnect(mut self) {
        wire::disconnect(&mut self.write_buf);
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}
