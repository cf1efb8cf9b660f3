//! `ClientInfo`: who is (or was last) connected to a session, as operators see it
//! (`crate::admin`), in as few bytes as it can be kept in: every session of a connected
//! client holds one, idle devices included.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Who is connected, for operators: set by the connection right after it attached, kept
/// after it went away (the last client seen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub peer: PeerAddr,
    /// The authenticated username; `None` for an anonymous client.
    pub username: Option<Box<str>>,
    /// When the connection attached, wall-clock Unix milliseconds.
    pub connected_at_ms: u64,
    /// The keep alive in force (seconds, 0: none).
    pub keep_alive: u16,
    pub clean_start: bool,
}

/// A client's address and port in 20 bytes, where a `SocketAddr` takes 32 (room for an
/// IPv6 flow label and scope id, which operators are not shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr {
    /// An IPv4 address in its first four bytes, or the IPv6 address.
    octets: [u8; 16],
    port: u16,
    v6: bool,
}

impl From<SocketAddr> for PeerAddr {
    fn from(address: SocketAddr) -> PeerAddr {
        let mut octets = [0u8; 16];
        let v6 = match address.ip() {
            IpAddr::V4(ip) => {
                octets[..4].copy_from_slice(&ip.octets());
                false
            }
            IpAddr::V6(ip) => {
                octets = ip.octets();
                true
            }
        };
        PeerAddr {
            octets,
            port: address.port(),
            v6,
        }
    }
}

impl From<PeerAddr> for SocketAddr {
    fn from(peer: PeerAddr) -> SocketAddr {
        let ip = if peer.v6 {
            IpAddr::V6(Ipv6Addr::from(peer.octets))
        } else {
            let [a, b, c, d, ..] = peer.octets;
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        };
        SocketAddr::new(ip, peer.port)
    }
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        SocketAddr::from(*self).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_both_families_come_back_as_they_went_in() {
        for text in [
            "192.0.2.7:1883",
            "[2001:db8::17]:8883",
            "[::ffff:10.0.0.1]:1",
            "0.0.0.0:0",
        ] {
            let address: SocketAddr = text.parse().expect("a valid address literal");
            let peer = PeerAddr::from(address);
            assert_eq!(SocketAddr::from(peer), address);
            assert_eq!(peer.to_string(), address.to_string());
        }
    }

    /// The operators' record is allocated for every connected session (BENCHMARKS.md,
    /// "Memory per idle connection").
    #[test]
    fn the_record_stays_small() {
        assert_eq!(std::mem::size_of::<PeerAddr>(), 20);
        assert!(
            std::mem::size_of::<ClientInfo>() <= 48,
            "ClientInfo is {} bytes",
            std::mem::size_of::<ClientInfo>()
        );
    }
}
