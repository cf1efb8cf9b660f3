//! A minimal HTTP/1.1 client for the admin API: one request per connection
//! (`Connection: close`), over TCP or TLS (tokio-rustls with the ring provider), with
//! a deadline on the whole exchange and a bound on the answer's size.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Time for connecting, sending and reading one answer.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read (a page of 1,000 clients is a few hundred KiB).
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub tls: bool,
    /// `host:port`.
    pub authority: String,
    pub token: Option<String>,
    /// CA certificates an `https` admin listener's certificate must chain to.
    pub ca: Option<std::path::PathBuf>,
}

impl Endpoint {
    /// Parses `http://host:port` or `https://host:port` (a trailing `/` is allowed).
    pub fn from_url(
        url: &str,
        token: Option<String>,
        ca: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Endpoint> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            bail!("the admin URL must start with http:// or https://: {url}");
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            bail!("the admin URL must be http(s)://HOST:PORT: {url}");
        }
        Ok(Endpoint {
            tls,
            authority: authority.to_string(),
            token,
            ca,
        })
    }
}

/// An answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Sends one request and reads the answer.
pub async fn request(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> anyhow::Result<Answer> {
    tokio::time::timeout(TIMEOUT, exchange(endpoint, method, path, body))
        .await
        .with_context(|| format!("no answer from {} within {TIMEOUT:?}", endpoint.authority))?
}

async fn exchange(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> anyhow::Result<Answer> {
    let tcp = TcpStream::connect(&endpoint.authority)
        .await
        .with_context(|| format!("cannot connect to the admin API at {}", endpoint.authority))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n",
        endpoint.authority
    );
    if let Some(token) = &endpoint.token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    let raw = if endpoint.tls {
        let connector = tls_connector(endpoint.ca.as_deref())?;
        let host = endpoint
            .authority
            .rsplit_once(':')
            .map_or(endpoint.authority.as_str(), |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let name =
            ServerName::try_from(host).context("the admin URL's host is not a valid name")?;
        let stream = connector
            .connect(name, tcp)
            .await
            .context("TLS handshake with the admin API failed")?;
        send_and_read(stream, &request).await?
    } else {
        send_and_read(tcp, &request).await?
    };
    parse_answer(&raw)
}

async fn send_and_read<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> anyhow::Result<Vec<u8>> {
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut raw = Vec::new();
    let mut limited = (&mut stream).take(MAX_ANSWER as u64 + 1);
    // A TLS peer that closes without close_notify still delivered a complete answer
    // when its Content-Length is satisfied; parse_answer checks that.
    if let Err(error) = limited.read_to_end(&mut raw).await {
        if raw.is_empty() {
            return Err(error).context("reading the admin API's answer");
        }
    }
    if raw.len() > MAX_ANSWER {
        bail!("the admin API's answer exceeds {MAX_ANSWER} bytes");
    }
    Ok(raw)
}

fn parse_answer(raw: &[u8]) -> anyhow::Result<Answer> {
    let end = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .context("the admin API's answer has no complete head")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .context("the admin API's answer has no status")?;
    let length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok());
    let body = &raw[end + 4..];
    let body = match length {
        Some(length) if body.len() < length => bail!("the admin API's answer was cut short"),
        Some(length) => &body[..length],
        None => body,
    };
    Ok(Answer {
        status,
        body: body.to_vec(),
    })
}

fn tls_connector(ca: Option<&Path>) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let Some(ca) = ca else {
        bail!("an https admin URL needs --ca FILE with the CA certificate(s) its certificate chains to");
    };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("cannot read {}", ca.display()))?
    {
        let certificate =
            certificate.with_context(|| format!("{} holds a bad certificate", ca.display()))?;
        roots
            .add(certificate)
            .with_context(|| format!("{} holds an unusable CA certificate", ca.display()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("cannot set up TLS")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_answers_parse() {
        let endpoint = Endpoint::from_url("http://127.0.0.1:9884/", None, None).unwrap();
        assert_eq!(
            (endpoint.tls, endpoint.authority.as_str()),
            (false, "127.0.0.1:9884")
        );
        assert!(Endpoint::from_url("ftp://x", None, None).is_err());
        assert!(Endpoint::from_url("http://x:1/api", None, None).is_err());
        let answer =
            parse_answer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}extra").unwrap();
        assert_eq!((answer.status, answer.body.as_slice()), (404, &b"{}"[..]));
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
    }
}
