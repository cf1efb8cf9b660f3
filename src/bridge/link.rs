//! One MQTT client connection of a bridge, to the remote broker or to the local one,
//! using the broker's own codec (it encodes and decodes both directions).
//!
//! `Link` is a framed byte stream: `queue` encodes packets into a write buffer, `flush`
//! writes it under a deadline (a black-holed peer that stops reading cannot hold the
//! bridge forever), and `recv` decodes the next packet. `recv` is cancel-safe (bytes
//! read stay in the read buffer), so the relay can wait on both links at once.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::TcpStream;

use crate::protocol::{decode, encode, ConnAck, Connect, DecodeError, Packet, ProtocolVersion};

/// Mosquitto's bridge flag: protocol level 0x80 | 4 tells a Mosquitto remote that the
/// client is a bridge, so it does not send the bridge's own messages back.
const BRIDGE_PROTOCOL_FLAG: u8 = 0x80;

/// Why a link ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("connection closed by the peer")]
    Closed,
    #[error("malformed packet from the peer: {0}")]
    Decode(#[from] DecodeError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connection refused (CONNACK reason 0x{0:02X})")]
    Refused(u8),
    #[error("unexpected packet: {0}")]
    Unexpected(&'static str),
    #[error("the peer disconnected (reason 0x{0:02X})")]
    Disconnected(u8),
    #[error("the local broker could not store an in-bound message (reason 0x{0:02X})")]
    LocalRefused(u8),
    #[error("{0}")]
    Setup(String),
}

/// The transports a link runs over.
pub enum LinkStream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// The in-process connection to the local broker.
    Local(DuplexStream),
}

impl AsyncRead for LinkStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LinkStream::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            LinkStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
            LinkStream::Local(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for LinkStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            LinkStream::Tcp(stream) => Pin::new(stream).poll_write(cx, data),
            LinkStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, data),
            LinkStream::Local(stream) => Pin::new(stream).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LinkStream::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            LinkStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
            LinkStream::Local(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LinkStream::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            LinkStream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            LinkStream::Local(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

/// An MQTT client connection: framing over a [`LinkStream`].
pub struct Link {
    stream: LinkStream,
    read: BytesMut,
    write: BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
    /// Longest a write may take before the link counts as dead.
    write_timeout: Duration,
}

impl Link {
    pub fn new(
        stream: LinkStream,
        version: ProtocolVersion,
        max_packet_size: u32,
        write_timeout: Duration,
    ) -> Link {
        Link {
            stream,
            read: BytesMut::with_capacity(8 * 1024),
            write: BytesMut::with_capacity(8 * 1024),
            version,
            max_packet_size,
            write_timeout,
        }
    }

    /// Encodes `packet` into the write buffer; `flush` sends it.
    pub fn queue(&mut self, packet: &Packet) {
        encode(packet, self.version, &mut self.write);
    }

    /// Bytes queued and not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.write.len()
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), LinkError> {
        if self.write.is_empty() {
            return Ok(());
        }
        let write = async {
            self.stream.write_all(&self.write).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(result) => result?,
            Err(_) => return Err(LinkError::Timeout(self.write_timeout)),
        }
        self.write.clear();
        Ok(())
    }

    /// The next packet from the peer. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Packet, LinkError> {
        loop {
            if let Some(packet) = decode(&mut self.read, Some(self.version), self.max_packet_size)?
            {
                return Ok(packet);
            }
            if self.stream.read_buf(&mut self.read).await? == 0 {
                return Err(LinkError::Closed);
            }
        }
    }

    /// Sends CONNECT and waits for CONNACK (under `deadline`). `bridge_flag` sends
    /// protocol level 0x84 (Mosquitto's `try_private`) instead of 4.
    pub async fn connect(
        &mut self,
        connect: &Connect,
        bridge_flag: bool,
        deadline: Duration,
    ) -> Result<ConnAck, LinkError> {
        let start = self.write.len();
        self.queue(&Packet::Connect(Box::new(connect.clone())));
        if bridge_flag {
            set_bridge_flag(&mut self.write[start..]);
        }
        let handshake = async {
            self.flush().await?;
            match self.recv().await? {
                Packet::ConnAck(connack) if connack.reason_code < 0x80 => Ok(connack),
                Packet::ConnAck(connack) => Err(LinkError::Refused(connack.reason_code)),
                _ => Err(LinkError::Unexpected(
                    "the first packet from the server was not CONNACK",
                )),
            }
        };
        tokio::time::timeout(deadline, handshake)
            .await
            .map_err(|_| LinkError::Timeout(deadline))?
    }

    /// Closes the write side after sending what is queued (best effort).
    pub async fn close(mut self) {
        let _ = self.flush().await;
        let _ = tokio::time::timeout(self.write_timeout, self.stream.shutdown()).await;
    }
}

/// Sets the bridge bit in the protocol level of an encoded CONNECT: after the fixed
/// header (type byte, then a variable-length integer) come the protocol name (2-byte
/// length, "MQTT") and the level.
fn set_bridge_flag(encoded: &mut [u8]) {
    let mut position = 1;
    while position < encoded.len() && encoded[position] & 0x80 != 0 {
        position += 1;
    }
    let level = position + 1 + 6;
    if let Some(byte) = encoded.get_mut(level) {
        *byte |= BRIDGE_PROTOCOL_FLAG;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ConnectProperties;

    #[test]
    fn the_bridge_flag_sets_the_high_bit_of_the_protocol_level() {
        let connect = Connect {
            protocol: ProtocolVersion::V3_1_1,
            clean_start: false,
            keep_alive: 60,
            client_id: "bridge".into(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        };
        let mut encoded = BytesMut::new();
        encode(
            &Packet::Connect(Box::new(connect)),
            ProtocolVersion::V3_1_1,
            &mut encoded,
        );
        set_bridge_flag(&mut encoded);
        // 0x10, remaining length, 0x00 0x04 "MQTT", level.
        assert_eq!(&encoded[2..8], b"\x00\x04MQTT");
        assert_eq!(encoded[8], 0x84);
    }
}
