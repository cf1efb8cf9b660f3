//! The `fleetmq` executable: command line → configuration → logging → runtime →
//! broker, until SIGINT or SIGTERM; SIGHUP reloads the configuration, certificates,
//! passwords and ACLs. Any start-up error ends here, printed once, with exit code 1.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use fleetmq::admin::{AdminContext, ListenerView, Reloader};
use fleetmq::broker::Broker;
use fleetmq::cli::{Cli, Command, ServeArgs, SignalAction, Signals};
use fleetmq::config::{Config, DEFAULT_CONFIG_TOML};
use fleetmq::http::server::HttpServer;
use fleetmq::metrics::endpoint::MetricsEndpoint;
use fleetmq::reload::ReloadReport;
use fleetmq::server::{SecurityFiles, ServerHandle};
use fleetmq::systemd::Notifier;

/// Time allowed, beyond `shutdown.grace_secs`, for the last steps of shutdown (closing
/// aborted connections, stopping timers) before the process exits regardless.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(2);

/// jemalloc rather than glibc's malloc: a quarter less CPU per replicated message (glibc
/// spent a fifth of a replicating node's time in malloc and free, consolidating chunks
/// that the link's and the store's buffers of every size leave behind) and 15% less
/// memory per idle connection (no header per allocation); BENCHMARKS.md, "Allocator".
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    match run(Cli::parse().into_command()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fleetmq: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::PrintDefaultConfig => print(DEFAULT_CONFIG_TOML),
        Command::CheckConfig(args) => {
            let config = Config::from_file(&args.config)?;
            // The TLS files are read as the broker would read them.
            let problems = fleetmq::listener::check_tls_files(&config);
            if !problems.is_empty() {
                anyhow::bail!(
                    "{}: TLS files of the configuration are not usable:\n  {}",
                    args.config.display(),
                    problems.join("\n  ")
                );
            }
            print(&format!("configuration OK: {}\n", args.config.display()))
        }
        Command::Passwd(args) => {
            use fleetmq::auth::passwd_tool::{self, PasswdAction};
            let password = || match &args.password {
                Some(password) => Ok(password.clone()),
                None => passwd_tool::read_password(&mut std::io::stdin().lock()),
            };
            let action = if args.delete {
                PasswdAction::Delete
            } else if args.verify {
                PasswdAction::Verify {
                    password: password()?,
                }
            } else {
                PasswdAction::Set {
                    password: password()?,
                    iterations: args.iterations,
                }
            };
            let done = passwd_tool::run(&args.file, &args.username, action)?;
            print(&format!("{done}\n"))
        }
        Command::GenCerts(args) => {
            let written =
                fleetmq::certs::generate(&args.out, &args.hosts, &args.clients, args.days)?;
            let mut text = String::new();
            for path in written {
                text.push_str(&format!("wrote {}\n", path.display()));
            }
            print(&text)
        }
        Command::Ctl(args) => fleetmq::ctl::run(args),
        Command::Cluster(args) => print(&fleetmq::cluster::command::run(&args)?),
        Command::Serve(args) => {
            let config = args.load_config()?;
            let log = fleetmq::logging::init(&config.log)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(serve(args, config, log))
        }
    }
}

async fn serve(
    args: ServeArgs,
    config: Config,
    log: fleetmq::logging::LogHandle,
) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let notifier = Notifier::from_env();
    tracing::info!("fleetmq {} starting", env!("CARGO_PKG_VERSION"));
    let handle = fleetmq::server::start(config.clone())
        .await
        .context("cannot start the broker")?;
    handle.broker().add_reloadable(Arc::new(log));
    let metrics = if config.metrics.enabled {
        match fleetmq::metrics::endpoint::start(config.metrics.bind, handle.broker().clone()).await
        {
            Ok(endpoint) => Some(endpoint),
            Err(error) => {
                handle.shutdown().await;
                return Err(error);
            }
        }
    } else {
        None
    };
    let reloader: Reloader = {
        let args = args.clone();
        let broker = handle.broker().clone();
        let files = handle.security_files();
        // SIGHUP and the admin API may ask at the same time: one reload at a time.
        let one_at_a_time = std::sync::Mutex::new(());
        Arc::new(move || {
            let _turn = one_at_a_time
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            reload(&args, &broker, &files)
        })
    };
    let admin = if config.admin.enabled {
        let listeners = config
            .listeners
            .iter()
            .zip(handle.listener_addrs())
            .map(|(listener, address)| ListenerView {
                kind: listener.kind,
                bind: listener.bind,
                address,
            })
            .collect();
        let cluster = handle.cluster_admin();
        let mut providers: Vec<Arc<dyn fleetmq::admin::StatusProvider>> = Vec::new();
        if !config.bridges.is_empty() {
            providers.push(handle.bridges().clone());
        }
        if let Some(cluster) = &cluster {
            providers.push(Arc::new(fleetmq::admin::ClusterSection(cluster.clone())));
        }
        let context = AdminContext {
            broker: handle.broker().clone(),
            reload: reloader.clone(),
            listeners,
            metrics: metrics.as_ref().map(MetricsEndpoint::local_addr),
            providers,
            cluster,
        };
        match fleetmq::admin::start(&config.admin, context).await {
            Ok(admin) => Some(admin),
            Err(error) => {
                handle.shutdown().await;
                return Err(error);
            }
        }
    } else {
        None
    };
    let status = ready_status(&handle, metrics.as_ref(), admin.as_ref(), &config);
    tracing::info!("ready, {status}");
    notifier.ready(&status);

    let mut watchdog = notifier.watchdog_interval().map(tokio::time::interval);
    let signal = loop {
        let tick = async {
            match watchdog.as_mut() {
                Some(interval) => interval.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            action = signals.recv() => match action {
                SignalAction::Stop(name) => break name,
                SignalAction::Reload => {
                    notifier.reloading();
                    tracing::info!("SIGHUP received");
                    let _ = reloader();
                    notifier.ready(&status);
                }
            },
            _ = tick => {
                if handle.is_healthy() {
                    notifier.watchdog();
                } else {
                    tracing::error!("a broker task has stopped; withholding the watchdog ping so the service manager restarts the broker");
                }
            }
        }
    };
    tracing::info!("{signal} received, shutting down");
    notifier.stopping();
    let grace = Duration::from_secs(handle.broker().config().shutdown.grace_secs);
    let stopped = tokio::time::timeout(grace + SHUTDOWN_MARGIN, async {
        handle.shutdown().await;
        if let Some(metrics) = metrics {
            metrics.stopped().await;
        }
        if let Some(admin) = admin {
            admin.stopped().await;
        }
    })
    .await;
    if stopped.is_err() {
        tracing::warn!("shutdown took longer than its grace period; exiting anyway");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Re-reads the configuration file with the command-line flags on top, as at start,
/// and the files it names (SIGHUP and the admin API's reload). A bad configuration file
/// is logged and changes nothing; its error is returned.
fn reload(
    args: &ServeArgs,
    broker: &Broker,
    files: &SecurityFiles,
) -> Result<ReloadReport, String> {
    tracing::info!("reloading the configuration, certificates, passwords and ACLs");
    let outcome = match args.load_config() {
        Ok(config) => {
            let report = fleetmq::reload::reload(broker, config);
            report.log();
            Ok(report)
        }
        Err(error) => {
            tracing::error!(
                "configuration not reloaded, still running with the previous one: {error:#}"
            );
            Err(format!("{error:#}"))
        }
    };
    // Certificates, the password file and the ACL file are re-read even when the
    // configuration file is unchanged: rotating a certificate should not need an edit.
    // Failures are logged there and keep the files in force.
    let file_errors = files.reload();
    outcome.map(|mut report| {
        report.failures.extend(
            file_errors
                .into_iter()
                .map(|error| ("security files".to_string(), error)),
        );
        report
    })
}

fn ready_status(
    handle: &ServerHandle,
    metrics: Option<&MetricsEndpoint>,
    admin: Option<&HttpServer>,
    config: &Config,
) -> String {
    let addrs: Vec<String> = handle
        .listener_addrs()
        .iter()
        .map(|a| a.to_string())
        .collect();
    let mut status = format!("listening on {}", addrs.join(", "));
    if let Some(metrics) = metrics {
        status.push_str(&format!(
            "; metrics on http://{}/metrics",
            metrics.local_addr()
        ));
    }
    if let Some(admin) = admin {
        let scheme = if config.admin.tls.is_some() {
            "https"
        } else {
            "http"
        };
        status.push_str(&format!("; admin on {scheme}://{}/", admin.local_addr()));
    }
    status
}

/// Writes to stdout, turning a closed pipe (`fleetmq print-default-config | head`) into
/// an error message instead of the panic `print!` would raise.
fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")
}
