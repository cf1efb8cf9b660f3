//! A publisher that knows exactly which of its messages the broker acknowledged: one
//! message at a time over a raw MQTT 3.1.1 or 5 connection, each flow (PUBACK, or
//! PUBREC then PUBREL/PUBCOMP) completed before the next, so a kill -9 leaves at most
//! one message in doubt, which it sends again (DUP, same packet id) on its next
//! connection, as a client must.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one packet may take to arrive before the connection counts as failed.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// What the broker said of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// PUBACK, or PUBREC (QoS 2: the broker took it; PUBCOMP followed).
    Accepted,
    /// A failure reason code (MQTT 5): not accepted, to be published again.
    Refused(u8),
}

pub struct RawPublisher {
    stream: TcpStream,
    version: u8,
}

fn remaining_length(mut length: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if length == 0 {
            return;
        }
    }
}

fn string(text: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    remaining_length(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

impl RawPublisher {
    /// Connects as `client_id` with MQTT `version` (4: 3.1.1, 5), keeping the session
    /// (clean session 0; MQTT 5: session expiry of an hour). Returns Session Present,
    /// `Err` when the connection fails or the CONNACK refuses.
    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
        version: u8,
    ) -> Result<(RawPublisher, bool), String> {
        let stream = tokio::time::timeout(ANSWER_WITHIN, TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|error| error.to_string())?;
        let _ = stream.set_nodelay(true);
        let mut publisher = RawPublisher { stream, version };
        let mut body = Vec::new();
        string("MQTT", &mut body);
        body.push(version);
        body.push(0x00); // clean session / clean start 0
        body.extend_from_slice(&60u16.to_be_bytes());
        if version == 5 {
            // Session Expiry Interval: one hour.
            body.extend_from_slice(&[5, 0x11, 0, 0, 0x0e, 0x10]);
        }
        string(client_id, &mut body);
        publisher.send(&packet(0x10, &body)).await?;
        let (kind, body) = publisher.read().await?;
        if kind >> 4 != 2 || body.len() < 2 {
            return Err(format!("expected CONNACK, got packet type {}", kind >> 4));
        }
        if body[1] != 0 {
            return Err(format!("CONNACK refused: 0x{:02x}", body[1]));
        }
        Ok((publisher, body[0] & 1 == 1))
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        tokio::time::timeout(ANSWER_WITHIN, self.stream.write_all(bytes))
            .await
            .map_err(|_| "write timed out".to_string())?
            .map_err(|error| error.to_string())
    }

    /// The next packet: its first byte and body.
    async fn read(&mut self) -> Result<(u8, Vec<u8>), String> {
        let read = async {
            let first = self.stream.read_u8().await?;
            let mut length = 0usize;
            let mut shift = 0;
            loop {
                let byte = self.stream.read_u8().await?;
                length |= ((byte & 0x7f) as usize) << shift;
                if byte & 0x80 == 0 {
                    break;
                }
                shift += 7;
            }
            let mut body = vec![0; length];
            self.stream.read_exact(&mut body).await?;
            std::io::Result::Ok((first, body))
        };
        tokio::time::timeout(ANSWER_WITHIN, read)
            .await
            .map_err(|_| "no answer in time".to_string())?
            .map_err(|error| error.to_string())
    }

    /// The next acknowledgement of `kind` (4 PUBACK, 5 PUBREC, 7 PUBCOMP) for
    /// `packet_id`: its reason code (0 when absent). Other packets are skipped; a
    /// DISCONNECT ends the connection.
    async fn answer(&mut self, kind: u8, packet_id: u16) -> Result<u8, String> {
        loop {
            let (first, body) = self.read().await?;
            if first >> 4 == 14 {
                return Err(format!(
                    "disconnected by the broker: 0x{:02x}",
                    body.first().copied().unwrap_or(0)
                ));
            }
            if first >> 4 == kind && body.len() >= 2 {
                let id = u16::from_be_bytes([body[0], body[1]]);
                if id == packet_id {
                    return Ok(body.get(2).copied().unwrap_or(0));
                }
            }
        }
    }

    /// Publishes `payload` at `qos` (1 or 2) with `packet_id` and completes its flow.
    /// `Err` when the connection failed first: the message is in doubt and must be sent
    /// again (`resume` for QoS 2 once PUBREC came).
    pub async fn publish(
        &mut self,
        topic: &str,
        qos: u8,
        packet_id: u16,
        payload: &[u8],
        dup: bool,
    ) -> Result<Outcome, String> {
        let mut body = Vec::new();
        string(topic, &mut body);
        body.extend_from_slice(&packet_id.to_be_bytes());
        if self.version == 5 {
            body.push(0);
        }
        body.extend_from_slice(payload);
        let first = 0x30 | (qos << 1) | if dup { 0x08 } else { 0 };
        self.send(&packet(first, &body)).await?;
        if qos == 1 {
            let reason = self.answer(4, packet_id).await?;
            return Ok(if reason >= 0x80 {
                Outcome::Refused(reason)
            } else {
                Outcome::Accepted
            });
        }
        let reason = self.answer(5, packet_id).await?;
        if reason >= 0x80 {
            return Ok(Outcome::Refused(reason));
        }
        Ok(Outcome::Accepted)
    }

    /// Releases a QoS 2 message the broker took (PUBREL, waits for PUBCOMP).
    pub async fn release(&mut self, packet_id: u16) -> Result<(), String> {
        let mut body = packet_id.to_be_bytes().to_vec();
        if self.version == 5 {
            body.push(0);
        }
        self.send(&packet(0x62, &body)).await?;
        self.answer(7, packet_id).await.map(|_| ())
    }
}
