//! Proves retention deletes exactly the expired segments: by time (a segment's newest batch
//! timestamp older than retention_ms; deletion stops at the first unexpired segment), by size
//! (oldest segments while the rest still reaches retention_bytes), never the active segment;
//! the files disappear, the log start offset moves and reads below it are out of range.
mod support;

use broker::storage::segment::segment_file;
use broker::storage::{kafka_code, LogConfig, PartitionLog};
use kafka_protocol::records::Compression;

fn config() -> LogConfig {
    let mut c = support::small_config();
    c.segment_bytes = 64 * 1024;
    c.flush = tuning::FlushPolicy::Never;
    c
}

/// Appends `per_segment` 20 KB batches per timestamp so every segment holds one timestamp
/// (three batches fill a 64 KiB segment).
async fn fill(log: &PartitionLog, timestamps: &[i64]) {
    for ts in timestamps {
        for _ in 0..3 {
            let b = support::encode_batch(&[vec![1u8; 20_000]], *ts, Compression::None);
            log.append(&b, 0).await.unwrap();
        }
    }
}

#[test]
fn time_retention_deletes_the_expired_prefix_only() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let log = PartitionLog::open(&path, config()).await.unwrap();
        // Segments with newest timestamps 1000, 2000, 9000, 3000, then the active one at 1000.
        fill(&log, &[1000, 2000, 9000, 3000, 1000]).await;
        let bases = log.segment_base_offsets();
        assert_eq!(bases.len(), 5, "{bases:?}");
        let mut c = config();
        c.retention_ms = 5000;
        log.set_config(c);
        // now = 7500: segments with ts < 2500 expired -> the first two; the third (9000)
        // stops deletion even though the fourth (3000) has expired.
        let out = log.apply_retention(7500).await.unwrap();
        assert_eq!(out.deleted_base_offsets, bases[..2].to_vec());
        assert_eq!(out.log_start_offset, bases[2]);
        assert_eq!(log.log_start_offset(), bases[2]);
        assert_eq!(log.segment_base_offsets(), bases[2..].to_vec());
        for b in &bases[..2] {
            for ext in ["log", "index", "timeindex"] {
                assert!(!segment_file(&path, *b, ext).exists());
            }
        }
        assert!(segment_file(&path, bases[2], "log").exists());
        let e = log.read(0, 1000, None).await.unwrap_err();
        assert_eq!(e.error_code(), kafka_code::OFFSET_OUT_OF_RANGE);
        assert!(!log.read(bases[2], 1000, None).await.unwrap().is_empty());
        // Far in the future everything sealed goes, the active segment stays.
        let out = log.apply_retention(1_000_000).await.unwrap();
        assert_eq!(out.deleted_base_offsets, bases[2..4].to_vec());
        assert_eq!(log.segment_base_offsets(), vec![bases[4]]);
        assert_eq!(log.log_start_offset(), bases[4]);
        // Nothing more to delete; the log still appends and survives a reopen.
        assert!(log
            .apply_retention(2_000_000)
            .await
            .unwrap()
            .deleted_base_offsets
            .is_empty());
        fill(&log, &[5]).await;
        log.close().await.unwrap();
        let log = PartitionLog::open(&path, config()).await.unwrap();
        assert_eq!(log.log_start_offset(), bases[4]);
        log.close().await.unwrap();
    });
}

#[test]
fn size_retention_keeps_the_newest_bytes() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let log = PartitionLog::open(&path, config()).await.unwrap();
        fill(&log, &[1, 2, 3, 4, 5]).await;
        let bases = log.segment_base_offsets();
        assert_eq!(bases.len(), 5);
        let segment_size = log.size_bytes() / 5;
        let mut c = config();
        c.retention_bytes = (segment_size * 2 + 10) as i64;
        log.set_config(c);
        // 5 equal segments; keeping >= 2 segments + 10 bytes means keeping 3.
        let out = log.apply_retention(0).await.unwrap();
        assert_eq!(out.deleted_base_offsets, bases[..2].to_vec());
        assert_eq!(out.deleted_bytes, segment_size * 2);
        assert_eq!(log.segment_base_offsets(), bases[2..].to_vec());
        let mut c = config();
        c.retention_bytes = 1;
        log.set_config(c);
        log.apply_retention(0).await.unwrap();
        assert_eq!(log.segment_base_offsets(), vec![bases[4]], "active kept");
        log.close().await.unwrap();
    });
}
