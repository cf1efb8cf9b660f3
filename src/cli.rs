//! Command line: `fleetmq [serve] | check-config | print-default-config | passwd |
//! gen-certs | ctl | cluster`, and the start-up steps `main` strings together (configuration, the
//! signals it serves by).
//!
//! `serve` is the default, so `fleetmq -c FILE` runs the broker. Flags override the file;
//! `--bind` replaces the configured listeners, like `mosquitto -p`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::config::{Config, ListenerConfig, ListenerKind};

/// Where problems introduced by flags are reported from: the file, if any, was already
/// valid on its own.
const FLAGS_ORIGIN: &str = "command line";

#[derive(Debug, Parser)]
#[command(
    name = "fleetmq",
    version,
    about = "An MQTT 3.1, 3.1.1 and 5.0 broker for IoT fleets",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Options of `serve`, accepted without the subcommand name.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, PartialEq, Subcommand)]
pub enum Command {
    /// Run the broker (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Check a configuration file and list every problem, without starting the broker.
    CheckConfig(CheckConfigArgs),
    /// Print the annotated default configuration, a starting point for your own file.
    PrintDefaultConfig,
    /// Add, update, delete or verify a user in a password file.
    Passwd(PasswdArgs),
    /// Write a development CA and server and client certificates (not for production).
    GenCerts(GenCertsArgs),
    /// Inspect and manage a running broker through its admin API.
    Ctl(crate::ctl::CtlArgs),
    /// Show or change the cluster this node belongs to (`[cluster]`).
    Cluster(crate::cluster::command::ClusterArgs),
}

#[derive(Debug, Clone, PartialEq, Args)]
pub struct PasswdArgs {
    /// Password file (created if missing).
    pub file: PathBuf,
    /// Username (may not contain ':').
    pub username: String,
    /// The password; read from the first line of standard input when omitted (so it
    /// does not show up in the process list or shell history).
    pub password: Option<String>,
    /// Delete the user instead of setting the password.
    #[arg(short = 'D', long, conflicts_with_all = ["verify", "password"])]
    pub delete: bool,
    /// Check the password against the file instead of setting it; exits 1 if it is wrong.
    #[arg(long)]
    pub verify: bool,
    /// PBKDF2 iterations for the new entry.
    #[arg(long, default_value_t = crate::auth::password::DEFAULT_ITERATIONS,
          value_parser = clap::value_parser!(u32).range(4096..=10_000_000))]
    pub iterations: u32,
}

#[derive(Debug, Clone, PartialEq, Args)]
pub struct GenCertsArgs {
    /// Directory for the files.
    #[arg(long, value_name = "DIR", default_value = "certs")]
    pub out: PathBuf,
    /// DNS names and IP addresses of the server certificate.
    #[arg(long = "host", value_name = "NAME", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])]
    pub hosts: Vec<String>,
    /// Common Names of client certificates to issue (one file pair each).
    #[arg(long = "client", value_name = "CN", default_values_t = ["client".to_string()])]
    pub clients: Vec<String>,
    /// Validity in days.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML). Without one, the defaults apply (see print-default-config).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen on ADDR:PORT (plain TCP) instead of the configured listeners. Repeat for
    /// several ports.
    #[arg(long, value_name = "ADDR:PORT")]
    pub bind: Vec<SocketAddr>,
    /// Directory for durable state (overrides storage.data_dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log filter, e.g. "debug" or "info,fleetmq=trace" (overrides log.level; RUST_LOG
    /// overrides both).
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Serve Prometheus metrics on ADDR:PORT (overrides metrics.bind and enables them).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_bind: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Args)]
pub struct CheckConfigArgs {
    /// Configuration file to check.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
}

impl Cli {
    /// The subcommand to run; `serve` with the top-level options when none was named.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
    }
}

impl ServeArgs {
    /// The configuration to serve: the file (or the defaults), then the flags on top,
    /// validated again so a flag cannot bring in what the file could not.
    pub fn load_config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if self.apply_to(&mut config) {
            config.validate(FLAGS_ORIGIN)?;
        }
        Ok(config)
    }

    /// Applies the flags to `config`; returns whether any was given.
    pub fn apply_to(&self, config: &mut Config) -> bool {
        let mut changed = false;
        if !self.bind.is_empty() {
            config.listeners = self
                .bind
                .iter()
                .map(|bind| ListenerConfig::new(ListenerKind::Tcp, *bind))
                .collect();
            changed = true;
        }
        if let Some(data_dir) = &self.data_dir {
            config.storage.data_dir = data_dir.clone();
            changed = true;
        }
        if let Some(level) = &self.log_level {
            config.log.level = level.clone();
            changed = true;
        }
        if let Some(bind) = self.metrics_bind {
            config.metrics.enabled = true;
            config.metrics.bind = bind;
            changed = true;
        }
        changed
    }
}

/// What a signal asks the broker to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalAction {
    /// SIGHUP: re-read the configuration file.
    Reload,
    /// SIGINT or SIGTERM (named): shut down.
    Stop(&'static str),
}

/// SIGINT, SIGTERM and SIGHUP, registered before the broker starts so that a signal
/// arriving during start-up is handled (a stop still leads to a clean shutdown) rather
/// than taking the default action, which for all three is to die at once.
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    /// Must be called inside a tokio runtime.
    pub fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            hangup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }

    /// Waits for the next signal.
    pub async fn recv(&mut self) -> SignalAction {
        tokio::select! {
            _ = self.interrupt.recv() => SignalAction::Stop("SIGINT"),
            _ = self.terminate.recv() => SignalAction::Stop("SIGTERM"),
            _ = self.hangup.recv() => SignalAction::Reload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Command {
        let argv = std::iter::once("fleetmq").chain(args.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(cli) => cli.into_command(),
            Err(err) => panic!("{args:?} should parse: {err}"),
        }
    }

    fn serve_args(args: &[&str]) -> ServeArgs {
        match parse(args) {
            Command::Serve(serve) => serve,
            other => panic!("{args:?} should mean serve, got {other:?}"),
        }
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn no_arguments_serve_the_defaults() {
        assert_eq!(parse(&[]), Command::Serve(ServeArgs::default()));
        let config = ServeArgs::default().load_config().unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn serve_options_work_with_and_without_the_subcommand() {
        let args = [
            "-c",
            "fleetmq.toml",
            "--bind",
            "0.0.0.0:1883",
            "--bind",
            "[::]:1884",
            "--data-dir",
            "/var/lib/fleetmq",
            "--log-level",
            "debug",
            "--metrics-bind",
            "0.0.0.0:9883",
        ];
        let implicit = serve_args(&args);
        let explicit = serve_args(&[&["serve"], &args[..]].concat());
        assert_eq!(implicit, explicit);
        assert_eq!(implicit.config, Some(PathBuf::from("fleetmq.toml")));
        assert_eq!(implicit.bind.len(), 2);
        assert_eq!(implicit.data_dir, Some(PathBuf::from("/var/lib/fleetmq")));
        assert_eq!(implicit.log_level.as_deref(), Some("debug"));
        assert_eq!(implicit.metrics_bind, Some("0.0.0.0:9883".parse().unwrap()));
        assert_eq!(
            serve_args(&["--config", "a.toml"]).config,
            Some(PathBuf::from("a.toml"))
        );
    }

    #[test]
    fn other_subcommands_parse() {
        assert_eq!(
            parse(&["print-default-config"]),
            Command::PrintDefaultConfig
        );
        assert_eq!(
            parse(&["check-config", "-c", "x.toml"]),
            Command::CheckConfig(CheckConfigArgs {
                config: PathBuf::from("x.toml")
            })
        );
    }

    #[test]
    fn malformed_command_lines_are_rejected() {
        for args in [
            &["check-config"][..],
            &["--bind", "localhost"],
            &["--bind", "1.2.3.4"],
            &["--metrics-bind", "localhost"],
            &["--unknown"],
            &["-c", "a.toml", "check-config", "-c", "b.toml"],
        ] {
            let argv = std::iter::once("fleetmq").chain(args.iter().copied());
            assert!(Cli::try_parse_from(argv).is_err(), "{args:?} should fail");
        }
    }

    #[test]
    fn bind_replaces_every_configured_listener() {
        let mut config = Config::default();
        config
            .listeners
            .push(ListenerConfig::tcp("0.0.0.0:1884".parse().unwrap()));
        let args = serve_args(&["--bind", "127.0.0.1:2883"]);
        assert!(args.apply_to(&mut config));
        assert_eq!(
            config.listeners,
            [ListenerConfig::tcp("127.0.0.1:2883".parse().unwrap())]
        );
    }

    #[test]
    fn flags_override_the_file_and_absent_flags_keep_it() {
        let mut config = Config::default();
        config.storage.data_dir = "/srv/broker".into();
        config.log.level = "warn".into();
        assert!(!ServeArgs::default().apply_to(&mut config));
        assert_eq!(config.storage.data_dir, PathBuf::from("/srv/broker"));
        let args = serve_args(&["--log-level", "trace"]);
        assert!(args.apply_to(&mut config));
        assert_eq!(config.log.level, "trace");
        assert_eq!(config.storage.data_dir, PathBuf::from("/srv/broker"));
    }

    #[test]
    fn problems_brought_in_by_flags_are_reported() {
        let args = serve_args(&["--bind", "127.0.0.1:1883", "--bind", "127.0.0.1:1883"]);
        let err = args.load_config().unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("command line: listeners[1].bind: 127.0.0.1:1883 is already used"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_config_file_is_an_error_naming_it() {
        let args = serve_args(&["-c", "/nonexistent/broker.toml"]);
        let text = format!("{:#}", args.load_config().unwrap_err());
        assert!(
            text.starts_with("/nonexistent/broker.toml: cannot read"),
            "{text}"
        );
    }
}
