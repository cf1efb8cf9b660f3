//! Bridges to remote brokers, end to end: a second fleetmq or the real Mosquitto as the
//! remote, the link through a proxy inside the test that cuts it or black-holes it, the
//! local broker restarted and killed, TLS with certificates from `fleetmq gen-certs`.
//! After each failure, every message the local broker acknowledged reaches the remote
//! subscriber (QoS 1 at least once, QoS 2 exactly once), in order per topic, and
//! commands published on the remote reach local subscribers.

#[path = "bridge/fleetmq_remote.rs"]
mod fleetmq_remote;
#[path = "bridge/mosquitto_remote.rs"]
mod mosquitto_remote;
#[path = "bridge/process.rs"]
mod process;
#[path = "bridge/properties.rs"]
mod properties;
#[path = "bridge/support.rs"]
mod support;
#[path = "bridge/tls.rs"]
mod tls;
