//! Authentication at CONNECT: the password or certificate decision of
//! `crate::auth::Security`, or an MQTT 5 enhanced authentication exchange (AUTH packets
//! before CONNACK), and the will's publish permission.
//!
//! Everything here runs before a session exists, under the CONNECT timeout; a refusal
//! carries the reason code of the CONNACK that ends the connection.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::auth::{Credentials, Step, Want};
use crate::broker::Broker;
use crate::listener::ListenerContext;
use crate::protocol::{
    decode_from_client, encode, reason, Auth, AuthProperties, Connect, Packet, ProtocolVersion,
};

use super::buffer;

/// More rounds than any supported method needs; a client cannot keep the exchange going.
const MAX_AUTH_ROUNDS: usize = 8;

/// An admitted client.
#[derive(Debug, Default)]
pub(super) struct Admitted {
    /// `None` for an anonymous client.
    pub username: Option<String>,
    /// The enhanced authentication method, kept for re-authentication.
    pub method: Option<ByteString>,
    /// Authentication Data for CONNACK (e.g. SCRAM server-final-message).
    pub data: Option<Bytes>,
}

/// Decides whether `connect` may connect. `Err` is the CONNACK reason code.
pub(super) async fn admit<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    broker: &Broker,
    listener: &ListenerContext,
    peer: std::net::SocketAddr,
    certificate_identity: Option<String>,
    connect: &Connect,
) -> Result<Admitted, u8> {
    let admitted = match &connect.properties.authentication_method {
        Some(method) if connect.protocol.is_v5() => {
            exchange(stream, buf, broker, listener, method.clone(), connect).await?
        }
        _ => {
            let security = listener.security.clone();
            let username = connect.username.as_ref().map(|name| name.to_string());
            let password = connect.password.clone();
            let allow_anonymous = listener.admits_anonymous(peer);
            let v5 = connect.protocol.is_v5();
            let decide = move || {
                security.admit(Credentials {
                    username: username.as_deref(),
                    password: password.as_deref(),
                    certificate_identity: certificate_identity.as_deref(),
                    allow_anonymous,
                    v5,
                })
            };
            // Password checks derive keys (milliseconds of CPU): keep them off the
            // runtime's worker threads. Without a username there is no password check, and
            // no need for a blocking thread (each one costs memory).
            let decided = if connect.username.is_some() {
                tokio::task::spawn_blocking(decide)
                    .await
                    .map_err(|_| reason::UNSPECIFIED_ERROR)?
            } else {
                decide()
            };
            Admitted {
                username: decided?,
                ..Admitted::default()
            }
        }
    };
    if let Some(will) = &connect.will {
        let username = admitted.username.as_deref();
        if !listener
            .security
            .allows(username, &connect.client_id, Want::Publish, &will.topic)
        {
            return Err(reason::NOT_AUTHORIZED);
        }
    }
    Ok(admitted)
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    broker: &Broker,
    listener: &ListenerContext,
    method: ByteString,
    connect: &Connect,
) -> Result<Admitted, u8> {
    let Some(authenticator) = listener.security.authenticator(&method) else {
        return Err(reason::BAD_AUTHENTICATION_METHOD);
    };
    let mut exchange = authenticator.start();
    let mut data = connect
        .properties
        .authentication_data
        .clone()
        .unwrap_or_default();
    let limits = &broker.config().limits;
    let deadline = Duration::from_secs(limits.connect_timeout_secs);
    for _ in 0..MAX_AUTH_ROUNDS {
        match exchange.step(&data) {
            Step::Success { username, data } => {
                return Ok(Admitted {
                    username: Some(username),
                    method: Some(method),
                    data: Some(Bytes::from(data)),
                })
            }
            Step::Failure => return Err(reason::BAD_USER_NAME_OR_PASSWORD),
            Step::Continue(challenge) => {
                let packet = auth_packet(reason::CONTINUE_AUTHENTICATION, &method, challenge);
                let mut out = BytesMut::new();
                encode(&packet, ProtocolVersion::V5, &mut out);
                let sent = async {
                    stream.write_all(&out).await?;
                    stream.flush().await
                };
                sent.await.map_err(|_| reason::UNSPECIFIED_ERROR)?;
                let answer = tokio::time::timeout(
                    deadline,
                    read_packet(stream, buf, limits.max_packet_size),
                )
                .await
                .map_err(|_| reason::NOT_AUTHORIZED)??;
                data = continuation(answer, &method)?;
            }
        }
    }
    Err(reason::NOT_AUTHORIZED)
}

/// The data of the client's AUTH 0x18 for `method`; anything else is a protocol error.
pub(super) fn continuation(packet: Packet, method: &str) -> Result<Bytes, u8> {
    match packet {
        Packet::Auth(auth)
            if auth.reason_code == reason::CONTINUE_AUTHENTICATION
                && auth.properties.authentication_method.as_deref() == Some(method) =>
        {
            Ok(auth.properties.authentication_data.unwrap_or_default())
        }
        _ => Err(reason::PROTOCOL_ERROR),
    }
}

/// An AUTH packet of `method` carrying `data`.
pub(super) fn auth_packet(reason_code: u8, method: &ByteString, data: Vec<u8>) -> Packet {
    Packet::Auth(Auth {
        reason_code,
        properties: AuthProperties {
            authentication_method: Some(method.clone()),
            authentication_data: Some(Bytes::from(data)),
            ..AuthProperties::default()
        },
    })
}

async fn read_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max_packet_size: u32,
) -> Result<Packet, u8> {
    loop {
        match decode_from_client(buf, Some(ProtocolVersion::V5), max_packet_size) {
            Ok(Some(packet)) => return Ok(packet),
            Ok(None) => {}
            Err(error) => return Err(error.reason_code()),
        }
        match buffer::read_some(stream, buf).await {
            Ok(0) | Err(_) => return Err(reason::UNSPECIFIED_ERROR),
            Ok(_) => {}
        }
    }
}
