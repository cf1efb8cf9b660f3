//! fleetmq: an MQTT 3.1, 3.1.1 and 5.0 broker for device fleets.
//!
//! See ARCHITECTURE.md for the map of modules and the path of a PUBLISH.

pub mod admin;
pub mod auth;
pub mod bridge;
pub mod broker;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod ctl;
pub mod file_replace;
pub mod health;
pub mod http;
pub mod limits;
pub mod listener;
pub mod logging;
pub mod message;
pub mod metrics;
pub mod protocol;
pub mod reload;
pub mod server;
pub mod session;
pub mod storage;
pub mod sys_topics;
pub mod systemd;
pub mod topic;
