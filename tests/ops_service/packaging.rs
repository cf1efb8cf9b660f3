//! What the Debian package ships stays consistent with the broker: the packaged
//! configuration is the annotated default with only the data directory changed, the
//! dashboard queries metrics the broker exports, the unit keeps its service contract.

use std::path::PathBuf;

use fleetmq::config::{Config, DEFAULT_CONFIG_TOML};

fn deploy_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn the_packaged_config_is_the_default_with_the_state_directory() {
    let packaged = deploy_file("fleetmq.toml");
    let body = packaged
        .split_once("\n#\n")
        .map(|(_, body)| body)
        .expect("a header, then the annotated default");
    let expected = DEFAULT_CONFIG_TOML.replace(
        "\ndata_dir = \"data\"\n",
        "\ndata_dir = \"/var/lib/fleetmq\"\n",
    );
    assert_eq!(
        body, expected,
        "regenerate deploy/fleetmq.toml (see deploy/README.md)"
    );
    let config = Config::from_toml_str(&packaged, "deploy/fleetmq.toml").unwrap();
    let mut defaults = Config::default();
    defaults.storage.data_dir = "/var/lib/fleetmq".into();
    assert_eq!(config, defaults);
}

#[test]
fn the_dashboard_only_queries_exported_metrics() {
    let dashboard = deploy_file("grafana/fleetmq-dashboard.json");
    let mut used = Vec::new();
    let mut rest = dashboard.as_str();
    while let Some(start) = rest.find("fleetmq_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        used.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    assert!(used.len() > 20, "{used:?}");
    for name in used {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        assert!(
            fleetmq::metrics::names::ALL.contains(&family),
            "the dashboard uses {name}, which the broker does not export"
        );
    }
}

#[test]
fn the_unit_is_a_hardened_notify_service_that_checks_its_config() {
    let unit = deploy_file("fleetmq.service");
    for line in [
        "Type=notify",
        "ExecStartPre=/usr/bin/fleetmq check-config -c /etc/fleetmq/fleetmq.toml",
        "ExecReload=/usr/bin/fleetmq check-config -c /etc/fleetmq/fleetmq.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=fleetmq",
        "User=fleetmq",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line:?} missing");
    }
    let setting = |key: &str| -> u64 {
        unit.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} missing"))
    };
    assert!(setting("WatchdogSec=") >= 2);
    assert!(setting("LimitNOFILE=") >= 4096);
    // The service manager must wait longer than the broker's own shutdown.
    assert!(setting("TimeoutStopSec=") > Config::default().shutdown.grace_secs + 2);
}
