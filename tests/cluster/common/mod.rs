//! Three (or more) real `fleetmq` processes on 127.0.0.1 forming a cluster, each with
//! its own ports and data directory, and a TCP proxy on every node link so a test can
//! cut the links (partitions) and heal them.
//!
//! The node with the lower id of a pair dials the other, so node `i`'s `peers` entry for
//! a higher node `j` is the proxy of the pair `(i, j)`; cutting the proxies of every pair
//! with node `k` isolates node `k`.
//!
//! Every wait is bounded by `WAIT` and waits for a condition (the administration
//! endpoint's status, a port answering, a message arriving), never for time alone.

#![allow(dead_code)]

pub mod acked;
pub mod mqtt;
pub mod proxy;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fleetmq::cluster::admin::ClusterStatus;
use tokio::process::{Child, Command};

use proxy::Proxy;

pub const WAIT: Duration = Duration::from_secs(20);
/// How long a check waits for a retained message after its SUBACK.
pub const RETAINED_WINDOW: Duration = Duration::from_secs(1);
/// Between two polls of a condition.
const POLL: Duration = Duration::from_millis(50);

pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Polls `check` until it returns `Some`, at most `WAIT`.
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    within(what, async {
        loop {
            if let Some(found) = check().await {
                return found;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await
}

/// A port free now, below Linux's ephemeral range (32768 and up): a port the system
/// picked for `:0` could meanwhile become some client connection's local port, and the
/// node configured with it would fail to bind.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = 20_000 + (random % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub struct Node {
    pub id: u64,
    pub mqtt: SocketAddr,
    pub link: SocketAddr,
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    starts: usize,
}

/// One cluster at a time: three brokers per test, all tests at once, would starve the
/// nodes' heartbeats on a small machine and turn timing into elections.
static ONE_AT_A_TIME: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

pub struct Cluster {
    _turn: tokio::sync::SemaphorePermit<'static>,
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<u64, Node>,
    /// The proxy of each pair (lower id, higher id).
    pub proxies: BTreeMap<(u64, u64), Proxy>,
}

impl Cluster {
    /// Starts `size` nodes and waits until all of them follow one leader.
    pub async fn start(size: u64) -> Cluster {
        Cluster::start_with(size, |_| {}).await
    }

    /// `start`, with `configure` changing the nodes' configuration before they start.
    pub async fn start_with(size: u64, configure: impl FnOnce(&Cluster)) -> Cluster {
        let mut cluster = Cluster::configure(size, &[]).await;
        configure(&cluster);
        for id in 1..=size {
            cluster.spawn(id);
        }
        cluster
            .wait_for_leader(&(1..=size).collect::<Vec<_>>())
            .await;
        cluster
    }

    /// Writes the configuration of nodes `1..=size` and of `joiners` (started later with
    /// `join = true`), with a proxy on each link between the initial members.
    pub async fn configure(size: u64, joiners: &[u64]) -> Cluster {
        Cluster::configure_with(size, joiners, false).await
    }

    /// `configure`, with mutual TLS on the node links when `tls` (certificates from
    /// `fleetmq::certs`, for 127.0.0.1).
    pub async fn configure_with(size: u64, joiners: &[u64], tls: bool) -> Cluster {
        let turn = ONE_AT_A_TIME.acquire().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        if tls {
            fleetmq::certs::generate(&certs, &["127.0.0.1".to_string()], &[], 30).unwrap();
        }
        let mut nodes = BTreeMap::new();
        let mut taken = std::collections::HashSet::new();
        for id in (1..=size).chain(joiners.iter().copied()) {
            let mut port = |_| loop {
                let port = free_port();
                if taken.insert(port) {
                    return SocketAddr::from(([127, 0, 0, 1], port));
                }
            };
            nodes.insert(
                id,
                Node {
                    id,
                    mqtt: port(0),
                    link: port(1),
                    admin: port(2),
                    metrics: port(3),
                    config: dir.path().join(format!("node{id}.toml")),
                    log: dir.path().join(format!("node{id}.log")),
                    child: None,
                    starts: 0,
                },
            );
        }
        let mut proxies = BTreeMap::new();
        for i in 1..=size {
            for j in (i + 1)..=size {
                proxies.insert((i, j), Proxy::start(nodes[&j].link).await);
            }
        }
        for node in nodes.values() {
            let initial = node.id <= size;
            let peers: Vec<String> = (1..=size)
                .chain((!initial).then_some(node.id))
                .map(|peer| {
                    let addr = match proxies.get(&(node.id, peer)) {
                        Some(proxy) => proxy.addr(),
                        None => nodes[&peer].link,
                    };
                    format!("\"{peer}@{addr}\"")
                })
                .collect();
            let config = format!(
                "[[listeners]]\ntype = \"tcp\"\nbind = \"{mqtt}\"\nallow_anonymous = true\n\n\
                 [limits]\nmax_publish_rate = 1000000\n\n\
                 [storage]\ndata_dir = {data:?}\n\n\
                 [metrics]\nbind = \"{metrics}\"\n\n[sys]\ninterval_secs = 0\n\n\
                 [shutdown]\ngrace_secs = 1\n\n\
                 [log]\nlevel = \"info,openraft=warn\"\n\n\
                 [admin]\nbind = \"{admin}\"\n\n\
                 [cluster]\nnode_id = {id}\nbind = \"{link}\"\n\
                 heartbeat_ms = 100\nsnapshot_entries = 50\njoin = {join}\npeers = [{peers}]\n",
                mqtt = node.mqtt,
                data = dir
                    .path()
                    .join(format!("data{}", node.id))
                    .display()
                    .to_string(),
                metrics = node.metrics,
                id = node.id,
                link = node.link,
                admin = node.admin,
                join = !initial,
                peers = peers.join(", "),
            );
            let config = if tls {
                format!(
                    "{config}\n[cluster.tls]\ncert = {cert:?}\nkey = {key:?}\nca = {ca:?}\nclient_auth = \"require\"\n",
                    cert = certs.join("server.pem").display().to_string(),
                    key = certs.join("server.key").display().to_string(),
                    ca = certs.join("ca.pem").display().to_string(),
                )
            } else {
                config
            };
            std::fs::write(&node.config, config).unwrap();
        }
        Cluster {
            _turn: turn,
            dir,
            nodes,
            proxies,
        }
    }

    /// Starts node `id`'s process (again) and waits until its MQTT port answers.
    pub fn spawn(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        node.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_fleetmq"))
            .arg("-c")
            .arg(&node.config)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    /// kill -9 of node `id`.
    pub async fn kill(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        if let Some(mut child) = node.child.take() {
            child.start_kill().unwrap();
            within("the killed node to exit", child.wait())
                .await
                .unwrap();
        }
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[&id]
    }

    pub fn mqtt(&self, id: u64) -> SocketAddr {
        self.nodes[&id].mqtt
    }

    /// The status node `id` reports, `None` while it does not answer.
    pub async fn status(&self, id: u64) -> Option<ClusterStatus> {
        let url = format!("http://{}", self.nodes[&id].admin);
        let endpoint = fleetmq::ctl::Endpoint::from_url(&url, None, None).ok()?;
        let answer = fleetmq::ctl::request(&endpoint, "GET", "/api/v1/cluster", None)
            .await
            .ok()?;
        (answer.status == 200)
            .then(|| serde_json::from_slice(&answer.body).ok())
            .flatten()
    }

    /// Waits until every node of `ids` answers, knows the same leader (one of `ids`) and
    /// has applied the leader's log; returns the leader.
    pub async fn wait_for_leader(&self, ids: &[u64]) -> u64 {
        eventually("one leader followed by every running node", || async {
            let mut leader = None;
            let mut statuses = Vec::new();
            for id in ids {
                let status = self.status(*id).await?;
                let this = status.leader?;
                if leader.is_some_and(|l| l != this) || !ids.contains(&this) {
                    return None;
                }
                leader = Some(this);
                statuses.push(status);
            }
            let leader = leader?;
            let last = statuses
                .iter()
                .find(|s| s.node_id == leader)?
                .last_log_index;
            statuses
                .iter()
                .all(|s| s.applied_index >= last)
                .then_some(leader)
        })
        .await
    }

    /// Waits until node `id` knows no leader (cut off from the majority).
    pub async fn wait_for_no_leader(&self, id: u64) {
        eventually("the node to lose its leader", || async {
            let status = self.status(id).await?;
            status.leader.is_none().then_some(())
        })
        .await
    }

    /// Cuts (or heals) every link between node `id` and the others. All of them stop
    /// passing bytes before any is closed: closed one by one, the node could still
    /// reach the leader through a link not cut yet in the instant it saw another one
    /// fail (and, say, commit its backup out of sync), which a partition does not allow.
    pub fn isolate(&self, id: u64, cut: bool) {
        let links: Vec<&Proxy> = self
            .proxies
            .iter()
            .filter(|((i, j), _)| *i == id || *j == id)
            .map(|(_, proxy)| proxy)
            .collect();
        if cut {
            for proxy in &links {
                proxy.set_paused(true);
            }
        }
        for proxy in links {
            proxy.set_cut(cut);
        }
    }

    /// Black-holes (or reopens) every link between node `id` and the others: the
    /// connections stay open and carry nothing (see `proxy`).
    pub fn black_hole(&self, id: u64, on: bool) {
        for ((i, j), proxy) in &self.proxies {
            if *i == id || *j == id {
                proxy.set_black_hole(on);
            }
        }
    }

    /// Cuts (or heals) the link between nodes `a` and `b` alone.
    pub fn cut_link(&self, a: u64, b: u64, cut: bool) {
        self.proxies[&(a.min(b), a.max(b))].set_cut(cut);
    }

    /// Pauses (or resumes) the link between nodes `a` and `b`: nothing passes, nothing
    /// is lost (see `proxy`).
    pub fn pause_link(&self, a: u64, b: u64, paused: bool) {
        self.proxies[&(a.min(b), a.max(b))].set_paused(paused);
    }

    /// Adds `lines` to section `[section]` of every node's configuration (before
    /// the nodes start).
    pub fn configure_section(&self, section: &str, lines: &str) {
        for node in self.nodes.values() {
            let config = std::fs::read_to_string(&node.config).unwrap();
            let header = format!("[{section}]\n");
            assert!(config.contains(&header), "no [{section}] in {config}");
            let config = config.replacen(&header, &format!("{header}{lines}\n"), 1);
            std::fs::write(&node.config, config).unwrap();
        }
    }

    /// Sets `[cluster] heartbeat_ms` of every node (before the nodes start); the
    /// replication acknowledgement timeout is ten heartbeats.
    pub fn set_heartbeat_ms(&self, heartbeat_ms: u64) {
        for node in self.nodes.values() {
            let config = std::fs::read_to_string(&node.config).unwrap();
            assert!(config.contains("heartbeat_ms = 100\n"));
            let config = config.replacen(
                "heartbeat_ms = 100\n",
                &format!("heartbeat_ms = {heartbeat_ms}\n"),
                1,
            );
            std::fs::write(&node.config, config).unwrap();
        }
    }

    /// SIGHUP to node `id` (reloads its configuration and certificates).
    pub fn sighup(&self, id: u64) {
        let pid = self.nodes[&id]
            .child
            .as_ref()
            .and_then(|child| child.id())
            .expect("a running node");
        // SAFETY: kill(2) with a pid this test spawned and still holds.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    }

    /// `GET /health` of node `id`: the status code.
    pub async fn health(&self, id: u64) -> Option<u16> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.nodes[&id].metrics)
            .await
            .ok()?;
        stream
            .write_all(b"GET /health HTTP/1.0\r\n\r\n")
            .await
            .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.ok()?;
        answer.split(' ').nth(1)?.parse().ok()
    }

    /// `GET /metrics` of node `id`.
    pub async fn metrics(&self, id: u64) -> String {
        self.try_metrics(id)
            .await
            .unwrap_or_else(|| panic!("node {id} did not answer GET /metrics"))
    }

    /// `GET /metrics` of node `id`, `None` while it does not answer (killed, starting).
    pub async fn try_metrics(&self, id: u64) -> Option<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.nodes[&id].metrics)
            .await
            .ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            .await
            .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.ok()?;
        Some(answer)
    }

    /// The standard error of every node, to print when a test fails.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for node in self.nodes.values() {
            out.push_str(&format!(
                "----- node {} -----\n{}\n",
                node.id,
                std::fs::read_to_string(&node.log).unwrap_or_default()
            ));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// The value of `name` (with its labels, e.g. `x_total{peer="2"}`) in a Prometheus text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until the subscription of `subscriber` (to a filter matching `probe_topic`)
/// reaches node `from`: publishes a probe there (QoS 0) until the subscriber gets one.
/// Routes travel through consensus, so a SUBACK on one node precedes the route on the
/// others by a commit. The probes are taken out of the subscriber's stream.
pub async fn wait_routed(from: SocketAddr, probe_topic: &str, subscriber: &mut mqtt::Subscriber) {
    let mut publisher = mqtt::Publisher::v4(from, &format!("probe-{}", free_port())).await;
    within("the subscription to reach the publishing node", async {
        loop {
            publisher.publish(probe_topic, 0, false, b"probe").await;
            if subscriber.probe(probe_topic).await {
                break;
            }
        }
    })
    .await;
    subscriber.drain_probes(probe_topic);
}
