//! Where the logs of this thread report how long their disk operations took: each shard
//! installs its [`DiskLatency`] on its executor thread at start, and the logs it owns record
//! every O_DIRECT write round and every fdatasync into it (per write round, never per record).
//! Without an installed sink (storage tests, tools) nothing is recorded.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::histogram::AtomicHistogram;

/// Disk latency histograms of one shard, microseconds.
#[derive(Debug, Default)]
pub struct DiskLatency {
    /// fdatasync of segment files on the append path (group commits and rolls).
    pub fdatasync_us: AtomicHistogram,
    /// One O_DIRECT write round of the active segment.
    pub direct_write_us: AtomicHistogram,
    /// Bytes of zeros written ahead of the appends (`preallocate_zeroes`).
    pub zero_fill_bytes: AtomicU64,
    /// The slowest of both, and of the writes of zeros ahead and their fdatasyncs, since the
    /// last [`DiskLatency::take_slowest_us`].
    slowest_us: AtomicU64,
}

impl DiskLatency {
    /// The slowest write round or fdatasync recorded since the last call, microseconds (0 if
    /// none), and starts over: `bench` puts it beside each second of its timeline, so a slow
    /// second shows whether the disk was slow in it.
    pub fn take_slowest_us(&self) -> u64 {
        self.slowest_us.swap(0, Ordering::Relaxed)
    }
}

thread_local! {
    static SINK: RefCell<Option<Arc<DiskLatency>>> = const { RefCell::new(None) };
}

/// Makes `sink` this thread's: the logs opened and run here record into it.
pub fn install(sink: Arc<DiskLatency>) {
    SINK.with(|slot| *slot.borrow_mut() = Some(sink));
}

pub(crate) fn record_fdatasync(us: u64) {
    record(us, |sink| &sink.fdatasync_us);
}

pub(crate) fn record_direct_write(us: u64) {
    record(us, |sink| &sink.direct_write_us);
}

/// A write of `bytes` zeros ahead of the appends (or, with `bytes` 0, their fdatasync): into
/// the byte count and the slowest, not the append path's histograms.
pub(crate) fn record_zero_fill(us: u64, bytes: u64) {
    SINK.with(|slot| {
        if let Some(sink) = slot.borrow().as_ref() {
            sink.zero_fill_bytes.fetch_add(bytes, Ordering::Relaxed);
            sink.slowest_us.fetch_max(us, Ordering::Relaxed);
        }
    });
}

/// Into the installed sink's histogram `which`, and its slowest.
fn record(us: u64, which: fn(&DiskLatency) -> &AtomicHistogram) {
    SINK.with(|slot| {
        if let Some(sink) = slot.borrow().as_ref() {
            which(sink).record(us);
            sink.slowest_us.fetch_max(us, Ordering::Relaxed);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_operation_is_taken_once() {
        let sink = Arc::new(DiskLatency::default());
        install(sink.clone());
        record_direct_write(700);
        record_fdatasync(900);
        record_direct_write(800);
        assert_eq!(sink.take_slowest_us(), 900);
        assert_eq!(sink.take_slowest_us(), 0);
        record_fdatasync(50);
        assert_eq!(sink.take_slowest_us(), 50);
        assert_eq!(sink.fdatasync_us.count(), 2);
        assert_eq!(sink.direct_write_us.count(), 2);
    }
}
