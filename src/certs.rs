//! `fleetmq gen-certs`: a development certificate authority and the server and client
//! certificates signed by it, as PEM files (`certs/README.md` shows how to use them).
//!
//! Meant for development, tests and a first try of TLS and mutual TLS; production
//! certificates come from the operator's own PKI.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::file_replace;

/// A certificate and its private key, both PEM, and the certificate's serial number (to
/// revoke it).
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
    pub serial: SerialNumber,
}

/// A certificate authority that issues server and client certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "fleetmq development");
    name.push(DnType::CommonName, common_name);
    name
}

/// A validity window starting an hour ago (tolerates clock skew) for `days` days.
pub fn validity(days: u32) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (
        now - Duration::hours(1),
        now + Duration::days(i64::from(days)),
    )
}

impl Authority {
    /// A new self-signed CA named `common_name`, valid for `days`.
    pub fn new(common_name: &str, days: u32) -> anyhow::Result<Authority> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        (params.not_before, params.not_after) = validity(days);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Authority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate (PEM), what clients and the broker trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `hosts` (DNS names or IP addresses). It may also
    /// authenticate as a client, so that cluster nodes can use it on their links in both
    /// directions (mutual TLS).
    pub fn issue_server(&self, hosts: &[String], days: u32) -> anyhow::Result<Pem> {
        let mut params = CertificateParams::new(hosts.to_vec())?;
        params.distinguished_name = name(hosts.first().map(String::as_str).unwrap_or("server"));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        (params.not_before, params.not_after) = validity(days);
        self.issue(params)
    }

    /// A client certificate with Common Name `common_name` (also its DNS SAN), valid in
    /// the given window (tests use a past window for an expired certificate).
    pub fn issue_client(
        &self,
        common_name: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> anyhow::Result<Pem> {
        let mut params = CertificateParams::new(vec![common_name.to_string()])?;
        params.distinguished_name = name(common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = not_before;
        params.not_after = not_after;
        self.issue(params)
    }

    fn issue(&self, mut params: CertificateParams) -> anyhow::Result<Pem> {
        // A random positive serial of 16 bytes (RFC 5280 allows up to 20).
        let mut serial = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
            .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
        serial[0] &= 0x7f;
        let serial = SerialNumber::from_slice(&serial);
        params.serial_number = Some(serial.clone());
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
            serial,
        })
    }

    /// A certificate revocation list (PEM) signed by this CA, listing `revoked` (serial
    /// numbers of certificates it issued), valid for `days`.
    pub fn revocation_list(&self, revoked: &[SerialNumber], days: u32) -> anyhow::Result<String> {
        let (this_update, next_update) = validity(days);
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: serial.clone(),
                    revocation_time: this_update,
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

/// Writes `ca.pem`, `ca.key`, `server.pem`, `server.key` and `<client>.pem`/`.key` for
/// each client into `dir`; returns the paths written.
pub fn generate(
    dir: &Path,
    hosts: &[String],
    clients: &[String],
    days: u32,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca = Authority::new("fleetmq development CA", days)?;
    let mut written = Vec::new();
    // An existing file keeps its owner and mode; a new key is 0600, a certificate 0644.
    let mut write = |file: &str, text: &str, secret: bool| -> anyhow::Result<()> {
        let path = dir.join(file);
        let mode = if secret {
            file_replace::PRIVATE_KEY_MODE
        } else {
            file_replace::CERTIFICATE_MODE
        };
        file_replace::replace(&path, text.as_bytes(), mode)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    write("ca.pem", ca.cert_pem(), false)?;
    write("ca.key", &ca.issuer_key_pem(), true)?;
    let server = ca.issue_server(hosts, days)?;
    write("server.pem", &server.cert, false)?;
    write("server.key", &server.key, true)?;
    let (not_before, not_after) = validity(days);
    for client in clients {
        anyhow::ensure!(
            !client.is_empty()
                && client
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "client name '{client}' must be letters, digits, '-', '_' or '.'"
        );
        let pem = ca.issue_client(client, not_before, not_after)?;
        write(&format!("{client}.pem"), &pem.cert, false)?;
        write(&format!("{client}.key"), &pem.key, true)?;
    }
    Ok(written)
}

impl Authority {
    /// The CA's private key (PEM), to issue more certificates with other tools.
    pub fn issuer_key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_every_file_and_refuses_odd_client_names() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let written = generate(dir.path(), &hosts, &["dev-1".into()], 10).unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "ca.pem",
                "ca.key",
                "server.pem",
                "server.key",
                "dev-1.pem",
                "dev-1.key"
            ]
        );
        let server = std::fs::read_to_string(dir.path().join("server.pem")).unwrap();
        assert!(server.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(generate(dir.path(), &hosts, &["../x".into()], 10).is_err());
    }
}
