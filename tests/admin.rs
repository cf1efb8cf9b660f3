//! The operator's console through the real binary: the admin API against real MQTT
//! clients, `fleetmq ctl`, and the dashboard page in headless Chromium.

#[path = "admin/api.rs"]
mod api;
#[path = "admin/cdp.rs"]
mod cdp;
#[path = "admin/common.rs"]
mod common;
#[path = "admin/ctl.rs"]
mod ctl;
#[path = "admin/dashboard.rs"]
mod dashboard;
