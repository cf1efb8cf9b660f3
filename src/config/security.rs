//! Configuration of what makes a listener safe to expose: its transport (TLS, WebSocket),
//! who may connect (anonymous or authenticated, client certificates) and the files
//! that say who is who (`[auth]`: password file and ACL file).
//!
//! The defaults keep a broker started without a file closed to the network: the only
//! listener is loopback. As in Mosquitto 2, a listener named in a configuration file
//! refuses anonymous clients unless `allow_anonymous = true` says otherwise; a listener
//! built in code (`--bind`) admits them only on a loopback address. A listener behind a
//! load balancer reads the PROXY protocol from its trusted balancers
//! (`proxy_protocol`, `proxy_protocol_trusted`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::validate::at_least_one;
use super::{Config, ListenerConfig, ListenerKind, Problem};

/// A listener read from a configuration file without `allow_anonymous` refuses
/// anonymous clients, as Mosquitto 2 does once a file names listeners.
pub(super) fn anonymous_refused() -> Option<bool> {
    Some(false)
}

/// MQTT requires servers to accept client identifiers of 1 to 23 bytes (3.1.3-5).
const MIN_CLIENT_ID_LENGTH: u16 = 23;

/// TLS settings of a `tls` or `wss` listener (`[listeners.tls]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server certificate followed by its intermediates.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file with the CA certificates client certificates must chain to. Required
    /// when `client_auth` is `optional` or `require`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// PEM file with certificate revocation lists (CRLs) of the CA: a client certificate
    /// they list is refused. Re-read on SIGHUP with the CA. Needs `client_auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<PathBuf>,
    /// Whether clients present a certificate.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Use the client certificate's identity as the username (Mosquitto's
    /// `use_identity_as_username`); the password is then not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<CertIdentity>,
    /// Which TLS 1.3 cipher suite a connection gets when the client offers several.
    #[serde(default)]
    pub cipher_preference: CipherPreference,
}

/// How a TLS listener picks the TLS 1.3 cipher suite (`crate::listener::tls_suites`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CipherPreference {
    /// The broker's order, AES-256-GCM, AES-128-GCM, then ChaCha20-Poly1305, whatever the
    /// client's (Mosquitto, with OpenSSL, also picks in its own order, AES-256-GCM
    /// first): the fastest records on servers with AES instructions.
    #[default]
    Aes,
    /// The broker's order with ChaCha20-Poly1305 first: an idle connection about 160
    /// bytes smaller, records of more than a few hundred bytes several times slower.
    Chacha20,
    /// The client's order.
    Client,
}

/// Client certificate verification.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// A certificate is asked for; one that does not chain to `ca` fails the handshake,
    /// and a client without one still connects.
    Optional,
    /// Only clients with a certificate that chains to `ca` complete the handshake.
    Require,
}

/// Which part of the client certificate becomes the username.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertIdentity {
    /// The subject's Common Name.
    Cn,
    /// The first Subject Alternative Name (DNS name, e-mail address or URI).
    San,
}

/// `[auth]`: the password and ACL files, reloaded on SIGHUP.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Password file: `user:hash` lines, as written by `mosquitto_passwd` (`$6$`, `$7$`)
    /// or `fleetmq passwd` (`$scram-sha-256$`, which also enables SCRAM-SHA-256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// ACL file in Mosquitto's `acl_file` syntax. Without one every authenticated or
    /// admitted anonymous client may publish and subscribe to any non-`$` topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acl_file: Option<PathBuf>,
}

impl ListenerConfig {
    /// A plain TCP listener with every optional setting at its default.
    pub fn tcp(bind: SocketAddr) -> ListenerConfig {
        ListenerConfig::new(ListenerKind::Tcp, bind)
    }

    /// A listener of `kind` with every optional setting at its default.
    pub fn new(kind: ListenerKind, bind: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            kind,
            bind,
            allow_anonymous: None,
            max_connections: None,
            max_connection_rate: None,
            proxy_protocol: false,
            proxy_protocol_trusted: Vec::new(),
            path: None,
            tls: None,
        }
    }

    /// Whether clients without credentials are admitted: as configured, else only on a
    /// listener bound to a loopback address (nobody from the network can reach it).
    pub fn allows_anonymous(&self) -> bool {
        self.allow_anonymous
            .unwrap_or_else(|| self.bind.ip().is_loopback())
    }

    /// The WebSocket path (`ws`/`wss`), `/mqtt` unless configured.
    pub fn websocket_path(&self) -> &str {
        self.path
            .as_deref()
            .unwrap_or(crate::limits::DEFAULT_WEBSOCKET_PATH)
    }

    /// Whether the transport runs over TLS.
    pub fn uses_tls(&self) -> bool {
        matches!(self.kind, ListenerKind::Tls | ListenerKind::Wss)
    }

    /// PROXY protocol rules: trusted balancers are required with it, meaningless without
    /// it, and each must be an address or CIDR block.
    fn check_proxy_protocol(&self, key: &str, problems: &mut Vec<Problem>) {
        let trusted = &self.proxy_protocol_trusted;
        if self.proxy_protocol && trusted.is_empty() {
            problems.push(Problem::new(
                format!("{key}.proxy_protocol_trusted"),
                "proxy_protocol = true needs the addresses of the balancers allowed to send the header, e.g. [\"10.0.0.5\", \"10.1.0.0/16\"]",
            ));
        }
        if !self.proxy_protocol && !trusted.is_empty() {
            problems.push(Problem::new(
                format!("{key}.proxy_protocol_trusted"),
                "only a listener with proxy_protocol = true has trusted PROXY sources",
            ));
        }
        for (index, entry) in trusted.iter().enumerate() {
            if let Err(message) = crate::listener::proxy_protocol::Cidr::parse(entry) {
                problems.push(Problem::new(
                    format!("{key}.proxy_protocol_trusted[{index}]"),
                    message,
                ));
            }
        }
    }

    /// Whether the transport is WebSocket.
    pub fn uses_websocket(&self) -> bool {
        matches!(self.kind, ListenerKind::Ws | ListenerKind::Wss)
    }
}

impl Config {
    /// Transport, client-certificate and security-limit rules.
    pub(super) fn check_security(&self, problems: &mut Vec<Problem>) {
        for (index, listener) in self.listeners.iter().enumerate() {
            let key = format!("listeners[{index}]");
            match (&listener.tls, listener.uses_tls()) {
                (None, true) => problems.push(Problem::new(
                    format!("{key}.tls"),
                    "a tls or wss listener needs [listeners.tls] with cert and key",
                )),
                (Some(_), false) => problems.push(Problem::new(
                    format!("{key}.tls"),
                    "only tls and wss listeners use TLS settings",
                )),
                (Some(tls), true) => {
                    if tls.client_auth != ClientAuth::None && tls.ca.is_none() {
                        problems.push(Problem::new(
                            format!("{key}.tls.ca"),
                            "client_auth = \"optional\" or \"require\" needs the CA file client certificates are checked against",
                        ));
                    }
                    if tls.crl.is_some() && tls.client_auth == ClientAuth::None {
                        problems.push(Problem::new(
                            format!("{key}.tls.crl"),
                            "a certificate revocation list needs client_auth = \"optional\" or \"require\"",
                        ));
                    }
                    if tls.identity.is_some() && tls.client_auth == ClientAuth::None {
                        problems.push(Problem::new(
                            format!("{key}.tls.identity"),
                            "a certificate identity needs client_auth = \"optional\" or \"require\"",
                        ));
                    }
                }
                (None, false) => {}
            }
            if let Some(path) = &listener.path {
                if !listener.uses_websocket() {
                    problems.push(Problem::new(
                        format!("{key}.path"),
                        "only ws and wss listeners have a path",
                    ));
                } else if !path.starts_with('/') {
                    problems.push(Problem::new(
                        format!("{key}.path"),
                        format!("'{path}' must start with '/'"),
                    ));
                }
            }
            // A connection rate of 0 means no limit.
            if let Some(value) = listener.max_connections {
                at_least_one(problems, &format!("{key}.max_connections"), value as usize);
            }
            listener.check_proxy_protocol(&key, problems);
        }
        let limits = &self.limits;
        for (key, value) in [
            ("limits.max_connections", limits.max_connections as usize),
            (
                "limits.max_subscriptions",
                limits.max_subscriptions as usize,
            ),
            ("limits.max_topic_levels", limits.max_topic_levels.into()),
            ("limits.max_topic_length", limits.max_topic_length.into()),
        ] {
            at_least_one(problems, key, value);
        }
        if limits.max_client_id_length < MIN_CLIENT_ID_LENGTH {
            problems.push(Problem::new(
                "limits.max_client_id_length",
                format!(
                    "{} is too small; MQTT clients may always use up to {MIN_CLIENT_ID_LENGTH} bytes",
                    limits.max_client_id_length
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn listener(text: &str) -> ListenerConfig {
        let config = Config::from_toml_str(text, "test.toml").expect("valid config");
        config.listeners[0].clone()
    }

    #[test]
    fn anonymous_defaults_to_loopback_only() {
        let local = ListenerConfig::tcp("127.0.0.1:1883".parse().unwrap());
        let public = ListenerConfig::tcp("0.0.0.0:1883".parse().unwrap());
        assert!(local.allows_anonymous());
        assert!(!public.allows_anonymous());
        let mut opened = public.clone();
        opened.allow_anonymous = Some(true);
        assert!(opened.allows_anonymous());
    }

    #[test]
    fn a_tls_listener_parses_with_client_auth_and_identity() {
        let parsed = listener(
            "[[listeners]]\ntype = \"wss\"\nbind = \"0.0.0.0:8884\"\npath = \"/ws\"\n\
             [listeners.tls]\ncert = \"s.pem\"\nkey = \"k.pem\"\nca = \"ca.pem\"\n\
             client_auth = \"require\"\nidentity = \"cn\"\n",
        );
        assert_eq!(parsed.kind, ListenerKind::Wss);
        assert_eq!(parsed.websocket_path(), "/ws");
        let tls = parsed.tls.expect("tls table");
        assert_eq!(tls.client_auth, ClientAuth::Require);
        assert_eq!(tls.identity, Some(CertIdentity::Cn));
    }

    #[test]
    fn cipher_preference_defaults_to_aes_and_a_bad_value_names_its_line() {
        let tls_listener = |extra: &str| {
            format!(
                "[[listeners]]\ntype = \"tls\"\nbind = \"0.0.0.0:8883\"\n\
                 [listeners.tls]\ncert = \"s.pem\"\nkey = \"k.pem\"\n{extra}"
            )
        };
        let parsed = listener(&tls_listener(""));
        assert_eq!(
            parsed.tls.expect("tls table").cipher_preference,
            CipherPreference::Aes
        );
        let parsed = listener(&tls_listener("cipher_preference = \"chacha20\"\n"));
        assert_eq!(
            parsed.tls.expect("tls table").cipher_preference,
            CipherPreference::Chacha20
        );
        let parsed = listener(&tls_listener("cipher_preference = \"client\"\n"));
        assert_eq!(
            parsed.tls.expect("tls table").cipher_preference,
            CipherPreference::Client
        );
        let error =
            Config::from_toml_str(&tls_listener("cipher_preference = \"fast\"\n"), "test.toml")
                .expect_err("unknown preference");
        assert_eq!(
            error.to_string(),
            "test.toml:7:21: listeners[0].tls.cipher_preference: unknown value 'fast'; \
             expected one of \"aes\", \"chacha20\", \"client\""
        );
    }

    #[test]
    fn a_listener_from_a_file_refuses_anonymous_clients_unless_it_says_so() {
        let named = listener("[[listeners]]\ntype = \"tcp\"\nbind = \"127.0.0.1:1883\"\n");
        assert_eq!(named.allow_anonymous, Some(false));
        assert!(!named.allows_anonymous());
        let opened = listener(
            "[[listeners]]\ntype = \"tcp\"\nbind = \"0.0.0.0:1883\"\nallow_anonymous = true\n",
        );
        assert!(opened.allows_anonymous());
        // No file (or a file without listeners): the built-in loopback listener admits them.
        let builtin = Config::from_toml_str("[limits]\n", "test.toml").unwrap();
        assert!(builtin.listeners[0].allows_anonymous());
    }

    #[test]
    fn proxy_protocol_needs_valid_trusted_sources() {
        let parsed = listener(
            "[[listeners]]\ntype = \"tls\"\nbind = \"0.0.0.0:8883\"\nproxy_protocol = true\n\
             proxy_protocol_trusted = [\"10.0.0.5\", \"10.1.0.0/16\", \"::1/128\"]\n\
             [listeners.tls]\ncert = \"s.pem\"\nkey = \"k.pem\"\n",
        );
        assert!(parsed.proxy_protocol);
        assert_eq!(parsed.proxy_protocol_trusted.len(), 3);
        for (text, key) in [
            (
                "proxy_protocol = true\n",
                "listeners[0].proxy_protocol_trusted",
            ),
            (
                "proxy_protocol_trusted = [\"10.0.0.5\"]\n",
                "listeners[0].proxy_protocol_trusted",
            ),
            (
                "proxy_protocol = true\nproxy_protocol_trusted = [\"10.0.0.5\", \"10.0.0.0/40\"]\n",
                "listeners[0].proxy_protocol_trusted[1]",
            ),
        ] {
            let err = Config::from_toml_str(
                &format!("[[listeners]]\ntype = \"tcp\"\nbind = \"0.0.0.0:1883\"\n{text}"),
                "test.toml",
            )
            .expect_err(text);
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn tls_listener_without_tls_table_is_a_problem() {
        let err = Config::from_toml_str(
            "[[listeners]]\ntype = \"tls\"\nbind = \"127.0.0.1:8883\"\n",
            "test.toml",
        )
        .expect_err("tls needs certificates");
        assert!(err.to_string().contains("listeners[0].tls"), "{err}");
    }

    #[test]
    fn a_crl_parses_and_needs_client_auth() {
        let parsed = listener(
            "[[listeners]]\ntype = \"tls\"\nbind = \"0.0.0.0:8883\"\n\
             [listeners.tls]\ncert = \"s.pem\"\nkey = \"k.pem\"\nca = \"ca.pem\"\n\
             crl = \"crl.pem\"\nclient_auth = \"require\"\n",
        );
        let tls = parsed.tls.expect("tls table");
        assert_eq!(tls.crl, Some(PathBuf::from("crl.pem")));
        let err = Config::from_toml_str(
            "[[listeners]]\ntype = \"tls\"\nbind = \"127.0.0.1:8883\"\n\
             [listeners.tls]\ncert = \"s.pem\"\nkey = \"k.pem\"\ncrl = \"crl.pem\"\n",
            "test.toml",
        )
        .expect_err("a CRL needs client authentication");
        assert!(err.to_string().contains("listeners[0].tls.crl"), "{err}");
    }

    #[test]
    fn client_auth_without_ca_is_a_problem() {
        let err = Config::from_toml_str(
            "[[listeners]]\ntype = \"tls\"\nbind = \"127.0.0.1:8883\"\n\
             [listeners.tls]\ncert = \"s.pem\"\nkey = \"k.pem\"\nclient_auth = \"optional\"\n",
            "test.toml",
        )
        .expect_err("client auth needs a CA");
        assert!(err.to_string().contains("listeners[0].tls.ca"), "{err}");
    }
}
