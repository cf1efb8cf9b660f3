//! From an accepted socket to a connected client: reads CONNECT under its deadline,
//! authenticates, attaches the session and queues CONNACK (`open`), or refuses the
//! client with a failure CONNACK.

use std::sync::Arc;

use bytes::BytesMut;
use bytestring::ByteString;

use crate::broker::{now, Broker, ForwardOrder, Refusal, Stats};
use crate::listener::{Accepted, ClientStream, ListenerContext};
use crate::protocol::{encode, reason, ConnAck, Packet, ProtocolVersion};
use crate::session::ClientInfo;
use crate::storage::WallClock;

use super::close::send_last_and_close;
use super::handshake::{self, HandshakeError, Rejection};
use super::held::HeldPackets;
use super::{authenticate, policy, Connection, EnhancedAuth};

/// Counts the socket as closed on every way out of `open` that gives no `Connected`
/// (whose `Connection` counts itself once dropped).
struct OpenSocket<'a>(&'a Stats);

impl Drop for OpenSocket<'_> {
    fn drop(&mut self) {
        Stats::incr(&self.0.connections_closed);
    }
}

/// A client whose CONNECT was accepted, with CONNACK queued, ready to be served.
///
/// The connection state is boxed: futures keep a moved value's old place as well as its
/// new one, so an inline `Connection` would be paid for several times in every
/// connection's task.
pub struct Connected {
    connection: Box<Connection>,
    stream: ClientStream,
}

impl Connected {
    /// Serves the client until the connection ends, then closes it.
    pub fn serve(self) -> impl std::future::Future<Output = ()> + Send {
        self.connection.run(self.stream, None, true)
    }
}

/// Reads CONNECT, authenticates the client and attaches its session. `None` when the
/// connection ended before (refused, closed, timed out, shutdown).
///
/// The caller awaits this in a box of its own, freed once the client is connected: this
/// future is larger than the connection loop, which is all an idle client keeps.
pub async fn open(
    accepted: Accepted,
    broker: Arc<Broker>,
    listener: Arc<ListenerContext>,
) -> Option<Connected> {
    Stats::incr(&broker.stats().connections_accepted);
    let open_socket = OpenSocket(broker.stats());
    // The limits in force when the client arrived hold for its whole connection, even
    // if a reload changes them meanwhile: a MQTT 5 client was told them in CONNACK.
    let config = broker.config();
    let Accepted {
        mut stream,
        peer,
        certificate_identity,
        slots,
    } = accepted;
    let mut shutdown = broker.shutdown_signal();
    let mut read_buf = BytesMut::new();

    let first = tokio::select! {
        result = handshake::read_connect(&mut stream, &mut read_buf, &config, broker.stats()) => result,
        _ = shutdown.wait_for(|stopping| *stopping) => {
            return None;
        }
    };
    let mut connect = match first {
        Ok(connect) => connect,
        Err(error) => {
            broker.stats().refused(error.refusal());
            tracing::debug!(%peer, ?error, "connection closed before a valid CONNECT");
            if let HandshakeError::Decode(crate::protocol::DecodeError::UnsupportedProtocol) = error
            {
                // The 3.1.1 CONNACK format is the one every client version can read.
                let refusal = ConnAck {
                    reason_code: reason::UNSUPPORTED_PROTOCOL_VERSION,
                    ..ConnAck::default()
                };
                send_and_close(
                    &mut stream,
                    Packet::ConnAck(refusal),
                    ProtocolVersion::V3_1_1,
                    broker.stats(),
                )
                .await;
            }
            return None;
        }
    };
    let version = connect.protocol;
    // A bridge's local session holds its outbox: no client may take it over.
    if !listener.internal
        && connect
            .client_id
            .starts_with(crate::bridge::LOCAL_SESSION_PREFIX)
    {
        tracing::debug!(%peer, client_id = %connect.client_id, "client id reserved for bridges");
        refuse(
            &mut stream,
            &broker,
            version,
            reason::CLIENT_IDENTIFIER_NOT_VALID,
        )
        .await;
        return None;
    }
    let mut terms = match handshake::negotiate(&broker, &mut connect) {
        Ok(terms) => terms,
        Err(Rejection::ConnAck(reason_code)) => {
            tracing::debug!(%peer, client_id = %connect.client_id, reason_code, "connection refused");
            refuse(&mut stream, &broker, version, reason_code).await;
            return None;
        }
        Err(Rejection::NonConforming(rule)) => {
            broker.stats().refused(Refusal::Malformed);
            tracing::debug!(%peer, client_id = %connect.client_id, rule, "non-conforming CONNECT closed without CONNACK");
            return None;
        }
    };
    // A bridge's session is its outbox: `sessions.max_session_expiry_secs` caps clients'
    // sessions, not that one, which lives as long as its bridge is configured.
    if listener.internal {
        terms.session_expiry = crate::broker::lifecycle::NEVER_EXPIRES;
    }
    let admitted = authenticate::admit(
        &mut stream,
        &mut read_buf,
        &broker,
        &listener,
        peer,
        certificate_identity,
        &connect,
    )
    .await;
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(reason_code) => {
            tracing::debug!(%peer, client_id = %connect.client_id, reason_code, "authentication refused");
            refuse(&mut stream, &broker, version, reason_code).await;
            return None;
        }
    };

    // The session, its registry entry and its log lines keep the client id for as long
    // as the session lives: a copy of its own, rather than a view that would keep the
    // whole CONNECT (password included) in memory.
    connect.client_id = ByteString::from(&*connect.client_id);
    // A cluster node takes the session's ownership through consensus first; one cut off
    // from the majority refuses (`Broker::claim_session`).
    let persistent = !terms.session_expiry.is_zero();
    // A bridge's local session belongs to this node (its outbox lives here): no claim.
    let claim = if listener.internal {
        Ok(None)
    } else {
        broker.claim_session(&connect.client_id, persistent).await
    };
    let claim = match claim {
        Ok(claim) => claim,
        Err(reason_code) => {
            refuse(&mut stream, &broker, version, reason_code).await;
            return None;
        }
    };
    let connected = broker.connect(&connect, terms.session_expiry, admitted.username.as_deref());
    if !broker.still_owner(&connect.client_id, claim.as_ref()) {
        // Another node's claim for this client id committed after ours: it wins.
        broker.disconnect(&connected.handle, connected.attachment.generation, false);
        refuse(&mut stream, &broker, version, reason::SERVER_UNAVAILABLE).await;
        return None;
    }
    if let Some(mut session) = connected
        .handle
        .lock_current(connected.attachment.generation)
    {
        session.set_client_info(ClientInfo {
            peer: peer.into(),
            username: admitted.username.as_deref().map(Box::from),
            connected_at_ms: WallClock::now().unix_millis(),
            keep_alive: terms.keep_alive,
            clean_start: connect.clean_start,
        });
    }
    tracing::info!(
        %peer,
        client_id = %connect.client_id,
        protocol = version.level(),
        clean_start = connect.clean_start,
        session_present = connected.session_present,
        keep_alive = terms.keep_alive,
        "client connected"
    );
    let mut connack = terms.connack;
    connack.session_present = connected.session_present;
    if admitted.method.is_some() {
        connack.properties.authentication_method = admitted.method.clone();
        connack.properties.authentication_data = admitted.data;
    }
    // CONNACK confirms a persistent session only once its record is durable, and must
    // precede everything else the session sends (redeliveries), so this one write is
    // awaited here rather than held.
    if let Some(written) = connected.written {
        if let Err(error) = written.await {
            broker.stats().storage_failed(&error);
            broker.disconnect(&connected.handle, connected.attachment.generation, false);
            refuse(&mut stream, &broker, version, reason::UNSPECIFIED_ERROR).await;
            return None;
        }
    }
    let connection = Box::new(Connection {
        broker: broker.clone(),
        config,
        handle: connected.handle,
        generation: connected.attachment.generation,
        version,
        peer,
        read_buf,
        write_buf: BytesMut::new(),
        out: vec![Packet::ConnAck(connack)],
        held: HeldPackets::default(),
        keep_alive_secs: terms.keep_alive,
        qos0_unwritten: 0,
        unflushed: false,
        listener: listener.clone(),
        username: admitted.username,
        enhanced_auth: admitted.method.map(|method| {
            Box::new(EnhancedAuth {
                method,
                exchange: None,
            })
        }),
        rate: policy::PublishRate::new(broker.config().limits.max_publish_rate, now()),
        paused: None,
        outbox_deadline: None,
        output_waiting: false,
        slots,
        parked: false,
        forward_order: ForwardOrder::default(),
    });
    drop(connect);
    // The connection counts itself closed from here on.
    std::mem::forget(open_socket);
    Some(Connected { connection, stream })
}

/// Answers CONNECT with a failure CONNACK, counts the refusal (which also logs it,
/// rate-limited) and closes.
async fn refuse(
    stream: &mut ClientStream,
    broker: &Broker,
    version: ProtocolVersion,
    reason_code: u8,
) {
    broker
        .stats()
        .refused(Refusal::from_reason_code(reason_code));
    let refusal = ConnAck {
        reason_code,
        ..ConnAck::default()
    };
    send_and_close(stream, Packet::ConnAck(refusal), version, broker.stats()).await;
}

/// Writes one packet and closes (`send_last_and_close`).
async fn send_and_close(
    stream: &mut ClientStream,
    packet: Packet,
    version: ProtocolVersion,
    stats: &Stats,
) {
    let mut buf = BytesMut::new();
    encode(&packet, version, &mut buf);
    Stats::incr(&stats.packets_sent);
    send_last_and_close(stream, &buf, stats).await;
}
