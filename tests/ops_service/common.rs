//! Shared by the operations tests: the real `fleetmq` binary run as a service would be (a
//! configuration file, a `NOTIFY_SOCKET` the test owns, signals), a minimal MQTT client
//! on the broker's own codec (exact bytes, any reason code), an HTTP scrape and a
//! Prometheus text-format parser.
//!
//! Every wait is bounded by `WAIT`, so a broken broker fails a test instead of hanging it.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use fleetmq::protocol::{decode, encode, Connect, ConnectProperties, Packet, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixDatagram};
use tokio::process::{Child, Command};

pub const WAIT: Duration = Duration::from_secs(10);

pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The broker binary, started with a configuration file and a notify socket.
pub struct Service {
    pub child: Child,
    notify: UnixDatagram,
    /// Holds the configuration, the notify socket and the log until the test ends.
    _dir: tempfile::TempDir,
    pub config_path: PathBuf,
    log_path: PathBuf,
    /// The first MQTT listener and the metrics listener, read from the READY status.
    pub mqtt: SocketAddr,
    pub metrics: Option<SocketAddr>,
}

impl Service {
    /// Starts `fleetmq -c <config> <args>` and waits for READY=1.
    pub async fn start(config: &str, args: &[&str], env: &[(&str, &str)]) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("fleetmq.toml");
        std::fs::write(&config_path, config).unwrap();
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        let log_path = dir.path().join("stderr.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_fleetmq"))
            .arg("-c")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env("NOTIFY_SOCKET", &notify_path)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut service = Service {
            child,
            notify,
            _dir: dir,
            config_path,
            log_path,
            mqtt: "0.0.0.0:0".parse().unwrap(),
            metrics: None,
        };
        let ready = service.notification("READY=1").await;
        let status = ready
            .lines()
            .find_map(|line| line.strip_prefix("STATUS="))
            .unwrap_or_else(|| panic!("READY without STATUS: {ready:?}"))
            .to_string();
        service.mqtt = address_after(&status, "listening on ")
            .unwrap_or_else(|| panic!("no listener address in {status:?}"));
        service.metrics = address_after(&status, "metrics on http://");
        service
    }

    /// The next notification datagram, whatever it says.
    pub async fn next_notification(&self) -> String {
        let mut buf = vec![0u8; 4096];
        let read = within("a notification", self.notify.recv(&mut buf))
            .await
            .unwrap();
        String::from_utf8_lossy(&buf[..read]).into_owned()
    }

    /// Skips notifications until one has the line `state`; returns that datagram.
    pub async fn notification(&self, state: &str) -> String {
        within(state, async {
            loop {
                let message = self.next_notification().await;
                if message.lines().any(|line| line == state) {
                    return message;
                }
            }
        })
        .await
    }

    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("the broker runs").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {pid}");
    }

    pub async fn exit_status(&mut self) -> ExitStatus {
        within("the broker to exit", self.child.wait())
            .await
            .unwrap()
    }

    /// What the broker wrote to standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn rewrite_config(&self, config: &str) {
        std::fs::write(&self.config_path, config).unwrap();
    }

    pub async fn scrape(&self) -> String {
        scrape(self.metrics.expect("metrics enabled")).await
    }
}

/// The first `ADDR:PORT` after `marker` in `status`.
fn address_after(status: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &status[status.find(marker)? + marker.len()..];
    let end = rest.find([',', ';', '/']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// GET /metrics; returns the body after checking the status line.
pub async fn scrape(addr: SocketAddr) -> String {
    within("a scrape", async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        body.to_string()
    })
    .await
}

/// Parses the Prometheus text exposition format (version 0.0.4) strictly enough to
/// catch a malformed export: every sample line is `name{labels} value`, every metric
/// has a `# TYPE` before its samples, names and label names are valid, values are
/// numbers. Returns `series -> value`, where series is the line up to the value.
pub fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let valid_name = |name: &str| {
        !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    assert!(valid_name(name), "bad metric name in {line:?}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "bad type in {line:?}"
                    );
                    typed.insert(name.to_string(), kind.to_string());
                }
                (Some("HELP"), Some(name), _) => assert!(valid_name(name), "{line:?}"),
                _ => {}
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                (name, Some(labels))
            }
            None => (series, None),
        };
        assert!(valid_name(name), "bad metric name in {line:?}");
        for pair in labels.into_iter().flat_map(|l| l.split(',')) {
            let (key, quoted) = pair.split_once('=').unwrap_or_else(|| panic!("{line:?}"));
            assert!(valid_name(key), "bad label name in {line:?}");
            assert!(
                quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'),
                "unquoted label value in {line:?}"
            );
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| typed.contains_key(*f)))
            .unwrap_or(name);
        assert!(
            typed.contains_key(family),
            "sample before its # TYPE: {line:?}"
        );
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "duplicate series {series}"
        );
    }
    samples
}

/// A minimal MQTT client on the broker's own codec.
pub struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
    version: ProtocolVersion,
    /// Bytes written and read so far, to check the byte counters exactly.
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl RawClient {
    pub async fn open(addr: SocketAddr, version: ProtocolVersion) -> RawClient {
        RawClient {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            version,
            bytes_sent: 0,
            bytes_received: 0,
        }
    }

    /// Connects with a clean session and checks that the broker accepts.
    pub async fn connect(addr: SocketAddr, client_id: &str, version: ProtocolVersion) -> RawClient {
        let mut client = RawClient::open(addr, version).await;
        client.send(&connect_packet(client_id, version, true)).await;
        match client.next_packet().await {
            Some(Packet::ConnAck(connack)) => assert_eq!(connack.reason_code, 0),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        client
    }

    pub async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        encode(packet, self.version, &mut out);
        self.send_bytes(&out).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.bytes_sent += bytes.len() as u64;
    }

    /// The next packet from the broker; `None` once it closed the connection.
    pub async fn next_packet(&mut self) -> Option<Packet> {
        within("a packet from the broker", async {
            loop {
                if let Some(packet) = decode(&mut self.buf, Some(self.version), u32::MAX).unwrap() {
                    return Some(packet);
                }
                let before = self.buf.len();
                if self.stream.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                    return None;
                }
                self.bytes_received += (self.buf.len() - before) as u64;
            }
        })
        .await
    }
}

pub fn connect_packet(client_id: &str, version: ProtocolVersion, clean: bool) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: version,
        clean_start: clean,
        keep_alive: 30,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }))
}

/// The configuration most `ops_*` tests start from: ephemeral ports everywhere.
pub fn base_config(extra: &str) -> String {
    format!(
        "[[listeners]]\ntype = \"tcp\"\nbind = \"127.0.0.1:0\"\nallow_anonymous = true\n\n[metrics]\nbind = \"127.0.0.1:0\"\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n{extra}"
    )
}
