//! The local broker as the real binary with a data directory, killed with SIGKILL
//! while its bridge's link is down: what it acknowledged reaches the remote after the
//! restart.

use std::net::SocketAddr;
use std::path::Path;

use super::support::*;

/// The local broker's configuration: a fixed port (the devices reconnect to it after the
/// restart) and a bridge through `proxy` to the remote.
fn write_config(dir: &Path, port: u16, remote: SocketAddr) -> std::path::PathBuf {
    let path = dir.join("fleetmq.toml");
    let data_dir = dir.join("data");
    std::fs::write(
        &path,
        format!(
            "[[listeners]]\ntype = \"tcp\"\nbind = \"127.0.0.1:{port}\"\nallow_anonymous = true\n\n\
             [limits]\nmax_publish_rate = 1000000\n\n\
             [storage]\ndata_dir = {data_dir:?}\n\n\
             [metrics]\nenabled = false\n\n[admin]\nenabled = false\n\n[sys]\ninterval_secs = 0\n\n\
             [[bridges]]\nname = \"cloud\"\naddresses = [\"{remote}\"]\nprotocol = \"mqttv5\"\n\
             client_id = \"site-1\"\nkeep_alive_secs = 2\nreconnect_min_ms = 50\nreconnect_max_ms = 200\n\n\
             [[bridges.topics]]\nfilter = \"telemetry/#\"\ndirection = \"out\"\nqos = 2\nremote_prefix = \"site/\"\n",
            data_dir = data_dir.display().to_string(),
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_local_broker_during_an_outage_loses_nothing_acknowledged() {
    let remote = Fleetmq::start(|_| {}).await;
    let proxy = Proxy::start(remote.addr).await;
    let (cloud, cloud_task) = subscribe(remote.addr, "cloud-app", "site/#", 2, true).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let local_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let config = write_config(dir.path(), port, proxy.addr);
    let mut local = start_binary(&config, port, &dir.path().join("first.log")).await;

    publish_acknowledged(local_addr, "device-q1", "telemetry/q1", 1, 0..100).await;
    cloud.wait_distinct("site/telemetry/q1", 100).await;

    // The uplink goes down; devices keep publishing and are acknowledged; the broker
    // is killed.
    proxy.set(Mode::Cut);
    let q1 = publish_acknowledged(local_addr, "device-q1", "telemetry/q1", 1, 100..400);
    let q2 = publish_acknowledged(local_addr, "device-q2", "telemetry/q2", 2, 0..300);
    tokio::join!(q1, q2);
    local.start_kill().unwrap();
    let status = within("the broker to die", local.wait()).await.unwrap();
    assert!(!status.success());

    // Restarted, still without the uplink: more messages; then the uplink returns.
    let mut local = start_binary(&config, port, &dir.path().join("second.log")).await;
    publish_acknowledged(local_addr, "device-q2", "telemetry/q2", 2, 300..400).await;
    proxy.set(Mode::Forward);
    cloud.wait_distinct("site/telemetry/q1", 400).await;
    cloud.wait_distinct("site/telemetry/q2", 400).await;
    assert_complete_in_order(&cloud, "site/telemetry/q1", 400, false);
    assert_complete_in_order(&cloud, "site/telemetry/q2", 400, true);

    local.start_kill().unwrap();
    let _ = local.wait().await;
    cloud_task.abort();
    remote.stop().await;
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_outage_grows_memory_only_up_to_the_outbox_bounds() {
    // The remote never answers; the outbox holds at most 5,000 messages. Once it is
    // full, another 20,000 messages of 2 KiB (40 MiB) published locally must not grow
    // the broker (the memory store, so that the database's own caches do not blur it).
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let nowhere = free_port();
    let config = dir.path().join("fleetmq.toml");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\ntype = \"tcp\"\nbind = \"127.0.0.1:{port}\"\nallow_anonymous = true\n\n\
             [limits]\nmax_publish_rate = 1000000\n\n\
             [storage]\npersistence = false\n\n\
             [metrics]\nenabled = false\n\n[admin]\nenabled = false\n\n[sys]\ninterval_secs = 0\n\n\
             [[bridges]]\nname = \"cloud\"\naddresses = [\"127.0.0.1:{nowhere}\"]\n\
             reconnect_min_ms = 50\nreconnect_max_ms = 200\n\n\
             [bridges.outbox]\nmax_messages = 5000\n\n\
             [[bridges.topics]]\nfilter = \"telemetry/#\"\ndirection = \"out\"\nqos = 1\n"
        ),
    )
    .unwrap();
    let mut local = start_binary(&config, port, &dir.path().join("local.log")).await;
    let pid = local.id().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let payload = "x".repeat(2048);
    publish_sized(addr, "device", &payload, 0..5_000).await;
    let full = rss_kib(pid);
    let t = std::time::Instant::now();
    publish_sized(addr, "device", &payload, 5_000..25_000).await;
    eprintln!("phase 2 took {:?}", t.elapsed());
    eprintln!(
        "{}",
        std::fs::read_to_string(dir.path().join("local.log")).unwrap()
    );
    let after = rss_kib(pid);
    assert!(
        after < full + 12 * 1024,
        "the broker grew from {full} KiB to {after} KiB while its outbox was full"
    );
    local.start_kill().unwrap();
    let _ = local.wait().await;
}

/// Publishes `numbers.len()` QoS 1 messages with `payload` and waits for every PUBACK.
async fn publish_sized(
    addr: SocketAddr,
    client_id: &str,
    payload: &str,
    numbers: std::ops::Range<usize>,
) {
    let mut options = rumqttc::MqttOptions::new(client_id, "127.0.0.1", addr.port());
    options.set_inflight(100);
    options.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 100);
    let count = numbers.len();
    let body = payload.to_string();
    let publisher = tokio::spawn(async move {
        for n in numbers {
            client
                .publish(
                    format!("telemetry/{}", n % 10),
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    body.clone(),
                )
                .await
                .unwrap();
        }
        client
    });
    let mut acknowledged = 0;
    within("every publish to be acknowledged", async {
        while acknowledged < count {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acknowledged += 1,
                Ok(_) => {}
                Err(error) => panic!("publisher connection failed: {error}"),
            }
        }
    })
    .await;
    let client = publisher.await.unwrap();
    let _ = client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_applies_new_bridge_settings_and_keeps_the_outbox() {
    let remote = Fleetmq::start(|_| {}).await;
    let proxy = Proxy::start(remote.addr).await;
    proxy.set(Mode::Cut);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let local_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let config = write_config(dir.path(), port, proxy.addr);
    let mut local = start_binary(&config, port, &dir.path().join("local.log")).await;
    // Accepted while the link is down: in the outbox.
    publish_acknowledged(local_addr, "device", "telemetry/a", 1, 0..20).await;

    // New prefix on the remote side, applied by SIGHUP.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("remote_prefix = \"site/\"", "remote_prefix = \"site-b/\""),
    )
    .unwrap();
    let pid = local.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let log = dir.path().join("local.log");
    within("the reload to be logged", async {
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("bridge settings changed")
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;

    let (cloud, cloud_task) = subscribe(remote.addr, "cloud-app", "#", 1, true).await;
    proxy.set(Mode::Forward);
    cloud.wait_distinct("site-b/telemetry/a", 20).await;
    assert_complete_in_order(&cloud, "site-b/telemetry/a", 20, false);
    assert_eq!(cloud.count("site/telemetry/a"), 0);
    cloud_task.abort();
    local.start_kill().unwrap();
    let _ = local.wait().await;
    remote.stop().await;
}
