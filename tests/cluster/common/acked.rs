//! A raw MQTT 3.1.1 or 5 client with a persistent session, for the tests that kill
//! nodes under load:
//! - publishing, it knows exactly which of its messages the broker acknowledged: one
//!   message at a time, each flow (PUBACK, or PUBREC then PUBREL/PUBCOMP) completed
//!   before the next, so a kill -9 leaves at most one message in doubt, which it sends
//!   again (DUP, same packet id) on its next connection, as a client must;
//! - subscribing, it answers a PUBREL it does not know (the resumed session of a QoS 2
//!   message it acknowledged on a connection that died) with PUBCOMP, as the spec says.
//!   (rumqttc forgets its QoS 2 packet ids on reconnection and closes the connection on
//!   such a PUBREL, every time the session resends it.)

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

pub struct RawClient {
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

impl RawClient {
    /// Connects as `client_id` with MQTT `version` (4: 3.1.1, 5), keeping the session
    /// (clean session 0; MQTT 5: session expiry of an hour). Returns Session Present,
    /// `Err` when the connection fails or the CONNACK refuses.
    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
        version: u8,
    ) -> Result<(RawClient, bool), String> {
        let stream = tokio::time::timeout(ANSWER_WITHIN, TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|error| error.to_string())?;
        let _ = stream.set_nodelay(true);
        let mut publisher = RawClient { stream, version };
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
        self.send_publish_with(topic, qos, packet_id, payload, dup)
            .await?;
        // PUBACK for QoS 1, PUBREC for QoS 2.
        let answer_type = if qos == 1 { 4 } else { 5 };
        let reason = self.answer(answer_type, packet_id).await?;
        Ok(if reason >= 0x80 {
            Outcome::Refused(reason)
        } else {
            Outcome::Accepted
        })
    }

    /// Sends a PUBLISH at `qos` (1 or 2) with `packet_id` without waiting for its
    /// acknowledgement (`acknowledgement` reads it).
    pub async fn send_publish(
        &mut self,
        topic: &str,
        qos: u8,
        packet_id: u16,
        payload: &[u8],
    ) -> Result<(), String> {
        self.send_publish_with(topic, qos, packet_id, payload, false)
            .await
    }

    async fn send_publish_with(
        &mut self,
        topic: &str,
        qos: u8,
        packet_id: u16,
        payload: &[u8],
        dup: bool,
    ) -> Result<(), String> {
        let mut body = Vec::new();
        string(topic, &mut body);
        body.extend_from_slice(&packet_id.to_be_bytes());
        if self.version == 5 {
            body.push(0);
        }
        body.extend_from_slice(payload);
        let first = 0x30 | (qos << 1) | if dup { 0x08 } else { 0 };
        self.send(&packet(first, &body)).await
    }

    /// The reason code of the acknowledgement of `kind` (4 PUBACK, 5 PUBREC) for
    /// `packet_id`, skipping the packets before it.
    pub async fn acknowledgement(&mut self, kind: u8, packet_id: u16) -> Result<u8, String> {
        self.answer(kind, packet_id).await
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

/// A message a subscriber received.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub payload: Vec<u8>,
    pub dup: bool,
}

impl RawClient {
    /// Subscribes to `filter` at `qos` and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: u8) -> Result<(), String> {
        let mut body = 1u16.to_be_bytes().to_vec();
        if self.version == 5 {
            body.push(0);
        }
        string(filter, &mut body);
        body.push(qos);
        self.send(&packet(0x82, &body)).await?;
        loop {
            let (first, _) = self.read().await?;
            if first >> 4 == 9 {
                return Ok(());
            }
        }
    }

    /// The next PUBLISH, acknowledged (PUBACK, or PUBREC; PUBRELs are answered on the
    /// way). An idle connection is kept alive with PINGREQ. `Err` once it failed.
    pub async fn receive(&mut self) -> Result<Incoming, String> {
        loop {
            let (first, body) = match self.read().await {
                Ok(read) => read,
                Err(error) if error == "no answer in time" => {
                    self.send(&[0xc0, 0]).await?;
                    continue;
                }
                Err(error) => return Err(error),
            };
            match first >> 4 {
                3 => {
                    let qos = (first >> 1) & 3;
                    let dup = first & 0x08 != 0;
                    let topic_len = u16::from_be_bytes([body[0], body[1]]) as usize;
                    let mut at = 2 + topic_len;
                    let mut packet_id = 0;
                    if qos > 0 {
                        packet_id = u16::from_be_bytes([body[at], body[at + 1]]);
                        at += 2;
                    }
                    if self.version == 5 {
                        let mut length = 0usize;
                        let mut shift = 0;
                        loop {
                            let byte = body[at];
                            at += 1;
                            length |= ((byte & 0x7f) as usize) << shift;
                            if byte & 0x80 == 0 {
                                break;
                            }
                            shift += 7;
                        }
                        at += length;
                    }
                    let payload = body[at..].to_vec();
                    match qos {
                        1 => self.send(&packet(0x40, &packet_id.to_be_bytes())).await?,
                        2 => self.send(&packet(0x50, &packet_id.to_be_bytes())).await?,
                        _ => {}
                    }
                    return Ok(Incoming { payload, dup });
                }
                6 if body.len() >= 2 => {
                    self.send(&packet(0x70, &body[..2])).await?;
                }
                14 => return Err("disconnected by the broker".into()),
                _ => {}
            }
        }
    }
}
