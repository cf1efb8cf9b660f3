//! One raw MQTT 3.1.1 client connection over tokio TCP, or TLS (rustls) when the
//! scenario is given a CA: connect, subscribe, batched writes and a read buffer that
//! hands out borrowed frames.
//!
//! Reads go into one large buffer and every complete frame in it is processed before
//! the next read, so one syscall serves hundreds of packets. Replies (acks) are
//! collected into the write buffer while frames are processed and sent in one write.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

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

/// How scenarios reach the broker: its address, TLS or not, and the local addresses
/// connections come from.
pub struct Dial {
    pub addr: SocketAddr,
    /// TLS with this client configuration, for the name `localhost`.
    pub tls: Option<TlsConnector>,
    /// Connections come from 127.0.0.1 .. 127.0.0.N in turn (N = 1: the kernel's
    /// choice): one source address has about 28,000 ephemeral ports towards one broker
    /// port, so 100,000 connections need several.
    pub sources: u8,
    next_source: AtomicUsize,
}

impl Dial {
    pub fn new(addr: SocketAddr, tls: Option<TlsConnector>, sources: u8) -> Dial {
        Dial {
            addr,
            tls,
            sources: sources.max(1),
            next_source: AtomicUsize::new(0),
        }
    }

    async fn tcp(&self) -> io::Result<TcpStream> {
        if self.sources <= 1 {
            return TcpStream::connect(self.addr).await;
        }
        let index = self.next_source.fetch_add(1, Ordering::Relaxed) % usize::from(self.sources);
        let source = Ipv4Addr::new(127, 0, 0, 1 + index as u8);
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
        socket.connect(self.addr).await
    }

    /// TCP, then the TLS handshake if configured; bounded by `HANDSHAKE_TIMEOUT`.
    pub async fn open(&self) -> anyhow::Result<(BenchStream, bool)> {
        let opening = async {
            let tcp = self
                .tcp()
                .await
                .with_context(|| format!("TCP connect to {}", self.addr))?;
            tcp.set_nodelay(true)?;
            let Some(tls) = &self.tls else {
                return Ok((BenchStream::Tcp(tcp), false));
            };
            let name = ServerName::try_from("localhost").context("server name")?;
            let stream = tls.connect(name, tcp).await.context("TLS handshake")?;
            let resumed = stream.get_ref().1.handshake_kind()
                == Some(tokio_rustls::rustls::HandshakeKind::Resumed);
            Ok((BenchStream::Tls(Box::new(stream)), resumed))
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, opening)
            .await
            .context("connect timed out")?
    }
}

/// A client socket: plain TCP or TLS.
pub enum BenchStream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for BenchStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BenchStream::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            BenchStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BenchStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BenchStream::Tcp(stream) => Pin::new(stream).poll_write(cx, data),
            BenchStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BenchStream::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            BenchStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BenchStream::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            BenchStream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A TLS client configuration trusting the CA certificates in `ca_file` (PEM), with
/// session resumption (rustls's default ticket cache) or without, offering TLS 1.3 and
/// 1.2 or, with `tls12_only`, TLS 1.2 alone.
pub fn tls_connector(
    ca_file: &std::path::Path,
    resume: bool,
    tls12_only: bool,
) -> anyhow::Result<TlsConnector> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("reading {}", ca_file.display()))?
    {
        roots.add(certificate.with_context(|| format!("reading {}", ca_file.display()))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider);
    let builder = if tls12_only {
        builder.with_protocol_versions(&[&rustls::version::TLS12])?
    } else {
        builder.with_safe_default_protocol_versions()?
    };
    let mut config = builder.with_root_certificates(roots).with_no_client_auth();
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(TlsConnector::from(Arc::new(config)))
}

pub struct Conn {
    stream: BenchStream,
    read_buf: BytesMut,
    read_chunk: usize,
    /// Packets to send at the next `flush`.
    pub write_buf: Vec<u8>,
}

impl Conn {
    /// Opens TCP (and TLS), sends CONNECT and waits for a successful CONNACK.
    pub async fn connect(
        dial: &Dial,
        client_id: &str,
        options: ConnectOptions,
    ) -> anyhow::Result<Conn> {
        Ok(Conn::connect_resumed(dial, client_id, options).await?.0)
    }

    /// `connect`, also saying whether the TLS handshake resumed a session.
    pub async fn connect_resumed(
        dial: &Dial,
        client_id: &str,
        options: ConnectOptions,
    ) -> anyhow::Result<(Conn, bool)> {
        let (stream, resumed) = dial.open().await?;
        let mut conn = Conn::with_stream(stream);
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
            Some(0) => Ok((conn, resumed)),
            Some(code) => bail!("CONNACK refused the connection with return code {code}"),
            None => bail!("CONNACK too short"),
        }
    }

    /// Wraps an established stream (the discard server's accepted sockets).
    pub fn from_stream(stream: TcpStream) -> anyhow::Result<Conn> {
        stream.set_nodelay(true)?;
        Ok(Conn::with_stream(BenchStream::Tcp(stream)))
    }

    fn with_stream(stream: BenchStream) -> Conn {
        Conn {
            stream,
            read_buf: BytesMut::new(),
            read_chunk: MIN_READ_CHUNK,
            write_buf: Vec::new(),
        }
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

    /// Sends PINGREQ and waits for PINGRESP.
    pub async fn ping(&mut self) -> anyhow::Result<()> {
        self.write_buf.extend_from_slice(&[wire::PINGREQ << 4, 0]);
        self.flush().await?;
        self.until(HANDSHAKE_TIMEOUT, |frame, _| {
            Ok(frame.packet_type == wire::PINGRESP)
        })
        .await
        .context("waiting for PINGRESP")
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
