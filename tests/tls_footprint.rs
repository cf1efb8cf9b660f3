//! What a parked TLS connection keeps on the heap, per cipher suite, counted by this
//! test binary's own allocator (one binary of its own, so that no other test pays for
//! the counting): a real TLS 1.3 handshake over loopback between the listener's stream
//! (`TlsTerminator::accept`) and a rustls client, then the stream parked as the parking
//! table parks it, and the bytes its boxed `ParkedTls` frees when dropped. Keeps the
//! state of an idle TLS connection from growing unnoticed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use fleetmq::config::{CipherPreference, ClientAuth, TlsConfig};
use fleetmq::listener::{TlsStream, TlsTerminator};
use rustls::crypto::ring::cipher_suite;
use rustls::SupportedCipherSuite;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Counts, on the thread that asks for it, the bytes and blocks allocated and freed.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    static LIVE_CHUNKS: Cell<isize> = const { Cell::new(0) };
    static LIVE_BLOCKS: Cell<isize> = const { Cell::new(0) };
}

/// What the broker's allocator (jemalloc, 64-bit Linux) takes for `size` bytes: its size
/// class, with no header: 8, then 16-byte steps up to 128, then four classes per
/// doubling (160, 192, 224, 256, 320, ...).
fn jemalloc_class(size: usize) -> isize {
    let class = if size <= 8 {
        8
    } else if size <= 128 {
        (size + 15) & !15
    } else {
        let doubling = usize::BITS - 1 - (size - 1).leading_zeros();
        let step = 1usize << (doubling - 2);
        (size + step - 1) & !(step - 1)
    };
    class as isize
}

#[test]
fn the_size_classes_are_jemallocs() {
    let classes: Vec<isize> = [1, 8, 9, 17, 128, 129, 240, 256, 257, 280, 1_088, 14_337]
        .into_iter()
        .map(jemalloc_class)
        .collect();
    assert_eq!(
        classes,
        [8, 8, 16, 32, 128, 160, 256, 256, 320, 320, 1_280, 16_384]
    );
}

fn account(size: usize, sign: isize) {
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            LIVE_BYTES.with(|live| live.set(live.get() + sign * size as isize));
            LIVE_CHUNKS.with(|live| live.set(live.get() + sign * jemalloc_class(size)));
            LIVE_BLOCKS.with(|live| live.set(live.get() + sign));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account(layout.size(), 1);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account(layout.size(), -1);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        account(layout.size(), -1);
        account(new_size, 1);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes requested, bytes jemalloc takes for them, and blocks freed by `release`.
fn freed_by(release: impl FnOnce()) -> (isize, isize, isize) {
    let read = || {
        (
            LIVE_BYTES.with(Cell::get),
            LIVE_CHUNKS.with(Cell::get),
            LIVE_BLOCKS.with(Cell::get),
        )
    };
    COUNTING.with(|counting| counting.set(true));
    let before = read();
    release();
    let after = read();
    COUNTING.with(|counting| counting.set(false));
    (before.0 - after.0, before.1 - after.1, before.2 - after.2)
}

struct Files {
    _dir: tempfile::TempDir,
    config: TlsConfig,
    client: rustls::RootCertStore,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let ca = fleetmq::certs::Authority::new("footprint CA", 30).unwrap();
    let server = ca.issue_server(&["localhost".into()], 30).unwrap();
    std::fs::write(dir.path().join("server.pem"), &server.cert).unwrap();
    std::fs::write(dir.path().join("server.key"), &server.key).unwrap();
    let mut client = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes()) {
        client.add(cert.unwrap()).unwrap();
    }
    let config = TlsConfig {
        cert: dir.path().join("server.pem"),
        key: dir.path().join("server.key"),
        ca: None,
        crl: None,
        client_auth: ClientAuth::None,
        identity: None,
        cipher_preference: Default::default(),
    };
    Files {
        _dir: dir,
        config,
        client,
    }
}

/// What one parked connection keeps, and the suite it negotiated.
struct Footprint {
    suite: rustls::CipherSuite,
    /// Bytes requested from the allocator.
    bytes: isize,
    /// The same in jemalloc's size classes.
    class_bytes: isize,
    blocks: isize,
}

/// The server side of a measurement.
#[derive(Clone, Copy)]
enum Server {
    /// A listener's TLS (`TlsTerminator`) with this preference.
    Listener(CipherPreference),
    /// The same stream with rustls's own ring provider, for reference: ring's keys.
    RingProvider,
}

/// A server configuration with ring's provider as rustls ships it.
fn ring_server_config(files: &Files) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certificates = CertificateDer::pem_file_iter(&files.config.cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&files.config.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certificates, key)
    .unwrap();
    Arc::new(config)
}

/// Handshakes with a rustls client offering `offered` (rustls's defaults when `None`:
/// AES-256-GCM first), over TLS 1.2 when that is a TLS 1.2 suite and TLS 1.3 otherwise,
/// to `server`, exchanges a few bytes both ways, parks the server's stream and counts
/// what its boxed parked state frees.
fn parked_footprint(
    files: &Files,
    server_side: Server,
    offered: Option<SupportedCipherSuite>,
) -> Footprint {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(suite) = offered {
            provider.cipher_suites = vec![suite];
        }
        let version = match offered {
            Some(SupportedCipherSuite::Tls12(_)) => &rustls::version::TLS12,
            _ => &rustls::version::TLS13,
        };
        let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(files.client.clone())
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
        let client = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            tls.write_all(b"ping").await.unwrap();
            let mut reply = [0u8; 4];
            tls.read_exact(&mut reply).await.unwrap();
            assert_eq!(&reply, b"pong");
            tls
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut server = match server_side {
            Server::Listener(preference) => {
                let mut config = files.config.clone();
                config.cipher_preference = preference;
                let terminator = TlsTerminator::new(&config).unwrap();
                terminator.accept(tcp).await.unwrap().0
            }
            Server::RingProvider => TlsStream::accept(ring_server_config(files), tcp)
                .await
                .unwrap(),
        };
        let mut ping = [0u8; 4];
        server.read_exact(&mut ping).await.unwrap();
        assert_eq!(&ping, b"ping");
        server.write_all(b"pong").await.unwrap();
        server.flush().await.unwrap();
        let client = client.await.unwrap();
        let suite = client
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .expect("handshake done")
            .suite();
        assert!(server.is_idle());
        let (_tcp, parked) = server.park();
        let parked = Box::new(parked);
        let (bytes, class_bytes, blocks) = freed_by(move || drop(parked));
        Footprint {
            suite,
            bytes,
            class_bytes,
            blocks,
        }
    })
}

fn report(label: &str, footprint: &Footprint) {
    eprintln!(
        "{label}: {:?}, {} bytes requested, {} in jemalloc's size classes, {} blocks",
        footprint.suite, footprint.bytes, footprint.class_bytes, footprint.blocks
    );
}

/// A client offering rustls's defaults (AES-256-GCM first) gets AES-256-GCM from a
/// listener at its default preference and ChaCha20-Poly1305 from a `"chacha20"` one;
/// either way its parked state is about 900 bytes smaller than with ring's own keys.
#[test]
fn a_parked_tls_connection_keeps_compact_keys() {
    let files = files();
    let chacha20 = parked_footprint(&files, Server::Listener(CipherPreference::Chacha20), None);
    report("chacha20 preference, rustls client", &chacha20);
    assert_eq!(
        chacha20.suite,
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
    );
    // 2,448 bytes in jemalloc's size classes when written, 2,241 requested: 1,088 the
    // connection's own box (rustls's connection; the 1,280-byte class), 640 the
    // handshake deframer's fragment list (empty, room for 16 fragments reserved when
    // rustls creates the connection), 224 the TLS 1.3 traffic state (the secrets a key
    // update derives the next keys from), 2 x 96 two empty buffer queues, 2 x 44 the
    // record keys (2 x 48), 9 the server name the client sent (16).
    assert!(
        chacha20.class_bytes <= 2_500,
        "a parked TLS connection keeps {} bytes",
        chacha20.class_bytes
    );

    let default = parked_footprint(&files, Server::Listener(CipherPreference::default()), None);
    report("default preference, rustls client", &default);
    assert_eq!(default.suite, rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
    // The AES-GCM keys without their expansion (which the stream, not the parked
    // connection, holds): 2 x 64 (the key's bytes, its number, the IV) instead of 2 x 44.
    assert!(
        default.class_bytes <= 2_500,
        "a parked AES-GCM connection keeps {} bytes",
        default.class_bytes
    );

    let ring = parked_footprint(&files, Server::RingProvider, None);
    report("ring's provider, rustls client", &ring);
    assert_eq!(ring.suite, rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
    assert!(ring.class_bytes >= default.class_bytes + 800);
}

/// Each TLS 1.3 suite on its own, ours against ring's: ring's keys are the same size
/// (AES-GCM's schedule) for all three.
#[test]
fn parked_tls_footprint_per_suite() {
    let files = files();
    let suites = [
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    for suite in suites {
        let ours = parked_footprint(
            &files,
            Server::Listener(CipherPreference::Client),
            Some(suite),
        );
        report("ours, only suite offered", &ours);
        let ring = parked_footprint(&files, Server::RingProvider, Some(suite));
        report("ring's, only suite offered", &ring);
        assert_eq!(ours.suite, suite.suite());
        assert_eq!(ring.suite, suite.suite());
        assert!(ours.class_bytes <= 2_500, "{}", ours.class_bytes);
        assert!(
            ring.class_bytes >= ours.class_bytes + 800,
            "{} {}",
            ring.class_bytes,
            ours.class_bytes
        );
    }
}

/// TLS 1.2's AES-GCM suites keep their keys small too: a parked TLS 1.2 connection
/// keeps 2,384 bytes in jemalloc's size classes (no TLS 1.3 traffic secrets, a little
/// TLS 1.2 state of its own), against 3,536 with ring's suites.
#[test]
fn a_parked_tls12_connection_keeps_compact_keys() {
    let files = files();
    // The development certificates' keys are ECDSA (P-256).
    for suite in [
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ] {
        let ours = parked_footprint(
            &files,
            Server::Listener(CipherPreference::default()),
            Some(suite),
        );
        report("TLS 1.2, ours", &ours);
        let ring = parked_footprint(&files, Server::RingProvider, Some(suite));
        report("TLS 1.2, ring's", &ring);
        assert_eq!(ours.suite, suite.suite());
        assert_eq!(ring.suite, suite.suite());
        assert!(ours.class_bytes <= 2_400, "{}", ours.class_bytes);
        assert!(
            ring.class_bytes >= ours.class_bytes + 800,
            "{} {}",
            ring.class_bytes,
            ours.class_bytes
        );
    }
}
