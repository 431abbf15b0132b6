//! Proves a partition log keeps an idempotent producer's batches exactly once: a retried
//! batch is answered with the offsets it got the first time and is not appended again, a
//! gap or an older epoch is refused with Kafka's error code and appends nothing, and
//! producers without an id are untouched. Batches come from kafka-protocol's encoder.
//!
//! The same holds across a reopen: after a clean close, after a crash (with a torn batch at
//! the tail, which recovery cuts), and after a follower's truncation, the log rebuilds its
//! producer table from its batches, so a retry of a batch still in the log is answered with
//! its first offsets, a batch cut away is appended again, and a gap is still refused.
mod support;

use std::os::unix::fs::FileExt;

use broker::storage::producer_state::{INVALID_PRODUCER_EPOCH, OUT_OF_ORDER_SEQUENCE_NUMBER};
use broker::storage::segment::segment_file;
use broker::storage::{AppendInfo, PartitionLog};
use kafka_protocol::records::Compression;

fn values(n: usize, tag: u8) -> Vec<Vec<u8>> {
    (0..n).map(|i| vec![tag, i as u8]).collect()
}

#[test]
fn retries_are_kept_once_and_gaps_refused() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let log = PartitionLog::open(&path, support::small_config())
            .await
            .unwrap();
        let plain = support::encode_batch(&values(2, 0), 1000, Compression::None);
        assert_eq!(log.append(&plain, 0).await.unwrap().base_offset, 0);

        let first =
            support::encode_producer_batch(&values(3, 1), 1000, Compression::None, (42, 0, 0));
        let second =
            support::encode_producer_batch(&values(2, 2), 1000, Compression::None, (42, 0, 3));
        let a = log.append(&first, 0).await.unwrap();
        let b = log.append(&second, 0).await.unwrap();
        assert_eq!((a.base_offset, a.last_offset), (2, 4));
        assert_eq!((b.base_offset, b.last_offset), (5, 6));

        // The client retries both (their answers were lost): same offsets, nothing appended.
        let again = log.append(&first, 0).await.unwrap();
        assert_eq!(
            (again.base_offset, again.last_offset, again.records),
            (2, 4, 0)
        );
        assert_eq!(log.append(&second, 0).await.unwrap().base_offset, 5);
        assert_eq!(log.log_end_offset(), 7);

        // A gap (sequence 6 instead of 5) and an older epoch are refused.
        let gap =
            support::encode_producer_batch(&values(1, 3), 1000, Compression::None, (42, 0, 6));
        let err = log.append(&gap, 0).await.unwrap_err();
        assert_eq!(err.error_code(), OUT_OF_ORDER_SEQUENCE_NUMBER, "{err}");
        let next =
            support::encode_producer_batch(&values(1, 4), 1000, Compression::None, (42, 1, 0));
        assert_eq!(log.append(&next, 0).await.unwrap().base_offset, 7);
        let stale =
            support::encode_producer_batch(&values(1, 5), 1000, Compression::None, (42, 0, 5));
        let err = log.append(&stale, 0).await.unwrap_err();
        assert_eq!(err.error_code(), INVALID_PRODUCER_EPOCH, "{err}");
        assert_eq!(log.log_end_offset(), 8);

        // Another producer and plain batches go on as before.
        let other =
            support::encode_producer_batch(&values(1, 6), 1000, Compression::None, (43, 0, 0));
        assert_eq!(log.append(&other, 0).await.unwrap().base_offset, 8);
        assert_eq!(log.append(&plain, 0).await.unwrap().base_offset, 9);
        assert_eq!(log.append(&plain, 0).await.unwrap().base_offset, 11);

        let read = support::read_all(&log, 0, 1 << 20).await;
        let records: usize = read
            .iter()
            .map(|b| {
                support::decode_batches(b)
                    .iter()
                    .map(|(_, v)| v.len())
                    .sum::<usize>()
            })
            .sum();
        assert_eq!(records, 13, "every record once");
        log.close().await.unwrap();
    });
}

/// A batch of producer 42 (epoch 0): `n` records from sequence `seq`.
fn p42(n: usize, tag: u8, seq: i32) -> Vec<u8> {
    support::encode_producer_batch(&values(n, tag), 1000, Compression::None, (42, 0, seq))
}

/// Batches of one history: a plain batch, producer 42's sequences 0..=8 in three batches,
/// producer 43's first batch. Returns the client's bytes of each and what its append did.
async fn write_history(log: &PartitionLog) -> Vec<(Vec<u8>, AppendInfo)> {
    let batches = vec![
        support::encode_batch(&values(2, 0), 1000, Compression::None),
        p42(3, 1, 0),
        p42(2, 2, 3),
        support::encode_producer_batch(&values(1, 3), 1000, Compression::None, (43, 0, 0)),
        p42(4, 4, 5),
    ];
    let mut out = Vec::new();
    for b in batches {
        let info = log.append(&b, 0).await.unwrap();
        assert_eq!(info.batches, 1);
        out.push((b, info));
    }
    out
}

/// A retry of `batch` is answered with `original`'s offsets and appends nothing.
async fn assert_duplicate(log: &PartitionLog, batch: &[u8], original: &AppendInfo) {
    let end = log.log_end_offset();
    let again = log.append(batch, 0).await.unwrap();
    assert_eq!(
        (again.base_offset, again.last_offset, again.records),
        (original.base_offset, original.last_offset, 0),
        "a retry is answered with the first offsets"
    );
    assert_eq!(log.log_end_offset(), end, "a retry appends nothing");
}

/// After [`write_history`] and a reopen: retries are duplicates, a gap is refused, the next
/// batch is appended.
async fn assert_history_remembered(log: &PartitionLog, history: &[(Vec<u8>, AppendInfo)]) {
    let end = history.last().unwrap().1.last_offset + 1;
    assert_eq!(log.log_end_offset(), end);
    // The last batch of producer 42, an earlier one, and producer 43's.
    for i in [4, 1, 2, 3] {
        assert_duplicate(log, &history[i].0, &history[i].1).await;
    }
    let gap = log.append(&p42(1, 5, 10), 0).await.unwrap_err();
    assert_eq!(gap.error_code(), OUT_OF_ORDER_SEQUENCE_NUMBER, "{gap}");
    assert_eq!(log.log_end_offset(), end);
    let next = log.append(&p42(1, 5, 9), 0).await.unwrap();
    assert_eq!((next.base_offset, next.records), (end, 1));
}

#[test]
fn retries_are_recognized_after_a_clean_reopen() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let log = PartitionLog::open(&path, support::small_config())
            .await
            .unwrap();
        let history = write_history(&log).await;
        log.close().await.unwrap();
        drop(log);

        let log = PartitionLog::open(&path, support::small_config())
            .await
            .unwrap();
        assert!(log.recovery_report().clean_shutdown);
        assert_history_remembered(&log, &history).await;
        log.close().await.unwrap();
    });
}

#[test]
fn retries_are_recognized_after_a_crash_and_a_torn_tail_is_not() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let log = PartitionLog::open(&path, support::small_config())
            .await
            .unwrap();
        let history = write_history(&log).await;
        let end = log.log_end_offset();
        assert_eq!(log.segment_base_offsets(), vec![0]);
        let size = log.size_bytes();
        // A crash: no close (every append was fdatasync'ed under `always`).
        drop(log);
        // ... while the next batch (sequence 9) was being written: half of it at the end.
        let mut torn = p42(1, 5, 9);
        torn[..8].copy_from_slice(&end.to_be_bytes());
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(segment_file(&path, 0, "log"))
            .unwrap();
        file.write_all_at(&torn[..torn.len() / 2], size).unwrap();
        drop(file);

        let log = PartitionLog::open(&path, support::small_config())
            .await
            .unwrap();
        let report = log.recovery_report();
        assert!(!report.clean_shutdown);
        assert_eq!(report.truncations.len(), 1, "{report:?}");
        // The torn batch is not remembered: its retry (sequence 9) is appended.
        assert_history_remembered(&log, &history).await;
        log.close().await.unwrap();
    });
}

#[test]
fn a_truncated_follower_remembers_exactly_what_it_kept() {
    let dir = support::scratch_dir();
    let leader_path = dir.path().join("leader");
    let follower_path = dir.path().join("follower");
    support::run(move || async move {
        let leader = PartitionLog::open(&leader_path, support::small_config())
            .await
            .unwrap();
        let mut history = write_history(&leader).await;
        let b = p42(1, 5, 9);
        let info = leader.append(&b, 0).await.unwrap();
        history.push((b, info));
        let stored = support::read_all(&leader, 0, 1 << 20).await;
        assert_eq!(stored.len(), history.len());

        let follower = PartitionLog::open(&follower_path, support::small_config())
            .await
            .unwrap();
        for batch in &stored {
            follower.append_replica(batch).await.unwrap();
        }
        assert_eq!(follower.log_end_offset(), leader.log_end_offset());

        // The follower's log diverged from producer 42's third batch on (history[4]).
        let cut_at = history[4].1.base_offset;
        let (follower, cut) = follower.truncated(cut_at + 1).await.unwrap();
        assert_eq!(cut.end_offset, cut_at);
        assert_eq!(follower.log_end_offset(), cut_at);
        // Led by it now, a retry of a batch it kept is recognized...
        for i in [2, 1, 3] {
            assert_duplicate(&follower, &history[i].0, &history[i].1).await;
        }
        // ... and producer 42 is expected at sequence 5, the first batch cut away.
        let gap = follower.append(&p42(1, 5, 9), 0).await.unwrap_err();
        assert_eq!(gap.error_code(), OUT_OF_ORDER_SEQUENCE_NUMBER, "{gap}");

        // Following again, the batches cut away come back from the leader and are recorded.
        for batch in &stored[4..] {
            follower.append_replica(batch).await.unwrap();
        }
        assert_eq!(follower.log_end_offset(), leader.log_end_offset());
        for i in [5, 4, 1] {
            assert_duplicate(&follower, &history[i].0, &history[i].1).await;
        }

        // Cut again: a batch cut away is not remembered; the producer's retry is appended.
        let (follower, _) = follower.truncated(cut_at).await.unwrap();
        assert_eq!(follower.log_end_offset(), cut_at);
        let again = follower.append(&history[4].0, 1).await.unwrap();
        assert_eq!((again.base_offset, again.records), (cut_at, 4));
        let gap = follower.append(&p42(1, 5, 10), 1).await.unwrap_err();
        assert_eq!(gap.error_code(), OUT_OF_ORDER_SEQUENCE_NUMBER, "{gap}");
        assert_duplicate(&follower, &history[4].0, &again).await;

        follower.close().await.unwrap();
        leader.close().await.unwrap();
    });
}
