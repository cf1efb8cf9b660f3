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
            "[[listeners]]\ntype = \"tcp\"\nbind = \"127.0.0.1:{port}\"\n\n\
             [limits]\nmax_publish_rate = 1000000\n\n\
             [storage]\ndata_dir = {data_dir:?}\n\n\
             [metrics]\nenabled = false\n\n[sys]\ninterval_secs = 0\n\n\
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
