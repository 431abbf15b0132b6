//! The shard's batch cache: the buffers of its most recent write rounds, kept after their
//! bytes reached the segment file, so that tailing consumers and follower brokers read what
//! was just written from memory. O_DIRECT writes leave those bytes out of the page cache, so
//! without it every tail read would go to the device.
//!
//! One cache per shard thread, bounded by the profile's `batch_cache_bytes` (counted as the
//! allocation size of the buffers held). A write round's aligned buffer joins the cache when
//! the round completes (no copy: it is the buffer the appender wrote from); when room is
//! needed the oldest buffer leaves first, so what stays is the newest data of the partitions
//! the shard writes. The appender of each active segment keeps weak references to its
//! rounds' buffers (`segment_appender.rs`) and reads through those still alive; bytes whose
//! buffer left the cache (or came before a round too large to keep) are read from the file
//! again. A read answers cached bytes as [`CachedBytes`]: slices of the round's buffer, sent
//! to the socket from there without a copy (`log_reader.rs`); only the unwritten tail, which
//! keeps changing, is copied out.
//!
//! Without [`install`] (storage tests, tools) the limit is 0 and nothing is kept.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::ops::Deref;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use glommio::io::DmaBuffer;

/// Bytes of a written (or in flight) round's buffer, shared rather than copied: a read of the
/// cache answers with these and the socket write takes them from the buffer itself. Holding
/// one keeps its buffer alive after the cache lets it go, until the answer is sent. Not
/// `Send`: a read answered to another shard's connection copies the bytes (`partitions.rs`).
#[derive(Clone)]
pub struct CachedBytes {
    buffer: Rc<DmaBuffer>,
    from: usize,
    len: usize,
}

impl CachedBytes {
    /// Bytes `from..from + len` of `buffer`.
    pub(crate) fn new(buffer: Rc<DmaBuffer>, from: usize, len: usize) -> CachedBytes {
        debug_assert!(from + len <= buffer.len());
        CachedBytes { buffer, from, len }
    }
}

impl Deref for CachedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buffer.as_bytes()[self.from..self.from + self.len]
    }
}

impl AsRef<[u8]> for CachedBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for CachedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CachedBytes({} bytes)", self.len)
    }
}

/// What one shard's cache holds and served; read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct BatchCacheStats {
    /// Allocation bytes of the buffers held now.
    pub held_bytes: AtomicU64,
    /// Log read bytes (Fetch data) served from memory: the batch cache and the appender's
    /// not yet written tail.
    pub memory_read_bytes: AtomicU64,
    /// Log read bytes (Fetch data) answered as ranges of segment files.
    pub file_read_bytes: AtomicU64,
}

struct BatchCache {
    limit_bytes: u64,
    held_bytes: u64,
    /// Oldest first, with the allocation bytes each is counted as.
    buffers: VecDeque<(Rc<DmaBuffer>, u64)>,
    stats: Option<Arc<BatchCacheStats>>,
}

thread_local! {
    static CACHE: RefCell<BatchCache> = const {
        RefCell::new(BatchCache {
            limit_bytes: 0,
            held_bytes: 0,
            buffers: VecDeque::new(),
            stats: None,
        })
    };
}

/// Makes this thread's cache hold at most `limit_bytes` and report into `stats`.
pub fn install(limit_bytes: u64, stats: Arc<BatchCacheStats>) {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        cache.stats = Some(stats);
        cache.set_limit(limit_bytes);
    });
}

/// Changes this thread's limit (buffers over it leave at once); for tests and tools that
/// install no stats.
pub fn set_limit(limit_bytes: u64) {
    CACHE.with(|cache| cache.borrow_mut().set_limit(limit_bytes));
}

/// Allocation bytes this thread's cache holds.
pub fn held_bytes() -> u64 {
    CACHE.with(|cache| cache.borrow().held_bytes)
}

/// Keeps a written round's buffer, counted as `allocation_bytes`; the weak reference reads it
/// while it stays. `None` when the cache is off or the buffer alone is larger than the limit.
pub(crate) fn keep(buffer: Rc<DmaBuffer>, allocation_bytes: u64) -> Option<Weak<DmaBuffer>> {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if allocation_bytes > cache.limit_bytes {
            return None;
        }
        let weak = Rc::downgrade(&buffer);
        cache.buffers.push_back((buffer, allocation_bytes));
        cache.held_bytes += allocation_bytes;
        let limit_bytes = cache.limit_bytes;
        cache.evict_to(limit_bytes);
        Some(weak)
    })
}

/// Counts the bytes of one log read by where they come from.
pub(crate) fn record_read(memory_bytes: u64, file_bytes: u64) {
    CACHE.with(|cache| {
        if let Some(stats) = &cache.borrow().stats {
            stats
                .memory_read_bytes
                .fetch_add(memory_bytes, Ordering::Relaxed);
            stats
                .file_read_bytes
                .fetch_add(file_bytes, Ordering::Relaxed);
        }
    });
}

impl BatchCache {
    fn set_limit(&mut self, limit_bytes: u64) {
        self.limit_bytes = limit_bytes;
        self.evict_to(limit_bytes);
    }

    fn evict_to(&mut self, limit_bytes: u64) {
        while self.held_bytes > limit_bytes {
            let Some((_, bytes)) = self.buffers.pop_front() else {
                break;
            };
            self.held_bytes -= bytes;
        }
        debug_assert!(self.held_bytes <= limit_bytes || self.buffers.is_empty());
        if let Some(stats) = &self.stats {
            stats.held_bytes.store(self.held_bytes, Ordering::Relaxed);
        }
    }
}
