//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load balancer sends
//! before anything else on a connection, saying which client the connection is for.
//!
//! A listener with `proxy_protocol = true` reads it right after accept, before the TLS
//! handshake or WebSocket upgrade and under the CONNECT deadline, and only from sources in
//! `proxy_protocol_trusted` (anybody else could claim any address). The client address it
//! carries then stands for the connection everywhere: logs, the anonymous decision, the
//! address the broker records. Exactly the header's bytes are read, never more, so what
//! follows (TLS, HTTP, MQTT) is left on the socket.
//!
//! Version 1 is one text line, `PROXY TCP4 src dst sport dport\r\n` (`TCP6`, or `UNKNOWN`),
//! at most 107 bytes. Version 2 is a 12-byte signature, a command (`LOCAL`: the balancer's
//! own connection, e.g. a health check; `PROXY`: a relayed client), an address family
//! and a length, then the addresses and TLVs (skipped). `LOCAL`, `UNKNOWN` and families
//! other than TCP over IPv4/IPv6 keep the socket's own address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest version 1 header, CRLF included (the specification's bound).
pub const V1_MAX_LEN: usize = 107;

/// The version 2 signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The largest version 2 address-and-TLV block accepted. Addresses take at most 216
/// bytes (Unix sockets); the rest leaves room for the TLVs balancers add (TLS details,
/// unique ids) while bounding what one unauthenticated connection can make us read.
pub const V2_MAX_PAYLOAD: usize = 4096;

/// Bytes every header has at least (a version 1 line is 15 or more, version 2 is 16 or
/// more): read at once before looking at them.
const PREFIX_LEN: usize = 12;

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A relayed client: this is its address.
    Proxied(SocketAddr),
    /// The balancer's own connection (v2 `LOCAL`, v1 `UNKNOWN`, or an address family we
    /// do not carry): the socket's address stands.
    Local,
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("no PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol v1 header: {0}")]
    V1(&'static str),
    #[error("malformed PROXY protocol v2 header: {0}")]
    V2(&'static str),
    #[error("connection closed inside the PROXY protocol header")]
    Truncated,
    #[error("no complete PROXY protocol header within the CONNECT timeout")]
    TimedOut,
}

/// Parses a header at the start of `bytes`. `Ok(None)`: the bytes so far are a valid
/// beginning and more are needed; `Ok(Some((header, length)))`: a complete header of
/// `length` bytes.
pub fn parse(bytes: &[u8]) -> Result<Option<(Header, usize)>, ProxyHeaderError> {
    let prefix = &bytes[..bytes.len().min(PREFIX_LEN)];
    if V2_SIGNATURE.starts_with(prefix) {
        return parse_v2(bytes);
    }
    if b"PROXY ".starts_with(&prefix[..prefix.len().min(6)]) {
        return parse_v1(bytes);
    }
    Err(ProxyHeaderError::Missing)
}

fn parse_v1(bytes: &[u8]) -> Result<Option<(Header, usize)>, ProxyHeaderError> {
    let fail = ProxyHeaderError::V1;
    let Some(end) = bytes.windows(2).position(|pair| pair == b"\r\n") else {
        if bytes.len() >= V1_MAX_LEN {
            return Err(fail("longer than 107 bytes"));
        }
        if bytes.contains(&b'\n') {
            return Err(fail("line not ended by CRLF"));
        }
        return Ok(None);
    };
    let length = end + 2;
    if length > V1_MAX_LEN {
        return Err(fail("longer than 107 bytes"));
    }
    let line = std::str::from_utf8(&bytes[..end]).map_err(|_| fail("not ASCII"))?;
    let mut fields = line.split(' ');
    if fields.next() != Some("PROXY") {
        return Err(fail("does not start with PROXY"));
    }
    let family = fields.next().ok_or(fail("no protocol"))?;
    if family == "UNKNOWN" {
        // The rest of the line is to be ignored (the specification's words).
        return Ok(Some((Header::Local, length)));
    }
    let (source, destination, source_port, destination_port) =
        match (fields.next(), fields.next(), fields.next(), fields.next()) {
            (Some(a), Some(b), Some(c), Some(d)) => (a, b, c, d),
            _ => return Err(fail("expected source, destination and two ports")),
        };
    if fields.next().is_some() {
        return Err(fail("trailing fields"));
    }
    let source: IpAddr = match family {
        "TCP4" => IpAddr::V4(source.parse().map_err(|_| fail("bad IPv4 source"))?),
        "TCP6" => IpAddr::V6(source.parse().map_err(|_| fail("bad IPv6 source"))?),
        _ => return Err(fail("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let destination_ok = match family {
        "TCP4" => destination.parse::<Ipv4Addr>().is_ok(),
        _ => destination.parse::<Ipv6Addr>().is_ok(),
    };
    if !destination_ok {
        return Err(fail("bad destination address"));
    }
    let port = |text: &str| -> Result<u16, ProxyHeaderError> {
        // Decimal without sign or leading zeros (the specification's form).
        let canonical = !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && (text == "0" || !text.starts_with('0'));
        canonical
            .then(|| text.parse().ok())
            .flatten()
            .ok_or(fail("bad port"))
    };
    let source_port = port(source_port)?;
    port(destination_port)?;
    Ok(Some((
        Header::Proxied(SocketAddr::new(source, source_port)),
        length,
    )))
}

fn parse_v2(bytes: &[u8]) -> Result<Option<(Header, usize)>, ProxyHeaderError> {
    let fail = ProxyHeaderError::V2;
    if bytes.len() < 16 {
        return Ok(None);
    }
    let version_command = bytes[12];
    if version_command >> 4 != 2 {
        return Err(fail("version is not 2"));
    }
    let family_transport = bytes[13];
    let payload_len = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if payload_len > V2_MAX_PAYLOAD {
        return Err(fail("address and TLV block too long"));
    }
    let length = 16 + payload_len;
    if bytes.len() < length {
        return Ok(None);
    }
    let payload = &bytes[16..length];
    let header = match version_command & 0x0F {
        // LOCAL: the balancer speaks for itself; the address block is to be ignored.
        0x0 => Header::Local,
        0x1 => {
            let transport = family_transport & 0x0F;
            if transport > 2 {
                return Err(fail("unknown transport"));
            }
            match (family_transport >> 4, transport) {
                (0x1, 0x1) => {
                    let block = payload.get(..12).ok_or(fail("IPv4 block too short"))?;
                    let ip = Ipv4Addr::new(block[0], block[1], block[2], block[3]);
                    let port = u16::from_be_bytes([block[8], block[9]]);
                    Header::Proxied(SocketAddr::new(IpAddr::V4(ip), port))
                }
                (0x2, 0x1) => {
                    let block = payload.get(..36).ok_or(fail("IPv6 block too short"))?;
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&block[..16]);
                    let port = u16::from_be_bytes([block[32], block[33]]);
                    Header::Proxied(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
                }
                (0x0..=0x3, _) => Header::Local,
                _ => return Err(fail("unknown address family")),
            }
        }
        _ => return Err(fail("unknown command")),
    };
    Ok(Some((header, length)))
}

/// Reads one header from `stream`, exactly its bytes. The caller bounds the time.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Header, ProxyHeaderError> {
    let mut buf = Vec::with_capacity(V1_MAX_LEN);
    buf.resize(PREFIX_LEN, 0);
    read_exact(stream, &mut buf[..]).await?;
    loop {
        if let Some((header, _)) = parse(&buf)? {
            return Ok(header);
        }
        // Version 2 says its length: read the rest at once. Version 1 ends at CRLF,
        // which only reading byte by byte finds without taking bytes past it.
        let wanted = if buf.starts_with(&V2_SIGNATURE) {
            if buf.len() < 16 {
                16
            } else {
                16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]))
            }
        } else {
            buf.len() + 1
        };
        let start = buf.len();
        buf.resize(wanted, 0);
        read_exact(stream, &mut buf[start..]).await?;
    }
}

async fn read_exact<S: AsyncRead + Unpin>(
    stream: &mut S,
    into: &mut [u8],
) -> Result<(), ProxyHeaderError> {
    match stream.read_exact(into).await {
        Ok(_) => Ok(()),
        Err(_) => Err(ProxyHeaderError::Truncated),
    }
}

/// An address block (`10.0.0.0/8`, `2001:db8::/32`) or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `address/prefix` or a bare address (the whole address).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("'{text}' is not an IP address or CIDR block"))?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= bits)
                .ok_or_else(|| format!("'{text}': the prefix length must be 0 to {bits}"))?,
        };
        Ok(Cidr { network, prefix })
    }

    /// Whether `address` lies in the block. An IPv4 client seen on an IPv6 socket
    /// (`::ffff:a.b.c.d`) counts as its IPv4 address.
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                prefix_matches(&network.octets(), &address.octets(), self.prefix)
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                prefix_matches(&network.octets(), &address.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_matches(network: &[u8], address: &[u8], prefix: u8) -> bool {
    let whole = usize::from(prefix / 8);
    let rest = prefix % 8;
    if network[..whole] != address[..whole] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xFFu8 << (8 - rest);
    network[whole] & mask == address[whole] & mask
}

/// The balancers a listener takes PROXY headers from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedSources(Vec<Cidr>);

impl TrustedSources {
    /// Parses every entry; the first bad one is the error.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a String>) -> Result<Self, String> {
        entries
            .into_iter()
            .map(|entry| Cidr::parse(entry))
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedSources)
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        self.0.iter().any(|block| block.contains(address))
    }
}

#[cfg(test)]
#[path = "proxy_protocol_tests.rs"]
mod tests;
