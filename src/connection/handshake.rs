//! The CONNECT exchange, before a session exists: reading the first packet under its own
//! deadline, and deciding the connection's terms (client identifier, keep alive, session
//! expiry) and the CONNACK that announces them.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncRead;

use crate::broker::{Broker, Refusal, Stats};
use crate::config::Config;
use crate::protocol::{
    decode_from_client, reason, ConnAck, ConnAckProperties, Connect, DecodeError, Packet,
    ProtocolVersion,
};

use super::buffer;

/// Why no CONNECT was obtained.
#[derive(Debug)]
pub(super) enum HandshakeError {
    /// Nothing usable arrived within `connect_timeout_secs`.
    Timeout,
    /// The client closed the socket or it failed.
    Closed,
    /// The first bytes were not a valid CONNECT.
    Decode(DecodeError),
    /// A valid packet, but not CONNECT.
    NotConnect,
}

impl HandshakeError {
    /// How the refusal is counted.
    pub(super) fn refusal(&self) -> Refusal {
        match self {
            HandshakeError::Timeout => Refusal::Timeout,
            HandshakeError::Closed => Refusal::Closed,
            HandshakeError::Decode(DecodeError::UnsupportedProtocol) => {
                Refusal::UnsupportedProtocol
            }
            HandshakeError::Decode(_) | HandshakeError::NotConnect => Refusal::Malformed,
        }
    }
}

/// Reads the first packet, which must be CONNECT. Bytes after it stay in `buf`.
pub(super) async fn read_connect<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    config: &Config,
    stats: &Stats,
) -> Result<Box<Connect>, HandshakeError> {
    let timeout = Duration::from_secs(config.limits.connect_timeout_secs);
    let read = async {
        loop {
            match decode_from_client(buf, None, config.limits.max_packet_size) {
                Ok(Some(Packet::Connect(connect))) => {
                    Stats::incr(&stats.packets_received);
                    return Ok(connect);
                }
                Ok(Some(_)) => return Err(HandshakeError::NotConnect),
                Ok(None) => {}
                Err(error) => return Err(HandshakeError::Decode(error)),
            }
            match buffer::read_some(stream, buf).await {
                Ok(0) | Err(_) => return Err(HandshakeError::Closed),
                Ok(read) => Stats::add(&stats.bytes_received, read as u64),
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(HandshakeError::Timeout))
}

/// The terms of an accepted connection.
#[derive(Debug)]
pub(super) struct Terms {
    /// Seconds; 0 disables the keep-alive check.
    pub keep_alive: u16,
    pub session_expiry: Duration,
    /// CONNACK without Session Present (known once the session is attached).
    pub connack: ConnAck,
}

/// Why a decoded CONNECT is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rejection {
    /// Refused with a CONNACK carrying this reason code.
    ConnAck(u8),
    /// A MQTT 3.x CONNECT that does not conform to the specification: the connection is
    /// closed without a CONNACK [MQTT-3.1.4-1]. (MQTT 5 may answer such a CONNECT with
    /// a failure CONNACK first, and does.)
    NonConforming(&'static str),
}

impl From<u8> for Rejection {
    fn from(reason_code: u8) -> Rejection {
        Rejection::ConnAck(reason_code)
    }
}

/// Decides whether to accept `connect` and on which terms. Assigns a client identifier
/// when the client sent none and may have one.
pub(super) fn negotiate(broker: &Broker, connect: &mut Connect) -> Result<Terms, Rejection> {
    let config = &*broker.config();
    let v5 = connect.protocol.is_v5();

    let mut assigned = None;
    if connect.client_id.is_empty() {
        // MQTT 3.1 requires 1 to 23 characters; 3.1.1 lets a server assign an identifier,
        // but only to a clean session (3.1.3-8).
        if connect.protocol == ProtocolVersion::V3_1 || (!v5 && !connect.clean_start) {
            return Err(reason::CLIENT_IDENTIFIER_NOT_VALID.into());
        }
        connect.client_id = broker.assign_client_id();
        assigned = Some(connect.client_id.clone());
    }
    if connect.client_id.len() > usize::from(config.limits.max_client_id_length) {
        return Err(reason::CLIENT_IDENTIFIER_NOT_VALID.into());
    }
    if let Some(will) = &connect.will {
        // An empty will topic or one with wildcards breaks the specification
        // ([MQTT-3.1.3-10], [MQTT-4.7.1-1], [MQTT-4.7.3-1]); one beyond this broker's
        // limits does not, and is refused with a CONNACK in every version.
        if crate::topic::validate_topic_name(&will.topic).is_err() {
            return Err(if v5 {
                Rejection::ConnAck(reason::TOPIC_NAME_INVALID)
            } else {
                Rejection::NonConforming("[MQTT-3.1.3-10] invalid will topic")
            });
        }
        if !super::policy::topic_within_limits(&will.topic, &config.limits) {
            return Err(reason::TOPIC_NAME_INVALID.into());
        }
    }

    let max_keep_alive = config.limits.max_keep_alive_secs;
    let mut keep_alive = connect.keep_alive;
    let mut server_keep_alive = None;
    // Keep alive 0 (never) is longer than any maximum: a MQTT 5 client is told the maximum
    // in Server Keep Alive. A 3.x client cannot be told, so 0 is left alone there (the
    // session still ends on a dropped socket) and a longer value is refused as Mosquitto
    // does, since holding the client to an interval it does not know would cut it off.
    let exceeds_max = keep_alive > max_keep_alive || (v5 && keep_alive == 0);
    if max_keep_alive != 0 && exceeds_max {
        if !v5 {
            return Err(reason::CLIENT_IDENTIFIER_NOT_VALID.into());
        }
        keep_alive = max_keep_alive;
        server_keep_alive = Some(max_keep_alive);
    }

    let (session_expiry_secs, expiry_clamped) = session_expiry(config, connect);
    let mut connack = ConnAck::default();
    if v5 {
        connack.properties = ConnAckProperties {
            session_expiry_interval: expiry_clamped.then_some(session_expiry_secs),
            receive_maximum: Some(config.limits.receive_maximum),
            maximum_packet_size: Some(config.limits.max_packet_size),
            assigned_client_identifier: assigned,
            topic_alias_maximum: Some(config.limits.topic_alias_maximum),
            retain_available: Some(true),
            wildcard_subscription_available: Some(true),
            subscription_identifiers_available: Some(true),
            shared_subscription_available: Some(true),
            server_keep_alive,
            ..ConnAckProperties::default()
        };
    }
    Ok(Terms {
        keep_alive,
        session_expiry: Duration::from_secs(u64::from(session_expiry_secs)),
        connack,
    })
}

/// The Session Expiry Interval in seconds (u32::MAX: never), and whether the client's
/// request was lowered (MQTT 5 then announces the value in CONNACK).
fn session_expiry(config: &Config, connect: &Connect) -> (u32, bool) {
    match connect.protocol {
        ProtocolVersion::V5 => {
            let requested = connect.properties.session_expiry_interval.unwrap_or(0);
            let max = config.sessions.max_session_expiry_secs;
            (requested.min(max), requested > max)
        }
        ProtocolVersion::V3_1 | ProtocolVersion::V3_1_1 => {
            if connect.clean_start {
                (0, false)
            } else {
                match config.sessions.persistent_session_expiry_secs {
                    0 => (u32::MAX, false),
                    secs => (secs, false),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::protocol::ConnectProperties;

    fn connect(protocol: ProtocolVersion, clean_start: bool, expiry: Option<u32>) -> Connect {
        Connect {
            protocol,
            clean_start,
            keep_alive: 30,
            client_id: "c".into(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties {
                session_expiry_interval: expiry,
                ..ConnectProperties::default()
            },
        }
    }

    #[test]
    fn v3_session_expiry_follows_clean_session_and_config() {
        let mut config = Config::default();
        let clean = connect(ProtocolVersion::V3_1_1, true, None);
        let persistent = connect(ProtocolVersion::V3_1_1, false, None);
        assert_eq!(session_expiry(&config, &clean), (0, false));
        assert_eq!(session_expiry(&config, &persistent), (u32::MAX, false));
        config.sessions.persistent_session_expiry_secs = 3600;
        assert_eq!(session_expiry(&config, &persistent), (3600, false));
    }

    #[test]
    fn v5_session_expiry_is_clamped_and_reported() {
        let mut config = Config::default();
        config.sessions.max_session_expiry_secs = 100;
        let asks_more = connect(ProtocolVersion::V5, false, Some(500));
        let asks_less = connect(ProtocolVersion::V5, false, Some(50));
        let asks_none = connect(ProtocolVersion::V5, true, None);
        assert_eq!(session_expiry(&config, &asks_more), (100, true));
        assert_eq!(session_expiry(&config, &asks_less), (50, false));
        assert_eq!(session_expiry(&config, &asks_none), (0, false));
    }
}
