//! The `[admin]` table: the operator's HTTP API, `fleetmq ctl` and the dashboard
//! (`crate::admin`), and the checks `check-config` runs on it.
//!
//! Secure by default: the listener binds loopback, and binding anything else without a
//! bearer token is a configuration error, not a warning.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Config, Problem, TlsConfig};

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub enabled: bool,
    /// Address and port of the HTTP listener. Loopback by default.
    pub bind: SocketAddr,
    /// File holding the bearer token (its first line). When set, every request but
    /// `/health` and `/ready` needs `Authorization: Bearer TOKEN`. Required when `bind`
    /// is not a loopback address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Serve HTTPS with these certificates (the listeners' settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            bind: crate::limits::DEFAULT_ADMIN_BIND
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9884))),
            token_file: None,
            tls: None,
        }
    }
}

/// Reads the token from the first line of `path` (surrounding white space removed).
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(format!(
            "{} holds no token on its first line",
            path.display()
        ));
    }
    if token.len() > crate::limits::ADMIN_MAX_TOKEN_LENGTH
        || token.chars().any(|c| c.is_control() || c == ' ')
    {
        return Err(format!(
            "the token in {} must be at most {} printable characters without spaces",
            path.display(),
            crate::limits::ADMIN_MAX_TOKEN_LENGTH
        ));
    }
    Ok(token)
}

impl Config {
    pub(super) fn check_admin(&self, problems: &mut Vec<Problem>) {
        let admin = &self.admin;
        if !admin.enabled {
            return;
        }
        match &admin.token_file {
            // Reported at `bind`, the line the operator wrote.
            None if !admin.bind.ip().is_loopback() => problems.push(Problem::new(
                "admin.bind",
                format!(
                    "{} is reachable beyond this machine: set admin.token_file to a file holding a bearer token, or bind a loopback address",
                    admin.bind
                ),
            )),
            None => {}
            Some(path) => {
                if let Err(message) = read_token(path) {
                    problems.push(Problem::new("admin.token_file", message));
                }
            }
        }
        if let Some(tls) = &admin.tls {
            if tls.identity.is_some() {
                problems.push(Problem::new(
                    "admin.tls.identity",
                    "the admin listener authenticates with its token; a certificate identity does not apply",
                ));
            }
            if tls.client_auth != super::ClientAuth::None && tls.ca.is_none() {
                problems.push(Problem::new(
                    "admin.tls.ca",
                    "client_auth = \"optional\" or \"require\" needs the CA file client certificates are checked against",
                ));
            }
        }
        let bind = admin.bind;
        if bind.port() == 0 {
            return;
        }
        let clashes = |other: SocketAddr| {
            other.port() == bind.port()
                && (other.ip() == bind.ip()
                    || other.ip().is_unspecified()
                    || bind.ip().is_unspecified())
        };
        if let Some(index) = self.listeners.iter().position(|l| clashes(l.bind)) {
            problems.push(Problem::new(
                "admin.bind",
                format!("{bind} is already used by listeners[{index}]"),
            ));
        } else if self.metrics.enabled && clashes(self.metrics.bind) {
            problems.push(Problem::new(
                "admin.bind",
                format!("{bind} is already used by metrics.bind"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(config: &Config) -> Vec<String> {
        config.problems().into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn beyond_loopback_a_token_is_required() {
        let mut config = Config::default();
        config.admin.bind = "0.0.0.0:9884".parse().unwrap();
        assert_eq!(keys(&config), ["admin.bind"]);
        config.admin.enabled = false;
        assert!(keys(&config).is_empty());
    }

    #[test]
    fn the_token_file_must_hold_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let mut config = Config::default();
        config.admin.bind = "0.0.0.0:9884".parse().unwrap();
        config.admin.token_file = Some(path.clone());
        let problems = config.problems();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("cannot read"), "{problems:?}");
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(keys(&config), ["admin.token_file"]);
        std::fs::write(&path, "s3cret-token\n").unwrap();
        assert!(keys(&config).is_empty());
        assert_eq!(read_token(&path).unwrap(), "s3cret-token");
    }

    #[test]
    fn the_admin_port_must_be_free() {
        let mut config = Config::default();
        config.admin.bind = config.metrics.bind;
        assert_eq!(keys(&config), ["admin.bind"]);
        config.admin.bind = config.listeners[0].bind;
        assert_eq!(keys(&config), ["admin.bind"]);
    }
}
