//! One byte-stream type for every transport, so the connection task is written once:
//! plain TCP, TLS, WebSocket and WebSocket over TLS all read and write MQTT bytes.
//!
//! WebSocket frames carry a byte stream (MQTT 6.0): a packet may span frames and a frame
//! may hold several packets, so [`WsStream`] only unwraps binary frames into bytes and
//! wraps each write into one binary frame. Text frames are a protocol error.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::DuplexStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub use super::tls_stream::ParkedTls;
use super::tls_stream::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// An accepted client connection, after its TLS handshake and WebSocket upgrade.
pub enum ClientStream {
    Tcp(TcpStream),
    Tls(Box<TlsStream>),
    Ws(Box<WsStream<TcpStream>>),
    Wss(Box<WsStream<TlsStream>>),
    /// The in-process connection of a bridge to this broker (`crate::bridge`).
    Local(Box<DuplexStream>),
}

impl ClientStream {
    /// Whether the connection may be parked with nothing of the stream but its socket
    /// (and, for TLS, rustls's state): plain TCP, or TLS with nothing buffered.
    pub fn can_park(&self) -> bool {
        match self {
            ClientStream::Tcp(_) => true,
            ClientStream::Tls(tls) => tls.is_idle(),
            ClientStream::Ws(_) | ClientStream::Wss(_) | ClientStream::Local(_) => false,
        }
    }
}

/// MQTT bytes over a WebSocket connection.
pub struct WsStream<S> {
    inner: WebSocketStream<S>,
    /// The rest of the last binary frame, not yet read.
    pending: Bytes,
}

impl<S> WsStream<S> {
    pub fn new(inner: WebSocketStream<S>) -> WsStream<S> {
        WsStream {
            inner,
            pending: Bytes::new(),
        }
    }
}

fn ws_error(error: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(error)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(data))) => self.pending = data,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket uses binary frames only",
                    )))
                }
                // Pings are answered by tungstenite itself.
                Some(Ok(_)) => {}
                Some(Err(error)) => return Poll::Ready(Err(ws_error(error))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let inner = Pin::new(&mut self.inner);
        ready!(inner.poll_ready(cx)).map_err(ws_error)?;
        Pin::new(&mut self.inner)
            .start_send(Message::Binary(Bytes::copy_from_slice(data)))
            .map_err(ws_error)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx).map_err(ws_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx).map_err(ws_error)
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
            ClientStream::Ws(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
            ClientStream::Wss(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
            ClientStream::Local(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Tcp(stream) => Pin::new(stream).poll_write(cx, data),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, data),
            ClientStream::Ws(stream) => Pin::new(stream.as_mut()).poll_write(cx, data),
            ClientStream::Wss(stream) => Pin::new(stream.as_mut()).poll_write(cx, data),
            ClientStream::Local(stream) => Pin::new(stream.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
            ClientStream::Ws(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
            ClientStream::Wss(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
            ClientStream::Local(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            ClientStream::Ws(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            ClientStream::Wss(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            ClientStream::Local(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
