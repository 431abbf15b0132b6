//! Proves the follower side of storage: batches read from a leader's log and appended with
//! `append_replica` keep their offsets and leader epochs byte for byte (also across segment
//! rolls), a batch that does not continue the log is refused, and `truncated` cuts a log back
//! to the start of the batch holding an offset (dropping whole later segments), reopens it
//! through recovery, and lets it continue from there, for every flush policy.
mod support;

use broker::storage::{LogConfig, PartitionLog};
use kafka_protocol::records::Compression;

fn batch(tag: u8, records: usize) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..records).map(|i| vec![tag ^ (i as u8); 2000]).collect();
    support::encode_batch(&values, 1_700_000_000_000, Compression::None)
}

fn config(flush: tuning::FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        flush,
        ..support::small_config()
    }
}

/// The leader's batches as stored: `(base offset, leader epoch, bytes)`.
async fn stored(log: &PartitionLog) -> Vec<(i64, i32, Vec<u8>)> {
    let mut out = Vec::new();
    for chunk in support::read_all(log, log.log_start_offset(), 1 << 20).await {
        for batch in support::split_batches(&chunk) {
            let base = i64::from_be_bytes(batch[0..8].try_into().unwrap());
            let epoch = i32::from_be_bytes(batch[12..16].try_into().unwrap());
            out.push((base, epoch, batch));
        }
    }
    out
}

#[test]
fn replicas_keep_offsets_and_epochs_and_truncate_at_batch_starts() {
    for flush in [
        tuning::FlushPolicy::Always,
        tuning::FlushPolicy::Never,
        tuning::FlushPolicy::IntervalMs(50),
    ] {
        support::run(move || async move {
            let leader_dir = support::scratch_dir();
            let follower_dir = support::scratch_dir();
            let leader = PartitionLog::open(leader_dir.path(), config(flush))
                .await
                .unwrap();
            // 40 batches of 3 records over epochs 1, 2 and 5 (~6 KiB each: several segments).
            for i in 0..40u8 {
                let epoch = match i {
                    0..=14 => 1,
                    15..=29 => 2,
                    _ => 5,
                };
                leader.append(&batch(i, 3), epoch).await.unwrap();
            }
            let batches = stored(&leader).await;
            assert_eq!(batches.len(), 40);

            let follower = PartitionLog::open(follower_dir.path(), config(flush))
                .await
                .unwrap();
            // A batch that does not continue the log is refused and changes nothing.
            assert!(follower.append_replica(&batches[1].2).await.is_err());
            assert_eq!(follower.log_end_offset(), 0);
            // Several batches per append, as a Fetch response brings them.
            for group in batches.chunks(7) {
                let bytes: Vec<u8> = group.iter().flat_map(|b| b.2.clone()).collect();
                let info = follower.append_replica(&bytes).await.unwrap();
                assert_eq!(info.base_offset, group[0].0);
                // Returned only once written: the offset may be reported to the leader.
                assert!(follower.written_end_offset() > info.last_offset);
            }
            assert_eq!(follower.log_end_offset(), leader.log_end_offset());
            assert_eq!(stored(&follower).await, batches, "{flush:?}: byte for byte");
            assert!(follower.segment_base_offsets().len() > 2, "crossed rolls");

            // Cut inside batch 20 (offsets 60..63): the log ends at 60, later segments gone.
            let (follower, cut) = follower.truncated(61).await.unwrap();
            assert_eq!(cut.end_offset, 60);
            assert_eq!(follower.log_end_offset(), 60);
            assert!(cut.segments_deleted >= 1);
            assert_eq!(stored(&follower).await, batches[..20].to_vec());
            // It continues from the cut with the leader's batches, and survives a reopen.
            let rest: Vec<u8> = batches[20..].iter().flat_map(|b| b.2.clone()).collect();
            follower.append_replica(&rest).await.unwrap();
            follower.close().await.unwrap();
            let follower = PartitionLog::open(follower_dir.path(), config(flush))
                .await
                .unwrap();
            assert_eq!(stored(&follower).await, batches);
            // A cut at a batch start and a cut to zero.
            let (follower, cut) = follower.truncated(45).await.unwrap();
            assert_eq!(cut.end_offset, 45);
            let (follower, _) = follower.truncated(0).await.unwrap();
            assert_eq!(follower.log_end_offset(), 0);
            follower
                .append_replica(&batches[0].2)
                .await
                .expect("an emptied log takes offset 0 again");
            follower.close().await.unwrap();
            leader.close().await.unwrap();
        });
    }
}
