//! `fleetmq ctl`: the admin API (`crate::admin`) from the command line.
//!
//! The admin address and token come from the configuration file (`-c FILE`; default
//! the packaged `/etc/fleetmq/fleetmq.toml` when it exists, else the built-in defaults)
//! or from `--url` and `--token-file`. Each command is one request; the answer is
//! printed as a table (`table`), or with `--json` exactly as the API sent it. A refused
//! request prints the API's error and exits 1.

mod client;
mod table;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::config::Config;
use crate::http::percent_encode;

pub use client::{request, Answer, Endpoint};

/// The configuration file `ctl` reads when given none (the packaged one).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/fleetmq/fleetmq.toml";

#[derive(Debug, Clone, PartialEq, Args)]
pub struct CtlArgs {
    /// Configuration file to take the admin address and token from (default:
    /// /etc/fleetmq/fleetmq.toml when it exists).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Admin API URL, e.g. http://127.0.0.1:9884 (instead of the configuration's).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// File holding the bearer token (instead of the configuration's admin.token_file).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// CA certificate(s) an https admin listener's certificate chains to.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Print the API's JSON as it is, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum CtlCommand {
    /// List clients (sessions), connected or not.
    Clients {
        /// Only client ids starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Only clients authenticated as this user.
        #[arg(long)]
        username: Option<String>,
        /// Only connected clients.
        #[arg(long, conflicts_with = "offline")]
        connected: bool,
        /// Only clients not connected (offline sessions).
        #[arg(long)]
        offline: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// Show one client with its subscriptions.
    Client { id: String },
    /// Disconnect a client (MQTT 5: DISCONNECT 0x98 Administrative action).
    Kick {
        id: String,
        /// Also end its session: subscriptions, queued messages and stored state.
        #[arg(long)]
        discard_session: bool,
    },
    /// List subscriptions.
    Subscriptions {
        /// Only this client's.
        #[arg(long)]
        client: Option<String>,
        /// Only this exact filter.
        #[arg(long)]
        filter: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// List retained messages, or delete one.
    Retained {
        /// Topic filter.
        #[arg(long, default_value = "#")]
        filter: String,
        /// Show the payloads.
        #[arg(long)]
        payload: bool,
        /// Delete the retained message of this topic instead of listing.
        #[arg(long, value_name = "TOPIC", conflicts_with_all = ["payload"])]
        delete: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// Publish a message through the broker.
    Publish {
        topic: String,
        /// The payload (text); empty when left out.
        #[arg(default_value = "")]
        payload: String,
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
        qos: u8,
        #[arg(long)]
        retain: bool,
        /// MQTT 5 content type.
        #[arg(long)]
        content_type: Option<String>,
        /// MQTT 5 message expiry interval, seconds.
        #[arg(long)]
        message_expiry: Option<u32>,
        /// MQTT 5 user property NAME=VALUE (repeatable).
        #[arg(long = "user-property", value_name = "NAME=VALUE")]
        user_properties: Vec<String>,
    },
    /// Reload the configuration, certificates, passwords and ACLs (as SIGHUP does).
    Reload,
    /// Show the broker's counters and gauges.
    Stats,
}

/// Runs one `ctl` command; its own tokio runtime (one thread).
pub fn run(args: CtlArgs) -> anyhow::Result<()> {
    let endpoint = endpoint(&args)?;
    let (method, path, body) = to_request(&args.command)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let answer = runtime.block_on(request(&endpoint, method, &path, body.as_deref()))?;
    let value: Value = serde_json::from_slice(&answer.body).with_context(|| {
        format!(
            "the admin API answered {} with a body that is not JSON",
            answer.status
        )
    })?;
    let ok = (200..300).contains(&answer.status);
    if args.json {
        print(&format!("{}\n", String::from_utf8_lossy(&answer.body)))?;
    } else if ok {
        print(&table::render(&args.command, &value))?;
    }
    if !ok {
        let code = value["error"]["code"].as_str().unwrap_or("error");
        let message = value["error"]["message"].as_str().unwrap_or("");
        anyhow::bail!("{} {code}: {message}", answer.status);
    }
    Ok(())
}

/// The admin URL, token and CA from the flags, else from the configuration.
fn endpoint(args: &CtlArgs) -> anyhow::Result<Endpoint> {
    admin_endpoint(
        args.config.as_deref(),
        args.url.as_deref(),
        args.token_file.as_deref(),
        args.ca.clone(),
    )
}

/// Where the local broker's admin API is and its token: `url` and `token_file` when
/// given, else the configuration's `[admin]` (`config`, default the packaged file when
/// it exists, else the built-in defaults). `fleetmq ctl` and `fleetmq cluster` use it.
pub fn admin_endpoint(
    config: Option<&std::path::Path>,
    url: Option<&str>,
    token_file: Option<&std::path::Path>,
    ca: Option<PathBuf>,
) -> anyhow::Result<Endpoint> {
    let config = match config {
        Some(path) => Some(Config::from_file(path)?),
        None if std::path::Path::new(DEFAULT_CONFIG_PATH).exists() => {
            Some(Config::from_file(DEFAULT_CONFIG_PATH)?)
        }
        None => None,
    };
    let admin = config.map(|config| config.admin).unwrap_or_default();
    let token_file = token_file.map(PathBuf::from).or(admin.token_file.clone());
    let token = match token_file {
        Some(path) => Some(crate::config::read_token(&path).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let url = match url {
        Some(url) => url.to_string(),
        None => {
            anyhow::ensure!(
                admin.enabled,
                "the admin API is disabled in the configuration (admin.enabled = false)"
            );
            let scheme = if admin.tls.is_some() { "https" } else { "http" };
            // A wildcard bind is reached over loopback from this machine.
            let mut addr = admin.bind;
            if addr.ip().is_unspecified() {
                addr.set_ip(if addr.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            format!("{scheme}://{addr}")
        }
    };
    Endpoint::from_url(&url, token, ca)
}

type RequestParts = (&'static str, String, Option<Vec<u8>>);

/// The API request of a command.
fn to_request(command: &CtlCommand) -> anyhow::Result<RequestParts> {
    let api = "/api/v1";
    let query = |pairs: &[(&str, Option<String>)]| {
        let parts: Vec<String> = pairs
            .iter()
            .filter_map(|(name, value)| {
                value
                    .as_ref()
                    .map(|value| format!("{name}={}", percent_encode(value)))
            })
            .collect();
        parts.join("&")
    };
    Ok(match command {
        CtlCommand::Clients {
            prefix,
            username,
            connected,
            offline,
            limit,
            offset,
        } => {
            let state = match (connected, offline) {
                (true, _) => Some("true".to_string()),
                (_, true) => Some("false".to_string()),
                _ => None,
            };
            let query = query(&[
                ("prefix", prefix.clone()),
                ("username", username.clone()),
                ("connected", state),
                ("limit", Some(limit.to_string())),
                ("offset", Some(offset.to_string())),
            ]);
            ("GET", format!("{api}/clients?{query}"), None)
        }
        CtlCommand::Client { id } => ("GET", format!("{api}/clients/{}", percent_encode(id)), None),
        CtlCommand::Kick {
            id,
            discard_session,
        } => {
            let suffix = if *discard_session {
                "?session=discard"
            } else {
                ""
            };
            (
                "DELETE",
                format!("{api}/clients/{}{suffix}", percent_encode(id)),
                None,
            )
        }
        CtlCommand::Subscriptions {
            client,
            filter,
            limit,
            offset,
        } => {
            let query = query(&[
                ("client", client.clone()),
                ("filter", filter.clone()),
                ("limit", Some(limit.to_string())),
                ("offset", Some(offset.to_string())),
            ]);
            ("GET", format!("{api}/subscriptions?{query}"), None)
        }
        CtlCommand::Retained {
            delete: Some(topic),
            ..
        } => (
            "DELETE",
            format!("{api}/retained/{}", percent_encode(topic)),
            None,
        ),
        CtlCommand::Retained {
            filter,
            payload,
            limit,
            offset,
            delete: None,
        } => {
            let query = query(&[
                ("filter", Some(filter.clone())),
                ("payload", payload.then(|| "true".to_string())),
                ("limit", Some(limit.to_string())),
                ("offset", Some(offset.to_string())),
            ]);
            ("GET", format!("{api}/retained?{query}"), None)
        }
        CtlCommand::Publish {
            topic,
            payload,
            qos,
            retain,
            content_type,
            message_expiry,
            user_properties,
        } => {
            let mut properties = serde_json::Map::new();
            if let Some(content_type) = content_type {
                properties.insert("content_type".into(), json!(content_type));
            }
            if let Some(expiry) = message_expiry {
                properties.insert("message_expiry_interval".into(), json!(expiry));
            }
            if !user_properties.is_empty() {
                let pairs = user_properties
                    .iter()
                    .map(|pair| {
                        pair.split_once('=')
                            .map(|(name, value)| json!([name, value]))
                            .with_context(|| format!("--user-property {pair:?} is not NAME=VALUE"))
                    })
                    .collect::<anyhow::Result<Vec<Value>>>()?;
                properties.insert("user_properties".into(), Value::Array(pairs));
            }
            let body = json!({
                "topic": topic,
                "payload": payload,
                "qos": qos,
                "retain": retain,
                "properties": properties,
            });
            (
                "POST",
                format!("{api}/publish"),
                Some(serde_json::to_vec(&body)?),
            )
        }
        CtlCommand::Reload => ("POST", format!("{api}/reload"), None),
        CtlCommand::Stats => ("GET", format!("{api}/stats"), None),
    })
}

fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_become_api_requests() {
        let (method, path, _) = to_request(&CtlCommand::Kick {
            id: "dev/1".into(),
            discard_session: true,
        })
        .unwrap();
        assert_eq!(
            (method, path.as_str()),
            ("DELETE", "/api/v1/clients/dev%2F1?session=discard")
        );
        let (_, path, _) = to_request(&CtlCommand::Retained {
            filter: "a/#".into(),
            payload: true,
            delete: None,
            limit: 5,
            offset: 0,
        })
        .unwrap();
        assert_eq!(
            path,
            "/api/v1/retained?filter=a%2F%23&payload=true&limit=5&offset=0"
        );
        let (method, _, body) = to_request(&CtlCommand::Publish {
            topic: "t".into(),
            payload: "hi".into(),
            qos: 1,
            retain: true,
            content_type: None,
            message_expiry: None,
            user_properties: vec!["a=b".into()],
        })
        .unwrap();
        assert_eq!(method, "POST");
        let body: Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(body["properties"]["user_properties"], json!([["a", "b"]]));
    }
}
