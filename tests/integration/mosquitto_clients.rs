//! Interoperability with the Mosquitto command line clients (`mosquitto_pub`,
//! `mosquitto_sub`) for MQTT 3.1, 3.1.1 and 5.0: every QoS in both directions, retained
//! messages, wills and persistent sessions.
//!
//! `mosquitto_sub -d` prints "received SUBACK" once its subscription is in place; the
//! tests publish only after that line, so nothing depends on timing.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};

use tokio::sync::mpsc;

use crate::all_versions;
use crate::common::raw::RawClient;
use crate::common::wire::{PublishSpec, V31, V311, V5};
use crate::common::{client_id, start_default, topic, Broker, GUARD};

const MOSQUITTO_PUB: &str = "/usr/bin/mosquitto_pub";
const MOSQUITTO_SUB: &str = "/usr/bin/mosquitto_sub";
const STDBUF: &str = "/usr/bin/stdbuf";
/// Each received message as one line: topic, QoS, retain flag, payload.
const FORMAT: &str = "MSG %t %q %r %p";

all_versions!(
    sub_receives_each_qos,
    pub_sends_each_qos,
    retained_message_round_trip,
    will_published_when_client_killed,
    persistent_session_receives_offline_messages,
);

fn version_arg(version: u8) -> &'static str {
    match version {
        V31 => "mqttv31",
        V311 => "mqttv311",
        V5 => "mqttv5",
        other => panic!("no such protocol level {other}"),
    }
}

/// A running `mosquitto_sub`, its stdout delivered line by line.
struct Sub {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
}

impl Sub {
    fn spawn(broker: &Broker, version: u8, args: &[&str]) -> Sub {
        // stdbuf makes stdout line buffered, so each line arrives as soon as it is printed.
        let mut child = Command::new(STDBUF)
            .args(["-oL", MOSQUITTO_SUB])
            .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
            .args(["-V", version_arg(version), "-F", FORMAT])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mosquitto_sub");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel(256);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        Sub {
            child: Some(child),
            lines,
        }
    }

    /// The next stdout line satisfying `want`; other lines (debug output) are skipped.
    async fn line(&mut self, want: impl Fn(&str) -> bool) -> String {
        tokio::time::timeout(GUARD, async {
            loop {
                match self.lines.recv().await {
                    Some(line) if want(&line) => return line,
                    Some(_) => {}
                    None => panic!("mosquitto_sub ended before the expected output"),
                }
            }
        })
        .await
        .expect("mosquitto_sub output within the guard timeout")
    }

    /// Waits until the subscription is in place (requires `-d`).
    async fn subscribed(&mut self) {
        self.line(|l| l.contains("received SUBACK")).await;
    }

    /// The next `n` received messages, formatted by `FORMAT`.
    async fn messages(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.line(|l| l.starts_with("MSG ")).await);
        }
        out
    }

    /// Waits for the process to exit on its own.
    async fn exit_status(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("not yet waited for");
        tokio::time::timeout(GUARD, tokio::task::spawn_blocking(move || child.wait()))
            .await
            .expect("mosquitto_sub exits within the guard timeout")
            .expect("wait task")
            .expect("wait for mosquitto_sub")
    }

    /// SIGKILL: the TCP connection drops without DISCONNECT.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("still running");
        child.kill().expect("kill mosquitto_sub");
        let _ = child.wait();
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `mosquitto_pub` to completion and asserts it succeeded.
async fn mosquitto_pub(broker: &Broker, version: u8, args: &[&str]) {
    let mut command = Command::new(MOSQUITTO_PUB);
    command
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-V", version_arg(version)])
        .args(args);
    let output = tokio::time::timeout(GUARD, tokio::task::spawn_blocking(move || command.output()))
        .await
        .expect("mosquitto_pub finishes within the guard timeout")
        .expect("wait task")
        .expect("run mosquitto_pub");
    assert!(
        output.status.success(),
        "mosquitto_pub {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn sub_receives_each_qos(version: u8) {
    let broker = start_default().await;
    let base = topic("msub");
    let filter = format!("{base}/#");
    let mut sub = Sub::spawn(
        &broker,
        version,
        &["-d", "-q", "2", "-C", "3", "-t", &filter],
    );
    sub.subscribed().await;
    let mut publisher = RawClient::connect(broker.addr, V311, &client_id("pub")).await;
    for q in 0..=2u8 {
        publisher
            .publish_simple(&format!("{base}/q{q}"), q, format!("m{q}").as_bytes())
            .await;
    }
    let expected: Vec<String> = (0..=2)
        .map(|q| format!("MSG {base}/q{q} {q} 0 m{q}"))
        .collect();
    assert_eq!(sub.messages(3).await, expected);
    assert!(
        sub.exit_status().await.success(),
        "mosquitto_sub -C 3 exits 0"
    );
}

async fn pub_sends_each_qos(version: u8) {
    let broker = start_default().await;
    let base = topic("mpub");
    let mut sub = RawClient::connect(broker.addr, V5, &client_id("sub")).await;
    sub.subscribe(&format!("{base}/#"), 2).await;
    for q in 0..=2u8 {
        let t = format!("{base}/q{q}");
        let (qos, message) = (q.to_string(), format!("m{q}"));
        mosquitto_pub(&broker, version, &["-q", &qos, "-t", &t, "-m", &message]).await;
        let p = sub.recv_publish().await;
        assert_eq!(
            (p.topic, p.qos, p.payload, p.retain),
            (t, q, message.into_bytes(), false)
        );
    }
}

async fn retained_message_round_trip(version: u8) {
    let broker = start_default().await;
    let t = topic("mret");
    mosquitto_pub(&broker, version, &["-r", "-q", "1", "-t", &t, "-m", "kept"]).await;
    let mut sub = Sub::spawn(&broker, version, &["-q", "2", "-C", "1", "-t", &t]);
    assert_eq!(sub.messages(1).await, vec![format!("MSG {t} 1 1 kept")]);
    assert!(sub.exit_status().await.success());

    // An empty retained message deletes it: a new subscriber's first message is live.
    mosquitto_pub(&broker, version, &["-r", "-q", "1", "-t", &t, "-n"]).await;
    let mut sub = Sub::spawn(&broker, version, &["-d", "-q", "1", "-C", "1", "-t", &t]);
    sub.subscribed().await;
    let mut publisher = RawClient::connect(broker.addr, V311, &client_id("pub")).await;
    publisher.publish(PublishSpec::new(&t, 1, b"live")).await;
    assert_eq!(sub.messages(1).await, vec![format!("MSG {t} 1 0 live")]);
    assert!(sub.exit_status().await.success());
}

async fn will_published_when_client_killed(version: u8) {
    let broker = start_default().await;
    let will_topic = topic("mwill");
    let mut watcher = RawClient::connect(broker.addr, V5, &client_id("watcher")).await;
    watcher.subscribe(&will_topic, 2).await;
    let idle = topic("idle");
    let mut sub = Sub::spawn(
        &broker,
        version,
        &[
            "-d",
            "-t",
            &idle,
            "--will-topic",
            &will_topic,
            "--will-payload",
            "bye",
            "--will-qos",
            "1",
        ],
    );
    sub.subscribed().await;
    sub.kill();
    let p = watcher.recv_publish().await;
    assert_eq!(
        (p.topic, p.payload, p.qos, p.retain),
        (will_topic, b"bye".to_vec(), 1, false)
    );
}

async fn persistent_session_receives_offline_messages(version: u8) {
    let broker = start_default().await;
    let id = client_id("mp");
    let t = topic("mpersist");
    let session = ["-c", "-i", &id, "-q", "1", "-t", &t];

    let mut sub = Sub::spawn(
        &broker,
        version,
        &[&session[..], &["-d", "-C", "1"]].concat(),
    );
    sub.subscribed().await;
    let mut publisher = RawClient::connect(broker.addr, V311, &client_id("pub")).await;
    publisher.publish_simple(&t, 1, b"online").await;
    assert_eq!(sub.messages(1).await, vec![format!("MSG {t} 1 0 online")]);
    assert!(sub.exit_status().await.success());

    publisher.publish_simple(&t, 1, b"offline1").await;
    publisher.publish_simple(&t, 1, b"offline2").await;
    let mut sub = Sub::spawn(&broker, version, &[&session[..], &["-C", "2"]].concat());
    assert_eq!(
        sub.messages(2).await,
        vec![
            format!("MSG {t} 1 0 offline1"),
            format!("MSG {t} 1 0 offline2")
        ]
    );
    assert!(sub.exit_status().await.success());
}
