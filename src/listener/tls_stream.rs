//! A server TLS stream over rustls's unbuffered API that holds no buffers while idle.
//!
//! rustls's buffered connection (what `tokio-rustls` wraps) keeps a 4 KiB receive
//! buffer for as long as the connection lives, from its first read on, whether or not
//! anything is in it: for an idle device that was half of what its TLS connection cost.
//! Here the stream owns the buffers and keeps them only while they hold bytes, as the
//! plain connection does (`crate::connection` reads through a per-thread scratch
//! buffer): TLS records read from the socket wait in `incoming` only until rustls has
//! taken them, decrypted data in `plaintext` only until the connection read it, and
//! encrypted records in `outgoing` only until the socket took them. What an idle TLS
//! connection keeps is rustls's connection state (keys, sequence numbers) and the socket;
//! a parked one not even the expansion of its AES-GCM keys (`tls_keys`: the stream holds
//! the expansions, lends them to the thread for each rustls call, and drops them when it
//! parks).
//!
//! The handshake runs in `accept`; afterwards reads decrypt (answering what the peer's
//! records require, such as a TLS 1.3 key update, on the way) and writes encrypt one
//! buffer into records at a time.
//!
//! A handshake rustls refuses (a bad or missing client certificate, not TLS at all) ends
//! with the socket closed but without the TLS alert naming the reason: the unbuffered
//! API keeps that alert queued inside the failed connection, and processing again after
//! an error is not supported (rustls asserts). Clients report a closed connection
//! instead of, say, "certificate required"; the broker logs the reason (debug level).

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::pki_types::CertificateDer;
use rustls::server::{ServerConfig, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::tls_keys::KeyRegistry;

/// Bytes read from the socket at once: more than one TLS record (16 KiB of data plus at
/// most 2 KiB of protection and the header).
const READ_CHUNK: usize = 18 * 1024 + 5;
/// TLS bytes received and not yet complete enough for rustls: a record, or a handshake
/// message spread over several records (rustls itself allows 64 KiB for those).
const MAX_INCOMING: usize = 80 * 1024;
/// Encrypted bytes waiting for the socket beyond which writes wait instead of adding.
const MAX_OUTGOING: usize = 64 * 1024;

thread_local! {
    /// Where reads wait; allocated by the first read on each thread.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What a parked TLS connection keeps (`crate::connection`'s parking table): rustls's
/// connection state (keys, sequence numbers, what a key update needs) without the
/// socket and without buffers, which are all empty when a connection is parked.
pub struct ParkedTls {
    conn: UnbufferedServerConnection,
}

/// An accepted TLS connection.
pub struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// The expansions of `conn`'s AES-GCM record keys, dropped when it parks.
    keys: KeyRegistry,
    /// TLS bytes read and not yet consumed by rustls.
    incoming: Vec<u8>,
    /// Decrypted application data not yet read, from `plaintext_read` on.
    plaintext: Vec<u8>,
    plaintext_read: usize,
    /// Encrypted records not yet written, from `outgoing_sent` on.
    outgoing: Vec<u8>,
    outgoing_sent: usize,
    /// The peer sent close_notify, or closed the socket: reads end.
    read_closed: bool,
    close_notify_queued: bool,
}

/// What one step of rustls's state machine is asked for.
#[derive(Clone, Copy)]
enum Want<'a> {
    /// Data to read, or anything rustls has to send.
    Read,
    Encrypt(&'a [u8]),
    CloseNotify,
}

enum Progress {
    /// Something changed; step again.
    Again,
    /// Everything received has been processed; more must come from the socket.
    NeedInput,
    /// The requested encryption (or close_notify) is in `outgoing`.
    Written,
    /// The peer closed the TLS session.
    Closed,
}

fn tls_error(error: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// Appends what `produce` writes to `out`, giving it `room` bytes and, if it asks for
/// more, exactly as many as it asks for.
fn append_with(
    out: &mut Vec<u8>,
    mut room: usize,
    mut produce: impl FnMut(&mut [u8]) -> Result<usize, Option<InsufficientSizeError>>,
) -> io::Result<()> {
    loop {
        let start = out.len();
        out.resize(start + room, 0);
        match produce(&mut out[start..]) {
            Ok(written) => {
                out.truncate(start + written);
                return Ok(());
            }
            Err(Some(InsufficientSizeError { required_size })) if required_size > room => {
                out.truncate(start);
                room = required_size;
            }
            Err(_) => {
                out.truncate(start);
                return Err(io::Error::other("TLS record could not be produced"));
            }
        }
    }
}

impl TlsStream {
    /// Whether nothing waits in the stream: no TLS bytes read and not yet decrypted, no
    /// decrypted data unread, nothing encrypted and unwritten, no close under way.
    pub fn is_idle(&self) -> bool {
        self.incoming.is_empty()
            && self.plaintext_read >= self.plaintext.len()
            && self.outgoing_sent >= self.outgoing.len()
            && !self.read_closed
            && !self.close_notify_queued
    }

    /// Splits an idle stream (`is_idle`) into its socket and its TLS state, without the
    /// expansions of its AES-GCM keys (the first record after unparking expands them
    /// again).
    pub fn park(self) -> (TcpStream, ParkedTls) {
        // The expansions go with the stream's registry.
        (self.tcp, ParkedTls { conn: self.conn })
    }

    /// The stream of a parked connection, over its socket again.
    pub fn unpark(tcp: TcpStream, parked: ParkedTls) -> TlsStream {
        TlsStream {
            tcp,
            conn: parked.conn,
            keys: KeyRegistry::default(),
            incoming: Vec::new(),
            plaintext: Vec::new(),
            plaintext_read: 0,
            outgoing: Vec::new(),
            outgoing_sent: 0,
            read_closed: false,
            close_notify_queued: false,
        }
    }

    /// Runs the server side of the handshake on `tcp`.
    pub async fn accept(config: Arc<ServerConfig>, tcp: TcpStream) -> io::Result<TlsStream> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut stream = TlsStream {
            tcp,
            conn,
            keys: KeyRegistry::default(),
            incoming: Vec::new(),
            plaintext: Vec::new(),
            plaintext_read: 0,
            outgoing: Vec::new(),
            outgoing_sent: 0,
            read_closed: false,
            close_notify_queued: false,
        };
        poll_fn(|cx| stream.poll_handshake(cx)).await?;
        Ok(stream)
    }

    /// The client's certificate chain, when it presented one.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.step(Want::Read)? {
                Progress::Again | Progress::Written => continue,
                Progress::Closed => {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
                Progress::NeedInput => {
                    // Our flight (and, once done, the session tickets) goes out first.
                    ready!(self.poll_write_outgoing(cx))?;
                    if !self.conn.is_handshaking() {
                        return Poll::Ready(Ok(()));
                    }
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
            }
        }
    }

    /// Hands what was received to rustls and carries out one thing it asks for, with
    /// the expansions of the connection's AES-GCM keys where its records find them.
    fn step(&mut self, want: Want<'_>) -> io::Result<Progress> {
        let mut keys = std::mem::take(&mut self.keys);
        let progress = keys.run(|| self.step_rustls(want));
        self.keys = keys;
        progress
    }

    fn step_rustls(&mut self, want: Want<'_>) -> io::Result<Progress> {
        let TlsStream {
            conn,
            incoming,
            plaintext,
            outgoing,
            read_closed,
            ..
        } = self;
        let status = conn.process_tls_records(incoming);
        let mut discard = status.discard;
        let progress = match status.state.map_err(tls_error)? {
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    let record = record.map_err(tls_error)?;
                    discard += record.discard;
                    plaintext.extend_from_slice(record.payload);
                }
                Progress::Again
            }
            ConnectionState::EncodeTlsData(mut encode) => {
                append_with(outgoing, 1024, |buf| {
                    encode.encode(buf).map_err(|error| match error {
                        EncodeError::InsufficientSize(size) => Some(size),
                        _ => None,
                    })
                })?;
                Progress::Again
            }
            // The encoded records stay in `outgoing`, ahead of anything written later.
            ConnectionState::TransmitTlsData(transmit) => {
                transmit.done();
                Progress::Again
            }
            ConnectionState::WriteTraffic(mut traffic) => {
                let produce = |error: EncryptError| match error {
                    EncryptError::InsufficientSize(size) => Some(size),
                    _ => None,
                };
                match want {
                    Want::Read => Progress::NeedInput,
                    Want::Encrypt(data) => {
                        // Record headers and protection: at most 29 bytes per 16 KiB.
                        let room = data.len() + (data.len() / 16_384 + 1) * 64;
                        append_with(outgoing, room, |buf| {
                            traffic.encrypt(data, buf).map_err(produce)
                        })?;
                        Progress::Written
                    }
                    Want::CloseNotify => {
                        append_with(outgoing, 64, |buf| {
                            traffic.queue_close_notify(buf).map_err(produce)
                        })?;
                        Progress::Written
                    }
                }
            }
            ConnectionState::BlockedHandshake => match want {
                Want::Read => Progress::NeedInput,
                Want::Encrypt(_) | Want::CloseNotify => {
                    return Err(io::ErrorKind::NotConnected.into());
                }
            },
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                *read_closed = true;
                Progress::Closed
            }
            // Early data is not enabled (`max_early_data_size` is 0).
            _ => return Err(io::Error::other("unexpected TLS state")),
        };
        incoming.drain(..discard);
        if incoming.is_empty() {
            *incoming = Vec::new();
        }
        Ok(progress)
    }

    /// Reads what the socket has into `incoming`, through the thread's scratch buffer.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() >= MAX_INCOMING {
            return Poll::Ready(Err(tls_error(io::Error::other(
                "TLS message larger than the broker accepts",
            ))));
        }
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < READ_CHUNK {
                scratch.resize(READ_CHUNK, 0);
            }
            let mut read = ReadBuf::new(scratch);
            ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut read))?;
            self.incoming.extend_from_slice(read.filled());
            Poll::Ready(Ok(read.filled().len()))
        })
    }

    /// Writes `outgoing` to the socket; its memory goes once all of it is written.
    fn poll_write_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.outgoing_sent < self.outgoing.len() {
            let written = ready!(
                Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.outgoing_sent..])
            )?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing_sent += written;
        }
        self.outgoing = Vec::new();
        self.outgoing_sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Steps until the requested record is in `outgoing`.
    fn produce(&mut self, want: Want<'_>) -> io::Result<()> {
        loop {
            match self.step(want)? {
                Progress::Written => return Ok(()),
                Progress::Again | Progress::Closed => continue,
                Progress::NeedInput => return Err(io::ErrorKind::NotConnected.into()),
            }
        }
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let available = this.plaintext.len() - this.plaintext_read;
            if available > 0 {
                let taken = available.min(buf.remaining());
                let start = this.plaintext_read;
                buf.put_slice(&this.plaintext[start..start + taken]);
                this.plaintext_read += taken;
                if this.plaintext_read == this.plaintext.len() {
                    this.plaintext = Vec::new();
                    this.plaintext_read = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            match this.step(Want::Read)? {
                Progress::Again | Progress::Written | Progress::Closed => continue,
                Progress::NeedInput => {
                    // What rustls produced while reading (a key update's answer, an
                    // alert) goes out; a socket not ready for it wakes this task later.
                    if let Poll::Ready(Err(error)) = this.poll_write_outgoing(cx) {
                        return Poll::Ready(Err(error));
                    }
                    if ready!(this.poll_fill(cx))? == 0 {
                        this.read_closed = true;
                    }
                }
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.outgoing.len() - this.outgoing_sent >= MAX_OUTGOING {
            ready!(this.poll_write_outgoing(cx))?;
        }
        // Encrypted now, at most `MAX_OUTGOING` at a time; written as far as the socket
        // takes it, the rest by later writes or the flush.
        let data = &data[..data.len().min(MAX_OUTGOING)];
        this.produce(Want::Encrypt(data))?;
        if let Poll::Ready(Err(error)) = this.poll_write_outgoing(cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_outgoing(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_notify_queued {
            this.close_notify_queued = true;
            // A session that cannot say close_notify any more still closes its socket.
            let _ = this.produce(Want::CloseNotify);
        }
        ready!(this.poll_write_outgoing(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsConnector;

    fn configs() -> (Arc<ServerConfig>, TlsConnector) {
        configs_with(Arc::new(rustls::crypto::ring::default_provider()))
    }

    /// A server configuration with `server_provider`, and a client with ring's.
    fn configs_with(
        server_provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> (Arc<ServerConfig>, TlsConnector) {
        let authority = crate::certs::Authority::new("test CA", 1).unwrap();
        let server = authority.issue_server(&["localhost".into()], 1).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = CertificateDer::pem_slice_iter(server.cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(server.key.as_bytes()).unwrap();
        let mut server_config = ServerConfig::builder_with_provider(server_provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        server_config.ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(authority.cert_pem().as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (
            Arc::new(server_config),
            TlsConnector::from(Arc::new(client_config)),
        )
    }

    fn holds_no_buffers(stream: &TlsStream) -> bool {
        stream.incoming.capacity() == 0
            && stream.plaintext.capacity() == 0
            && stream.outgoing.capacity() == 0
    }

    /// Large writes both ways (records split across reads, several records per write), a
    /// key update from the client, session resumption, close_notify; and no buffer kept
    /// between exchanges.
    #[tokio::test]
    async fn echoes_large_data_and_keeps_no_buffers_between_exchanges() {
        let (server_config, connector) = configs();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut tls = TlsStream::accept(server_config.clone(), tcp).await.unwrap();
                // (The client's first data may already be here.)
                for _ in 0..2 {
                    let mut message = vec![0u8; 100_000];
                    tls.read_exact(&mut message).await.unwrap();
                    tls.write_all(&message).await.unwrap();
                    tls.flush().await.unwrap();
                    assert!(holds_no_buffers(&tls), "after an exchange");
                }
                let mut rest = Vec::new();
                tls.read_to_end(&mut rest).await.unwrap();
                assert!(rest.is_empty());
                tls.shutdown().await.unwrap();
            }
        });
        let message: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut resumed = Vec::new();
        for _ in 0..2 {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut client = connector.connect(name, tcp).await.unwrap();
            for round in 0..2 {
                if round == 1 {
                    client.get_mut().1.refresh_traffic_keys().unwrap();
                }
                client.write_all(&message).await.unwrap();
                let mut echoed = vec![0u8; message.len()];
                client.read_exact(&mut echoed).await.unwrap();
                assert_eq!(echoed, message);
            }
            resumed.push(client.get_ref().1.handshake_kind());
            client.shutdown().await.unwrap();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
        }
        server.await.unwrap();
        assert_eq!(
            resumed,
            [
                Some(rustls::HandshakeKind::Full),
                Some(rustls::HandshakeKind::Resumed)
            ]
        );
    }

    /// With the listener's AES-GCM suites, the stream holds the expansions of the
    /// connection's two keys while it is in use and none once parked: after the
    /// handshake (whose keys went with it), after a key update both ways (the replaced
    /// keys' expansions went with them) and after unparking.
    #[tokio::test]
    async fn aes_gcm_keys_are_expanded_in_the_stream_and_not_kept_parked() {
        let (provider, _) =
            super::super::tls_suites::provider_arc(crate::config::CipherPreference::Aes);
        let (server_config, connector) = configs_with(provider);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = TlsStream::accept(server_config, tcp).await.unwrap();
            let mut expanded = Vec::new();
            for _ in 0..3 {
                let mut message = [0u8; 4];
                tls.read_exact(&mut message).await.unwrap();
                tls.write_all(&message).await.unwrap();
                tls.flush().await.unwrap();
                expanded.push(tls.keys.expanded());
                assert!(tls.is_idle());
                let (tcp, parked) = tls.park();
                tls = TlsStream::unpark(tcp, parked);
                expanded.push(tls.keys.expanded());
            }
            expanded
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = connector.connect(name, tcp).await.unwrap();
        assert_eq!(
            client
                .get_ref()
                .1
                .negotiated_cipher_suite()
                .map(|s| s.suite()),
            Some(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384)
        );
        for round in 0..3u8 {
            if round == 1 {
                client.get_mut().1.refresh_traffic_keys().unwrap();
            }
            let message = [b'p', b'i', b'n', b'0' + round];
            client.write_all(&message).await.unwrap();
            let mut echoed = [0u8; 4];
            client.read_exact(&mut echoed).await.unwrap();
            assert_eq!(echoed, message);
        }
        assert_eq!(server.await.unwrap(), [2, 0, 2, 0, 2, 0]);
    }

    #[tokio::test]
    async fn a_client_that_is_not_tls_fails_the_handshake() {
        let (server_config, _) = configs();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            // A MQTT CONNECT where a ClientHello belongs.
            tcp.write_all(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
                .await
                .unwrap();
            let mut rest = Vec::new();
            let _ = tcp.read_to_end(&mut rest).await;
        });
        let (tcp, _) = listener.accept().await.unwrap();
        assert!(TlsStream::accept(server_config, tcp).await.is_err());
        client.await.unwrap();
    }
}
