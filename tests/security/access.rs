//! Authentication and authorisation: `mosquitto_passwd` and `fleetmq passwd` entries,
//! refusal codes for 3.1.1 and 5.0, SCRAM-SHA-256 with re-authentication, ACL rules
//! with patterns and deny, `$SYS` protection, and reloading the files.

use std::process::Command;

use bytes::Bytes;
use fleetmq::auth::scram::client as scram;
use fleetmq::config::{Config, ListenerKind};
use fleetmq::protocol::{
    reason, Auth, AuthProperties, Packet, ProtocolVersion, QoS, Subscribe, SubscribeFilter,
    SubscriptionOptions,
};
use fleetmq::server::ServerHandle;

use crate::common::*;

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
/// 3.1.1 CONNACK 0x05 as the codec reports it.
const V3_NOT_AUTHORISED: u8 = reason::NOT_AUTHORIZED;

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    assert!(status.success(), "{program} {args:?} failed");
}

/// A broker whose only listener requires credentials, with the given files.
async fn secured(dir: &tempfile::TempDir, acl: Option<&str>) -> ServerHandle {
    let mut listener = loopback(ListenerKind::Tcp);
    listener.allow_anonymous = Some(false);
    let mut config = Config {
        listeners: vec![listener],
        ..Config::default()
    };
    config.auth.password_file = Some(dir.path().join("passwd"));
    if let Some(acl) = acl {
        std::fs::write(dir.path().join("acl"), acl).unwrap();
        config.auth.acl_file = Some(dir.path().join("acl"));
    }
    start(config).await
}

/// Users: alice ($7$ by mosquitto_passwd), bob ($6$ by mosquitto_passwd -H sha512),
/// carol ($scram-sha-256$ by fleetmq passwd).
fn password_file(dir: &tempfile::TempDir) {
    let file = dir.path().join("passwd");
    let path = file.to_str().unwrap();
    run("mosquitto_passwd", &["-c", "-b", path, "alice", "alice-pw"]);
    run(
        "mosquitto_passwd",
        &["-H", "sha512", "-b", path, "bob", "bob-pw"],
    );
    run(
        env!("CARGO_BIN_EXE_fleetmq"),
        &["passwd", path, "carol", "carol-pw", "--iterations", "4096"],
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("alice:$7$")
            && text.contains("bob:$6$")
            && text.contains("carol:$scram-sha-256$"),
        "{text}"
    );
}

async fn connack(
    server: &ServerHandle,
    version: ProtocolVersion,
    user: Option<&str>,
    password: Option<&str>,
) -> Option<u8> {
    let mut client = Raw::tcp(server.local_addr(), version).await;
    client
        .connect(connect_packet(version, "c", user, password))
        .await
}

#[tokio::test]
async fn password_entries_of_both_tools_authenticate_and_wrong_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    password_file(&dir);
    let server = secured(&dir, None).await;
    for (user, password) in [
        ("alice", "alice-pw"),
        ("bob", "bob-pw"),
        ("carol", "carol-pw"),
    ] {
        assert_eq!(
            connack(&server, V5, Some(user), Some(password)).await,
            Some(0),
            "{user}"
        );
        assert_eq!(
            connack(&server, V3, Some(user), Some(password)).await,
            Some(0),
            "{user}"
        );
    }
    // MQTT 5: 0x86; MQTT 3.1.1: 0x05 "not authorised", as Mosquitto answers. The codec
    // reads a 3.x return code as its MQTT 5 equivalent: 0x05 is 0x87, 0x04 would be 0x86.
    assert_eq!(
        connack(&server, V5, Some("alice"), Some("bob-pw")).await,
        Some(reason::BAD_USER_NAME_OR_PASSWORD)
    );
    assert_eq!(
        connack(&server, V5, Some("nobody"), Some("x")).await,
        Some(reason::BAD_USER_NAME_OR_PASSWORD)
    );
    assert_eq!(
        connack(&server, V3, Some("alice"), Some("wrong")).await,
        Some(V3_NOT_AUTHORISED)
    );
    assert_eq!(
        connack(&server, V3, Some("nobody"), Some("x")).await,
        Some(V3_NOT_AUTHORISED)
    );
    // Anonymous where it is not allowed: 0x87 / 0x05.
    assert_eq!(
        connack(&server, V5, None, None).await,
        Some(reason::NOT_AUTHORIZED)
    );
    assert_eq!(
        connack(&server, V3, None, None).await,
        Some(V3_NOT_AUTHORISED)
    );
    // fleetmq passwd --verify agrees.
    let path = dir.path().join("passwd");
    let verify = |user: &str, password: &str| {
        Command::new(env!("CARGO_BIN_EXE_fleetmq"))
            .args(["passwd", "--verify", path.to_str().unwrap(), user, password])
            .status()
            .unwrap()
            .success()
    };
    assert!(verify("alice", "alice-pw"));
    assert!(!verify("alice", "nope"));
    server.shutdown().await;
}

fn auth(reason_code: u8, data: &str) -> Packet {
    Packet::Auth(Auth {
        reason_code,
        properties: AuthProperties {
            authentication_method: Some("SCRAM-SHA-256".into()),
            authentication_data: Some(Bytes::copy_from_slice(data.as_bytes())),
            ..AuthProperties::default()
        },
    })
}

fn auth_data(packet: Option<Packet>, expected_reason: u8) -> String {
    match packet {
        Some(Packet::Auth(auth)) => {
            assert_eq!(auth.reason_code, expected_reason);
            String::from_utf8(auth.properties.authentication_data.unwrap().to_vec()).unwrap()
        }
        other => panic!("expected AUTH, got {other:?}"),
    }
}

#[tokio::test]
async fn scram_sha_256_authenticates_and_re_authenticates() {
    let dir = tempfile::tempdir().unwrap();
    password_file(&dir);
    let server = secured(&dir, None).await;
    let mut client = Raw::tcp(server.local_addr(), V5).await;
    let first = scram::first("carol", "client-nonce-1");
    let mut connect = connect_packet(V5, "scram", None, None);
    connect.properties.authentication_method = Some("SCRAM-SHA-256".into());
    connect.properties.authentication_data = Some(Bytes::from(first.clone()));
    client.send(Packet::Connect(Box::new(connect))).await;
    let server_first = auth_data(client.next().await, reason::CONTINUE_AUTHENTICATION);
    let (client_final, server_final) = scram::finish(&first, &server_first, "carol-pw").unwrap();
    client
        .send(auth(reason::CONTINUE_AUTHENTICATION, &client_final))
        .await;
    match client.next().await {
        Some(Packet::ConnAck(connack)) => {
            assert_eq!(connack.reason_code, 0);
            let data = connack.properties.authentication_data.unwrap();
            assert_eq!(&data[..], server_final.as_bytes());
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
    // Re-authentication on the live connection.
    let first = scram::first("carol", "client-nonce-2");
    client.send(auth(reason::RE_AUTHENTICATE, &first)).await;
    let server_first = auth_data(client.next().await, reason::CONTINUE_AUTHENTICATION);
    let (client_final, server_final) = scram::finish(&first, &server_first, "carol-pw").unwrap();
    client
        .send(auth(reason::CONTINUE_AUTHENTICATION, &client_final))
        .await;
    assert_eq!(
        auth_data(client.next().await, reason::SUCCESS),
        server_final
    );
    // A failed re-authentication ends the connection with 0x87.
    let first = scram::first("carol", "client-nonce-3");
    client.send(auth(reason::RE_AUTHENTICATE, &first)).await;
    let server_first = auth_data(client.next().await, reason::CONTINUE_AUTHENTICATION);
    let (client_final, _) = scram::finish(&first, &server_first, "wrong").unwrap();
    client
        .send(auth(reason::CONTINUE_AUTHENTICATION, &client_final))
        .await;
    assert_eq!(client.closed_with().await, Some(reason::NOT_AUTHORIZED));
    server.shutdown().await;
}

#[tokio::test]
async fn scram_with_a_wrong_password_or_an_unknown_method_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    password_file(&dir);
    let server = secured(&dir, None).await;
    let mut client = Raw::tcp(server.local_addr(), V5).await;
    let first = scram::first("carol", "n");
    let mut connect = connect_packet(V5, "scram", None, None);
    connect.properties.authentication_method = Some("SCRAM-SHA-256".into());
    connect.properties.authentication_data = Some(Bytes::from(first.clone()));
    client.send(Packet::Connect(Box::new(connect))).await;
    let server_first = auth_data(client.next().await, reason::CONTINUE_AUTHENTICATION);
    let (client_final, _) = scram::finish(&first, &server_first, "guess").unwrap();
    client
        .send(auth(reason::CONTINUE_AUTHENTICATION, &client_final))
        .await;
    assert!(
        matches!(client.next().await, Some(Packet::ConnAck(c)) if c.reason_code == reason::BAD_USER_NAME_OR_PASSWORD)
    );

    let mut client = Raw::tcp(server.local_addr(), V5).await;
    let mut connect = connect_packet(V5, "kerberos", None, None);
    connect.properties.authentication_method = Some("GSSAPI".into());
    assert_eq!(
        client.connect(connect).await,
        Some(reason::BAD_AUTHENTICATION_METHOD)
    );
    server.shutdown().await;
}

fn subscribe(filters: &[&str]) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: 7,
        filters: filters
            .iter()
            .map(|filter| SubscribeFilter {
                filter: (*filter).into(),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                },
            })
            .collect(),
        subscription_identifier: None,
        user_properties: Vec::new(),
    })
}

async fn suback(client: &mut Raw<tokio::net::TcpStream>, filters: &[&str]) -> Vec<u8> {
    client.send(subscribe(filters)).await;
    match client.next().await {
        Some(Packet::SubAck(suback)) => suback.reason_codes,
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

async fn logged_in(
    server: &ServerHandle,
    version: ProtocolVersion,
    id: &str,
    user: &str,
    password: &str,
) -> Raw<tokio::net::TcpStream> {
    let mut client = Raw::tcp(server.local_addr(), version).await;
    assert_eq!(
        client
            .connect(connect_packet(version, id, Some(user), Some(password)))
            .await,
        Some(0)
    );
    client
}

const ACL: &str = "\
user alice
topic readwrite shared/#
topic deny shared/secret
topic read $SYS/#
user bob
topic read shared/#
pattern readwrite devices/%c/#
pattern read inbox/%u
";

#[tokio::test]
async fn acl_rules_patterns_deny_and_sys_protection() {
    let dir = tempfile::tempdir().unwrap();
    password_file(&dir);
    let server = secured(&dir, Some(ACL)).await;
    let mut bob = logged_in(&server, V3, "bob-dev", "bob", "bob-pw").await;
    // v3: refused filters are 0x80.
    assert_eq!(
        suback(
            &mut bob,
            &[
                "shared/+/x",
                "devices/bob-dev/#",
                "devices/other/#",
                "inbox/bob",
                "private/#"
            ]
        )
        .await,
        [1, 1, 0x80, 1, 0x80]
    );
    let mut alice = logged_in(&server, V5, "alice-dev", "alice", "alice-pw").await;
    // v5: 0x87; deny wins over the broader rule. (`$SYS/fake/#` rather than `$SYS/#`:
    // the broker's own retained `$SYS` topics would arrive ahead of the acks below.)
    assert_eq!(
        suback(
            &mut alice,
            &["shared/news", "shared/secret", "inbox/bob", "$SYS/fake/#"]
        )
        .await,
        [1, 0x87, 0x87, 1]
    );
    // A permitted publish is delivered to bob.
    alice
        .send(publish("shared/a/x", QoS::AtLeastOnce, 1, "ok"))
        .await;
    assert!(matches!(alice.next().await, Some(Packet::PubAck(ack)) if ack.reason_code == 0));
    assert!(matches!(bob.next().await, Some(Packet::Publish(p)) if &p.topic[..] == "shared/a/x"));
    // Denied and `$` publishes: v5 PUBACK 0x87, not delivered.
    for topic in ["shared/secret", "devices/bob-dev/x", "$SYS/fake"] {
        alice.send(publish(topic, QoS::AtLeastOnce, 2, "no")).await;
        assert!(
            matches!(alice.next().await, Some(Packet::PubAck(ack)) if ack.reason_code == reason::NOT_AUTHORIZED),
            "{topic}"
        );
    }
    // QoS 2 refused with PUBREC 0x87; the packet id is free again right away.
    alice
        .send(publish("elsewhere", QoS::ExactlyOnce, 3, "no"))
        .await;
    assert!(
        matches!(alice.next().await, Some(Packet::PubRec(ack)) if ack.reason_code == reason::NOT_AUTHORIZED)
    );
    alice
        .send(publish("shared/b/x", QoS::ExactlyOnce, 3, "yes"))
        .await;
    assert!(matches!(alice.next().await, Some(Packet::PubRec(ack)) if ack.reason_code == 0));
    assert!(matches!(bob.next().await, Some(Packet::Publish(p)) if &p.topic[..] == "shared/b/x"));
    // v3: bob's denied publish is acknowledged but not delivered.
    let mut watcher = logged_in(&server, V5, "alice-2", "alice", "alice-pw").await;
    // Overlapping the deny rule is no reason to refuse: shared/secret is filtered per
    // message instead.
    assert_eq!(suback(&mut watcher, &["shared/#"]).await, [1]);
    assert_eq!(suback(&mut watcher, &["shared/news/#"]).await, [1]);
    bob.send(publish("shared/news/x", QoS::AtLeastOnce, 9, "bob"))
        .await;
    assert!(matches!(bob.next().await, Some(Packet::PubAck(ack)) if ack.reason_code == 0));
    bob.send(publish("devices/bob-dev/up", QoS::AtLeastOnce, 10, "own"))
        .await;
    assert!(matches!(bob.next().await, Some(Packet::PubAck(_))));
    alice
        .send(publish("shared/news/y", QoS::AtMostOnce, 0, "from alice"))
        .await;
    match watcher.next().await {
        Some(Packet::Publish(p)) => assert_eq!(
            &p.topic[..],
            "shared/news/y",
            "bob's message must not arrive"
        ),
        other => panic!("expected alice's message, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn reloading_the_acl_applies_to_new_checks_and_a_bad_file_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    password_file(&dir);
    let server = secured(&dir, Some("user alice\ntopic read a/#\n")).await;
    let mut alice = logged_in(&server, V5, "alice", "alice", "alice-pw").await;
    assert_eq!(suback(&mut alice, &["a/1", "b/1"]).await, [1, 0x87]);
    std::fs::write(dir.path().join("acl"), "user alice\ntopic read b/#\n").unwrap();
    assert!(server.reload().is_empty());
    assert_eq!(suback(&mut alice, &["a/1", "b/1"]).await, [0x87, 1]);
    std::fs::write(dir.path().join("acl"), "user alice\nbogus line\n").unwrap();
    let errors = server.reload();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("line 2"), "{errors:?}");
    assert_eq!(suback(&mut alice, &["b/2"]).await, [1]);
    server.shutdown().await;
}

/// Starts a SCRAM exchange for `user`; returns the client with the exchange open, its
/// client-first-message and the server-first-message.
async fn scram_challenge(
    server: &ServerHandle,
    user: &str,
) -> (Raw<tokio::net::TcpStream>, String, String) {
    let mut client = Raw::tcp(server.local_addr(), V5).await;
    let first = scram::first(user, "client-nonce");
    let mut connect = connect_packet(V5, "scram-probe", None, None);
    connect.properties.authentication_method = Some("SCRAM-SHA-256".into());
    connect.properties.authentication_data = Some(Bytes::from(first.clone()));
    client.send(Packet::Connect(Box::new(connect))).await;
    let server_first = auth_data(client.next().await, reason::CONTINUE_AUTHENTICATION);
    (client, first, server_first)
}

/// The salt and iteration count of a server-first-message (`s=...,i=...`): what does not
/// change from one attempt to the next (the nonce does).
async fn salt_and_iterations(server: &ServerHandle, user: &str) -> String {
    let (_, _, server_first) = scram_challenge(server, user).await;
    let (_, rest) = server_first
        .split_once(",s=")
        .unwrap_or_else(|| panic!("server-first-message without a salt: {server_first}"));
    format!("s={rest}")
}

#[tokio::test]
async fn scram_answers_an_unknown_user_the_same_way_every_time() {
    let dir = tempfile::tempdir().unwrap();
    password_file(&dir);
    let server = secured(&dir, None).await;
    let known = salt_and_iterations(&server, "carol").await;
    let unknown = salt_and_iterations(&server, "mallory").await;
    for _ in 0..2 {
        assert_eq!(salt_and_iterations(&server, "carol").await, known);
        assert_eq!(salt_and_iterations(&server, "mallory").await, unknown);
    }
    // Shaped like carol's: a salt of the same length and the same iteration count.
    let parts = |answer: &str| {
        let (salt, iterations) = answer.split_once(",i=").expect("an iteration count");
        (salt.len(), iterations.to_string())
    };
    assert_eq!(parts(&unknown), parts(&known));
    assert_ne!(unknown, known);
    // And the exchange ends as a wrong password does.
    let (mut client, first, server_first) = scram_challenge(&server, "mallory").await;
    let (client_final, _) = scram::finish(&first, &server_first, "guess").unwrap();
    client
        .send(auth(reason::CONTINUE_AUTHENTICATION, &client_final))
        .await;
    assert!(matches!(
        client.next().await,
        Some(Packet::ConnAck(c)) if c.reason_code == reason::BAD_USER_NAME_OR_PASSWORD
    ));
    server.shutdown().await;
}

/// Mosquitto 2's rule: once a configuration file names listeners, anonymous clients are
/// refused unless `allow_anonymous = true` says so; the built-in default (no file) keeps
/// admitting them on its loopback listener.
#[tokio::test]
async fn listeners_named_in_a_file_refuse_anonymous_clients_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    password_file(&dir);
    let text = format!(
        "[[listeners]]\ntype = \"tcp\"\nbind = \"127.0.0.1:0\"\n\n\
         [[listeners]]\ntype = \"tcp\"\nbind = \"127.0.0.1:0\"\nallow_anonymous = true\n\n\
         [auth]\npassword_file = \"{}\"\n",
        dir.path().join("passwd").display()
    );
    let config = Config::from_toml_str(&text, "fleetmq.toml").expect("valid file");
    let server = start(config).await;
    let [named, opened] = server.listener_addrs()[..] else {
        panic!("two listeners")
    };
    for (version, refused) in [(V3, V3_NOT_AUTHORISED), (V5, reason::NOT_AUTHORIZED)] {
        let mut anonymous = Raw::tcp(named, version).await;
        assert_eq!(
            anonymous
                .connect(connect_packet(version, "anon", None, None))
                .await,
            Some(refused)
        );
        let mut alice = Raw::tcp(named, version).await;
        assert_eq!(
            alice
                .connect(connect_packet(
                    version,
                    "a",
                    Some("alice"),
                    Some("alice-pw")
                ))
                .await,
            Some(0)
        );
        let mut welcome = Raw::tcp(opened, version).await;
        assert_eq!(
            welcome
                .connect(connect_packet(version, "anon", None, None))
                .await,
            Some(0)
        );
    }
    server.shutdown().await;

    // No file: the built-in listener (moved to a free port) admits anonymous clients.
    let mut builtin = Config::default();
    builtin.listeners[0].bind = "127.0.0.1:0".parse().unwrap();
    let server = start(builtin).await;
    still_serving(server.local_addr()).await;
    server.shutdown().await;
}
