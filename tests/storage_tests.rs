//! The storage layer's tests: one suite run against the memory and the RocksDB store, a
//! model-based property test of both, and RocksDB-specific checks (schema version,
//! corruption, locking, on-disk body count, group commit and the cost of each sync mode).

#[path = "storage_tests/common.rs"]
mod common;
#[path = "storage_tests/durability.rs"]
mod durability;
#[path = "storage_tests/model.rs"]
mod model;
#[path = "storage_tests/rocks.rs"]
mod rocks;
#[path = "storage_tests/suite.rs"]
mod suite;
