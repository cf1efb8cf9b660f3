//! The defaults serve what Mosquitto serves at its defaults: a fast publisher, a long
//! `mosquitto_pub -l` feed, a burst of connections, long topics and filters. Every test
//! runs the broker at its default limits (and, with `FLEETMQ_TEST_REFERENCE`, runs the
//! same steps against Mosquitto).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::both_versions;
use crate::common::raw::RawClient;
use crate::common::wire::{ConnectSpec, PublishSpec, V311, V5};
use crate::common::{client_id, raise_open_files_limit, start_default, topic};

/// Generous bound for the bulk tests below; only turns a hang into a failure.
const BULK_GUARD: Duration = Duration::from_secs(60);

both_versions!(a_long_valid_filter_is_granted_and_matches);

/// Receives QoS 0/1 messages until one carries `end`; returns how many came before it.
async fn count_until(subscriber: &mut RawClient, end: &[u8]) -> usize {
    let mut count = 0;
    loop {
        let publish = subscriber.recv_publish().await;
        if publish.payload == end {
            return count;
        }
        count += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_at_50000_messages_per_second_is_never_disconnected() {
    const COUNT: usize = 50_000;
    const PER_TICK: usize = 500;
    let broker = start_default().await;
    let t = topic("fast");
    let mut subscriber = RawClient::connect(broker.addr, V5, &client_id("fast-sub")).await;
    subscriber.subscribe(&t, 0).await;
    let receiving = tokio::spawn(async move { count_until(&mut subscriber, b"end").await });

    let mut publisher = RawClient::connect(broker.addr, V5, &client_id("fast-pub")).await;
    let mut batch = Vec::new();
    for n in 0..PER_TICK {
        batch.extend(PublishSpec::new(&t, 0, format!("m{n}").as_bytes()).encode(V5));
    }
    // 500 messages every 10 ms: 50,000 per second, for one second.
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    for _ in 0..COUNT / PER_TICK {
        ticks.tick().await;
        publisher.send(&batch).await;
    }
    // A QoS 1 message and a PINGRESP after all of it: the publisher was never cut off.
    publisher.publish_simple(&t, 1, b"end").await;
    publisher.ping().await;
    let received = tokio::time::timeout(BULK_GUARD, receiving)
        .await
        .expect("the subscriber got the last message")
        .expect("subscriber task");
    assert_eq!(received, COUNT, "every message reached the subscriber");
    if let Some(stats) = broker.stats() {
        assert_eq!(stats.protocol_violations, 0);
        assert_eq!(stats.dropped_total(), 0, "{stats:?}");
    }
    publisher.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_fed_20000_lines_delivers_them_all() {
    const LINES: usize = 20_000;
    let broker = start_default().await;
    let t = topic("lines");
    let mut subscriber = RawClient::connect(broker.addr, V311, &client_id("lines-sub")).await;
    subscriber.subscribe(&t, 0).await;
    let receiving = tokio::spawn(async move {
        let mut payloads = Vec::with_capacity(LINES);
        while payloads.len() < LINES {
            payloads.push(subscriber.recv_publish().await.payload);
        }
        (subscriber, payloads)
    });

    let mut child = Command::new("/usr/bin/mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-i", &client_id("lines-pub"), "-t", &t, "-q", "1", "-l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mosquitto_pub");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let feed = std::thread::spawn(move || {
        let text: String = (0..LINES).map(|n| format!("line {n}\n")).collect();
        stdin
            .write_all(text.as_bytes())
            .expect("feed mosquitto_pub");
        // Dropping stdin ends the input: mosquitto_pub finishes and disconnects.
    });
    let status = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("wait task")
        .expect("mosquitto_pub ran");
    feed.join().expect("feeder thread");
    assert!(
        status.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let (mut subscriber, payloads) = tokio::time::timeout(BULK_GUARD, receiving)
        .await
        .expect("all lines delivered")
        .expect("subscriber task");
    let expected: Vec<Vec<u8>> = (0..LINES)
        .map(|n| format!("line {n}").into_bytes())
        .collect();
    assert!(payloads == expected, "lines delivered in order, none lost");
    subscriber.ping().await;
    if let Some(stats) = broker.stats() {
        assert_eq!(stats.protocol_violations, 0);
    }
}

/// Opens one MQTT 3.1.1 connection and returns the CONNACK return code with the
/// socket, kept open by the caller.
async fn open_one(addr: std::net::SocketAddr, id: String) -> std::io::Result<(u8, TcpStream)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(&ConnectSpec::new(V311, &id).encode())
        .await?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await?;
    assert_eq!(connack[0], 0x20, "CONNACK expected");
    Ok((connack[3], stream))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_connections_at_once_are_all_accepted() {
    const CONNECTIONS: usize = 5_000;
    // Both ends of every connection live in this process.
    raise_open_files_limit(2 * CONNECTIONS as u64 + 1_000);
    let broker = start_default().await;
    let addr = broker.addr;
    let mut opening = tokio::task::JoinSet::new();
    for n in 0..CONNECTIONS {
        let id = client_id(&format!("burst{n}"));
        opening.spawn(async move { tokio::time::timeout(BULK_GUARD, open_one(addr, id)).await });
    }
    let mut open = Vec::with_capacity(CONNECTIONS);
    while let Some(result) = opening.join_next().await {
        let (code, stream) = result
            .expect("connection task")
            .expect("CONNACK within the guard")
            .expect("connection stays open until CONNACK");
        assert_eq!(code, 0, "connection refused");
        open.push(stream);
    }
    assert_eq!(open.len(), CONNECTIONS);
    if let Some(stats) = broker.stats() {
        assert_eq!(stats.refused_total(), 0, "{stats:?}");
    }
    drop(open);
}

/// A burst of handshakes larger than the 1,024 that `TcpListener::bind` asks for
/// waits in the kernel's queue while nothing accepts, instead of being dropped (the
/// clients would wait out TCP's retransmission backoff: a 5,000-client burst on one
/// listener took over a minute for some of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_handshakes_waits_in_the_listen_queue() {
    const BURST: usize = 2_000;
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        somaxconn >= BURST,
        "net.core.somaxconn is {somaxconn}: the kernel caps every listen queue there \
         (4096 by default since Linux 5.4)"
    );
    raise_open_files_limit(2 * BURST as u64 + 256);
    let listener =
        fleetmq::listener::listen("127.0.0.1:0".parse().expect("an address")).expect("listening");
    let addr = listener.local_addr().expect("its address");
    let mut clients = Vec::with_capacity(BURST);
    for n in 0..BURST {
        let connecting = TcpStream::connect(addr);
        let client = tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .unwrap_or_else(|_| panic!("handshake {n} not completed: the queue is full"))
            .expect("connected");
        clients.push(client);
    }
    for n in 0..BURST {
        let (_accepted, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .unwrap_or_else(|_| panic!("connection {n} was not queued"))
            .expect("accepted");
    }
}

/// 101 levels, about 59,000 bytes, with `+` inside and `#` at the end: far past the
/// old limits (32 levels, 1,024 bytes), inside Mosquitto's.
async fn a_long_valid_filter_is_granted_and_matches(version: u8) {
    let broker = start_default().await;
    let root = topic("long");
    let level = "l".repeat(590);
    let mut filter_levels: Vec<String> = (0..100).map(|n| format!("{level}{n:03}")).collect();
    let mut topic_levels = filter_levels.clone();
    filter_levels[50] = "+".to_string();
    filter_levels.push("#".to_string());
    topic_levels.push("tail".to_string());
    let filter = format!("{root}/{}", filter_levels.join("/"));
    let name = format!("{root}/{}", topic_levels.join("/"));
    assert!(filter.len() > 55_000 && name.len() < 65_535);

    let mut subscriber = RawClient::connect(broker.addr, version, &client_id("long-sub")).await;
    subscriber.subscribe(&filter, 1).await;
    let mut publisher = RawClient::connect(broker.addr, version, &client_id("long-pub")).await;
    publisher.publish_simple(&name, 1, b"deep").await;
    let received = subscriber.recv_publish().await;
    assert_eq!(
        (received.topic.as_str(), received.payload.as_slice()),
        (name.as_str(), &b"deep"[..])
    );
    subscriber.disconnect().await;
    publisher.disconnect().await;
}

/// 20 MiB in one PUBLISH: refused at the old 1 MiB packet limit, served by Mosquitto
/// at its defaults, and larger than a session's 16 MiB queue byte limit, which an empty
/// queue lets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mib_message_is_delivered() {
    let broker = start_default().await;
    let t = topic("large");
    let mut subscriber = RawClient::connect(broker.addr, V5, &client_id("large-sub")).await;
    subscriber.subscribe(&t, 1).await;
    let mut publisher = RawClient::connect(broker.addr, V311, &client_id("large-pub")).await;
    let payload: Vec<u8> = (0..20 * 1024 * 1024).map(|n| (n % 251) as u8).collect();
    publisher.publish_simple(&t, 1, &payload).await;
    let received = subscriber.recv_publish().await;
    assert_eq!(received.topic, t);
    assert!(received.payload == payload, "the payload arrives intact");
    publisher.disconnect().await;
    subscriber.disconnect().await;
}
