//! Headless Chromium (the distribution's `chromium` package) driven over the DevTools
//! protocol on a WebSocket, without any JavaScript tooling: start the browser on a free
//! debugging port, attach to its page, send commands, and collect the console and
//! exception events a page must not produce.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{http, within};

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A running headless browser and one page of it.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    outgoing: mpsc::UnboundedSender<String>,
    pending: Pending,
    next_id: u64,
    /// Every event the page sent (method and params).
    pub events: Arc<Mutex<Vec<Value>>>,
}

/// The browser binary: `chromium`, as Debian installs it (CI's `apt-get install chromium`).
fn chromium() -> PathBuf {
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "the dashboard test needs headless Chromium: install the distribution's package \
         (`apt-get install chromium`; .ci/run does this)"
    );
}

impl Browser {
    pub async fn launch() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                // Containers often have a small /dev/shm.
                "--disable-dev-shm-usage",
                "--window-size=1280,1100",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            // Whatever the environment, the browser's own files go to the profile.
            .env("HOME", profile.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromium");
        // Chromium writes the port it chose to DevToolsActivePort in its profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let port: u16 = within("Chromium's DevTools port", async {
            loop {
                if let Ok(text) = std::fs::read_to_string(&port_file) {
                    if let Some(port) = text.lines().next().and_then(|line| line.parse().ok()) {
                        return port;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let devtools = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let targets = within("the page target", async {
            loop {
                let answer = http(devtools, "GET", "/json/list", None, None).await;
                let targets: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
                if let Some(page) = targets
                    .as_array()
                    .and_then(|list| list.iter().find(|target| target["type"] == "page"))
                {
                    return page.clone();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let url = targets["webSocketDebuggerUrl"]
            .as_str()
            .unwrap()
            .to_string();
        let tcp = TcpStream::connect(devtools).await.unwrap();
        let (socket, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut queue) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(text) = queue.recv().await {
                if sink.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
        });
        let pending: Pending = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (pending_in, events_in) = (pending.clone(), events.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Ok(text) = message.to_text() else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(text) else {
                    continue;
                };
                if let Some(id) = value["id"].as_u64() {
                    if let Some(reply) = pending_in.lock().unwrap().remove(&id) {
                        let _ = reply.send(value);
                    }
                } else if value.get("method").is_some() {
                    events_in.lock().unwrap().push(value);
                }
            }
        });
        Browser {
            child,
            _profile: profile,
            outgoing,
            pending,
            next_id: 1,
            events,
        }
    }

    /// Sends a DevTools command and returns its `result` (panics on an error answer).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let (reply, answer) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, reply);
        let command = json!({ "id": id, "method": method, "params": params });
        self.outgoing.send(command.to_string()).unwrap();
        let answer = within(method, answer).await.unwrap();
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Evaluates `expression` in the page and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page. Until the page navigated to has
    /// loaded, the expression may run in the previous document and throw: that counts
    /// as not yet.
    pub async fn wait_for(&mut self, what: &str, expression: &str) {
        let deadline = tokio::time::Instant::now() + crate::common::WAIT;
        let guarded =
            format!("(() => {{ try {{ return {expression}; }} catch (e) {{ return false; }} }})()");
        while self.eval(&guarded).await != json!(true) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A PNG of the page, written to `path`.
    pub async fn screenshot(&mut self, path: &Path) {
        use base64::Engine;
        let result = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(result["data"].as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Clicks the middle of the element `selector` finds, as a mouse would.
    pub async fn click(&mut self, selector: &str) {
        let rect = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({selector:?}); e.scrollIntoView(); \
                 const r = e.getBoundingClientRect(); return {{x: r.x + r.width / 2, y: r.y + r.height / 2}}; }})()"
            ))
            .await;
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": rect["x"], "y": rect["y"], "button": "left", "clickCount": 1 }),
            )
            .await;
        }
    }

    /// Console errors, uncaught exceptions and error log entries the page produced.
    pub fn errors(&self) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|event| match event["method"].as_str() {
                Some("Runtime.exceptionThrown") => true,
                Some("Runtime.consoleAPICalled") => {
                    matches!(event["params"]["type"].as_str(), Some("error" | "assert"))
                }
                Some("Log.entryAdded") => event["params"]["entry"]["level"] == "error",
                _ => false,
            })
            .cloned()
            .collect()
    }

    pub async fn close(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Where screenshots go: `dashboard-screenshots` in the target directory of this
/// build (the test binary is `<target>/<profile>/deps/admin-*`), kept as CI artifacts.
pub fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap();
    target.join("dashboard-screenshots")
}
