//! Proves DeleteRecords at the storage level: the log start offset moves inside a segment,
//! reads below it are out of range while a read at it returns the batch holding it, sealed
//! segments wholly below it are deleted (retention too deletes them, whatever the cleanup
//! policy), an offset past the high watermark is refused and one below the start changes
//! nothing, and the start survives a reopen after a crash (no clean close) as well as a clean
//! one; MAX_TIMESTAMP only sees records from the start on. How: 20 KB single-record batches
//! in 64 KiB segments, reopened from the same directory.
mod support;

use broker::storage::segment::segment_file;
use broker::storage::{kafka_code, LogConfig, PartitionLog};
use kafka_protocol::records::Compression;

fn config() -> LogConfig {
    let mut c = support::small_config();
    c.segment_bytes = 64 * 1024;
    c.flush = tuning::FlushPolicy::Always;
    c
}

/// Appends one 20 KB record per timestamp, each its own batch.
async fn fill(log: &PartitionLog, timestamps: &[i64]) {
    for ts in timestamps {
        let b = support::encode_batch(&[vec![1u8; 20_000]], *ts, Compression::None);
        log.append(&b, 0).await.unwrap();
    }
}

#[test]
fn the_log_start_moves_deletes_whole_segments_and_survives_reopens() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let log = PartitionLog::open(&path, config()).await.unwrap();
        let timestamps: Vec<i64> = (0..12).map(|i| 1_000 + i).collect();
        fill(&log, &timestamps).await;
        let bases = log.segment_base_offsets();
        assert!(bases.len() >= 4, "{bases:?}");
        let end = log.log_end_offset();
        assert_eq!(end, 12);
        // Inside the third segment.
        let start = bases[2] + 1;
        assert!(start < bases[3]);
        assert_eq!(log.delete_records_before(start, end).await.unwrap(), start);
        assert_eq!(log.log_start_offset(), start);
        assert_eq!(log.segment_base_offsets(), bases[2..].to_vec());
        for b in &bases[..2] {
            assert!(!segment_file(&path, *b, "log").exists());
        }
        let below = log.read(start - 1, 1 << 20, None).await.unwrap_err();
        assert_eq!(below.error_code(), kafka_code::OFFSET_OUT_OF_RANGE);
        let at = log.read(start, 1 << 20, None).await.unwrap();
        assert_eq!(at.first_batch_offset, Some(start));
        // Past the high watermark: refused, nothing moves; below the start: nothing moves.
        let past = log.delete_records_before(end + 1, end).await.unwrap_err();
        assert_eq!(past.error_code(), kafka_code::OFFSET_OUT_OF_RANGE);
        assert_eq!(log.delete_records_before(1, end).await.unwrap(), start);
        // The largest timestamp from the start on is the last record's.
        let found = log.max_timestamp_offset(end).await.unwrap().unwrap();
        assert_eq!((found.offset, found.timestamp_ms), (11, 1_011));
        drop(log); // a crash: no clean close

        let log = PartitionLog::open(&path, config()).await.unwrap();
        assert_eq!(log.log_start_offset(), start);
        assert_eq!(
            log.read(start - 1, 1 << 20, None)
                .await
                .unwrap_err()
                .error_code(),
            kafka_code::OFFSET_OUT_OF_RANGE
        );
        // Everything up to the end: every sealed segment goes, the active one stays.
        let end = log.log_end_offset();
        assert_eq!(log.delete_records_before(end, end).await.unwrap(), end);
        assert_eq!(log.segment_base_offsets().len(), 1);
        assert!(log.max_timestamp_offset(end).await.unwrap().is_none());
        fill(&log, &[5]).await;
        assert_eq!(log.log_end_offset(), end + 1);
        log.close().await.unwrap();

        let log = PartitionLog::open(&path, config()).await.unwrap();
        assert_eq!(log.log_start_offset(), end);
        assert!(!log.read(end, 1 << 20, None).await.unwrap().is_empty());
        log.close().await.unwrap();
    });
}

#[test]
fn retention_deletes_segments_below_the_start_of_a_compacted_log() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let mut c = config();
        c.cleanup = broker::storage::CleanupPolicy::parse("compact").unwrap();
        let log = PartitionLog::open(&path, c).await.unwrap();
        fill(&log, &(0..9).collect::<Vec<i64>>()).await;
        let bases = log.segment_base_offsets();
        assert!(bases.len() >= 3, "{bases:?}");
        // Move the start without deleting (as a follower learning its leader's start does).
        assert!(log.advance_log_start(bases[1]).await.unwrap());
        assert_eq!(log.segment_base_offsets(), bases);
        let out = log.apply_retention(i64::MAX).await.unwrap();
        assert_eq!(out.deleted_base_offsets, vec![bases[0]]);
        assert_eq!(log.log_start_offset(), bases[1]);
        log.close().await.unwrap();
    });
}

#[test]
fn a_log_restarted_past_its_end_starts_and_ends_there() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let log = PartitionLog::open(&path, config()).await.unwrap();
        fill(&log, &[1, 2, 3, 4, 5]).await;
        assert_eq!(log.log_end_offset(), 5);
        let log = log.restarted_at(40).await.unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (40, 40));
        assert_eq!(log.segment_base_offsets(), vec![40]);
        // A follower's append of the leader's batch at 40 continues the log there.
        let mut batch = support::encode_batch(&[vec![7u8; 100]], 6, Compression::None);
        batch[..8].copy_from_slice(&40i64.to_be_bytes());
        log.append_replica(&batch).await.unwrap();
        assert_eq!(log.log_end_offset(), 41);
        drop(log); // a crash
        let log = PartitionLog::open(&path, config()).await.unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (40, 41));
        let read = log.read(40, 1 << 20, None).await.unwrap();
        assert_eq!(read.first_batch_offset, Some(40));
        log.close().await.unwrap();
    });
}
