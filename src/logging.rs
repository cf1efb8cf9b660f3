//! Logging: `tracing` events to standard error, as text (default; journald adds the
//! timestamps and the unit name) or one JSON object per line.
//!
//! The filter is `RUST_LOG` when set, else `log.level`. It sits behind a reload handle,
//! so SIGHUP can change `log.level` without a restart ([`LogHandle`] is a
//! `crate::reload::Reloadable`); while `RUST_LOG` is set it keeps precedence. Payloads are
//! never logged anywhere in the broker: they may carry customer data.

use std::io::{self, IsTerminal};

use anyhow::Context;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{Config, LogConfig, LogFormat};
use crate::reload::Reloadable;

/// Changes the log filter of the running process.
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    /// The `RUST_LOG` value in force, which `log.level` does not override.
    env_filter: Option<String>,
}

/// Installs the global subscriber. Call once, before the runtime starts.
pub fn init(log: &LogConfig) -> anyhow::Result<LogHandle> {
    let env_filter = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .filter(|value| !value.trim().is_empty());
    let filter = match &env_filter {
        Some(value) => EnvFilter::try_new(value)
            .with_context(|| format!("RUST_LOG={value:?} is not a valid log filter"))?,
        None => parse_level(&log.level)?,
    };
    let (filter, handle) = reload::Layer::new(filter);
    let output = match log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(io::stderr)
            // Colours only for a person at a terminal, not in journald or a log file.
            .with_ansi(io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .map_err(|err| anyhow::anyhow!("cannot set up logging: {err}"))?;
    Ok(LogHandle {
        filter: handle,
        env_filter,
    })
}

fn parse_level(level: &str) -> anyhow::Result<EnvFilter> {
    EnvFilter::try_new(level)
        .with_context(|| format!("log.level {level:?} is not a valid log filter"))
}

impl Reloadable for LogHandle {
    fn name(&self) -> &str {
        "log filter"
    }

    fn keys(&self) -> &[&str] {
        &["log.level"]
    }

    fn reload(&self, config: &Config) -> anyhow::Result<()> {
        if let Some(value) = &self.env_filter {
            tracing::info!(rust_log = %value, "RUST_LOG is set and keeps precedence over log.level");
            return Ok(());
        }
        let filter = parse_level(&config.log.level)?;
        self.filter
            .reload(filter)
            .context("cannot replace the log filter")
    }
}
