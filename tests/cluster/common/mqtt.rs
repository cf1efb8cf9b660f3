//! rumqttc clients for the cluster tests: a subscriber whose event loop runs in its own
//! task and hands every PUBLISH (with its properties) to the test through a channel, and
//! a publisher that completes each QoS flow before returning.

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::v5 as r5;
use tokio::sync::mpsc;

use super::within;

/// A PUBLISH as a subscriber received it, for either protocol version.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// DUP: a redelivery.
    pub dup: bool,
    pub subscription_ids: Vec<usize>,
    pub user_properties: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub message_expiry: Option<u32>,
}

/// What a client's event loop reported.
#[derive(Debug)]
pub enum Event {
    ConnAck {
        code: u8,
        session_present: bool,
    },
    Publish(Received),
    SubAck,
    /// The broker sent DISCONNECT (MQTT 5) with this reason code.
    Disconnect(u8),
    /// The connection failed or was refused (the error text).
    Closed(String),
}

pub struct Subscriber {
    events: mpsc::UnboundedReceiver<Event>,
    v4: Option<rumqttc::AsyncClient>,
    v5: Option<r5::AsyncClient>,
    task: tokio::task::JoinHandle<()>,
    /// Publishes received while waiting for something else.
    pending: std::collections::VecDeque<Received>,
    /// Probe topics (`drain_probes`): later probes to them are skipped.
    ignored: Vec<String>,
}

fn v4_events(
    mut eventloop: rumqttc::EventLoop,
    sender: mpsc::UnboundedSender<Event>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let event = match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(c))) => Event::ConnAck {
                    code: 0,
                    session_present: c.session_present,
                },
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    Event::Publish(Received {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        qos: p.qos as u8,
                        retain: p.retain,
                        dup: p.dup,
                        subscription_ids: Vec::new(),
                        user_properties: Vec::new(),
                        content_type: None,
                        message_expiry: None,
                    })
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => Event::SubAck,
                Ok(_) => continue,
                Err(error) => {
                    let _ = sender.send(Event::Closed(error.to_string()));
                    return;
                }
            };
            if sender.send(event).is_err() {
                return;
            }
        }
    })
}

fn v5_events(
    mut eventloop: r5::EventLoop,
    sender: mpsc::UnboundedSender<Event>,
) -> tokio::task::JoinHandle<()> {
    use r5::mqttbytes::v5::Packet;
    tokio::spawn(async move {
        loop {
            let event = match eventloop.poll().await {
                Ok(r5::Event::Incoming(Packet::ConnAck(c))) => Event::ConnAck {
                    code: c.code as u8,
                    session_present: c.session_present,
                },
                Ok(r5::Event::Incoming(Packet::Publish(p))) => {
                    let properties = p.properties.clone().unwrap_or_default();
                    Event::Publish(Received {
                        topic: String::from_utf8_lossy(&p.topic).to_string(),
                        payload: p.payload.to_vec(),
                        qos: p.qos as u8,
                        retain: p.retain,
                        dup: p.dup,
                        subscription_ids: properties.subscription_identifiers.clone(),
                        user_properties: properties.user_properties.clone(),
                        content_type: properties.content_type.clone(),
                        message_expiry: properties.message_expiry_interval,
                    })
                }
                Ok(r5::Event::Incoming(Packet::SubAck(_))) => Event::SubAck,
                Ok(r5::Event::Incoming(Packet::Disconnect(d))) => {
                    Event::Disconnect(d.reason_code as u8)
                }
                Ok(_) => continue,
                Err(error) => {
                    let _ = sender.send(Event::Closed(error.to_string()));
                    return;
                }
            };
            if sender.send(event).is_err() {
                return;
            }
        }
    })
}

impl Subscriber {
    /// A MQTT 3.1.1 client; `clean = false` keeps its session.
    pub fn v4(addr: SocketAddr, client_id: &str, clean: bool) -> Subscriber {
        let mut options = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(clean);
        Subscriber::v4_with(options)
    }

    /// A MQTT 3.1.1 client with these options.
    pub fn v4_with(options: rumqttc::MqttOptions) -> Subscriber {
        let (client, eventloop) = rumqttc::AsyncClient::new(options, 100);
        let (sender, events) = mpsc::unbounded_channel();
        Subscriber {
            events,
            v4: Some(client),
            v5: None,
            task: v4_events(eventloop, sender),
            pending: Default::default(),
            ignored: Vec::new(),
        }
    }

    /// A MQTT 5 client; `session_expiry` > 0 keeps its session.
    pub fn v5(addr: SocketAddr, client_id: &str, session_expiry: u32) -> Subscriber {
        Subscriber::v5_with(Subscriber::v5_options(addr, client_id, session_expiry))
    }

    /// The options `v5` connects with, to change before `v5_with`.
    pub fn v5_options(addr: SocketAddr, client_id: &str, session_expiry: u32) -> r5::MqttOptions {
        let mut options = r5::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_start(session_expiry == 0);
        if session_expiry > 0 {
            options.set_connect_properties(r5::mqttbytes::v5::ConnectProperties {
                session_expiry_interval: Some(session_expiry),
                ..Default::default()
            });
        }
        options
    }

    /// A MQTT 5 client with these options.
    pub fn v5_with(options: r5::MqttOptions) -> Subscriber {
        let (client, eventloop) = r5::AsyncClient::new(options, 100);
        let (sender, events) = mpsc::unbounded_channel();
        Subscriber {
            events,
            v4: None,
            v5: Some(client),
            task: v5_events(eventloop, sender),
            pending: Default::default(),
            ignored: Vec::new(),
        }
    }

    /// The next event (publishes held back by `subscribe` first), however long it
    /// takes; `None` once the event loop ended.
    pub async fn recv_event(&mut self) -> Option<Event> {
        if let Some(publish) = self.pending.pop_front() {
            return Some(Event::Publish(publish));
        }
        self.events.recv().await
    }

    /// The next event, at most `WAIT`.
    pub async fn next_event(&mut self) -> Event {
        within("a client event", self.events.recv())
            .await
            .unwrap_or(Event::Closed("event loop ended".into()))
    }

    /// Waits for CONNACK: `(reason code, session present)`; a refusal or failure panics.
    pub async fn connected(&mut self) -> bool {
        match self.next_event().await {
            Event::ConnAck {
                code: 0,
                session_present,
            } => session_present,
            other => panic!("expected a successful CONNACK, got {other:?}"),
        }
    }

    /// Subscribes (with a subscription identifier for MQTT 5) and waits for SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: u8, subscription_id: Option<usize>) {
        if let Some(client) = &self.v4 {
            client
                .subscribe(filter, rumqttc::qos(qos).unwrap())
                .await
                .unwrap();
        }
        if let Some(client) = &self.v5 {
            let filter = r5::mqttbytes::v5::Filter::new(filter, r5::mqttbytes::qos(qos).unwrap());
            match subscription_id {
                Some(id) => client
                    .subscribe_with_properties(
                        filter.path,
                        filter.qos,
                        r5::mqttbytes::v5::SubscribeProperties {
                            id: Some(id),
                            user_properties: Vec::new(),
                        },
                    )
                    .await
                    .unwrap(),
                None => client.subscribe(filter.path, filter.qos).await.unwrap(),
            }
        }
        loop {
            match self.next_event().await {
                Event::SubAck => return,
                Event::Publish(p) => self.pending.push_back(p),
                other => panic!("expected SUBACK, got {other:?}"),
            }
        }
    }

    /// Subscribes; true once SUBACK arrives, false if the connection is closed first.
    pub async fn try_subscribe(&mut self, filter: &str) -> bool {
        if let Some(client) = &self.v4 {
            if client
                .subscribe(filter, rumqttc::QoS::AtMostOnce)
                .await
                .is_err()
            {
                return false;
            }
        }
        if let Some(client) = &self.v5 {
            if client
                .subscribe(filter, r5::mqttbytes::QoS::AtMostOnce)
                .await
                .is_err()
            {
                return false;
            }
        }
        loop {
            match self.next_event().await {
                Event::SubAck => return true,
                Event::Disconnect(_) | Event::Closed(_) => return false,
                Event::Publish(p) => self.pending.push_back(p),
                Event::ConnAck { .. } => {}
            }
        }
    }

    /// The next PUBLISH, at most `WAIT`.
    pub async fn next_publish(&mut self) -> Received {
        while let Some(p) = self.pending.pop_front() {
            if !self.ignored.contains(&p.topic) {
                return p;
            }
        }
        loop {
            match self.next_event().await {
                Event::Publish(p) if !self.ignored.contains(&p.topic) => return p,
                Event::Closed(error) => panic!("subscriber connection failed: {error}"),
                _ => {}
            }
        }
    }

    /// Whether a PUBLISH to `topic` arrives within a short while (a probe; not a wait
    /// for correctness: the caller repeats it until it succeeds).
    pub async fn probe(&mut self, topic: &str) -> bool {
        self.probe_for(topic, Duration::from_millis(200)).await
    }

    /// `probe` with its own window: a retained message follows its SUBACK at once, but a
    /// loaded machine may take a while to send it.
    pub async fn probe_for(&mut self, topic: &str, window: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + window;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Event::Publish(p))) if p.topic == topic => return true,
                Ok(Some(Event::Publish(p))) => self.pending.push_back(p),
                Ok(Some(Event::Closed(error))) => panic!("subscriber connection failed: {error}"),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return false,
            }
        }
    }

    /// Every PUBLISH received until the connection ended (the caller knows it ended or
    /// is ending: this waits for that, at most `WAIT` per event).
    pub async fn received_until_closed(&mut self) -> Vec<Received> {
        let mut received: Vec<Received> = self.pending.drain(..).collect();
        loop {
            match self.next_event().await {
                Event::Publish(p) => received.push(p),
                Event::Closed(_) | Event::Disconnect(_) => return received,
                _ => {}
            }
        }
    }

    /// Forgets probes to `topic`, queued or still to come (later probes may follow the
    /// first one received).
    pub fn drain_probes(&mut self, topic: &str) {
        self.ignored.push(topic.to_string());
        while let Ok(event) = self.events.try_recv() {
            if let Event::Publish(p) = event {
                if p.topic != topic {
                    self.pending.push_back(p);
                }
            }
        }
        self.pending.retain(|p| p.topic != topic);
    }

    /// Whether the next events up to a marker message on `marker_topic` contain nothing
    /// else: `None` if clean, else the unexpected publish.
    pub async fn nothing_before(&mut self, marker_topic: &str) -> Option<Received> {
        let p = self.next_publish().await;
        (p.topic != marker_topic).then_some(p)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A publisher that returns once each message's QoS flow completed.
pub struct Publisher {
    subscriber: Subscriber,
}

impl Publisher {
    pub async fn v4(addr: SocketAddr, client_id: &str) -> Publisher {
        let mut subscriber = Subscriber::v4(addr, client_id, true);
        subscriber.connected().await;
        Publisher { subscriber }
    }

    pub async fn v5(addr: SocketAddr, client_id: &str) -> Publisher {
        let mut subscriber = Subscriber::v5(addr, client_id, 0);
        subscriber.connected().await;
        Publisher { subscriber }
    }

    /// Publishes; the acknowledgement is not awaited (the event loop completes the
    /// flow, in order with later packets).
    pub async fn publish(&mut self, topic: &str, qos: u8, retain: bool, payload: &[u8]) {
        if let Some(client) = &self.subscriber.v4 {
            client
                .publish(topic, rumqttc::qos(qos).unwrap(), retain, payload.to_vec())
                .await
                .unwrap();
        }
        if let Some(client) = &self.subscriber.v5 {
            client
                .publish(
                    topic,
                    r5::mqttbytes::qos(qos).unwrap(),
                    retain,
                    payload.to_vec(),
                )
                .await
                .unwrap();
        }
    }

    /// Publishes a MQTT 5 message with properties.
    pub async fn publish_with(
        &mut self,
        topic: &str,
        qos: u8,
        payload: &[u8],
        properties: r5::mqttbytes::v5::PublishProperties,
    ) {
        let client = self.subscriber.v5.as_ref().expect("a MQTT 5 publisher");
        client
            .publish_with_properties(
                topic,
                r5::mqttbytes::qos(qos).unwrap(),
                false,
                payload.to_vec(),
                properties,
            )
            .await
            .unwrap();
    }

    /// The underlying client's events (e.g. a takeover's DISCONNECT).
    pub fn events(&mut self) -> &mut Subscriber {
        &mut self.subscriber
    }
}
