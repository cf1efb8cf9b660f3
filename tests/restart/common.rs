//! The real `fleetmq` binary, started and stopped several times on one data directory.
//!
//! A [`Node`] is what outlives each broker process: a configuration file and a data
//! directory in a temporary directory the test owns. Each [`Node::start`] runs a fresh
//! process on them and waits for READY=1 on a notify socket the test owns; the STATUS
//! line of that notification names the listener (`127.0.0.1:0`, so a new port on every
//! start). A [`Broker`] is one such process, stopped with SIGTERM (exit status 0 expected)
//! or SIGKILL.
//!
//! Every wait is bounded by `WAIT`, so a broken broker fails a test instead of hanging it.
//! When a test fails, the standard error of each broker process it ran is printed.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};

pub const WAIT: Duration = Duration::from_secs(10);

pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// How the broker keeps its state.
#[derive(Debug, Clone)]
pub struct Settings {
    pub persistence: bool,
    /// `always`, `batch` or `never`.
    pub sync: &'static str,
    /// Give the data directory as `--data-dir` instead of `storage.data_dir`.
    pub data_dir_flag: bool,
    /// `sessions.persistent_session_expiry_secs` (3.x sessions); 0: never.
    pub persistent_session_expiry_secs: u32,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            persistence: true,
            sync: "batch",
            data_dir_flag: false,
            persistent_session_expiry_secs: 0,
        }
    }
}

impl Settings {
    pub fn sync(sync: &'static str) -> Settings {
        Settings {
            sync,
            ..Settings::default()
        }
    }
}

/// The configuration file and data directory that every broker process of a test uses.
pub struct Node {
    dir: tempfile::TempDir,
    pub data_dir: PathBuf,
    config_path: PathBuf,
    settings: Settings,
    /// Broker processes started so far (names their notify sockets and logs).
    starts: usize,
}

impl Node {
    pub fn new(settings: Settings) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let config_path = dir.path().join("fleetmq.toml");
        let mut config = format!(
            "[[listeners]]\n\
             type = \"tcp\"\n\
             bind = \"127.0.0.1:0\"\n\
             allow_anonymous = true\n\
             \n\
             [limits]\n\
             max_publish_rate = 1000000\n\
             max_queued_messages = 100000\n\
             \n\
             [sessions]\n\
             persistent_session_expiry_secs = {expiry}\n\
             \n\
             [storage]\n\
             persistence = {persistence}\n\
             sync = \"{sync}\"\n",
            expiry = settings.persistent_session_expiry_secs,
            persistence = settings.persistence,
            sync = settings.sync,
        );
        if !settings.data_dir_flag {
            config.push_str(&format!(
                "data_dir = {:?}\n",
                data_dir.display().to_string()
            ));
        }
        config.push_str(
            "\n[metrics]\nenabled = false\n\n[admin]\nenabled = false\n\n[sys]\ninterval_secs = 0\n\n[shutdown]\ngrace_secs = 2\n",
        );
        std::fs::write(&config_path, config).unwrap();
        Node {
            dir,
            data_dir,
            config_path,
            settings,
            starts: 0,
        }
    }

    /// Starts a broker process without waiting for it to be ready.
    fn spawn(&mut self) -> Spawned {
        self.starts += 1;
        let notify_path = self.dir.path().join(format!("notify-{}.sock", self.starts));
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        let log_path = self.dir.path().join(format!("broker-{}.log", self.starts));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_fleetmq"));
        command.arg("-c").arg(&self.config_path);
        if self.settings.data_dir_flag {
            command.arg("--data-dir").arg(&self.data_dir);
        }
        let child = command
            .env_remove("RUST_LOG")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Spawned {
            child,
            notify,
            log_path,
        }
    }

    /// Starts a broker on this node and waits until it is ready (state restored,
    /// listener open).
    pub async fn start(&mut self) -> Broker {
        let Spawned {
            mut child,
            notify,
            log_path,
        } = self.spawn();
        let ready = within("READY=1 from the broker", async {
            let mut buf = vec![0u8; 4096];
            loop {
                tokio::select! {
                    received = notify.recv(&mut buf) => {
                        let message = String::from_utf8_lossy(&buf[..received.unwrap()]).into_owned();
                        if message.lines().any(|line| line == "READY=1") {
                            return message;
                        }
                    }
                    status = child.wait() => panic!(
                        "the broker exited before READY=1 ({}); its standard error:\n{}",
                        status.unwrap(),
                        read_log(&log_path)
                    ),
                }
            }
        })
        .await;
        let status = ready
            .lines()
            .find_map(|line| line.strip_prefix("STATUS="))
            .unwrap_or_else(|| panic!("READY without STATUS: {ready:?}"))
            .to_string();
        let addr = address_after(&status, "listening on ")
            .unwrap_or_else(|| panic!("no listener address in {status:?}"));
        Broker {
            child,
            addr,
            log_path,
            stopped: false,
        }
    }

    /// Starts a broker that must refuse to start: it exits with a non-zero status and
    /// never reports READY=1. Returns its exit status and standard error.
    pub async fn start_refused(&mut self) -> (ExitStatus, String) {
        let Spawned {
            mut child,
            notify,
            log_path,
        } = self.spawn();
        let status = within("the broker to exit", child.wait()).await.unwrap();
        let log = read_log(&log_path);
        let mut buf = vec![0u8; 4096];
        while let Ok(received) = notify.try_recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..received]);
            assert!(
                !message.lines().any(|line| line == "READY=1"),
                "a broker that exits ({status}) must not report READY=1; its standard error:\n{log}"
            );
        }
        assert!(
            !status.success() && status.code().is_some(),
            "expected a non-zero exit status, got {status}; standard error:\n{log}"
        );
        (status, log)
    }

    /// Starts a broker and kills it with SIGKILL at once, most likely while it opens the
    /// database or restores its state.
    pub async fn start_and_kill_at_once(&mut self) {
        let mut spawned = self.spawn();
        spawned.child.start_kill().unwrap();
        within("the broker to die", spawned.child.wait())
            .await
            .unwrap();
    }

    /// The directory RocksDB keeps its files in: the data directory or the one directory
    /// below it that holds a `CURRENT` file.
    pub fn database_dir(&self) -> PathBuf {
        find_database(&self.data_dir).unwrap_or_else(|| {
            panic!(
                "no RocksDB database (a CURRENT file) under {}",
                self.data_dir.display()
            )
        })
    }
}

struct Spawned {
    child: Child,
    notify: UnixDatagram,
    log_path: PathBuf,
}

fn find_database(dir: &Path) -> Option<PathBuf> {
    if dir.join("CURRENT").is_file() {
        return Some(dir.to_path_buf());
    }
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .find_map(|entry| find_database(&entry.path()))
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The first `ADDR:PORT` after `marker` in `status`.
fn address_after(status: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &status[status.find(marker)? + marker.len()..];
    let end = rest.find([',', ';', '/']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// One running broker process.
pub struct Broker {
    child: Child,
    pub addr: SocketAddr,
    log_path: PathBuf,
    stopped: bool,
}

impl Broker {
    /// Sends SIGTERM and waits for the process to exit with status 0.
    pub async fn terminate(mut self) {
        self.signal("TERM");
        let status = self.wait().await;
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM must stop the broker with exit status 0 ({status}); standard error:\n{}",
            self.log()
        );
    }

    /// Kills the process with SIGKILL: no shutdown, no flush.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let status = self.wait().await;
        assert_eq!(status.signal(), Some(9), "{status}");
    }

    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("the broker runs").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self) -> ExitStatus {
        let status = within("the broker to exit", self.child.wait())
            .await
            .unwrap();
        self.stopped = true;
        status
    }

    /// What this process wrote to standard error so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- standard error of the broker on {} ---\n{}",
                self.addr,
                self.log()
            );
        } else {
            assert!(
                self.stopped,
                "stop each broker explicitly (terminate or kill)"
            );
        }
    }
}
