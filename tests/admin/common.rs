//! Shared by the admin tests: the real `fleetmq` binary with an admin listener (port 0,
//! addresses read from the systemd READY status), a raw HTTP/1.1 client, and rumqttc
//! clients that report how the broker disconnected them.
//!
//! Every wait is bounded by `WAIT`, so a broken broker fails a test instead of hanging it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rumqttc::v5 as r5;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixDatagram};
use tokio::process::{Child, Command};

pub const WAIT: Duration = Duration::from_secs(15);
pub const TOKEN: &str = "test-token-0123456789";

pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The broker binary with an admin listener.
pub struct Broker {
    /// Killed when the test ends.
    _child: Child,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub mqtt: SocketAddr,
    pub admin: SocketAddr,
    /// The token, when the admin API has one.
    pub token: Option<String>,
}

/// The configuration the tests start from: one TCP listener, metrics off, the admin
/// API on a free loopback port, with a token file if given.
fn config_text(token_file: Option<&std::path::Path>) -> String {
    let token = token_file
        .map(|path| format!("token_file = {:?}\n", path.display().to_string()))
        .unwrap_or_default();
    format!(
        "[[listeners]]\ntype = \"tcp\"\nbind = \"127.0.0.1:0\"\nallow_anonymous = true\n\n[metrics]\nenabled = false\n\n[admin]\nbind = \"127.0.0.1:0\"\n{token}"
    )
}

impl Broker {
    /// Starts the broker; with `with_token`, the admin API needs `TOKEN`.
    pub async fn start(with_token: bool) -> Broker {
        Broker::start_with(with_token, "").await
    }

    /// `start`, with `extra` appended to the configuration (after `[admin]`'s keys).
    pub async fn start_with(with_token: bool, extra: &str) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let token_path = dir.path().join("admin.token");
        std::fs::write(&token_path, format!("{TOKEN}\n")).unwrap();
        let config = config_text(with_token.then_some(token_path.as_path())) + extra;
        let config_path = dir.path().join("fleetmq.toml");
        std::fs::write(&config_path, config).unwrap();
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_fleetmq"))
            .arg("-c")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("RUST_LOG")
            .env_remove("WATCHDOG_USEC")
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let status = within("READY=1", async {
            let mut buf = vec![0u8; 4096];
            loop {
                let read = notify.recv(&mut buf).await.unwrap();
                let message = String::from_utf8_lossy(&buf[..read]).into_owned();
                if message.lines().any(|line| line == "READY=1") {
                    return message;
                }
            }
        })
        .await;
        let mqtt = address_after(&status, "listening on ").expect("MQTT address in READY");
        let admin = address_after(&status, "admin on http://")
            .or_else(|| address_after(&status, "admin on https://"))
            .expect("admin address in READY");
        Broker {
            _child: child,
            dir,
            config_path,
            mqtt,
            admin,
            token: with_token.then(|| TOKEN.to_string()),
        }
    }

    /// A request to the admin API with the broker's token (if any).
    pub async fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let answer = http(self.admin, method, path, self.token.as_deref(), body).await;
        let json = serde_json::from_slice(&answer.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&answer.body)));
        (answer.status, json)
    }

    /// `GET` that must answer 200.
    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.api("GET", path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// What the broker wrote to standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

/// The first `ADDR:PORT` after `marker` in `status`.
fn address_after(status: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &status[status.find(marker)? + marker.len()..];
    let end = rest.find([',', ';', '/']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

/// One HTTP/1.1 request (`Connection: close`); the whole answer.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    raw(addr, request.as_bytes()).await
}

/// Sends `bytes` as they are and reads the answer until the server closes.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> Answer {
    within("an HTTP answer", async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // The server may answer (and close) before it read everything of a request it
        // refuses; a failed write then is expected.
        let _ = stream.write_all(bytes).await;
        // Read until the body announced by Content-Length is complete (a server may
        // keep the connection open), or the server closes.
        let mut answer = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = head_end(&answer) {
                let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|value| value.trim().parse::<usize>().ok());
                if length.is_some_and(|length| answer.len() >= end + 4 + length) {
                    break;
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(read) => answer.extend_from_slice(&chunk[..read]),
            }
        }
        let end = head_end(&answer)
            .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&answer)));
        let head = String::from_utf8_lossy(&answer[..end]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head}"));
        Answer {
            status,
            head,
            body: answer[end + 4..].to_vec(),
        }
    })
    .await
}

fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|window| window == b"\r\n\r\n")
}

/// An MQTT 5 client whose event loop runs in a task, reporting how it ended.
pub struct V5 {
    pub client: r5::AsyncClient,
    pub ended: tokio::sync::oneshot::Receiver<Option<r5::mqttbytes::v5::DisconnectReasonCode>>,
    pub publishes: tokio::sync::mpsc::UnboundedReceiver<r5::mqttbytes::v5::Publish>,
}

/// Connects a v5 client (session expiry 300 s, clean start as given) and subscribes to
/// `filter` at QoS 1. Returns the client and CONNACK's session present.
pub async fn connect_v5(
    addr: SocketAddr,
    client_id: &str,
    clean_start: bool,
    filter: &str,
) -> (V5, bool) {
    use r5::mqttbytes::v5::Packet;
    let mut options = r5::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_start(clean_start);
    options.set_session_expiry_interval(Some(300));
    let (client, mut eventloop) = r5::AsyncClient::new(options, 100);
    let session_present = within("CONNACK", async {
        loop {
            match eventloop.poll().await {
                Ok(r5::Event::Incoming(Packet::ConnAck(connack))) => {
                    return connack.session_present
                }
                Ok(_) => {}
                Err(error) => panic!("connect failed: {error}"),
            }
        }
    })
    .await;
    client
        .subscribe(filter, r5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    within("SUBACK", async {
        loop {
            match eventloop.poll().await {
                Ok(r5::Event::Incoming(Packet::SubAck(_))) => return,
                Ok(_) => {}
                Err(error) => panic!("subscribe failed: {error}"),
            }
        }
    })
    .await;
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    let (publish_tx, publishes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let reason = loop {
            match eventloop.poll().await {
                Ok(r5::Event::Incoming(Packet::Publish(publish))) => {
                    let _ = publish_tx.send(publish);
                }
                Ok(r5::Event::Incoming(Packet::Disconnect(disconnect))) => {
                    break Some(disconnect.reason_code)
                }
                Ok(_) => {}
                Err(r5::ConnectionError::MqttState(r5::StateError::ServerDisconnect {
                    reason_code,
                    ..
                })) => break Some(reason_code),
                Err(_) => break None,
            }
        };
        let _ = ended_tx.send(reason);
    });
    (
        V5 {
            client,
            ended,
            publishes,
        },
        session_present,
    )
}

/// Polls `GET path` until `done` holds for its answer.
pub async fn eventually(broker: &Broker, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    within(&format!("GET {path} to show the expected state"), async {
        loop {
            let body = broker.get(path).await;
            if done(&body) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}
