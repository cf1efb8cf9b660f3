//! What the bridge tests share: a TCP proxy that can cut or black-hole the link, brokers
//! (in-process fleetmq, the Mosquitto binary), and clients that publish with
//! acknowledgements counted and subscribers that collect what arrives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetmq::config::{
    BridgeConfig, BridgeProtocol, BridgeTopic, Config, Direction, ListenerConfig, OutboxConfig,
};
use fleetmq::server::ServerHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

/// Upper bound of any wait; only turns a hang into a failure.
pub const WAIT: Duration = Duration::from_secs(30);

pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Polls `condition` (cheap, in-process state) until it holds, bounded by `WAIT`.
pub async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Forward,
    /// Open connections are closed on both sides; new ones are closed at once.
    Cut,
    /// Bytes are read and thrown away both ways; sockets stay open, so only the keep
    /// alive notices. Connections black-holed are closed once forwarding resumes.
    BlackHole,
}

/// A TCP proxy on 127.0.0.1 in front of a broker.
pub struct Proxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::Forward);
        let modes = mode.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let watcher = modes.subscribe();
                if *watcher.borrow() == Mode::Cut {
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        pipe(client, server, watcher).await;
                    }
                });
            }
        });
        Proxy { addr, mode }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

async fn pipe(mut client: TcpStream, mut server: TcpStream, mut mode: watch::Receiver<Mode>) {
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let mut up = vec![0u8; 64 * 1024];
    let mut down = vec![0u8; 64 * 1024];
    loop {
        let current = *mode.borrow_and_update();
        if current == Mode::Cut {
            return;
        }
        tokio::select! {
            read = client_read.read(&mut up) => {
                let Ok(n @ 1..) = read else { return };
                if current == Mode::Forward && server_write.write_all(&up[..n]).await.is_err() {
                    return;
                }
            }
            read = server_read.read(&mut down) => {
                let Ok(n @ 1..) = read else { return };
                if current == Mode::Forward && client_write.write_all(&down[..n]).await.is_err() {
                    return;
                }
            }
            changed = mode.changed() => {
                if changed.is_err() || (current == Mode::BlackHole && *mode.borrow() != Mode::BlackHole) {
                    return;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Brokers
// ---------------------------------------------------------------------------------------

/// An in-process fleetmq on 127.0.0.1:0 with its own data directory.
pub struct Fleetmq {
    pub handle: Option<ServerHandle>,
    pub addr: SocketAddr,
    pub data_dir: tempfile::TempDir,
}

pub fn base_config(data_dir: &std::path::Path) -> Config {
    let mut config = Config {
        listeners: vec![ListenerConfig::tcp(SocketAddr::from(([127, 0, 0, 1], 0)))],
        ..Config::default()
    };
    config.storage.data_dir = data_dir.to_path_buf();
    config.log.level = "warn".to_string();
    config.metrics.enabled = false;
    config.sys.interval_secs = 0;
    config.limits.max_publish_rate = 1_000_000;
    config.limits.max_queued_messages = 100_000;
    config
}

impl Fleetmq {
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Fleetmq {
        let data_dir = tempfile::tempdir().unwrap();
        Fleetmq::start_in(data_dir, tweak).await
    }

    pub async fn start_in(data_dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> Fleetmq {
        let mut config = base_config(data_dir.path());
        tweak(&mut config);
        let handle = fleetmq::server::start(config).await.expect("broker starts");
        Fleetmq {
            addr: handle.local_addr(),
            handle: Some(handle),
            data_dir,
        }
    }

    pub fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().expect("running")
    }

    /// The first bridge's status.
    pub fn bridge(&self) -> fleetmq::bridge::BridgeStatus {
        self.handle().bridges().status().remove(0)
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
        self.data_dir
    }
}

/// A bridge to `remote` with the given rules and fast reconnects and keep alive.
pub fn bridge(
    remote: SocketAddr,
    protocol: BridgeProtocol,
    topics: Vec<BridgeTopic>,
) -> BridgeConfig {
    BridgeConfig {
        name: "cloud".into(),
        addresses: vec![remote.to_string()],
        round_robin: false,
        protocol,
        client_id: Some("site-1".into()),
        username: None,
        password: None,
        keep_alive_secs: 1,
        clean_start: false,
        session_expiry_secs: 3600,
        reconnect_min_ms: 50,
        reconnect_max_ms: 200,
        try_private: false,
        tls: None,
        topics,
        outbox: OutboxConfig::default(),
    }
}

pub fn rule(filter: &str, direction: Direction, qos: u8, local: &str, remote: &str) -> BridgeTopic {
    BridgeTopic {
        filter: filter.into(),
        direction,
        qos,
        local_prefix: local.into(),
        remote_prefix: remote.into(),
        retain: true,
    }
}

/// Starts the real `fleetmq` binary with `config` and waits until it accepts on `port`.
pub async fn start_binary(
    config: &std::path::Path,
    port: u16,
    log: &std::path::Path,
) -> tokio::process::Child {
    let log = std::fs::File::create(log).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetmq"))
        .arg("-c")
        .arg(config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    within("the broker binary to listen", async {
        while TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    child
}

/// The configuration of a plain fleetmq (no bridge) on `port` keeping its state in
/// `dir/data`.
pub fn write_plain_config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("remote.toml");
    std::fs::write(
        &path,
        format!(
            "[[listeners]]\ntype = \"tcp\"\nbind = \"127.0.0.1:{port}\"\nallow_anonymous = true\n\n\
             [limits]\nmax_publish_rate = 1000000\nmax_queued_messages = 100000\n\n\
             [storage]\ndata_dir = {:?}\n\n[metrics]\nenabled = false\n\n[admin]\nenabled = false\n\n[sys]\ninterval_secs = 0\n",
            dir.join("data").display().to_string()
        ),
    )
    .unwrap();
    path
}

/// A free port on 127.0.0.1 for a broker that cannot bind port 0 itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The Mosquitto broker from the distribution, with its own configuration file.
pub struct Mosquitto {
    child: std::process::Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

impl Mosquitto {
    /// Starts Mosquitto with `extra` configuration lines and waits until it accepts.
    pub async fn start(extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config_path: PathBuf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config_path,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n\
                 log_dest stderr\nlog_type all\n{extra}\n"
            ),
        )
        .unwrap();
        let child = std::process::Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&config_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("mosquitto.log")).unwrap())
            .spawn()
            .expect("mosquitto runs (apt-get install mosquitto)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        within("mosquitto to accept connections", async {
            while TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        Mosquitto {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self._dir.path().join("mosquitto.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- mosquitto log (last lines) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

/// Publishes messages `"<topic>:<n>"` for each `n` of `numbers` at `qos` to `addr`, in
/// order, and returns once the broker acknowledged every one (PUBACK, or PUBCOMP for
/// QoS 2).
pub async fn publish_acknowledged(
    addr: SocketAddr,
    client_id: &str,
    topic: &str,
    qos: u8,
    numbers: std::ops::Range<usize>,
) {
    let count = numbers.len();
    let mut options = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(50);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 100);
    let level = rumqttc::qos(qos).unwrap();
    let topic = topic.to_string();
    let publisher = tokio::spawn(async move {
        for n in numbers {
            client
                .publish(topic.clone(), level, false, format!("{topic}:{n}"))
                .await
                .unwrap();
        }
        client
    });
    let mut acknowledged = 0;
    within("every publish to be acknowledged", async {
        while acknowledged < count {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) if qos == 1 => {
                    acknowledged += 1
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubComp(_))) if qos == 2 => {
                    acknowledged += 1
                }
                Ok(_) => {}
                Err(error) => panic!("publisher connection failed: {error}"),
            }
        }
    })
    .await;
    let client = publisher.await.unwrap();
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
}

/// What a subscriber received, by topic, in arrival order.
#[derive(Default)]
pub struct Received {
    pub by_topic: Mutex<HashMap<String, Vec<(String, u8)>>>,
    pub arrived: Notify,
}

impl Received {
    fn record(&self, publish: &rumqttc::Publish) {
        let payload = String::from_utf8_lossy(&publish.payload).into_owned();
        self.by_topic
            .lock()
            .unwrap()
            .entry(publish.topic.clone())
            .or_default()
            .push((payload, publish.qos as u8));
        self.arrived.notify_waiters();
    }

    pub fn payloads(&self, topic: &str) -> Vec<String> {
        self.by_topic
            .lock()
            .unwrap()
            .get(topic)
            .map(|messages| {
                messages
                    .iter()
                    .map(|(payload, _)| payload.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn count(&self, topic: &str) -> usize {
        self.payloads(topic).len()
    }

    /// Waits until every payload of `expected` arrived on `topic`.
    pub async fn wait_all(&self, topic: &str, expected: &[String]) {
        within(
            &format!("{} given messages on {topic}", expected.len()),
            async {
                loop {
                    let notified = self.arrived.notified();
                    let payloads = self.payloads(topic);
                    if expected.iter().all(|wanted| payloads.contains(wanted)) {
                        return;
                    }
                    notified.await;
                }
            },
        )
        .await;
    }

    /// Waits until `topic` has `count` distinct payloads.
    pub async fn wait_distinct(&self, topic: &str, count: usize) {
        within(&format!("{count} distinct messages on {topic}"), async {
            loop {
                let notified = self.arrived.notified();
                let mut distinct = self.payloads(topic);
                distinct.sort();
                distinct.dedup();
                if distinct.len() >= count {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }
}

/// A subscriber that keeps polling in its own task and records every PUBLISH.
/// `clean_session = false` lets it survive a restart of its broker (it reconnects).
pub async fn subscribe(
    addr: SocketAddr,
    client_id: &str,
    filter: &str,
    qos: u8,
    clean_session: bool,
) -> (Arc<Received>, tokio::task::JoinHandle<()>) {
    let mut options = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(clean_session);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 100);
    client
        .subscribe(filter, rumqttc::qos(qos).unwrap())
        .await
        .unwrap();
    let received = Arc::new(Received::default());
    // Messages a kept session had queued may come before SUBACK: they count too.
    within("SUBACK", async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => return,
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish))) => {
                    received.record(&publish)
                }
                Ok(_) => {}
                Err(error) => panic!("subscriber connection failed: {error}"),
            }
        }
    })
    .await;
    let sink = received.clone();
    let task = tokio::spawn(async move {
        let _client = client;
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish))) => {
                    sink.record(&publish)
                }
                Ok(_) => {}
                // The broker restarts in some tests: try again shortly (bounded by the
                // test's own waits).
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    (received, task)
}

/// Checks what `topic` received against `count` messages published in order:
/// every one arrived, first arrivals in order; for QoS 2 each exactly once.
pub fn assert_complete_in_order(
    received: &Received,
    topic: &str,
    count: usize,
    exactly_once: bool,
) {
    let payloads = received.payloads(topic);
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<usize> = payloads
        .iter()
        .filter(|payload| seen.insert((*payload).clone()))
        .map(|payload| {
            payload
                .rsplit(':')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected payload {payload}"))
        })
        .collect();
    if firsts != (0..count).collect::<Vec<_>>() {
        let at = firsts
            .iter()
            .enumerate()
            .position(|(index, n)| index != *n)
            .unwrap_or(firsts.len());
        let around = &firsts[at.saturating_sub(3)..(at + 5).min(firsts.len())];
        panic!(
            "{topic}: messages missing or out of order: {} distinct of {count}, first difference at {at}: {around:?}; all arrivals: {} ",
            firsts.len(),
            payloads.len()
        );
    }
    if exactly_once {
        assert_eq!(
            payloads.len(),
            count,
            "{topic}: QoS 2 delivered a duplicate"
        );
    }
}
