//! The operator's console: a JSON API under `/api/v1/`, the dashboard page at `/`, and
//! `/health` + `/ready`, on the admin listener (`[admin]`, loopback 9884 by default).
//! `fleetmq ctl` (`crate::ctl`) is its command-line client.
//!
//! - `http` (`crate::http`) frames requests with bounded heads and bodies and serves a
//!   bounded number of connections at once; this module is its `Handler`.
//! - `routes` maps method and path to the handlers of each area: `clients` (list,
//!   inspect, kick, subscriptions), `messages` (retained messages, publish), `system`
//!   (stats, listeners, config, reload, health, status sections of other subsystems).
//! - Every request but `/`, `/health` and `/ready` needs `Authorization: Bearer TOKEN`
//!   when `admin.token_file` is set; a bad or missing token gets 401 and nothing else.
//!   The dashboard page itself holds no data: it asks for the token and sends it with
//!   each of its requests.
//! - Cross-site requests are refused: POST bodies must be `application/json` (415
//!   otherwise), which a browser sends cross-site only after a CORS preflight this API
//!   never grants; without a token, `Host` must be an IP address or localhost (403), so
//!   a DNS name rebound to 127.0.0.1 cannot reach it either.
//! - Errors are `{"error":{"code":"...","message":"..."}}` with stable codes
//!   (`not_found`, `method_not_allowed`, `unauthorized`, `bad_request`, `conflict`,
//!   `body_too_large`, `headers_too_large`, `invalid_config`, `storage_failed`...).
//! - Handlers read the broker through `crate::broker::inspect`, which locks one session
//!   at a time and never holds a lock while a response is written; lists are paged
//!   (`limit` up to `limits::ADMIN_MAX_PAGE_SIZE`, `offset`).
//!
//! Subsystems that run beside the broker (bridges, a cluster) contribute a status
//! section by registering a [`StatusProvider`]: `GET /api/v1/{name}` answers its JSON,
//! and answers 404 `not_configured` until one is registered.

mod clients;
mod cluster;
mod messages;
mod routes;
mod system;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

pub use cluster::{Change, ClusterAdmin, ClusterSection};

use crate::broker::Broker;
use crate::config::{AdminConfig, ListenerKind};
use crate::http::server::{BoxFuture, Handler, HttpServer};
use crate::http::{Limits, Request, Response};
use crate::limits::{
    ADMIN_MAX_CONCURRENT_REQUESTS, ADMIN_MAX_REQUEST_BODY, ADMIN_MAX_REQUEST_HEAD,
};
use crate::listener::TlsTerminator;
use crate::reload::ReloadReport;

/// The dashboard page, served at `/`: one self-contained file, no build step.
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// Re-reads the configuration file and the files it names, as SIGHUP does. `Err`: the
/// configuration file could not be used (the reason); the files it names were still
/// re-read.
pub type Reloader = Arc<dyn Fn() -> Result<ReloadReport, String> + Send + Sync>;

/// A status section another subsystem contributes (`GET /api/v1/{name}`).
pub trait StatusProvider: Send + Sync {
    /// The path segment, e.g. "bridges" or "cluster".
    fn name(&self) -> &str;
    /// The section's JSON, computed when asked.
    fn status(&self) -> serde_json::Value;
}

/// Section names the dashboard and `ctl` know about even before a provider exists.
pub const KNOWN_SECTIONS: [&str; 2] = ["bridges", "cluster"];

/// An MQTT listener as `GET /api/v1/listeners` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListenerView {
    #[serde(rename = "type")]
    pub kind: ListenerKind,
    /// The configured address.
    pub bind: SocketAddr,
    /// The bound address (differs from `bind` with port 0).
    pub address: SocketAddr,
}

/// Everything the admin handlers need.
pub struct AdminContext {
    pub broker: Arc<Broker>,
    pub reload: Reloader,
    pub listeners: Vec<ListenerView>,
    /// The metrics endpoint's bound address, if it runs.
    pub metrics: Option<SocketAddr>,
    pub providers: Vec<Arc<dyn StatusProvider>>,
    /// Membership changes, on a cluster node.
    pub cluster: Option<Arc<dyn ClusterAdmin>>,
}

struct Admin {
    context: AdminContext,
    /// The bearer token; `None`: requests need none (loopback only, checked by
    /// `check-config`).
    token: Option<String>,
}

/// Binds the admin listener of `config` and serves until the broker shuts down.
pub async fn start(config: &AdminConfig, context: AdminContext) -> anyhow::Result<HttpServer> {
    let token = match &config.token_file {
        Some(path) => Some(crate::config::read_token(path).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let tls = match &config.tls {
        Some(tls) => {
            let terminator = Arc::new(
                TlsTerminator::new(tls).context("cannot load the admin listener's certificates")?,
            );
            // Re-read on every reload, like the MQTT listeners' certificates.
            context
                .broker
                .add_reloadable(Arc::new(AdminCertificates(terminator.clone())));
            Some(terminator)
        }
        None => None,
    };
    let limits = Limits {
        max_head: ADMIN_MAX_REQUEST_HEAD,
        max_body: ADMIN_MAX_REQUEST_BODY,
        max_concurrent: ADMIN_MAX_CONCURRENT_REQUESTS,
        request_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        max_requests_per_connection: 1000,
    };
    let shutdown = context.broker.shutdown_signal();
    let admin = Arc::new(Admin { context, token });
    HttpServer::start("admin", config.bind, tls, limits, admin, shutdown).await
}

/// The admin listener's certificates, re-read on reload (a failure keeps the old ones).
struct AdminCertificates(Arc<TlsTerminator>);

impl crate::reload::Reloadable for AdminCertificates {
    fn name(&self) -> &str {
        "admin TLS certificates"
    }

    fn keys(&self) -> &[&str] {
        &[]
    }

    fn reload(&self, _: &crate::config::Config) -> anyhow::Result<()> {
        self.0.reload()?;
        Ok(())
    }
}

impl Handler for Admin {
    fn handle(&self, request: Request) -> BoxFuture<'_, Response> {
        Box::pin(async move {
            let response = if self.token.is_none() && !local_host(request.header("host")) {
                // Without a token, a web page the operator visits could reach this
                // loopback listener through a DNS name it rebinds to 127.0.0.1.
                Response::error(
                    403,
                    "forbidden_host",
                    "without admin.token_file, requests must name an IP address or localhost in Host",
                )
            } else if needs_token(&request.path) && !self.authorized(&request) {
                Response::error(401, "unauthorized", "unauthorized")
                    .with_header("WWW-Authenticate", "Bearer")
            } else if request.method == "POST" && !is_json(&request) {
                // A form or a no-cors fetch from another site cannot send this type
                // without the browser asking first (CORS preflight), which is never
                // granted: the API is not open to cross-site requests.
                Response::error(
                    415,
                    "unsupported_media_type",
                    "POST bodies must be sent as Content-Type: application/json",
                )
            } else {
                routes::dispatch(&self.context, &request).await
            };
            response.with_header("Cache-Control", "no-store")
        })
    }
}

/// Whether `Host` names an IP address or localhost (with or without a port), or is
/// absent (HTTP/1.0).
fn local_host(host: Option<&str>) -> bool {
    let Some(host) = host else {
        return true;
    };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = match host.rsplit_once(':') {
        // `[::1]:9884`, `127.0.0.1:9884`, `localhost:9884`; a bare IPv6 has colons too.
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty() => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

fn is_json(request: &Request) -> bool {
    request
        .header("content-type")
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// `/`, `/health` and `/ready` answer without a token: the page holds no data, and load
/// balancers and service managers probe the other two.
fn needs_token(path: &str) -> bool {
    !matches!(path, "/" | "/health" | "/ready")
}

impl Admin {
    fn authorized(&self, request: &Request) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let Some(sent) = request
            .header("authorization")
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, sent)| sent)
        else {
            return false;
        };
        use subtle::ConstantTimeEq;
        sent.trim().as_bytes().ct_eq(token.as_bytes()).into()
    }
}

/// `limit` and `offset` of a list request, `limit` bounded by the page size maximum.
pub(crate) fn paging(request: &Request) -> Result<(usize, usize), Response> {
    let number = |name: &str, default: usize| match request.query(name) {
        None => Ok(default),
        Some(text) => text.parse::<usize>().map_err(|_| {
            Response::error(
                400,
                "bad_request",
                &format!("{name} must be a non-negative integer"),
            )
        }),
    };
    let limit = number("limit", crate::limits::ADMIN_DEFAULT_PAGE_SIZE)?;
    let offset = number("offset", 0)?;
    if limit == 0 || limit > crate::limits::ADMIN_MAX_PAGE_SIZE {
        return Err(Response::error(
            400,
            "bad_request",
            &format!("limit must be 1 to {}", crate::limits::ADMIN_MAX_PAGE_SIZE),
        ));
    }
    Ok((limit, offset))
}

/// Parses a JSON body into `T` (whose struct denies unknown fields): 400 `bad_json`
/// naming what is wrong.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(request: &Request) -> Result<T, Response> {
    serde_json::from_slice(&request.body).map_err(|error| {
        Response::error(400, "bad_json", &format!("invalid request body: {error}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ip_addresses_and_localhost_are_local_hosts() {
        for host in [
            None,
            Some("127.0.0.1:9884"),
            Some("localhost"),
            Some("LOCALHOST:1"),
            Some("[::1]:9884"),
            Some("::1"),
            Some("10.0.0.1"),
        ] {
            assert!(local_host(host), "{host:?}");
        }
        for host in [
            Some("evil.example:9884"),
            Some("evil.example"),
            Some(""),
            Some("127.0.0.1.evil:80"),
        ] {
            assert!(!local_host(host), "{host:?}");
        }
    }
}
