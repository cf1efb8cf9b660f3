//! rumqttc clients (MQTT 3.1.1 and 5), so a restart is also checked with a third-party
//! client's view of sessions and acknowledgements.
//!
//! rumqttc only makes progress while its event loop is polled: each method polls until
//! the step it stands for is complete, keeping the PUBLISH packets that arrive meanwhile
//! (rumqttc acknowledges them itself, QoS 2 handshake included).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5 as r5;
use rumqttc::v5::mqttbytes::v5 as p5;

use crate::common::within;

/// What a rumqttc subscriber received: per topic, payloads in order of arrival, and
/// whether each came with the retain flag.
#[derive(Debug, Default)]
pub struct Received {
    pub by_topic: BTreeMap<String, Vec<Bytes>>,
    pub retained: Vec<(String, Bytes)>,
}

impl Received {
    fn record(&mut self, topic: String, payload: Bytes, retain: bool) {
        if retain {
            self.retained.push((topic.clone(), payload.clone()));
        }
        self.by_topic.entry(topic).or_default().push(payload);
    }

    fn has(&self, topic: &str, payload: &[u8]) -> bool {
        self.by_topic
            .get(topic)
            .is_some_and(|payloads| payloads.iter().any(|p| p == payload))
    }

    pub fn topic(&self, topic: &str) -> Vec<Bytes> {
        self.by_topic.get(topic).cloned().unwrap_or_default()
    }
}

pub struct V4 {
    client: rumqttc::AsyncClient,
    eventloop: rumqttc::EventLoop,
    pub received: Received,
}

impl V4 {
    /// Connects with clean session = !`persistent`; returns the client and whether the
    /// broker had a session for it.
    pub async fn connect(addr: SocketAddr, client_id: &str, persistent: bool) -> (V4, bool) {
        let mut options = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(!persistent);
        let (client, eventloop) = rumqttc::AsyncClient::new(options, 100);
        let mut me = V4 {
            client,
            eventloop,
            received: Received::default(),
        };
        let connack = me
            .poll_until(|event| match event {
                rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(connack)) => {
                    Some(connack.clone())
                }
                _ => None,
            })
            .await;
        assert_eq!(
            connack.code,
            rumqttc::ConnectReturnCode::Success,
            "{client_id}"
        );
        (me, connack.session_present)
    }

    async fn poll_until<T>(&mut self, mut want: impl FnMut(&rumqttc::Event) -> Option<T>) -> T {
        within("a step of the rumqttc 3.1.1 client", async {
            loop {
                let event = self
                    .eventloop
                    .poll()
                    .await
                    .unwrap_or_else(|error| panic!("rumqttc 3.1.1 connection failed: {error}"));
                if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish)) = &event {
                    self.received.record(
                        publish.topic.clone(),
                        publish.payload.clone(),
                        publish.retain,
                    );
                }
                if let Some(found) = want(&event) {
                    return found;
                }
            }
        })
        .await
    }

    pub async fn subscribe(&mut self, filters: &[(&str, u8)]) {
        for (filter, qos) in filters {
            self.client
                .subscribe(*filter, rumqttc::qos(*qos).unwrap())
                .await
                .unwrap();
            let codes = self
                .poll_until(|event| match event {
                    rumqttc::Event::Incoming(rumqttc::Packet::SubAck(suback)) => {
                        Some(suback.return_codes.clone())
                    }
                    _ => None,
                })
                .await;
            assert!(
                !codes.contains(&rumqttc::SubscribeReasonCode::Failure),
                "{codes:?}"
            );
        }
    }

    /// Polls until `payload` arrived on `topic`.
    pub async fn receive_through(&mut self, topic: &str, payload: &[u8]) {
        if self.received.has(topic, payload) {
            return;
        }
        self.poll_until(|event| match event {
            rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish))
                if publish.topic == topic && publish.payload == payload =>
            {
                Some(())
            }
            _ => None,
        })
        .await
    }

    pub async fn disconnect(mut self) {
        self.client.disconnect().await.unwrap();
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

pub struct V5 {
    client: r5::AsyncClient,
    eventloop: r5::EventLoop,
    pub received: Received,
}

impl V5 {
    /// Connects with clean start = !`persistent` and, when persistent, a Session Expiry
    /// Interval of one hour.
    pub async fn connect(addr: SocketAddr, client_id: &str, persistent: bool) -> (V5, bool) {
        let mut options = r5::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_start(!persistent);
        if persistent {
            options.set_session_expiry_interval(Some(3600));
        }
        let (client, eventloop) = r5::AsyncClient::new(options, 100);
        let mut me = V5 {
            client,
            eventloop,
            received: Received::default(),
        };
        let connack = me
            .poll_until(|event| match event {
                r5::Event::Incoming(p5::Packet::ConnAck(connack)) => Some(connack.clone()),
                _ => None,
            })
            .await;
        assert_eq!(connack.code, p5::ConnectReturnCode::Success, "{client_id}");
        (me, connack.session_present)
    }

    async fn poll_until<T>(&mut self, mut want: impl FnMut(&r5::Event) -> Option<T>) -> T {
        within("a step of the rumqttc MQTT 5 client", async {
            loop {
                let event =
                    self.eventloop.poll().await.unwrap_or_else(|error| {
                        panic!("rumqttc MQTT 5 connection failed: {error}")
                    });
                if let r5::Event::Incoming(p5::Packet::Publish(publish)) = &event {
                    self.received.record(
                        String::from_utf8(publish.topic.to_vec()).unwrap(),
                        publish.payload.clone(),
                        publish.retain,
                    );
                }
                if let Some(found) = want(&event) {
                    return found;
                }
            }
        })
        .await
    }

    pub async fn subscribe(&mut self, filters: &[(&str, u8)]) {
        for (filter, qos) in filters {
            self.client
                .subscribe(*filter, r5::mqttbytes::qos(*qos).unwrap())
                .await
                .unwrap();
            let codes = self
                .poll_until(|event| match event {
                    r5::Event::Incoming(p5::Packet::SubAck(suback)) => {
                        Some(suback.return_codes.clone())
                    }
                    _ => None,
                })
                .await;
            assert!(
                codes
                    .iter()
                    .all(|code| matches!(code, p5::SubscribeReasonCode::Success(_))),
                "{codes:?}"
            );
        }
    }

    /// Polls until `payload` arrived on `topic`.
    pub async fn receive_through(&mut self, topic: &str, payload: &[u8]) {
        if self.received.has(topic, payload) {
            return;
        }
        self.poll_until(|event| match event {
            r5::Event::Incoming(p5::Packet::Publish(publish))
                if publish.topic == topic.as_bytes() && publish.payload == payload =>
            {
                Some(())
            }
            _ => None,
        })
        .await
    }

    pub async fn disconnect(mut self) {
        self.client.disconnect().await.unwrap();
        self.poll_until(|event| {
            matches!(event, r5::Event::Outgoing(rumqttc::Outgoing::Disconnect)).then_some(())
        })
        .await;
    }
}
