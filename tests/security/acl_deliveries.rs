//! Read access checked for every delivered message, as Mosquitto does: the same password
//! and ACL files, the same wildcard subscriptions (`#`, `+/+`), the same deliveries.
//!
//! `FLEETMQ_TEST_REFERENCE=/usr/sbin/mosquitto` runs the comparison against Mosquitto
//! with the same files, which is how the expectations below were checked. The tests of
//! fleetmq's own choices (a filter no rule allows is refused at SUBSCRIBE; a reload
//! revokes a topic from existing subscriptions) run against fleetmq only.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fleetmq::config::{Config, ListenerKind};
use fleetmq::protocol::{
    reason, Packet, ProtocolVersion, QoS, Subscribe, SubscribeFilter, SubscriptionOptions,
};
use fleetmq::server::ServerHandle;
use tokio::net::TcpStream;

use crate::common::*;

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// A Mosquitto user's ACL: everything for anonymous clients but one branch, users with
/// their own sections (a deny inside a granted branch), and a pattern for every client.
const ACL: &str = "\
topic readwrite #
topic deny secret/#

user alice
topic read alice/#
topic readwrite shared/#
topic deny shared/private/#
topic read end/#

user writer
topic write #

pattern read devices/%c/#
";

/// What the writer publishes, in order; `end/marker` last.
const PUBLISHED: [&str; 10] = [
    "a/b",
    "secret/x",
    "secret",
    "alice/inbox",
    "shared/x",
    "shared/private/y",
    "shared/private",
    "devices/alice-all/t",
    "devices/alice-two",
    "x",
];

/// The broker under test: fleetmq in process, or the reference broker.
enum Target {
    Fleetmq(ServerHandle),
    Reference(Child, SocketAddr),
}

impl Target {
    fn addr(&self) -> SocketAddr {
        match self {
            Target::Fleetmq(server) => server.local_addr(),
            Target::Reference(_, addr) => *addr,
        }
    }

    async fn stop(self) {
        match self {
            Target::Fleetmq(server) => server.shutdown().await,
            Target::Reference(mut child, _) => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Writes the password file (alice, writer; by `mosquitto_passwd`, which both brokers
/// read) and the ACL file into `dir`.
fn write_files(dir: &tempfile::TempDir, acl: &str) {
    let passwd = dir.path().join("passwd");
    for (index, (user, password)) in [("alice", "alice-pw"), ("writer", "writer-pw")]
        .into_iter()
        .enumerate()
    {
        let create: &[&str] = if index == 0 { &["-c"] } else { &[] };
        let status = Command::new("mosquitto_passwd")
            .args(create)
            .args(["-b", passwd.to_str().unwrap(), user, password])
            .status()
            .expect("run mosquitto_passwd");
        assert!(status.success());
    }
    std::fs::write(dir.path().join("acl"), acl).unwrap();
}

/// A broker that admits anonymous clients, with the files of `dir`.
async fn start_with_files(dir: &tempfile::TempDir, reference: Option<String>) -> Target {
    let (passwd, acl) = (dir.path().join("passwd"), dir.path().join("acl"));
    let Some(program) = reference else {
        let mut listener = loopback(ListenerKind::Tcp);
        listener.allow_anonymous = Some(true);
        let mut config = Config {
            listeners: vec![listener],
            ..Config::default()
        };
        config.auth.password_file = Some(passwd);
        config.auth.acl_file = Some(acl);
        return Target::Fleetmq(start(config).await);
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             password_file {}\nacl_file {}\n",
            passwd.display(),
            acl.display()
        ),
    )
    .unwrap();
    let child = Command::new(program)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the reference broker");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    within("the reference broker to listen", async {
        // The reference broker gives no other sign that it listens.
        while TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    Target::Reference(child, addr)
}

fn subscribe(filters: &[&str]) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: filters
            .iter()
            .map(|filter| SubscribeFilter {
                filter: (*filter).into(),
                options: SubscriptionOptions {
                    qos: QoS::AtMostOnce,
                    ..SubscriptionOptions::default()
                },
            })
            .collect(),
        subscription_identifier: None,
        user_properties: Vec::new(),
    })
}

async fn client(
    addr: SocketAddr,
    version: ProtocolVersion,
    id: &str,
    user: Option<(&str, &str)>,
) -> Raw<TcpStream> {
    let mut client = Raw::tcp(addr, version).await;
    let (name, password) = user.unzip();
    assert_eq!(
        client
            .connect(connect_packet(version, id, name, password))
            .await,
        Some(0),
        "{id} connects"
    );
    client
}

async fn suback(client: &mut Raw<TcpStream>, filters: &[&str]) -> Vec<u8> {
    client.send(subscribe(filters)).await;
    match client.next().await {
        Some(Packet::SubAck(suback)) => suback.reason_codes,
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// Publishes at QoS 1 and waits for the acknowledgement, so the messages of one
/// publisher are routed in order.
async fn publish_acked(client: &mut Raw<TcpStream>, topic: &str, packet_id: u16) {
    client
        .send(publish(topic, QoS::AtLeastOnce, packet_id, topic))
        .await;
    match client.next().await {
        // 0x10 (no matching subscribers) is a success too.
        Some(Packet::PubAck(ack)) => assert!(ack.reason_code < 0x80, "{topic} accepted"),
        other => panic!("expected PUBACK for {topic}, got {other:?}"),
    }
}

/// The topics delivered to `client` before the one named `last` (which ends the list).
async fn topics_until(client: &mut Raw<TcpStream>, last: &str) -> Vec<String> {
    let mut topics = Vec::new();
    loop {
        match client.next().await {
            Some(Packet::Publish(publish)) if &publish.topic[..] == last => return topics,
            Some(Packet::Publish(publish)) => topics.push(publish.topic.to_string()),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

async fn same_deliveries_as_mosquitto(version: ProtocolVersion) {
    let dir = tempfile::tempdir().unwrap();
    write_files(&dir, ACL);
    let target = start_with_files(&dir, std::env::var("FLEETMQ_TEST_REFERENCE").ok()).await;
    let addr = target.addr();
    let alice = Some(("alice", "alice-pw"));
    let mut subscribers = Vec::new();
    for (id, user, filter) in [
        ("anon-all", None, "#"),
        ("anon-two", None, "+/+"),
        ("alice-all", alice, "#"),
        ("alice-two", alice, "+/+"),
    ] {
        let mut subscriber = client(addr, version, id, user).await;
        // Granted, although deny rules overlap each of these filters.
        assert_eq!(
            suback(&mut subscriber, &[filter]).await,
            [0],
            "{id} {filter}"
        );
        subscribers.push((id, subscriber));
    }
    let mut writer = client(addr, version, "writer", Some(("writer", "writer-pw"))).await;
    for (index, topic) in PUBLISHED.iter().chain(["end/marker"].iter()).enumerate() {
        publish_acked(&mut writer, topic, index as u16 + 1).await;
    }
    let expected: [(&str, &[&str]); 4] = [
        (
            "anon-all",
            &[
                "a/b",
                "alice/inbox",
                "shared/x",
                "shared/private/y",
                "shared/private",
                "devices/alice-all/t",
                "devices/alice-two",
                "x",
            ],
        ),
        (
            "anon-two",
            &[
                "a/b",
                "alice/inbox",
                "shared/x",
                "shared/private",
                "devices/alice-two",
            ],
        ),
        (
            "alice-all",
            &["alice/inbox", "shared/x", "devices/alice-all/t"],
        ),
        (
            "alice-two",
            &["alice/inbox", "shared/x", "devices/alice-two"],
        ),
    ];
    for ((id, subscriber), (expected_id, topics)) in subscribers.iter_mut().zip(expected) {
        assert_eq!(*id, expected_id);
        assert_eq!(
            topics_until(subscriber, "end/marker").await,
            topics,
            "deliveries to {id}"
        );
    }
    target.stop().await;
}

#[tokio::test]
async fn wildcard_subscriptions_get_what_mosquitto_delivers_v311() {
    same_deliveries_as_mosquitto(V3).await;
}

#[tokio::test]
async fn wildcard_subscriptions_get_what_mosquitto_delivers_v5() {
    same_deliveries_as_mosquitto(V5).await;
}

#[tokio::test]
async fn a_filter_no_rule_could_allow_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_files(&dir, ACL);
    let target = start_with_files(&dir, None).await;
    let alice = Some(("alice", "alice-pw"));
    let mut anonymous5 = client(target.addr(), V5, "anon5", None).await;
    assert_eq!(
        suback(
            &mut anonymous5,
            &["secret/#", "secret/+", "secret", "#", "$SYS/#"]
        )
        .await,
        [
            reason::NOT_AUTHORIZED,
            reason::NOT_AUTHORIZED,
            reason::NOT_AUTHORIZED,
            0,
            reason::NOT_AUTHORIZED
        ]
    );
    let mut anonymous3 = client(target.addr(), V3, "anon3", None).await;
    assert_eq!(
        suback(&mut anonymous3, &["secret/+/x", "a/#"]).await,
        [0x80, 0]
    );
    let mut alice5 = client(target.addr(), V5, "alice5", alice).await;
    assert_eq!(
        suback(&mut alice5, &["bob/#", "shared/private/+", "+/inbox"]).await,
        [reason::NOT_AUTHORIZED, reason::NOT_AUTHORIZED, 0]
    );
    target.stop().await;
}

#[tokio::test]
async fn a_reload_revoking_a_topic_stops_it_on_existing_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    write_files(&dir, "topic readwrite #\nuser writer\ntopic write #\n");
    let target = start_with_files(&dir, None).await;
    let Target::Fleetmq(server) = &target else {
        unreachable!("started in process")
    };
    let mut subscriber = client(target.addr(), V5, "watcher", None).await;
    assert_eq!(suback(&mut subscriber, &["#"]).await, [0]);
    let mut writer = client(target.addr(), V5, "writer", Some(("writer", "writer-pw"))).await;
    publish_acked(&mut writer, "secret/before", 1).await;
    publish_acked(&mut writer, "open/before", 2).await;
    assert_eq!(
        topics_until(&mut subscriber, "open/before").await,
        ["secret/before"]
    );
    // The same subscription, a new ACL: secret/... is no longer readable.
    std::fs::write(
        dir.path().join("acl"),
        "topic readwrite #\ntopic deny secret/#\nuser writer\ntopic write #\n",
    )
    .unwrap();
    assert!(server.reload().is_empty());
    publish_acked(&mut writer, "secret/after", 3).await;
    publish_acked(&mut writer, "open/after", 4).await;
    assert_eq!(
        topics_until(&mut subscriber, "open/after").await,
        Vec::<String>::new()
    );
    let stats = server.broker().stats().snapshot();
    assert_eq!(stats.dropped(fleetmq::broker::Dropped::AclDenied), 1);
    target.stop().await;
}
