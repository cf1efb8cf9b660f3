//! The admin API through the real binary, against real MQTT clients (rumqttc and the
//! mosquitto command-line clients).

use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
use serde_json::{json, Value};

use crate::common::{connect_v5, eventually, http, raw, within, Broker, TOKEN};

#[tokio::test]
async fn clients_are_listed_inspected_and_kicked_with_administrative_action() {
    let broker = Broker::start(true).await;
    let (device, present) = connect_v5(broker.mqtt, "dev-1", true, "fleet/dev-1/#").await;
    assert!(!present);
    let (_other, _) = connect_v5(broker.mqtt, "other-7", true, "x").await;

    let page = broker.get("/api/v1/clients?prefix=dev-").await;
    assert_eq!(page["total"], 1, "{page}");
    let client = &page["items"][0];
    assert_eq!(client["client_id"], "dev-1");
    assert_eq!(client["connected"], true);
    assert_eq!(client["protocol"], 5);
    assert_eq!(client["subscriptions"], 1);
    assert_eq!(client["session_expiry_secs"], 300);
    assert_eq!(client["keep_alive_secs"], 30);
    assert!(
        client["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{client}"
    );
    assert!(client["connected_since_ms"].as_u64().unwrap() > 0);
    for key in [
        "queued_messages",
        "queued_bytes",
        "inflight_messages",
        "inflight_bytes",
        "dropped_messages",
    ] {
        assert_eq!(client[key], 0, "{key} in {client}");
    }
    let all = broker.get("/api/v1/clients?limit=1&offset=1").await;
    assert_eq!(
        (
            all["total"].as_u64(),
            all["items"].as_array().unwrap().len()
        ),
        (Some(2), 1)
    );
    assert_eq!(all["items"][0]["client_id"], "other-7");
    let none = broker.get("/api/v1/clients?connected=false").await;
    assert_eq!(none["total"], 0);

    let detail = broker.get("/api/v1/clients/dev-1").await;
    assert_eq!(detail["client"]["client_id"], "dev-1");
    assert_eq!(detail["subscriptions"][0]["filter"], "fleet/dev-1/#");
    assert_eq!(detail["subscriptions"][0]["qos"], 1);
    let subscriptions = broker.get("/api/v1/subscriptions?filter=x").await;
    assert_eq!(subscriptions["total"], 1);
    assert_eq!(subscriptions["items"][0]["client_id"], "other-7");

    // A kick keeps the session: the client sees 0x98 and finds it on reconnecting.
    let (status, body) = broker.api("DELETE", "/api/v1/clients/dev-1", None).await;
    assert_eq!(
        (status, &body["disconnected"], &body["session_discarded"]),
        (200, &json!(true), &json!(false)),
        "{body}"
    );
    let reason = within("the kicked client to see DISCONNECT", device.ended)
        .await
        .unwrap();
    assert_eq!(reason, Some(DisconnectReasonCode::AdministrativeAction));
    eventually(&broker, "/api/v1/clients/dev-1", |body| {
        body["client"]["connected"] == false
    })
    .await;
    let (status, body) = broker.api("DELETE", "/api/v1/clients/dev-1", None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("not_connected")),
        "{body}"
    );
    let (device, present) = connect_v5(broker.mqtt, "dev-1", false, "fleet/dev-1/#").await;
    assert!(present, "a kick without discard keeps the session");

    // With session=discard the session and its subscriptions are gone.
    let (status, body) = broker
        .api("DELETE", "/api/v1/clients/dev-1?session=discard", None)
        .await;
    assert_eq!(
        (status, &body["session_discarded"]),
        (200, &json!(true)),
        "{body}"
    );
    let reason = within("the kicked client to see DISCONNECT", device.ended)
        .await
        .unwrap();
    assert_eq!(reason, Some(DisconnectReasonCode::AdministrativeAction));
    let (status, body) = broker.api("GET", "/api/v1/clients/dev-1", None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("not_found")),
        "{body}"
    );
    let (_device, present) = connect_v5(broker.mqtt, "dev-1", false, "y").await;
    assert!(!present, "a discarded session is not resumed");
    let (status, _) = broker.api("DELETE", "/api/v1/clients/nobody", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_offline_session_is_discarded_with_its_stored_state() {
    let broker = Broker::start(false).await;
    let (device, _) = connect_v5(broker.mqtt, "sleeper", true, "sleep/#").await;
    device.client.disconnect().await.unwrap();
    eventually(&broker, "/api/v1/clients?connected=false", |page| {
        page["total"] == 1
    })
    .await;
    // Something queued for it while it sleeps.
    let (status, _) = broker
        .api(
            "POST",
            "/api/v1/publish",
            Some(r#"{"topic":"sleep/now","payload":"zz","qos":1}"#),
        )
        .await;
    assert_eq!(status, 200);
    // QoS 0 for an offline session is dropped, and counted for it.
    let (status, _) = broker
        .api(
            "POST",
            "/api/v1/publish",
            Some(r#"{"topic":"sleep/later","payload":"z","qos":0}"#),
        )
        .await;
    assert_eq!(status, 200);
    let detail = broker.get("/api/v1/clients/sleeper").await;
    let client = &detail["client"];
    assert_eq!(client["queued_messages"], 1, "{detail}");
    assert!(client["queued_bytes"].as_u64().unwrap() > 2, "{detail}");
    assert_eq!(client["dropped_messages"], 1, "{detail}");
    assert_eq!(client["connected"], false);
    assert!(client["disconnected_at_ms"].as_u64().is_some(), "{detail}");
    let (status, body) = broker
        .api("DELETE", "/api/v1/clients/sleeper?session=discard", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["disconnected"], false);
    let (_device, present) = connect_v5(broker.mqtt, "sleeper", false, "other").await;
    assert!(!present);
    // Without a token, only requests naming an IP address or localhost are served (a
    // rebound DNS name is not).
    let rebound = raw(
        broker.admin,
        b"GET /api/v1/clients HTTP/1.1\r\nHost: evil.example:9884\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(rebound.status, 403, "{}", rebound.head);
    let local = raw(
        broker.admin,
        b"GET /api/v1/clients HTTP/1.1\r\nHost: localhost:9884\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(local.status, 200, "{}", local.head);
}

#[tokio::test]
async fn publish_goes_to_subscribers_and_retained_messages_are_listed_and_deleted() {
    let broker = Broker::start(true).await;
    let port = broker.mqtt.port().to_string();
    // A real subscriber: mosquitto_sub, waiting for one message.
    let subscriber = tokio::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-i",
            "watcher",
        ])
        .args([
            "-t",
            "plant/+/temp",
            "-C",
            "1",
            "-W",
            "15",
            "-v",
            "-F",
            "%t %p %P",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub (package mosquitto-clients)");
    eventually(&broker, "/api/v1/subscriptions?client=watcher", |page| {
        page["total"] == 1
    })
    .await;

    let publish = json!({
        "topic": "plant/7/temp",
        "payload": "21.5",
        "qos": 1,
        "retain": true,
        "properties": { "content_type": "text/plain", "user_properties": [["unit", "C"]] },
    });
    let (status, body) = broker
        .api("POST", "/api/v1/publish", Some(&publish.to_string()))
        .await;
    assert_eq!((status, &body["routed"]), (200, &json!(1)), "{body}");
    let output = within("mosquitto_sub", subscriber.wait_with_output())
        .await
        .unwrap();
    let line = String::from_utf8_lossy(&output.stdout);
    assert_eq!(line.trim(), "plant/7/temp 21.5 unit:C", "{line}");

    let retained = broker
        .get("/api/v1/retained?filter=plant/%23&payload=true")
        .await;
    assert_eq!(retained["total"], 1, "{retained}");
    let message = &retained["items"][0];
    assert_eq!(message["topic"], "plant/7/temp");
    assert_eq!(message["payload"], "21.5");
    assert_eq!(message["payload_size"], 4);
    assert_eq!(message["properties"]["content_type"], "text/plain");
    assert_eq!(
        message["properties"]["user_properties"],
        json!([["unit", "C"]])
    );
    let without = broker.get("/api/v1/retained").await;
    assert!(without["items"][0].get("payload").is_none(), "{without}");

    let (status, body) = broker
        .api("DELETE", "/api/v1/retained/plant/7/temp", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let retained = broker.get("/api/v1/retained").await;
    assert_eq!(retained["total"], 0, "{retained}");
    let (status, body) = broker
        .api("DELETE", "/api/v1/retained/plant%2F7%2Ftemp", None)
        .await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
    // A new subscriber gets no retained message: mosquitto_sub times out empty.
    let late = tokio::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "plant/#",
            "-C",
            "1",
            "-W",
            "1",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        late.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&late.stdout)
    );

    for (body, code) in [
        (r#"{"topic":"a/+","payload":"x"}"#, "bad_request"),
        (r#"{"topic":"$SYS/x","payload":"x"}"#, "bad_request"),
        (r#"{"topic":"a","qos":3}"#, "bad_request"),
        (
            r#"{"topic":"a","payload":"x","payload_base64":"eA=="}"#,
            "bad_request",
        ),
    ] {
        let (status, answer) = broker.api("POST", "/api/v1/publish", Some(body)).await;
        assert_eq!(
            (status, &answer["error"]["code"]),
            (400, &json!(code)),
            "{body}: {answer}"
        );
    }
}

#[tokio::test]
async fn the_token_is_required_and_bad_requests_get_clear_errors_without_affecting_mqtt() {
    let broker = Broker::start(true).await;
    let (mut subscriber, _) = connect_v5(broker.mqtt, "bystander", true, "still/here").await;

    for token in [None, Some("wrong"), Some("")] {
        let answer = http(broker.admin, "GET", "/api/v1/clients", token, None).await;
        assert_eq!(answer.status, 401, "{token:?}");
        let body: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(
            body,
            json!({"error": {"code": "unauthorized", "message": "unauthorized"}})
        );
        assert!(
            answer.head.contains("WWW-Authenticate: Bearer"),
            "{}",
            answer.head
        );
    }
    // The page, /health and /ready answer without it.
    for path in ["/", "/health", "/ready"] {
        assert_eq!(
            http(broker.admin, "GET", path, None, None).await.status,
            200,
            "{path}"
        );
    }
    let page = http(broker.admin, "GET", "/", None, None).await;
    assert!(String::from_utf8_lossy(&page.body).contains("<title>fleetmq dashboard</title>"));

    let cases: [(&str, &str, Option<&str>, u16, &str); 7] = [
        ("GET", "/api/v1/nothing", None, 404, "not_found"),
        ("GET", "/elsewhere", None, 404, "not_found"),
        ("PUT", "/api/v1/clients", None, 405, "method_not_allowed"),
        (
            "POST",
            "/api/v1/publish",
            Some("{not json"),
            400,
            "bad_json",
        ),
        (
            "POST",
            "/api/v1/publish",
            Some(r#"{"topic":"a","colour":"red"}"#),
            400,
            "bad_json",
        ),
        (
            "GET",
            "/api/v1/clients?limit=100000",
            None,
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/retained?filter=a/%23/b",
            None,
            400,
            "bad_request",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let answer = http(broker.admin, method, path, Some(TOKEN), body).await;
        let json: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(
            (answer.status, &json["error"]["code"]),
            (status, &json!(code)),
            "{method} {path}: {json}"
        );
    }
    let unknown = broker
        .api(
            "POST",
            "/api/v1/publish",
            Some(r#"{"topic":"a","colour":"red"}"#),
        )
        .await;
    assert!(
        unknown.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `colour`"),
        "{}",
        unknown.1
    );

    // Cross-site protections: a POST body must be declared JSON.
    let form = format!(
        "POST /api/v1/publish HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n{{\"topic\":\"a\"}}"
    );
    let answer = raw(broker.admin, form.as_bytes()).await;
    assert_eq!(answer.status, 415, "{}", answer.head);

    let huge = format!(
        "GET /api/v1/stats HTTP/1.1\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = raw(broker.admin, huge.as_bytes()).await;
    assert_eq!(answer.status, 431);
    let big_body = format!(
        "POST /api/v1/publish HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n",
        64 * 1024 * 1024
    );
    assert_eq!(raw(broker.admin, big_body.as_bytes()).await.status, 413);
    let chunked = "POST /api/v1/publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_eq!(raw(broker.admin, chunked.as_bytes()).await.status, 411);
    assert_eq!(raw(broker.admin, b"NOT HTTP\r\n\r\n").await.status, 400);

    // The MQTT side never noticed.
    let (publisher, _) = connect_v5(broker.mqtt, "publisher", true, "unused").await;
    publisher
        .client
        .publish(
            "still/here",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "yes",
        )
        .await
        .unwrap();
    let received = within("the bystander's message", subscriber.publishes.recv())
        .await
        .unwrap();
    assert_eq!(&received.payload[..], b"yes");
    let page = broker.get("/api/v1/clients?prefix=bystander").await;
    assert_eq!(page["items"][0]["connected"], true);
}

#[tokio::test]
async fn stats_listeners_config_health_sections_and_reload() {
    let broker = Broker::start(true).await;
    let (_client, _) = connect_v5(broker.mqtt, "counted", true, "c").await;
    let stats = broker.get("/api/v1/stats").await;
    assert_eq!(
        stats["metrics"]["fleetmq_connections_current"], 1.0,
        "{stats}"
    );
    assert!(
        stats["metrics"]["fleetmq_messages_dropped_total"]["queue_full"].is_number(),
        "{stats}"
    );
    let listeners = broker.get("/api/v1/listeners").await;
    assert_eq!(
        listeners["listeners"][0]["address"],
        broker.mqtt.to_string()
    );
    assert_eq!(listeners["listeners"][0]["running"], true);
    let config = broker.get("/api/v1/config").await;
    assert_eq!(config["admin"]["token_file"], "(redacted)", "{config}");
    assert_eq!(config["limits"]["max_queued_messages"], 1000);
    let (status, body) = broker.api("GET", "/api/v1/bridges", None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("not_configured"))
    );
    assert_eq!(broker.get("/api/v1/sections").await["sections"], json!([]));
    for path in ["/health", "/ready"] {
        let answer = http(broker.admin, "GET", path, None, None).await;
        let body: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(
            (answer.status, &body["status"], &body["ready"]),
            (200, &json!("ok"), &json!(true))
        );
    }

    // Reload: what SIGHUP does, answered with the changes.
    let text = std::fs::read_to_string(&broker.config_path).unwrap();
    std::fs::write(
        &broker.config_path,
        format!("{text}\n[limits]\nmax_queued_messages = 77\n\n[sys]\ninterval_secs = 30\n"),
    )
    .unwrap();
    let (status, body) = broker.api("POST", "/api/v1/reload", None).await;
    assert_eq!(status, 200, "{body}");
    let keys: Vec<&str> = body["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["limits.max_queued_messages", "sys.interval_secs"],
        "{body}"
    );
    assert_eq!(body["applied"][0]["new"], "77");
    assert_eq!(
        broker.get("/api/v1/config").await["limits"]["max_queued_messages"],
        77
    );
    std::fs::write(
        &broker.config_path,
        format!("{text}\n[limits]\nmax_queued_messages = 0\n"),
    )
    .unwrap();
    let (status, body) = broker.api("POST", "/api/v1/reload", None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_config")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limits.max_queued_messages"),
        "{body}"
    );
    assert_eq!(
        broker.get("/api/v1/config").await["limits"]["max_queued_messages"],
        77
    );
    assert!(
        broker.log().contains("configuration change applied"),
        "{}",
        broker.log()
    );
}

#[tokio::test]
async fn check_config_refuses_an_admin_api_beyond_loopback_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleetmq.toml");
    std::fs::write(&path, "[admin]\nbind = \"0.0.0.0:9884\"\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fleetmq"))
        .arg("check-config")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("fleetmq.toml:2: admin.bind: 0.0.0.0:9884 is reachable beyond this machine: set admin.token_file"),
        "{stderr}"
    );
    // The broker refuses to start with it as well.
    let serve = std::process::Command::new(env!("CARGO_BIN_EXE_fleetmq"))
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!serve.status.success());
    // With a token file it passes.
    let token = dir.path().join("token");
    std::fs::write(&token, "a-token\n").unwrap();
    std::fs::write(
        &path,
        format!(
            "[admin]\nbind = \"0.0.0.0:9884\"\ntoken_file = {:?}\n",
            token.display().to_string()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fleetmq"))
        .args(["check-config", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_kicked_mqtt_3_client_loses_its_connection_and_its_clean_session() {
    use rumqttc::{Event, Packet};
    let broker = Broker::start(false).await;
    let mut options = rumqttc::MqttOptions::new("v3-dev", "127.0.0.1", broker.mqtt.port());
    options.set_keep_alive(std::time::Duration::from_secs(30));
    let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    within("CONNACK", async {
        loop {
            if let Event::Incoming(Packet::ConnAck(_)) = eventloop.poll().await.unwrap() {
                return;
            }
        }
    })
    .await;
    let detail = broker.get("/api/v1/clients/v3-dev").await;
    assert_eq!(detail["client"]["protocol"], 4, "{detail}");
    assert_eq!(detail["client"]["clean_start"], true);
    let (status, body) = broker.api("DELETE", "/api/v1/clients/v3-dev", None).await;
    assert_eq!(status, 200, "{body}");
    // MQTT 3 has no DISCONNECT from the server: the connection just closes.
    within("the 3.1.1 client to lose its connection", async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
    within("the clean session to end", async {
        while broker.api("GET", "/api/v1/clients/v3-dev", None).await.0 != 404 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_flood_of_idle_admin_connections_is_bounded_and_mqtt_goes_on() {
    use tokio::io::AsyncReadExt;
    let broker = Broker::start(false).await;
    // More idle connections than the admin listener serves at once (16).
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(tokio::net::TcpStream::connect(broker.admin).await.unwrap());
    }
    // Beyond the bound a connection is closed unanswered.
    let admin = broker.admin;
    let answered = || async move {
        let mut extra = tokio::net::TcpStream::connect(admin).await.unwrap();
        let _ = tokio::io::AsyncWriteExt::write_all(
            &mut extra,
            b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        let mut answer = Vec::new();
        let _ = extra.read_to_end(&mut answer).await;
        answer.starts_with(b"HTTP/1.1 200 ")
    };
    within("a connection beyond the bound to be closed", async {
        while answered().await {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    // MQTT is not affected.
    let (mut subscriber, _) = connect_v5(broker.mqtt, "flood-sub", true, "flood/t").await;
    let (publisher, _) = connect_v5(broker.mqtt, "flood-pub", true, "unused").await;
    publisher
        .client
        .publish(
            "flood/t",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "ok",
        )
        .await
        .unwrap();
    let received = within("the message", subscriber.publishes.recv())
        .await
        .unwrap();
    assert_eq!(&received.payload[..], b"ok");
    // Once the idle connections go, the API answers again.
    drop(idle);
    within("the API to answer again", async {
        while !answered().await {}
    })
    .await;
}

/// A configured bridge appears in `GET /api/v1/bridges` and in the sections the
/// dashboard shows, with its link state and outbox.
#[tokio::test]
async fn a_bridge_is_reported_with_its_link_and_outbox() {
    let remote = Broker::start(false).await;
    let extra = format!(
        "\n[[bridges]]\nname = \"cloud\"\naddresses = [\"{}\"]\n\n\
         [[bridges.topics]]\nfilter = \"telemetry/#\"\ndirection = \"out\"\n",
        remote.mqtt
    );
    let local = Broker::start_with(true, &extra).await;
    let bridges = eventually(&local, "/api/v1/bridges", |body| {
        body[0]["connected"] == json!(true)
    })
    .await;
    assert_eq!(bridges[0]["name"], "cloud", "{bridges}");
    assert_eq!(bridges[0]["outbox_messages"], 0, "{bridges}");
    assert_eq!(
        local.get("/api/v1/sections").await["sections"],
        json!(["bridges"])
    );
}

/// The cluster's part of the API answers `not_configured` on a single node, behind the
/// same token as the rest; `fleetmq cluster` says so too.
#[tokio::test]
async fn cluster_endpoints_need_the_token_and_a_cluster() {
    let broker = Broker::start(true).await;
    let answer = http(broker.admin, "GET", "/api/v1/cluster", None, None).await;
    assert_eq!(answer.status, 401);
    for (method, path, body) in [
        ("GET", "/api/v1/cluster", None),
        (
            "POST",
            "/api/v1/cluster/nodes",
            Some(r#"{"node":"4@127.0.0.1:7884"}"#),
        ),
        ("DELETE", "/api/v1/cluster/nodes/4", None),
    ] {
        let (status, answer) = broker.api(method, path, body).await;
        assert_eq!(
            (status, &answer["error"]["code"]),
            (404, &json!("not_configured")),
            "{method} {path}: {answer}"
        );
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fleetmq"))
        .args([
            "cluster",
            "status",
            "--url",
            &format!("http://{}", broker.admin),
            "-c",
        ])
        .arg(&broker.config_path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not_configured"), "{stderr}");
}
