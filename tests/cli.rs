//! The `fleetmq` binary as an operator uses it: printing and checking configurations,
//! and refusing to serve a bad one. Nothing here starts the broker.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};

use fleetmq::config::Config;

const SHIPPED_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/fleetmq.toml");

fn fleetmq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetmq"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the fleetmq binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A configuration file in its own temporary directory, removed when dropped.
struct ConfigFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfigFile {
    fn new(text: &str) -> ConfigFile {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("broker.toml");
        let mut file = std::fs::File::create(&path).expect("create config file");
        file.write_all(text.as_bytes()).expect("write config file");
        ConfigFile { _dir: dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("temporary paths are UTF-8")
    }
}

/// Asserts a clean failure: exit code 1, no panic, and every fragment in the message.
fn assert_fails_naming(output: &Output, fragments: &[&str]) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "stderr: {err}");
    assert!(stdout(output).is_empty(), "stdout: {}", stdout(output));
    for fragment in fragments {
        assert!(err.contains(fragment), "{fragment:?} missing from: {err}");
    }
}

#[test]
fn print_default_config_parses_back_to_the_defaults() {
    let output = fleetmq(&["print-default-config"]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let printed = stdout(&output);
    let shipped = std::fs::read_to_string(SHIPPED_CONFIG).expect("shipped config");
    assert_eq!(printed, shipped);
    let parsed = Config::from_toml_str(&printed, "print-default-config").expect("valid");
    assert_eq!(parsed, Config::default());
}

#[test]
fn check_config_accepts_the_shipped_config() {
    let output = fleetmq(&["check-config", "-c", SHIPPED_CONFIG]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!("configuration OK: {SHIPPED_CONFIG}\n")
    );
}

#[test]
fn check_config_accepts_a_partial_file() {
    let file = ConfigFile::new("[limits]\nmax_packet_size = 65536\n");
    let output = fleetmq(&["check-config", "--config", file.path()]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!("configuration OK: {}\n", file.path())
    );
}

#[test]
fn check_config_names_an_unknown_key_and_its_file() {
    let file = ConfigFile::new("[limits]\nmax_pakcet_size = 4096\n");
    let output = fleetmq(&["check-config", "-c", file.path()]);
    assert_fails_naming(
        &output,
        &[
            &format!("{}:2:1:", file.path()),
            "limits.max_pakcet_size",
            "unknown key 'max_pakcet_size' in [limits]",
            "did you mean 'max_packet_size'?",
        ],
    );
}

#[test]
fn check_config_names_a_key_with_the_wrong_type() {
    let file = ConfigFile::new("[limits]\nreceive_maximum = \"lots\"\n");
    let output = fleetmq(&["check-config", "-c", file.path()]);
    assert_fails_naming(
        &output,
        &[file.path(), "limits.receive_maximum", "invalid type"],
    );
}

#[test]
fn check_config_names_an_out_of_range_value() {
    let file = ConfigFile::new("[limits]\nmax_packet_size = 16\n");
    let output = fleetmq(&["check-config", "-c", file.path()]);
    assert_fails_naming(
        &output,
        &[
            &format!("{}:2: limits.max_packet_size", file.path()),
            "allowed: 128 to 268435455",
        ],
    );
}

#[test]
fn check_config_names_bridge_problems_with_their_line() {
    let file = ConfigFile::new(
        "[[bridges]]\nname = \"cloud\"\naddresses = [\"cloud.example.com\"]\n\n\
         [[bridges.topics]]\nfilter = \"telemetry/#\"\ndirection = \"out\"\nqos = 3\n",
    );
    let output = fleetmq(&["check-config", "-c", file.path()]);
    assert_fails_naming(
        &output,
        &[
            &format!("{}:3:", file.path()),
            "bridges[0].addresses[0]",
            "is not HOST:PORT",
            &format!("{}:8:", file.path()),
            "bridges[0].topics[0].qos",
        ],
    );
}

#[test]
fn check_config_reports_every_problem_at_once() {
    let file = ConfigFile::new(
        "[[listeners]]\ntype = \"tcp\"\nbind = \"127.0.0.1:1883\"\n\n\
         [[listeners]]\ntype = \"tcp\"\nbind = \"127.0.0.1:1883\"\n\n\
         [limits]\nconnect_timeout_secs = 0\n",
    );
    let output = fleetmq(&["check-config", "-c", file.path()]);
    assert_fails_naming(
        &output,
        &[
            "2 problems",
            &format!("{}:7: listeners[1].bind", file.path()),
            &format!("{}:10: limits.connect_timeout_secs", file.path()),
        ],
    );
}

#[test]
fn check_config_checks_the_proxy_protocol_settings() {
    let file = ConfigFile::new(
        "[[listeners]]\ntype = \"tcp\"\nbind = \"0.0.0.0:1883\"\nproxy_protocol = true\n\
         proxy_protocol_trusted = [\"10.0.0.5\", \"10.0.0.0/33\"]\n\n\
         [[listeners]]\ntype = \"tls\"\nbind = \"0.0.0.0:8883\"\nproxy_protocol = true\n\
         [listeners.tls]\ncert = \"s.pem\"\nkey = \"k.pem\"\n",
    );
    let output = fleetmq(&["check-config", "-c", file.path()]);
    assert_fails_naming(
        &output,
        &[
            "2 problems",
            &format!("{}:5: listeners[0].proxy_protocol_trusted[1]", file.path()),
            "the prefix length must be 0 to 32",
            "listeners[1].proxy_protocol_trusted",
        ],
    );
}

#[test]
fn check_config_names_a_missing_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let missing = dir.path().join("absent.toml");
    let missing = missing.to_str().expect("UTF-8 path");
    let output = fleetmq(&["check-config", "-c", missing]);
    assert_fails_naming(
        &output,
        &[missing, "cannot read", "No such file or directory"],
    );
}

#[test]
fn serve_refuses_a_bad_config_before_starting() {
    let file = ConfigFile::new("[log]\nlevel = \"info\"\ncolor = true\n");
    for args in [
        &["-c", file.path()][..],
        &["serve", "--config", file.path()],
    ] {
        let output = fleetmq(args);
        assert_fails_naming(&output, &[file.path(), "log.color", "unknown key"]);
        assert!(!stderr(&output).contains("starting"), "{}", stderr(&output));
    }
}

#[test]
fn serve_refuses_flags_that_make_the_config_invalid() {
    let output = fleetmq(&[
        "serve",
        "--bind",
        "127.0.0.1:1883",
        "--bind",
        "127.0.0.1:1883",
        "--log-level",
        "info,fleetmq=chatty",
    ]);
    assert_fails_naming(
        &output,
        &[
            "command line: invalid configuration, 2 problems",
            "listeners[1].bind",
            "log.level",
        ],
    );
}

#[test]
fn usage_errors_are_reported_by_clap() {
    let output = fleetmq(&["check-config"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--config <FILE>"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn version_is_printed() {
    let output = fleetmq(&["--version"]);
    assert!(output.status.success());
    assert_eq!(
        stdout(&output),
        format!("fleetmq {}\n", env!("CARGO_PKG_VERSION"))
    );
}

/// CI must run the very test command the README gives developers, and the README must
/// promise what the binary does with no configuration.
#[test]
fn readme_and_ci_agree_on_the_commands() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let ci = std::fs::read_to_string(format!("{root}/.ci/run")).expect(".ci/run");
    assert!(readme.contains("```sh\ncargo test\n```"));
    assert!(ci.lines().any(|line| line == "run cargo test"), "{ci}");
    assert!(readme.contains("```sh\ncargo run --release\n```"));
    let default_bind = fleetmq::limits::DEFAULT_BIND;
    assert!(readme.contains(&format!("listens on `{default_bind}`")));
}

/// The permission bits of `path`.
fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("file exists").mode() & 0o7777
}

#[test]
fn passwd_and_gen_certs_keep_an_existing_files_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temporary directory");
    let passwd = dir.path().join("passwd");
    let path = passwd.to_str().expect("UTF-8 path");
    // A new password file is readable by its group (the service's), not by others.
    let set = |user: &str| {
        let output = fleetmq(&["passwd", path, user, "secret-pw", "--iterations", "4096"]);
        assert!(output.status.success(), "stderr: {}", stderr(&output));
    };
    set("alice");
    assert_eq!(mode_of(&passwd), 0o640);
    // An administrator's choice survives a rewrite.
    for mode in [0o640, 0o600, 0o660] {
        std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(mode)).unwrap();
        set("bob");
        assert_eq!(mode_of(&passwd), mode, "after passwd set");
    }
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o640)).unwrap();
    let output = fleetmq(&["passwd", "-D", path, "bob"]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_eq!(mode_of(&passwd), 0o640, "after passwd -D");
    let text = std::fs::read_to_string(&passwd).unwrap();
    assert!(
        text.starts_with("alice:") && !text.contains("bob:"),
        "{text}"
    );

    // gen-certs: new keys 0600, certificates 0644; regenerated files keep their modes.
    let certs = dir.path().join("certs");
    let out = certs.to_str().expect("UTF-8 path");
    let generate = || {
        let output = fleetmq(&["gen-certs", "--out", out, "--client", "dev"]);
        assert!(output.status.success(), "stderr: {}", stderr(&output));
    };
    generate();
    assert_eq!(mode_of(&certs.join("server.key")), 0o600);
    assert_eq!(mode_of(&certs.join("dev.key")), 0o600);
    assert_eq!(mode_of(&certs.join("server.pem")), 0o644);
    std::fs::set_permissions(
        certs.join("server.key"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let before = std::fs::read(certs.join("server.key")).unwrap();
    generate();
    assert_ne!(std::fs::read(certs.join("server.key")).unwrap(), before);
    assert_eq!(mode_of(&certs.join("server.key")), 0o640);
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&certs)
        .unwrap()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn check_config_reads_the_tls_files_and_the_crl() {
    use fleetmq::certs::{validity, Authority};
    let dir = tempfile::tempdir().expect("temporary directory");
    let ca = Authority::new("check CA", 10).unwrap();
    let server = ca.issue_server(&["localhost".into()], 10).unwrap();
    let (not_before, not_after) = validity(10);
    let client = ca.issue_client("dev", not_before, not_after).unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("ca.pem", ca.cert_pem());
    write("server.pem", &server.cert);
    write("server.key", &server.key);
    write(
        "crl.pem",
        &ca.revocation_list(&[client.serial], 10).unwrap(),
    );
    let config = |crl: &str| {
        ConfigFile::new(&format!(
            "[[listeners]]\ntype = \"tls\"\nbind = \"127.0.0.1:8883\"\n\
             [listeners.tls]\ncert = \"{0}/server.pem\"\nkey = \"{0}/server.key\"\n\
             ca = \"{0}/ca.pem\"\nclient_auth = \"require\"\ncrl = \"{0}/{crl}\"\n",
            dir.path().display()
        ))
    };
    let good = config("crl.pem");
    let output = fleetmq(&["check-config", "-c", good.path()]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let missing = config("missing.pem");
    assert_fails_naming(
        &fleetmq(&["check-config", "-c", missing.path()]),
        &["listeners[0].tls", "missing.pem"],
    );
    write(
        "garbage.pem",
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    );
    let garbage = config("garbage.pem");
    assert_fails_naming(
        &fleetmq(&["check-config", "-c", garbage.path()]),
        &["listeners[0].tls", "garbage.pem", "revocation list"],
    );
}

/// An unknown `cipher_preference` is named with its line and the values that exist;
/// each of those passes `check-config` with real certificate files.
#[test]
fn check_config_names_an_unknown_cipher_preference_and_accepts_the_known_ones() {
    let file = ConfigFile::new(
        "[[listeners]]\ntype = \"tls\"\nbind = \"127.0.0.1:8883\"\n\
         [listeners.tls]\ncert = \"s.pem\"\nkey = \"k.pem\"\ncipher_preference = \"chacha\"\n",
    );
    let output = fleetmq(&["check-config", "-c", file.path()]);
    assert_fails_naming(
        &output,
        &[
            &format!("{}:7:", file.path()),
            "listeners[0].tls.cipher_preference",
            "unknown value 'chacha'; expected one of \"aes\", \"chacha20\", \"client\"",
        ],
    );

    let dir = tempfile::tempdir().expect("temporary directory");
    let ca = fleetmq::certs::Authority::new("check CA", 10).unwrap();
    let server = ca.issue_server(&["localhost".into()], 10).unwrap();
    std::fs::write(dir.path().join("server.pem"), &server.cert).unwrap();
    std::fs::write(dir.path().join("server.key"), &server.key).unwrap();
    for preference in ["aes", "chacha20", "client"] {
        let file = ConfigFile::new(&format!(
            "[[listeners]]\ntype = \"tls\"\nbind = \"127.0.0.1:8883\"\n\
             [listeners.tls]\ncert = \"{0}/server.pem\"\nkey = \"{0}/server.key\"\n\
             cipher_preference = \"{preference}\"\n",
            dir.path().display()
        ));
        let output = fleetmq(&["check-config", "-c", file.path()]);
        assert!(
            output.status.success(),
            "{preference}: stderr: {}",
            stderr(&output)
        );
    }
}
