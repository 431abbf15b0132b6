//! Proves a partition log keeps an idempotent producer's batches exactly once: a retried
//! batch is answered with the offsets it got the first time and is not appended again, a
//! gap or an older epoch is refused with Kafka's error code and appends nothing, and
//! producers without an id are untouched. Batches come from kafka-protocol's encoder.
//!
//! The same holds across a reopen: after a clean close (the producer snapshot written at the
//! close is loaded and no batch is replayed), after a crash (with a torn batch at the tail,
//! which recovery cuts), after a kill -9 of a process appending to the log (a child process
//! of this test binary; the snapshot of the last roll is loaded and only the log after it is
//! replayed, so a producer whose last batch lies more than the old 64 MiB rebuild window back
//! is still remembered, also when the newest snapshot is damaged and the older one is used),
//! and after a follower's truncation, the log rebuilds its producer table, so a retry of a
//! batch still in the log is answered with its first offsets, a batch cut away is appended
//! again, and a gap is still refused.
mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use broker::storage::producer_rebuild::PRODUCER_REBUILD_BYTES;
use broker::storage::producer_snapshot::{self, snapshot_file};
use broker::storage::producer_state::{INVALID_PRODUCER_EPOCH, OUT_OF_ORDER_SEQUENCE_NUMBER};
use broker::storage::segment::segment_file;
use broker::storage::{AppendInfo, LogConfig, PartitionLog};
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
        // The snapshot of the close holds everything: nothing is replayed.
        let end = history.last().unwrap().1.last_offset + 1;
        let rebuild = log.producer_rebuild_report();
        assert_eq!(rebuild.snapshot_offset, Some(end));
        assert_eq!(rebuild.replay.batches, 0);
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

/// Set in the child's environment to the log directory: the kill test then plays the child.
const KILL_CHILD_ENV: &str = "STORAGE_IDEMPOTENCE_KILL_CHILD";
/// Bytes of plain batches appended after the old producers' batches: more than the rebuild
/// window of a log without snapshots.
const FILLER_BYTES: u64 = PRODUCER_REBUILD_BYTES + (4 << 20);

fn kill_config() -> LogConfig {
    let mut c = support::small_config();
    c.segment_bytes = 16 << 20;
    c
}

/// One filler batch of about 1 MiB.
fn filler() -> Vec<u8> {
    support::encode_batch(&vec![vec![7u8; 128 << 10]; 7], 1000, Compression::None)
}

/// The batches the child appends, in order, with what the test calls them: producer 43's
/// only batch and producer 42's first ones, [`FILLER_BYTES`] of plain batches (several
/// segments: snapshots are written at the rolls), then producer 42's next batch.
fn kill_history() -> Vec<(&'static str, Vec<u8>)> {
    let mut batches = vec![
        (
            "p43",
            support::encode_producer_batch(&values(2, 9), 1000, Compression::None, (43, 0, 0)),
        ),
        ("p42-0", p42(3, 1, 0)),
        ("p42-3", p42(2, 2, 3)),
    ];
    let filler = filler();
    let count = FILLER_BYTES.div_ceil(filler.len() as u64);
    batches.extend((0..count).map(|_| ("filler", filler.clone())));
    batches.push(("p42-5", p42(4, 4, 5)));
    batches
}

/// The child: appends [`kill_history`], printing `ack <i> <base offset> <last offset>` for
/// each, then `ready`, then waits to be killed.
fn run_kill_child(dir: PathBuf) -> ! {
    support::run(move || async move {
        let log = PartitionLog::open(&dir, kill_config()).await.unwrap();
        for (i, (_, batch)) in kill_history().iter().enumerate() {
            let info = log.append(batch, 0).await.unwrap();
            println!("ack {i} {} {}", info.base_offset, info.last_offset);
        }
        println!("ready");
        glommio::timer::sleep(Duration::from_secs(120)).await;
    });
    eprintln!("storage_idempotence child: nobody killed me");
    std::process::exit(3)
}

/// Runs the child on `dir` until it printed `ready`, then kills it (SIGKILL); returns the
/// offsets it printed, by batch index.
fn append_history_then_kill(dir: &Path) -> Vec<(i64, i64)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "retries_are_recognized_after_a_kill_beyond_the_old_rebuild_window",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL_CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child");
    let stdout = child.stdout.take().unwrap();
    // The reader thread ends when the child dies (its pipe closes), killed below or not.
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    // Nothing here may panic before the kill below (the scratch dir would go under the child).
    // With --nocapture the first line may start with the test harness's own output.
    let mut acks = Vec::new();
    let ready = loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line == "ready" => break true,
            Ok(line) => {
                let Some(at) = line.find("ack ") else {
                    continue;
                };
                let fields: Vec<Option<i64>> =
                    line[at + 4..].split(' ').map(|x| x.parse().ok()).collect();
                acks.push(fields);
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        ready,
        "the child did not finish its appends; it printed {} acks",
        acks.len()
    );
    acks.iter()
        .enumerate()
        .map(|(i, fields)| match fields[..] {
            [Some(index), Some(base), Some(last)] if index == i as i64 => (base, last),
            _ => panic!("ack line {i}: {fields:?}"),
        })
        .collect()
}

#[test]
fn retries_are_recognized_after_a_kill_beyond_the_old_rebuild_window() {
    if let Some(dir) = std::env::var_os(KILL_CHILD_ENV) {
        run_kill_child(PathBuf::from(dir));
    }
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    let acks = append_history_then_kill(&path);
    let batches = kill_history();
    assert_eq!(acks.len(), batches.len());
    // Each named batch with the offsets its append was acknowledged with.
    let named: std::collections::HashMap<&str, (Vec<u8>, AppendInfo)> = batches
        .into_iter()
        .zip(&acks)
        .map(|((name, bytes), &(base_offset, last_offset))| {
            let info = AppendInfo {
                base_offset,
                last_offset,
                batches: 1,
                records: 0,
                bytes: 0,
                max_timestamp_ms: -1,
                log_start_offset: 0,
            };
            (name, (bytes, info))
        })
        .collect();
    let end = acks.last().unwrap().1 + 1;
    support::run(move || async move {
        let log = PartitionLog::open(&path, kill_config()).await.unwrap();
        assert!(!log.recovery_report().clean_shutdown);
        assert_eq!(
            log.log_end_offset(),
            end,
            "every acknowledged batch is there"
        );
        // The newest snapshot (of the last roll) was loaded; what was replayed after it is
        // far less than what lies between producer 43's batch and the end.
        let snapshots = producer_snapshot::list(&path).unwrap();
        assert_eq!(snapshots.len(), 2, "{snapshots:?}");
        let rebuild = log.producer_rebuild_report().clone();
        assert_eq!(rebuild.snapshot_offset, Some(snapshots[1]));
        assert!(rebuild.corrupt_snapshots.is_empty());
        assert!(log.size_bytes() > FILLER_BYTES);
        assert!(rebuild.replay.bytes_covered < kill_config().segment_bytes);
        assert_eq!(
            rebuild.replay.producer_batches, 1,
            "only p42-5 is after the snapshot"
        );
        // Producer 43's only batch lies more than PRODUCER_REBUILD_BYTES back: a retry of
        // it is still answered with its first offsets; so are producer 42's.
        for name in ["p43", "p42-0", "p42-3", "p42-5"] {
            let (bytes, info) = &named[name];
            assert_duplicate(&log, bytes, info).await;
        }
        // A kill again, now with the newest snapshot damaged: it is reported, deleted, and
        // the older one (of the roll before) is used, the log after it replayed.
        drop(log);
        let newest = snapshot_file(&path, snapshots[1]);
        let mut bytes = std::fs::read(&newest).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
        std::fs::write(&newest, bytes).unwrap();
        let log = PartitionLog::open(&path, kill_config()).await.unwrap();
        let rebuild = log.producer_rebuild_report().clone();
        assert_eq!(rebuild.corrupt_snapshots, vec![newest.clone()]);
        assert!(!newest.exists());
        assert_eq!(rebuild.snapshot_offset, Some(snapshots[0]));
        assert!(rebuild.replay.bytes_covered > kill_config().segment_bytes / 2);
        for name in ["p43", "p42-5", "p42-0"] {
            let (bytes, info) = &named[name];
            assert_duplicate(&log, bytes, info).await;
        }
        // Producer 42 is expected at sequence 9, producer 43 at 2.
        let gap = log.append(&p42(1, 5, 10), 0).await.unwrap_err();
        assert_eq!(gap.error_code(), OUT_OF_ORDER_SEQUENCE_NUMBER, "{gap}");
        let p43_gap =
            support::encode_producer_batch(&values(1, 9), 1000, Compression::None, (43, 0, 3));
        let gap = log.append(&p43_gap, 0).await.unwrap_err();
        assert_eq!(gap.error_code(), OUT_OF_ORDER_SEQUENCE_NUMBER, "{gap}");
        assert_eq!(log.log_end_offset(), end);
        let next = log.append(&p42(1, 5, 9), 0).await.unwrap();
        assert_eq!((next.base_offset, next.records), (end, 1));
        log.close().await.unwrap();
        drop(log);

        // What the snapshots save: without them (the rebuild of the last 64 MiB only),
        // producer 43 is forgotten and a retry of its batch would be appended a second time.
        let all = producer_snapshot::list(&path).unwrap();
        producer_snapshot::remove(&path, &all).unwrap();
        let log = PartitionLog::open(&path, kill_config()).await.unwrap();
        assert_eq!(log.producer_rebuild_report().snapshot_offset, None);
        let (bytes, info) = &named["p43"];
        let again = log.append(bytes, 0).await.unwrap();
        assert_eq!((again.base_offset, again.records), (end + 1, 2));
        assert_ne!(again.base_offset, info.base_offset);
        log.close().await.unwrap();
    });
}

#[test]
fn truncation_and_retention_drop_the_snapshots_they_make_useless() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let mut config = support::small_config();
        config.segment_bytes = 4096;
        config.retention_bytes = 3 * 4096;
        let log = PartitionLog::open(&path, config).await.unwrap();
        // About 3 KiB per batch: a roll (and a snapshot) every batch or two.
        let mut seq = 0;
        for i in 0..12 {
            log.append(&p42(1, i, seq), 0).await.unwrap();
            seq += 1;
            log.append(
                &support::encode_batch(&[vec![1u8; 3000]], 1000, Compression::None),
                0,
            )
            .await
            .unwrap();
        }
        let bases = log.segment_base_offsets();
        assert!(bases.len() > 6, "{bases:?}");
        // A rolled segment's snapshot is written by its background sync, after the roll.
        let newest_two = &bases[bases.len() - 2..];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut snapshots = producer_snapshot::list(&path).unwrap();
        while snapshots != newest_two && std::time::Instant::now() < deadline {
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
            snapshots = producer_snapshot::list(&path).unwrap();
        }
        assert_eq!(snapshots, newest_two, "the newest two rolls");

        // Retention deletes the front segments and snapshots below the new start.
        let outcome = log
            .apply_retention(broker::storage::now_ms())
            .await
            .unwrap();
        assert!(!outcome.deleted_base_offsets.is_empty());
        let start = log.log_start_offset();
        assert!(producer_snapshot::list(&path)
            .unwrap()
            .iter()
            .all(|&o| o >= start));

        // One more batch of producer 42 in the active segment, then a cut that removes it:
        // the snapshot of the close (above the new end) goes, the newest roll's is used.
        let last = p42(1, 12, seq);
        let info = log.append(&last, 0).await.unwrap();
        assert!(info.base_offset >= snapshots[1]);
        let (log, cut) = log.truncated(info.base_offset).await.unwrap();
        assert_eq!(cut.end_offset, info.base_offset);
        let left = producer_snapshot::list(&path).unwrap();
        assert!(
            left.iter().all(|&o| o <= cut.end_offset),
            "{left:?} above {}",
            cut.end_offset
        );
        assert_eq!(left.last(), Some(&snapshots[1]));
        assert_eq!(
            log.producer_rebuild_report().snapshot_offset,
            Some(snapshots[1])
        );
        // The batch cut away is not remembered: the producer's retry is appended again.
        let again = log.append(&last, 0).await.unwrap();
        assert_eq!((again.base_offset, again.records), (cut.end_offset, 1));
        log.close().await.unwrap();
    });
}
