//! Command line: `fleetmq [serve] | check-config | print-default-config`.
