//! The cluster through real processes: three `fleetmq` nodes on 127.0.0.1 (see
//! `common`), rumqttc and mosquitto clients spread over them.

mod common;

mod adoption;
mod failures;
mod flow_control;
mod forward_ack;
mod handover;
mod kill_loop;
mod links;
mod membership;
mod pubsub;
mod qos2_publisher_death;
mod replication;
mod restart;
mod retained;
mod sessions;
mod under_load;
