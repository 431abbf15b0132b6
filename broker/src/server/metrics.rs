//! Per-shard counters: bytes received and sent, and how many of the sent bytes went
//! file -> socket by splice. Each shard writes only its own counters (relaxed atomics, so tests
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
}

impl ShardMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
