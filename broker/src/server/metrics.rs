//! Per-shard counters: bytes received and sent, how many of the sent bytes went file -> socket
//! by splice, and the memory budget's use. Each shard writes only its own counters (relaxed atomics, so tests
//! and the shutdown report can read them from another thread without locks).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct ShardMetrics {
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Part of `bytes_sent` that went by splice from segment files.
    pub bytes_spliced: AtomicU64,
    pub requests: AtomicU64,
    pub connections_accepted: AtomicU64,
    /// Requests served for another shard over the mesh.
    pub requests_forwarded_in: AtomicU64,
    /// The shard's memory budget, bytes (see `memory_budget.rs`).
    pub memory_budget_bytes: AtomicU64,
    /// Bytes charged to the memory budget now (a gauge).
    pub memory_used_bytes: AtomicU64,
    /// The most ever charged to the memory budget, bytes.
    pub memory_peak_bytes: AtomicU64,
    /// Reads that waited for the memory budget.
    pub memory_waits: AtomicU64,
}

impl ShardMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
