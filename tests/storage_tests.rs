//! The storage layer's tests: one suite run against the memory and the RocksDB store, a
//! model-based property test of both, and RocksDB-specific checks (schema version,
//! corruption, locking, on-disk body count, group commit and the cost of each sync mode).
//! Without the `rocksdb` feature the suite runs against the memory store alone.

#[path = "storage_tests/common.rs"]
mod common;
#[cfg(feature = "rocksdb")]
#[path = "storage_tests/durability.rs"]
mod durability;
#[cfg(feature = "rocksdb")]
#[path = "storage_tests/model.rs"]
mod model;
#[cfg(feature = "rocksdb")]
#[path = "storage_tests/rocks.rs"]
mod rocks;
#[path = "storage_tests/suite.rs"]
mod suite;
