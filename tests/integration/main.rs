//! Black-box tests of the whole broker: each test starts a broker in-process on a free
//! port and talks MQTT to it over TCP, with raw bytes, with the rumqttc client library
//! and with the Mosquitto command line clients.
//!
//! One test binary, so the crate is linked once.

mod common;

mod connect;
mod defaults;
mod flow_control;
mod mosquitto_clients;
mod parking;
mod pubsub_qos;
mod retained;
mod sessions;
mod shared;
mod subscriptions;
mod v5_features;
mod violations;
mod wills;
