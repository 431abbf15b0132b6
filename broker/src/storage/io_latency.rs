//! Where the logs of this thread report how long their disk operations took: each shard
//! installs its [`DiskLatency`] on its executor thread at start, and the logs it owns record
//! every O_DIRECT write round and every fdatasync into it (per write round, never per record).
//! Without an installed sink (storage tests, tools) nothing is recorded.

use std::cell::RefCell;
use std::sync::Arc;

use crate::histogram::AtomicHistogram;

/// Disk latency histograms of one shard, microseconds.
#[derive(Debug, Default)]
pub struct DiskLatency {
    /// fdatasync of segment files on the append path (group commits and rolls).
    pub fdatasync_us: AtomicHistogram,
    /// One O_DIRECT write round of the active segment.
    pub direct_write_us: AtomicHistogram,
}

thread_local! {
    static SINK: RefCell<Option<Arc<DiskLatency>>> = const { RefCell::new(None) };
}

/// Makes `sink` this thread's: the logs opened and run here record into it.
pub fn install(sink: Arc<DiskLatency>) {
    SINK.with(|slot| *slot.borrow_mut() = Some(sink));
}

pub(crate) fn record_fdatasync(us: u64) {
    SINK.with(|slot| {
        if let Some(sink) = slot.borrow().as_ref() {
            sink.fdatasync_us.record(us);
        }
    });
}

pub(crate) fn record_direct_write(us: u64) {
    SINK.with(|slot| {
        if let Some(sink) = slot.borrow().as_ref() {
            sink.direct_write_us.record(us);
        }
    });
}
