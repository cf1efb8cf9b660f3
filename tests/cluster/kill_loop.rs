//! kill -9 in a loop while messages flow: no acknowledged QoS 1/2 message lost, no
//! session lost. Three nodes (replication factor 2); persistent subscribers (MQTT 3.1.1
//! clean session 0, MQTT 5 with session expiry; raw clients from `common::acked`, as
//! rumqttc forgets its QoS 2 state when it reconnects) on one node, a QoS 1 (MQTT 3.1.1) and a
//! QoS 2 (MQTT 5) publisher on another, each completing one flow at a time and sending
//! again what was not acknowledged (DUP, same packet id) on the node it reconnects to.
//! Rounds kill the subscribers' node, the publishers' node and the Raft leader, each
//! restarted (and its backups resynced) before the next round; clients of a killed node
//! reconnect to a surviving one. A last round cuts the subscribers' node off
//! (partition) instead: its clients move to the majority, and after healing the
//! cut-off node no longer serves them.
//!
//! Asserted: no acknowledged message undelivered, no persistent session absent when its
//! client came back (every subscriber and publisher gets Session Present = 1 after each
//! failover), and no QoS 2 message delivered twice without DUP, on one connection or
//! across a failover or the partition. A publisher's QoS 2 PUBLISH in flight to a node
//! that dies reaches other nodes only once its packet id is on the node's backup, so
//! its resend elsewhere is recognised (ARCHITECTURE.md, "A QoS 2 message whose
//! publisher's node dies"). A message the subscribers' node completed with its client before
//! the publishing node had its acknowledgement is recognised by the next owner (the
//! backup remembers the ids of completed QoS 2 messages), and one the cut-off node could
//! not keep for a session that moved meanwhile is handed to the session's new node
//! rather than refused. Printed: the duplicates and the time from
//! a kill to the subscribers' sessions being served again (p50 and max). A publisher's
//! session came back fresh now and then before a restarted node judged its sessions by
//! the owners at its committed index rather than at its last snapshot (ARCHITECTURE.md,
//! "A node that comes back"; `restart.rs` reproduces it alone). A failed run keeps the
//! nodes' logs under `cluster-test-logs/` in the target directory.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::acked::{Outcome, RawClient};
use crate::common::{eventually, within, Cluster, WAIT};

/// Messages acknowledged between two steps of a round (flow before and after a kill).
const FLOW: usize = 20;

#[derive(Debug, Clone, Copy)]
enum Victim {
    Subscribers,
    Publishers,
    Leader,
}

const ROUNDS: [Victim; 6] = [
    Victim::Subscribers,
    Victim::Publishers,
    Victim::Leader,
    Victim::Subscribers,
    Victim::Publishers,
    Victim::Leader,
];

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap()
}

/// What the test and the publishers' tasks share.
struct Shared {
    /// Nodes running now, by id.
    live: Mutex<BTreeMap<u64, SocketAddr>>,
    /// The node publishers connect to while it runs.
    publishers_home: Mutex<u64>,
    /// Payloads acknowledged (PUBACK, or PUBREC) to the publishers.
    acked: Mutex<Vec<String>>,
    /// Subscribers that came back to a session that was not present.
    sessions_lost: AtomicUsize,
    /// Publishers that did.
    publisher_sessions_lost: AtomicUsize,
    stop: AtomicBool,
}

/// One flow in progress: what the publisher must do next for its current message.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Next {
    Publish { dup: bool },
    Release,
}

/// Publishes `"{name}-{n}"` to `kl/{name}` at `qos`, one flow at a time, until told to
/// stop; reconnects (to its home node, else any running one) when its connection fails
/// and completes the message in doubt there.
async fn publisher(shared: Arc<Shared>, name: &'static str, version: u8, qos: u8) {
    let topic = format!("kl/{name}");
    let mut connection: Option<RawClient> = None;
    let mut connected_before = false;
    let mut n = 0usize;
    let mut packet_id = 1u16;
    let mut next = Next::Publish { dup: false };
    loop {
        if shared.stop.load(Ordering::Relaxed) && next == (Next::Publish { dup: false }) {
            return;
        }
        let Some(client) = connection.as_mut() else {
            let home = *lock(&shared.publishers_home);
            let targets: Vec<SocketAddr> = {
                let live = lock(&shared.live);
                live.get(&home)
                    .into_iter()
                    .chain(live.values())
                    .copied()
                    .collect()
            };
            for addr in targets {
                if let Ok((client, present)) = RawClient::connect(addr, name, version).await {
                    if connected_before && !present {
                        eprintln!("{name}: session not present on {addr}");
                        shared
                            .publisher_sessions_lost
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    connected_before = true;
                    connection = Some(client);
                    break;
                }
            }
            if connection.is_none() {
                // No node takes it yet (an election under way): try again shortly.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        };
        let payload = format!("{name}-{n}");
        let result = match next {
            Next::Publish { dup } => client
                .publish(&topic, qos, packet_id, payload.as_bytes(), dup)
                .await
                .map(Some),
            Next::Release => client.release(packet_id).await.map(|()| None),
        };
        match result {
            Ok(Some(Outcome::Accepted)) => {
                lock(&shared.acked).push(payload);
                if qos == 2 {
                    next = Next::Release;
                    continue;
                }
            }
            // Not accepted: sent again as a new message.
            Ok(Some(Outcome::Refused(_))) => {
                packet_id = packet_id % 60_000 + 1;
                next = Next::Publish { dup: false };
                continue;
            }
            Ok(None) => {}
            Err(_) => {
                connection = None;
                if next != Next::Release {
                    next = Next::Publish { dup: true };
                }
                continue;
            }
        }
        n += 1;
        packet_id = packet_id % 60_000 + 1;
        next = Next::Publish { dup: false };
    }
}

/// A subscriber's deliveries: payload and DUP, in arrival order.
type Log = Arc<Mutex<Vec<Delivery>>>;

#[derive(Clone)]
struct Delivery {
    payload: String,
    dup: bool,
    at: Instant,
    /// Which of the client's connections it came on (0 the first): a subscriber
    /// connects again only when its node died or was cut off.
    connection: usize,
}

struct Client {
    id: &'static str,
    v5: bool,
    log: Log,
    /// The task reading the current connection.
    task: Option<tokio::task::JoinHandle<()>>,
    /// Connections made so far.
    connections: usize,
}

/// Reads deliveries into `log` until the connection ends.
fn listen(mut subscriber: RawClient, log: Log, connection: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(message) = subscriber.receive().await {
            lock(&log).push(Delivery {
                payload: String::from_utf8_lossy(&message.payload).to_string(),
                dup: message.dup,
                at: Instant::now(),
                connection,
            });
        }
    })
}

impl Client {
    fn version(&self) -> u8 {
        if self.v5 {
            5
        } else {
            4
        }
    }

    /// Connects to `addr` until a CONNACK accepts it; returns Session Present.
    async fn resume(&mut self, addr: SocketAddr) -> bool {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let (subscriber, present) = within("a subscriber's session served again", async {
            loop {
                if let Ok(connected) = RawClient::connect(addr, self.id, self.version()).await {
                    return connected;
                }
                // Refused while the cluster elects a leader: again shortly.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        self.task = Some(listen(subscriber, self.log.clone(), self.connections));
        self.connections += 1;
        present
    }
}

/// Payloads of `log` delivered more than once where a later copy came without DUP.
fn duplicates(log: &[Delivery], prefix: &str, kills: &[Instant]) -> Vec<String> {
    let mut first: BTreeMap<&str, (Instant, usize)> = BTreeMap::new();
    let mut twice = Vec::new();
    for delivery in log {
        if !delivery.payload.starts_with(prefix) {
            continue;
        }
        match first.get(delivery.payload.as_str()) {
            None => {
                first.insert(&delivery.payload, (delivery.at, delivery.connection));
            }
            Some((at, connection)) if !delivery.dup => {
                let on = if *connection < delivery.connection {
                    "a later connection"
                } else {
                    "the same connection"
                };
                let since: Vec<_> = kills
                    .iter()
                    .map(|kill| at.saturating_duration_since(*kill).as_millis())
                    .collect();
                eprintln!(
                    "{} twice (on {on}): again {:?} after the first, first copy after each kill (ms): {since:?}",
                    delivery.payload,
                    delivery.at.duration_since(*at)
                );
                twice.push(delivery.payload.clone());
            }
            Some(_) => {}
        }
    }
    twice
}

/// Waits until every node streams to its backup again: a restarted node is resynced
/// before the next kill, which is then again the loss of one node.
async fn every_backup_in_sync(cluster: &Cluster) {
    eventually("every backup in sync", || async {
        for id in 1..=3 {
            let text = cluster.metrics(id).await;
            let synced = crate::common::metric_value(&text, "fleetmq_cluster_backups_in_sync")?;
            (synced == 1.0).then_some(())?;
        }
        Some(())
    })
    .await;
}

async fn flow(shared: &Shared, more: usize) {
    let target = lock(&shared.acked).len() + more;
    eventually("acknowledged messages to flow", || async {
        (lock(&shared.acked).len() >= target).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_in_a_loop_loses_no_acknowledged_message_and_no_session() {
    let mut cluster = Cluster::configure(3, &[]).await;
    // Longer than a kill, the failover and the restart take here, so that a message
    // on its way to a killed node waits for it rather than fails its publisher (whose
    // QoS 2 resend would be a new message).
    cluster.configure_section("cluster", "forward_ack_timeout_ms = 30000");
    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster.wait_for_leader(&[1, 2, 3]).await;
    every_backup_in_sync(&cluster).await;

    let mut subscribers_node = 1u64;
    let mut clients = Vec::new();
    for (id, v5) in [("kl-s4", false), ("kl-s5", true)] {
        let version = if v5 { 5 } else { 4 };
        let (mut subscriber, present) = RawClient::connect(cluster.mqtt(1), id, version)
            .await
            .unwrap();
        assert!(!present);
        subscriber.subscribe("kl/#", 2).await.unwrap();
        let log: Log = Arc::default();
        clients.push(Client {
            id,
            v5,
            log: log.clone(),
            task: Some(listen(subscriber, log, 0)),
            connections: 1,
        });
    }
    // The subscriptions reach the publishers' node (routes go through consensus).
    let mut prober = crate::common::mqtt::Publisher::v4(cluster.mqtt(2), "kl-probe").await;
    within("the subscriptions to reach the publishers' node", async {
        loop {
            prober.publish("kl/probe", 0, false, b"probe").await;
            let routed = clients
                .iter()
                .all(|client| lock(&client.log).iter().any(|d| d.payload == "probe"));
            if routed {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    drop(prober);

    let shared = Arc::new(Shared {
        live: Mutex::new((1..=3).map(|id| (id, cluster.mqtt(id))).collect()),
        publishers_home: Mutex::new(2),
        acked: Mutex::default(),
        sessions_lost: AtomicUsize::new(0),
        publisher_sessions_lost: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    let publishers = [
        tokio::spawn(publisher(shared.clone(), "q1", 4, 1)),
        tokio::spawn(publisher(shared.clone(), "q2", 5, 2)),
    ];

    let mut served_again = Vec::new();
    let mut kills = Vec::new();
    for victim in ROUNDS {
        flow(&shared, FLOW).await;
        let publishers_node = *lock(&shared.publishers_home);
        let killed = match victim {
            Victim::Subscribers => subscribers_node,
            Victim::Publishers => publishers_node,
            Victim::Leader => cluster.wait_for_leader(&[1, 2, 3]).await,
        };
        let survivors: Vec<u64> = (1..=3).filter(|id| *id != killed).collect();
        // A node other than the subscribers' one, for the publishers to move to.
        let third = survivors
            .iter()
            .copied()
            .find(|id| *id != subscribers_node && *id != publishers_node)
            .unwrap_or(survivors[0]);
        lock(&shared.live).remove(&killed);
        if killed == publishers_node {
            *lock(&shared.publishers_home) = third;
        }
        kills.push(Instant::now());
        cluster.kill(killed).await;
        let at = Instant::now();
        let q2_acked = lock(&shared.acked)
            .iter()
            .filter(|payload| payload.starts_with("q2-"))
            .count();
        eprintln!("round {victim:?}: node {killed} killed after {q2_acked} QoS 2 messages");
        if killed == subscribers_node {
            let to = survivors
                .iter()
                .copied()
                .find(|id| *id != *lock(&shared.publishers_home))
                .unwrap_or(third);
            subscribers_node = to;
            for client in &mut clients {
                if !client.resume(cluster.mqtt(to)).await {
                    eprintln!("{}: session not present on node {to}", client.id);
                    shared.sessions_lost.fetch_add(1, Ordering::Relaxed);
                }
            }
            served_again.push(at.elapsed());
        }
        cluster.wait_for_leader(&survivors).await;
        cluster.spawn(killed);
        cluster.wait_for_leader(&[1, 2, 3]).await;
        lock(&shared.live).insert(killed, cluster.mqtt(killed));
        flow(&shared, FLOW).await;
        every_backup_in_sync(&cluster).await;
    }

    // A partition: the subscribers' node is cut off; its clients move to the majority.
    let cut = subscribers_node;
    let majority: Vec<u64> = (1..=3).filter(|id| *id != cut).collect();
    flow(&shared, FLOW).await;
    cluster.isolate(cut, true);
    cluster.wait_for_leader(&majority).await;
    let to = majority
        .iter()
        .copied()
        .find(|id| *id != *lock(&shared.publishers_home))
        .unwrap_or(majority[0]);
    // The old connections stay up on the cut-off node (it still serves its connected
    // clients), each reading into the log it had; the new ones get a fresh log.
    let mut cut_off = Vec::new();
    for client in &mut clients {
        cut_off.push((client.task.take(), client.log.clone()));
        client.log = Arc::default();
        let at = Instant::now();
        if !client.resume(cluster.mqtt(to)).await {
            eprintln!(
                "{}: session not present on node {to} (partition)",
                client.id
            );
            shared.sessions_lost.fetch_add(1, Ordering::Relaxed);
        }
        served_again.push(at.elapsed());
    }
    cluster.isolate(cut, false);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    every_backup_in_sync(&cluster).await;
    // Healed, the cut-off node applies the claims: it serves those sessions no more.
    for (old, _) in &mut cut_off {
        if let Some(old) = old.take() {
            within("the cut-off node to drop the moved sessions", old)
                .await
                .unwrap();
        }
    }
    flow(&shared, FLOW).await;

    shared.stop.store(true, Ordering::Relaxed);
    for task in publishers {
        within("the publishers to stop", task).await.unwrap();
    }
    let acked: BTreeSet<String> = lock(&shared.acked).iter().cloned().collect();
    let mut failures = Vec::new();
    for (client, (_, before)) in clients.iter().zip(&cut_off) {
        let before = lock(before).clone();
        // Delivered to this client at some point: before the partition (the log taken
        // then) or after.
        let complete = tokio::time::timeout(WAIT, async {
            loop {
                let received: BTreeSet<String> = lock(&client.log)
                    .iter()
                    .chain(&before)
                    .map(|delivery| delivery.payload.clone())
                    .collect();
                if acked.is_subset(&received) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let received: BTreeSet<String> = lock(&client.log)
            .iter()
            .chain(&before)
            .map(|delivery| delivery.payload.clone())
            .collect();
        let lost: Vec<_> = acked.difference(&received).collect();
        // Twice across the kills, and twice after the partition; a message the cut-off
        // node delivered to the old connection before the cut may come again on the
        // majority (counted apart).
        let mut twice = duplicates(&before, "q2-", &kills);
        twice.extend(duplicates(&lock(&client.log), "q2-", &kills));
        let after: BTreeSet<String> = lock(&client.log)
            .iter()
            .map(|delivery| delivery.payload.clone())
            .collect();
        let across = before
            .iter()
            .filter(|delivery| {
                delivery.payload.starts_with("q2-") && after.contains(&delivery.payload)
            })
            .count();
        eprintln!(
            "{}: {} acknowledged, {} lost, {} QoS 2 delivered twice without DUP ({:?}), {} QoS 2 delivered both before and after the partition",
            client.id,
            acked.len(),
            lost.len(),
            twice.len(),
            twice,
            across
        );
        if complete.is_err() || !lost.is_empty() {
            failures.push(format!(
                "{}: acknowledged but never delivered: {lost:?}",
                client.id
            ));
        }
        if !twice.is_empty() {
            failures.push(format!("{}: QoS 2 delivered twice: {twice:?}", client.id));
        }
    }
    let sessions_lost = shared.sessions_lost.load(Ordering::Relaxed);
    let publisher_sessions_lost = shared.publisher_sessions_lost.load(Ordering::Relaxed);
    eprintln!(
        "subscriber sessions lost: {sessions_lost}; publisher sessions not present on reconnection: {publisher_sessions_lost}"
    );
    if sessions_lost > 0 {
        failures.push(format!("{sessions_lost} sessions lost"));
    }
    if publisher_sessions_lost > 0 {
        failures.push(format!(
            "{publisher_sessions_lost} publisher sessions not present on reconnection"
        ));
    }
    if !failures.is_empty() {
        // The nodes' logs of a failed run are what tells a lost message's story: kept
        // beside the test binary's build (`cluster-test-logs/` in the target directory).
        let exe = std::env::current_exe().unwrap();
        let dir = exe.ancestors().nth(3).unwrap().join("cluster-test-logs");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("kill_loop-{}.log", std::process::id()));
        match std::fs::write(&path, cluster.logs()) {
            Ok(()) => eprintln!("nodes' logs: {}", path.display()),
            Err(error) => eprintln!("nodes' logs not written to {}: {error}", path.display()),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    served_again.sort();
    eprintln!(
        "kill (or cut) to the subscribers' sessions served again: p50 {:?}, max {:?} ({} samples)",
        served_again[served_again.len() / 2],
        served_again[served_again.len() - 1],
        served_again.len()
    );
}
