//! Restarts of the real broker binary on one data directory: graceful (SIGTERM), killed
//! (SIGKILL) and in a crash loop. Nothing the broker acknowledged may be lost: persistent
//! sessions, subscriptions, queued, inflight and retained messages, and the packet ids of
//! incoming QoS 2 messages are restored before the listener opens; expiry counts the time
//! the broker was down; a database it cannot use is a refusal to start.

#[path = "restart/acknowledged.rs"]
mod acknowledged;
#[path = "restart/client.rs"]
mod client;
#[path = "restart/common.rs"]
mod common;
#[path = "restart/crash_loop.rs"]
mod crash_loop;
#[path = "restart/expiry.rs"]
mod expiry;
#[path = "restart/inflight.rs"]
mod inflight;
#[path = "restart/refusal.rs"]
mod refusal;
#[path = "restart/shutdown.rs"]
mod shutdown;
#[path = "restart/thirdparty.rs"]
mod thirdparty;
