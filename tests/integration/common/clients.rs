//! Thin wrappers over the rumqttc client library (MQTT 3.1.1 and MQTT 5), so tests also
//! exercise the broker with a real third-party client.
//!
//! rumqttc only makes progress while its event loop is polled; each wrapper method polls
//! until the step it stands for has completed (CONNACK, SUBACK, the end of a QoS flow)
//! and keeps any PUBLISH that arrives meanwhile for `next_publish`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::v5 as r5;

use super::GUARD;

/// Polls a 3.1.1 event loop until a PUBLISH arrives (acknowledged automatically by
/// rumqttc), failing after `timeout`.
pub async fn next_publish(
    eventloop: &mut rumqttc::EventLoop,
    timeout: Duration,
) -> rumqttc::Publish {
    tokio::time::timeout(timeout, async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => return p,
                Ok(_) => {}
                Err(e) => panic!("3.1.1 client connection failed: {e}"),
            }
        }
    })
    .await
    .expect("no PUBLISH within the guard timeout")
}

/// Polls an MQTT 5 event loop until a PUBLISH arrives.
pub async fn next_publish_v5(
    eventloop: &mut r5::EventLoop,
    timeout: Duration,
) -> r5::mqttbytes::v5::Publish {
    tokio::time::timeout(timeout, async {
        loop {
            match eventloop.poll().await {
                Ok(r5::Event::Incoming(r5::mqttbytes::v5::Packet::Publish(p))) => return p,
                Ok(_) => {}
                Err(e) => panic!("MQTT 5 client connection failed: {e}"),
            }
        }
    })
    .await
    .expect("no PUBLISH within the guard timeout")
}

pub fn qos(level: u8) -> rumqttc::QoS {
    rumqttc::qos(level).expect("QoS 0, 1 or 2")
}

pub fn qos5(level: u8) -> r5::mqttbytes::QoS {
    r5::mqttbytes::qos(level).expect("QoS 0, 1 or 2")
}

/// A connected rumqttc 3.1.1 client.
pub struct V4Client {
    pub client: rumqttc::AsyncClient,
    pub eventloop: rumqttc::EventLoop,
    received: VecDeque<rumqttc::Publish>,
}

impl V4Client {
    pub fn options(addr: SocketAddr, client_id: &str) -> rumqttc::MqttOptions {
        let mut options = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        options
    }

    /// Connects with a clean session and returns the client with its CONNACK.
    pub async fn connect(addr: SocketAddr, client_id: &str) -> (V4Client, rumqttc::ConnAck) {
        V4Client::connect_with(V4Client::options(addr, client_id)).await
    }

    pub async fn connect_with(options: rumqttc::MqttOptions) -> (V4Client, rumqttc::ConnAck) {
        let (client, eventloop) = rumqttc::AsyncClient::new(options, 100);
        let mut me = V4Client {
            client,
            eventloop,
            received: VecDeque::new(),
        };
        let connack = me
            .poll_until(|event| match event {
                rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(c)) => Some(c.clone()),
                _ => None,
            })
            .await;
        (me, connack)
    }

    async fn poll_until<T>(&mut self, mut want: impl FnMut(&rumqttc::Event) -> Option<T>) -> T {
        tokio::time::timeout(GUARD, async {
            loop {
                let event = match self.eventloop.poll().await {
                    Ok(event) => event,
                    Err(e) => panic!("3.1.1 client connection failed: {e}"),
                };
                if let Some(found) = want(&event) {
                    return found;
                }
                if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = event {
                    self.received.push_back(p);
                }
            }
        })
        .await
        .expect("rumqttc 3.1.1 client: step not completed within the guard timeout")
    }

    /// Subscribes and returns the SUBACK return codes.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        level: u8,
    ) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client
            .subscribe(filter, qos(level))
            .await
            .expect("queue SUBSCRIBE");
        self.poll_until(|event| match event {
            rumqttc::Event::Incoming(rumqttc::Packet::SubAck(s)) => Some(s.return_codes.clone()),
            _ => None,
        })
        .await
    }

    /// Publishes and waits until the QoS flow is complete (for QoS 0: until it is written).
    pub async fn publish(&mut self, topic: &str, level: u8, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos(level), retain, payload.to_vec())
            .await
            .expect("queue PUBLISH");
        self.poll_until(|event| match (level, event) {
            (0, rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(_))) => Some(()),
            (1, rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => Some(()),
            (2, rumqttc::Event::Incoming(rumqttc::Packet::PubComp(_))) => Some(()),
            _ => None,
        })
        .await;
    }

    /// The next PUBLISH received (already acknowledged by rumqttc).
    pub async fn next_publish(&mut self) -> rumqttc::Publish {
        if let Some(p) = self.received.pop_front() {
            return p;
        }
        next_publish(&mut self.eventloop, GUARD).await
    }

    /// Sends DISCONNECT and waits until it is written.
    pub async fn disconnect(mut self) {
        self.client.disconnect().await.expect("queue DISCONNECT");
        self.poll_until(|event| {
            matches!(
                event,
                rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)
            )
            .then_some(())
        })
        .await;
    }
}

/// A connected rumqttc MQTT 5 client.
pub struct V5Client {
    pub client: r5::AsyncClient,
    pub eventloop: r5::EventLoop,
    received: VecDeque<r5::mqttbytes::v5::Publish>,
}

impl V5Client {
    pub fn options(addr: SocketAddr, client_id: &str) -> r5::MqttOptions {
        let mut options = r5::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        options
    }

    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
    ) -> (V5Client, r5::mqttbytes::v5::ConnAck) {
        V5Client::connect_with(V5Client::options(addr, client_id)).await
    }

    pub async fn connect_with(options: r5::MqttOptions) -> (V5Client, r5::mqttbytes::v5::ConnAck) {
        let (client, eventloop) = r5::AsyncClient::new(options, 100);
        let mut me = V5Client {
            client,
            eventloop,
            received: VecDeque::new(),
        };
        let connack = me
            .poll_until(|event| match event {
                r5::Event::Incoming(r5::mqttbytes::v5::Packet::ConnAck(c)) => Some(c.clone()),
                _ => None,
            })
            .await;
        (me, connack)
    }

    async fn poll_until<T>(&mut self, mut want: impl FnMut(&r5::Event) -> Option<T>) -> T {
        use r5::mqttbytes::v5::Packet;
        tokio::time::timeout(GUARD, async {
            loop {
                let event = match self.eventloop.poll().await {
                    Ok(event) => event,
                    Err(e) => panic!("MQTT 5 client connection failed: {e}"),
                };
                if let Some(found) = want(&event) {
                    return found;
                }
                if let r5::Event::Incoming(Packet::Publish(p)) = event {
                    self.received.push_back(p);
                }
            }
        })
        .await
        .expect("rumqttc MQTT 5 client: step not completed within the guard timeout")
    }

    pub async fn subscribe(
        &mut self,
        filter: &str,
        level: u8,
    ) -> Vec<r5::mqttbytes::v5::SubscribeReasonCode> {
        use r5::mqttbytes::v5::Packet;
        self.client
            .subscribe(filter, qos5(level))
            .await
            .expect("queue SUBSCRIBE");
        self.poll_until(|event| match event {
            r5::Event::Incoming(Packet::SubAck(s)) => Some(s.return_codes.clone()),
            _ => None,
        })
        .await
    }

    pub async fn publish(&mut self, topic: &str, level: u8, retain: bool, payload: &[u8]) {
        use r5::mqttbytes::v5::Packet;
        self.client
            .publish(topic, qos5(level), retain, payload.to_vec())
            .await
            .expect("queue PUBLISH");
        self.poll_until(|event| match (level, event) {
            (0, r5::Event::Outgoing(rumqttc::Outgoing::Publish(_))) => Some(()),
            (1, r5::Event::Incoming(Packet::PubAck(_))) => Some(()),
            (2, r5::Event::Incoming(Packet::PubComp(_))) => Some(()),
            _ => None,
        })
        .await;
    }

    pub async fn next_publish(&mut self) -> r5::mqttbytes::v5::Publish {
        if let Some(p) = self.received.pop_front() {
            return p;
        }
        next_publish_v5(&mut self.eventloop, GUARD).await
    }

    pub async fn disconnect(mut self) {
        self.client.disconnect().await.expect("queue DISCONNECT");
        self.poll_until(|event| {
            matches!(event, r5::Event::Outgoing(rumqttc::Outgoing::Disconnect)).then_some(())
        })
        .await;
    }
}
