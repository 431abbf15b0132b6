//! Test-only disk faults: the next O_DIRECT write(s) of a log on this thread report EIO, so
//! tests drive the real error path of a failing disk (the append fails with
//! KAFKA_STORAGE_ERROR, the log goes read-only, a reopen recovers what was written) without
//! a broken device. Compiled only into the library's unit tests.

use std::cell::Cell;
use std::io;

thread_local! {
    static FAILING_WRITES: Cell<u32> = const { Cell::new(0) };
}

/// Makes the next `count` log writes on this thread fail with EIO (after the bytes reached
/// the file, as a device that reports an error after a partial write would).
pub(crate) fn fail_next_writes(count: u32) {
    FAILING_WRITES.with(|c| c.set(count));
}

/// The result a log write reports: `result`, or EIO while injected failures remain.
pub(crate) fn after_write(result: io::Result<usize>) -> io::Result<usize> {
    let inject = FAILING_WRITES.with(|c| {
        let left = c.get();
        c.set(left.saturating_sub(1));
        left > 0
    });
    if inject {
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    result
}

#[cfg(test)]
pub(crate) mod tests {
    //! A write error fails the pending append with KAFKA_STORAGE_ERROR, every later append
    //! fails the same way at once (no hang), the log reports why, and a reopen keeps every
    //! acknowledged record and accepts appends again.
    use bytes::Bytes;
    use kafka_protocol::records::{Record, RecordBatchDecoder};

    use super::fail_next_writes;
    use crate::kafka::plain_batch::{self, plain_record};
    use crate::storage::{kafka_code, LogConfig, PartitionLog};

    /// One uncompressed RecordBatch v2 holding one record of `value`.
    pub(crate) fn batch(value: &str) -> Vec<u8> {
        let value = Bytes::copy_from_slice(value.as_bytes());
        let record = Record {
            partition_leader_epoch: 0,
            ..plain_record(0, 1, None, Some(value))
        };
        plain_batch::encode(&[record]).unwrap().to_vec()
    }

    /// Small segments, `always`, 1 MiB preallocation steps at most, written with zeros ahead.
    pub(crate) fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 1 << 20,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: -1,
            retention_bytes: -1,
            flush: tuning::FlushPolicy::Always,
            index_interval_bytes: 4096,
            max_batch_bytes: 1 << 20,
            write_buffer_bytes: 2 << 20,
            preallocate_bytes: 1 << 20,
            preallocate_zeroes: true,
            cleanup: crate::storage::CleanupPolicy::DELETE,
            delete_retention_ms: 86_400_000,
            min_cleanable_dirty_ratio_ppm: 500_000,
            min_compaction_lag_ms: 0,
        }
    }

    /// Values of every record in the log, in offset order.
    pub(crate) async fn values(log: &PartitionLog) -> Vec<String> {
        let mut out = Vec::new();
        let mut next = 0;
        while next < log.log_end_offset() {
            let read = log.read(next, 1 << 20, None).await.unwrap();
            let mut buf = Bytes::from(read.to_vec().unwrap());
            // Whole batches only: a read may end inside one.
            while buf.len() >= 12 {
                let length = u32::from_be_bytes(buf[8..12].try_into().unwrap()) as usize;
                if buf.len() < 12 + length {
                    break;
                }
                let mut one = buf.split_to(12 + length);
                for record in RecordBatchDecoder::decode(&mut one).unwrap().records {
                    next = record.offset + 1;
                    out.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
                }
            }
        }
        out
    }

    #[test]
    fn a_write_error_fails_the_log_and_keeps_what_was_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let log = PartitionLog::open(&path, config()).await.unwrap();
                let first = log.append(&batch("acknowledged"), 0).await.unwrap();
                assert_eq!(first.base_offset, 0);
                assert!(log.failure().is_none());

                fail_next_writes(1);
                let err = log.append(&batch("lost"), 0).await.unwrap_err();
                assert_eq!(err.error_code(), kafka_code::KAFKA_STORAGE_ERROR);
                let reason = log.failure().expect("the log records the failure");
                assert!(reason.contains("Input/output error"), "{reason}");
                // Refused at once, before anything is copied.
                let err = log.append(&batch("after"), 0).await.unwrap_err();
                assert_eq!(err.error_code(), kafka_code::KAFKA_STORAGE_ERROR);
                log.close().await.unwrap();

                let log = PartitionLog::open(&path, config()).await.unwrap();
                assert!(log.failure().is_none());
                let seen = values(&log).await;
                assert_eq!(seen[0], "acknowledged");
                // The failed write may or may not have reached the file; never "after".
                assert!(
                    seen.len() <= 2 && !seen.contains(&"after".to_string()),
                    "{seen:?}"
                );
                let next = log.append(&batch("again"), 0).await.unwrap();
                assert_eq!(next.base_offset, seen.len() as i64);
                log.close().await.unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
