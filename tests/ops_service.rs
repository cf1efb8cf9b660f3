//! The broker as an operator runs it: the real binary under a (test-owned) systemd
//! notify socket, scraped by Prometheus, watched through `$SYS`, reloaded with SIGHUP and
//! stopped with SIGTERM; and what the Debian package ships with it.

#[path = "ops_service/common.rs"]
mod common;
#[path = "ops_service/metrics.rs"]
mod metrics;
#[path = "ops_service/packaging.rs"]
mod packaging;
#[path = "ops_service/signals.rs"]
mod signals;
#[path = "ops_service/sys_topics.rs"]
mod sys_topics;
