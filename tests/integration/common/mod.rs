//! Shared test support: an in-process broker on a free port, unique client ids, the raw
//! wire client and thin wrappers over the rumqttc client library.
//!
//! Setting `FLEETMQ_TEST_REFERENCE=/usr/sbin/mosquitto` runs the same suite against a
//! Mosquitto process instead (the reference behaviour), which separates a wrong
//! expectation in a test from a broker bug. Settings Mosquitto lacks (the CONNECT
//! timeout, for one) keep its defaults there.

pub mod clients;
pub mod raw;
pub mod wire;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fleetmq::config::{Config, ListenerConfig};
use fleetmq::server::ServerHandle;

/// Upper bound on any single wait. It only turns a hang into a failure; no test relies on
/// it elapsing.
pub const GUARD: Duration = Duration::from_secs(5);

/// A broker serving one test; stopped when dropped (with the test's runtime).
pub struct Broker {
    pub addr: SocketAddr,
    handle: Option<ServerHandle>,
    reference: Option<Child>,
    _data_dir: tempfile::TempDir,
}

impl Broker {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The in-process broker's counters; `None` when the suite runs against a
    /// reference broker.
    pub fn stats(&self) -> Option<fleetmq::broker::StatsSnapshot> {
        self.handle
            .as_ref()
            .map(|handle| handle.broker().stats().snapshot())
    }

    /// The in-process broker itself (for operator actions); `None` against a reference
    /// broker.
    pub fn inner(&self) -> Option<&std::sync::Arc<fleetmq::broker::Broker>> {
        self.handle.as_ref().map(|handle| handle.broker())
    }

    /// Stops the in-process broker and waits for its connections to end.
    pub async fn shutdown(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = self.reference.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts a broker on `127.0.0.1:0` with the default configuration changed by `tweak`.
pub async fn start_broker(tweak: impl FnOnce(&mut Config)) -> Broker {
    let data_dir = tempfile::tempdir().expect("temporary data directory");
    let mut config = Config {
        listeners: vec![ListenerConfig::tcp(SocketAddr::from(([127, 0, 0, 1], 0)))],
        ..Config::default()
    };
    config.storage.data_dir = data_dir.path().to_path_buf();
    // RocksDB in a normal build; `--no-default-features` runs the suite on the memory
    // store (quick to build, same semantics).
    config.storage.persistence = cfg!(feature = "rocksdb");
    config.log.level = "warn".to_string();
    tweak(&mut config);

    if let Ok(program) = std::env::var("FLEETMQ_TEST_REFERENCE") {
        return start_reference(&program, &config, data_dir).await;
    }
    let handle = fleetmq::server::start(config).await.expect("broker starts");
    let addr = handle.local_addr();
    assert_ne!(addr.port(), 0, "local_addr reports the bound port");
    Broker {
        addr,
        handle: Some(handle),
        reference: None,
        _data_dir: data_dir,
    }
}

/// Raises this process's soft limit on open files to at least `needed` (up to the hard
/// limit), for tests that hold thousands of connections: Debian's default soft limit is
/// 1,024. Panics, naming both limits, when the hard limit is too low.
pub fn raise_open_files_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by reference.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(read, 0, "getrlimit(RLIMIT_NOFILE) failed");
    if limit.rlim_cur >= needed {
        return;
    }
    assert!(
        limit.rlim_max >= needed,
        "this test needs {needed} open files; the hard limit is {} (raise it with ulimit -Hn)",
        limit.rlim_max
    );
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(set, 0, "setrlimit(RLIMIT_NOFILE) failed");
}

/// Starts with the default configuration.
pub async fn start_default() -> Broker {
    start_broker(|_| {}).await
}

async fn start_reference(program: &str, config: &Config, data_dir: tempfile::TempDir) -> Broker {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let limits = &config.limits;
    // Mosquitto has one setting for both inflight windows; a test that changes the
    // receive maximum means that one.
    let inflight = if limits.receive_maximum != fleetmq::limits::DEFAULT_RECEIVE_MAXIMUM {
        limits.receive_maximum
    } else {
        limits.max_inflight_messages
    };
    let conf = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
         max_packet_size {}\nmax_keepalive {}\nmax_inflight_messages {}\n\
         max_queued_messages {}\nmax_topic_alias {}\n",
        limits.max_packet_size,
        limits.max_keep_alive_secs,
        inflight,
        limits.max_queued_messages,
        limits.topic_alias_maximum,
    );
    let conf_path = data_dir.path().join("mosquitto.conf");
    std::fs::write(&conf_path, conf).expect("write mosquitto.conf");
    let child = Command::new(program)
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the reference broker");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = tokio::time::Instant::now() + GUARD;
    // Polling for readiness: the reference broker gives no other signal that it listens.
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reference broker did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Broker {
        addr,
        handle: None,
        reference: Some(child),
        _data_dir: data_dir,
    }
}

/// A client id no other test uses.
pub fn client_id(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A topic no other test uses (tests share nothing, but unique topics make failures
/// easier to read and keep retained state from leaking if a broker were ever shared).
pub fn topic(prefix: &str) -> String {
    client_id(prefix).replace('-', "/")
}

/// Turns each `async fn name(version: u8)` into a module `name` with one
/// `#[tokio::test]` per protocol version: `name::v311` and `name::v5`.
#[macro_export]
macro_rules! both_versions {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn v311() {
                    super::$name($crate::common::wire::V311).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn v5() {
                    super::$name($crate::common::wire::V5).await;
                }
            }
        )+
    };
}

/// Like `both_versions!`, with MQTT 3.1 as well: `name::v31`, `name::v311`, `name::v5`.
#[macro_export]
macro_rules! all_versions {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn v31() {
                    super::$name($crate::common::wire::V31).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn v311() {
                    super::$name($crate::common::wire::V311).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn v5() {
                    super::$name($crate::common::wire::V5).await;
                }
            }
        )+
    };
}

/// Proves the broker still serves new clients: connect, subscribe, publish QoS 1 to
/// ourselves and receive it.
pub async fn assert_still_serving(addr: SocketAddr) {
    let id = client_id("alive");
    let mut c = raw::RawClient::connect(addr, wire::V311, &id).await;
    let t = topic("alive");
    c.subscribe(&t, 1).await;
    c.publish_simple(&t, 1, b"still here").await;
    let p = c.recv_publish().await;
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice()),
        (t.as_str(), &b"still here"[..])
    );
    c.disconnect().await;
}
