//! RocksDB's own memory, bounded for the whole process (`[storage] write_buffer_mb`,
//! `block_cache_mb`).
//!
//! Left to its defaults, every column family of every database gets memtables of up to
//! 64 MiB (two of them while one flushes) and a block cache of its own: a node with its
//! store, its Raft log and a backup copy per origin node has dozens of families, so
//! RocksDB's share of the broker's memory had no bound an operator could set. One
//! `RocksMemory` is shared by every database the process opens: a write buffer manager
//! that flushes the largest memtable of the database being written once all memtables
//! together reach the budget, and one LRU block cache for every family.

use std::fmt;

use rocksdb::{BlockBasedOptions, Cache, Options, WriteBufferManager};

use crate::storage::{defaults, RocksMemoryUsage};

/// The memtable and block cache budgets every database opened with it shares. Cloning
/// shares the same budgets (the handles are reference-counted).
#[derive(Clone)]
pub struct RocksMemory {
    write_buffers: WriteBufferManager,
    block_cache: Cache,
    /// Largest memtable of one column family: the budget, at most RocksDB's default. It
    /// also sizes the write-ahead log's preallocated blocks.
    family_write_buffer: usize,
}

impl RocksMemory {
    /// Budgets in bytes: `write_buffer_bytes` for all memtables together (at least 1 MiB:
    /// below that every write would flush), `block_cache_bytes` for cached blocks.
    pub fn new(write_buffer_bytes: usize, block_cache_bytes: usize) -> RocksMemory {
        let write_buffer_bytes = write_buffer_bytes.max(defaults::MIN_WRITE_BUFFER_BYTES);
        RocksMemory {
            // Without stalls: a write past the budget makes its database flush, it is
            // not held. A stall would block the writer thread of every database on the
            // flushes of one, and the flush it triggers frees the memory soon anyway.
            write_buffers: WriteBufferManager::new_write_buffer_manager(write_buffer_bytes, false),
            block_cache: Cache::new_lru_cache(block_cache_bytes),
            family_write_buffer: write_buffer_bytes.min(defaults::FAMILY_WRITE_BUFFER_BYTES),
        }
    }

    /// The budgets' current use.
    pub fn usage(&self) -> RocksMemoryUsage {
        RocksMemoryUsage {
            memtables: self.write_buffers.get_usage() as u64,
            block_cache: self.block_cache.get_usage() as u64,
        }
    }

    /// The memtable budget in bytes, as RocksDB applies it.
    pub fn write_buffer_budget(&self) -> usize {
        self.write_buffers.get_buffer_size()
    }

    /// Puts a database's memtables under the shared budget.
    pub(super) fn apply_to_database(&self, options: &mut Options) {
        options.set_write_buffer_manager(&self.write_buffers);
    }

    /// Gives a column family the shared block cache and a memtable no larger than the
    /// budget.
    pub(super) fn apply_to_family(&self, options: &mut Options) {
        options.set_write_buffer_size(self.family_write_buffer);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.block_cache);
        options.set_block_based_table_factory(&table);
    }
}

impl Default for RocksMemory {
    /// The defaults of `[storage] write_buffer_mb` and `block_cache_mb`.
    fn default() -> RocksMemory {
        RocksMemory::new(
            defaults::WRITE_BUFFER_MB as usize * MIB,
            defaults::BLOCK_CACHE_MB as usize * MIB,
        )
    }
}

impl fmt::Debug for RocksMemory {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RocksMemory")
            .field("write_buffer_budget", &self.write_buffer_budget())
            .field("usage", &self.usage())
            .finish()
    }
}

/// Bytes in a mebibyte, the unit of the `[storage]` budgets.
pub const MIB: usize = 1 << 20;
