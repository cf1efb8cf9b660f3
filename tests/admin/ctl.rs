//! `fleetmq ctl` against the real broker: every command, tables and `--json`, the admin
//! address and token from the configuration file or from `--url` and `--token-file`.

use std::process::Output;

use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
use serde_json::Value;

use crate::common::{connect_v5, within, Broker};

async fn ctl(broker: &Broker, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetmq"));
    command
        .arg("ctl")
        .arg("-c")
        .arg(&broker.config_path)
        .args(args);
    within("fleetmq ctl", command.output()).await.unwrap()
}

/// Runs `ctl` and returns its standard output, which it must produce successfully.
async fn ok(broker: &Broker, args: &[&str]) -> String {
    let output = ctl(broker, args).await;
    assert!(
        output.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn every_ctl_command_works_against_a_running_broker() {
    let broker = Broker::start(true).await;
    // The admin listener's port is 0 in the file: ctl needs the bound one.
    let text = std::fs::read_to_string(&broker.config_path).unwrap();
    std::fs::write(
        &broker.config_path,
        text.replace(
            "bind = \"127.0.0.1:0\"\ntoken_file",
            &format!("bind = \"{}\"\ntoken_file", broker.admin),
        ),
    )
    .unwrap();
    let (device, _) = connect_v5(broker.mqtt, "truck-42", true, "trucks/42/#").await;

    let table = ok(&broker, &["clients"]).await;
    let mut lines = table.lines();
    assert!(
        lines.next().unwrap().starts_with("CLIENT ID  CONNECTED"),
        "{table}"
    );
    let row = lines.next().unwrap();
    assert!(
        row.starts_with("truck-42") && row.contains("true") && row.contains("127.0.0.1:"),
        "{table}"
    );

    let json: Value =
        serde_json::from_str(&ok(&broker, &["clients", "--json", "--connected"]).await).unwrap();
    assert_eq!(json["items"][0]["client_id"], "truck-42");
    let detail = ok(&broker, &["client", "truck-42"]).await;
    assert!(
        detail.contains("client_id: truck-42") && detail.contains("trucks/42/#"),
        "{detail}"
    );
    let subscriptions = ok(&broker, &["subscriptions", "--client", "truck-42"]).await;
    assert!(
        subscriptions
            .lines()
            .nth(1)
            .unwrap()
            .contains("trucks/42/#"),
        "{subscriptions}"
    );

    let published = ok(
        &broker,
        &[
            "publish",
            "trucks/42/cmd",
            "stop",
            "--qos",
            "1",
            "--retain",
            "--user-property",
            "by=ops",
        ],
    )
    .await;
    assert!(published.contains("routed: 1"), "{published}");
    let mut device = device;
    let message = within("the published command", device.publishes.recv())
        .await
        .unwrap();
    assert_eq!(&message.payload[..], b"stop");
    let retained = ok(&broker, &["retained", "--payload"]).await;
    assert!(
        retained.lines().nth(1).unwrap().contains("trucks/42/cmd") && retained.contains("stop"),
        "{retained}"
    );
    ok(&broker, &["retained", "--delete", "trucks/42/cmd"]).await;
    let retained: Value =
        serde_json::from_str(&ok(&broker, &["--json", "retained"]).await).unwrap();
    assert_eq!(retained["total"], 0);

    let stats = ok(&broker, &["stats"]).await;
    assert!(
        stats
            .lines()
            .any(|line| line == "fleetmq_connections_current 1"),
        "{stats}"
    );
    // The file now names the bound admin port: a change only a restart applies.
    let reload = ok(&broker, &["reload"]).await;
    assert!(
        reload.starts_with("needs a restart:\n  admin.bind: \"127.0.0.1:0\" -> "),
        "{reload}"
    );

    let kicked = ok(&broker, &["kick", "truck-42", "--discard-session"]).await;
    assert!(kicked.contains("session_discarded: true"), "{kicked}");
    let reason = within("the kick", device.ended).await.unwrap();
    assert_eq!(reason, Some(DisconnectReasonCode::AdministrativeAction));

    // Errors: the API's code and message, exit status 1.
    let missing = ctl(&broker, &["client", "truck-42"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("404 not_found"),
        "{missing:?}"
    );

    // --url and --token-file instead of the file; a wrong token is refused.
    let url = format!("http://{}", broker.admin);
    let wrong = broker.dir.path().join("wrong.token");
    std::fs::write(&wrong, "nope\n").unwrap();
    let output = within(
        "ctl --url",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetmq"))
            .args(["ctl", "--url", &url, "--token-file"])
            .arg(&wrong)
            .arg("stats")
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("401 unauthorized"),
        "{output:?}"
    );
    let right = broker.dir.path().join("admin.token");
    let output = within(
        "ctl --url",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetmq"))
            .args(["ctl", "--url", &url, "--token-file"])
            .arg(&right)
            .args(["clients", "--offline"])
            .output(),
    )
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");
}

#[tokio::test]
async fn ctl_reaches_an_https_admin_listener_with_its_ca() {
    let certs = tempfile::tempdir().unwrap();
    let generated = std::process::Command::new(env!("CARGO_BIN_EXE_fleetmq"))
        .args(["gen-certs", "--out"])
        .arg(certs.path())
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    let file = |name: &str| certs.path().join(name).display().to_string();
    let extra = format!(
        "\n[admin.tls]\ncert = {:?}\nkey = {:?}\n",
        file("server.pem"),
        file("server.key")
    );
    let broker = Broker::start_with(true, &extra).await;
    let url = format!("https://127.0.0.1:{}", broker.admin.port());
    let token = broker.dir.path().join("admin.token");
    let run = |ca: Option<String>, args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetmq"));
        command
            .args(["ctl", "--url", &url, "--token-file"])
            .arg(&token);
        if let Some(ca) = ca {
            command.args(["--ca", &ca]);
        }
        command.args(args);
        command
    };
    let ca = || Some(file("ca.pem"));
    let output = within("ctl over https", run(ca(), &["stats"]).output())
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("fleetmq_connections_current 0"),
        "{output:?}"
    );
    let output = within("ctl over https", run(None, &["stats"]).output())
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--ca FILE"),
        "{output:?}"
    );
    // Reload re-reads the admin certificates; a broken file is reported and the
    // listener keeps the certificates it has.
    std::fs::write(file("server.pem"), "not a certificate\n").unwrap();
    let output = within("ctl reload", run(ca(), &["--json", "reload"]).output())
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["failures"][0]["part"], "admin TLS certificates",
        "{report}"
    );
    let output = within("ctl over https", run(ca(), &["stats"]).output())
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    // Plain HTTP to the TLS port gets no answer it could take for the API's.
    let plain = within(
        "ctl over http",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetmq"))
            .args(["ctl", "--url", &format!("http://{}", broker.admin), "stats"])
            .output(),
    )
    .await
    .unwrap();
    assert!(!plain.status.success(), "{plain:?}");
}
