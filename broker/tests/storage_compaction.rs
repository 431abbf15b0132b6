//! Log compaction end to end on a real partition log: keyed updates and tombstones across many
//! small segments, a clean, and the log read back as a consumer reads it (latest value per
//! key, offsets kept and increasing, tombstones kept until `delete_retention_ms` and dropped
//! after, the active segment untouched), across a reopen with full verification; and a
//! SIGKILL in the middle of cleans (the test binary runs itself as the cleaning child, whose
//! swaps pause between their rename steps), after which the log reads back whole: every key's
//! latest value there, no offset twice, nothing that was never written.
mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use broker::storage::compaction::SWAP_PAUSE_ENV;
use broker::storage::{now_ms, CleanupPolicy, LogConfig, PartitionLog, CLEAN_SHUTDOWN_FILE};

/// Set in the child's environment to `<first round>:<log directory>`: the test then plays
/// the child.
const CHILD_ENV: &str = "STORAGE_COMPACTION_CHILD";
const KEYS: usize = 60;
/// Rounds of updates (one value per key each) the child appends per run.
const ROUNDS_PER_RUN: usize = 10;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        cleanup: CleanupPolicy::COMPACT,
        min_cleanable_dirty_ratio_ppm: 0,
        ..support::small_config()
    }
}

fn key(k: usize) -> Vec<u8> {
    format!("key-{k:03}").into_bytes()
}

fn value(k: usize, round: usize) -> Vec<u8> {
    let mut v = format!("key-{k:03} round {round} ").into_bytes();
    v.resize(120, b'.');
    v
}

/// Appends one round: every key gets `value(k, round)`, a tombstone for `deleted`, nothing
/// for `absent`; in batches of 6 records.
async fn append_round(log: &PartitionLog, round: usize, deleted: &[usize], absent: &[usize]) {
    let records: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..KEYS)
        .filter(|k| !absent.contains(k))
        .map(|k| (key(k), (!deleted.contains(&k)).then(|| value(k, round))))
        .collect();
    for chunk in records.chunks(6) {
        let batch = support::encode_keyed_batch(chunk, now_ms() - 3_600_000);
        log.append(&batch, 0).await.expect("append");
    }
}

/// Every record of the log, read as a consumer does, in order.
async fn read_log(log: &PartitionLog) -> Vec<support::KeyedRecord> {
    let mut out = Vec::new();
    for batch in support::read_all(log, log.log_start_offset(), 16 * 1024).await {
        out.extend(support::decode_keyed(&batch));
    }
    out
}

/// Offsets strictly increase; returns the last record per key.
fn latest_per_key(records: &[support::KeyedRecord]) -> BTreeMap<Vec<u8>, (i64, Option<Vec<u8>>)> {
    let mut last = BTreeMap::new();
    let mut prev = -1;
    for (offset, k, v) in records {
        assert!(*offset > prev, "offset {offset} after {prev}");
        prev = *offset;
        last.insert(k.clone().expect("keyed"), (*offset, v.clone()));
    }
    last
}

#[test]
fn a_follower_copies_a_cleaned_log_and_a_delete_log_still_refuses_gaps() {
    let leader_dir = support::scratch_dir();
    let follower_dir = support::scratch_dir();
    let plain_dir = support::scratch_dir();
    let (leader_path, follower_path, plain_path) = (
        leader_dir.path().to_path_buf(),
        follower_dir.path().to_path_buf(),
        plain_dir.path().to_path_buf(),
    );
    support::run(move || async move {
        let leader = PartitionLog::open(&leader_path, config()).await.unwrap();
        for round in 0..12 {
            append_round(&leader, round, &[], &[]).await;
        }
        let outcome = leader.clean(now_ms()).await.expect("clean");
        assert!(outcome.removed_records > 0);
        let batches = support::read_all(&leader, leader.log_start_offset(), 16 * 1024).await;
        let expected = read_log(&leader).await;
        // The cleaned log has what a plain one never has: offsets missing between batches.
        let base = |b: &Vec<u8>| i64::from_be_bytes(b[..8].try_into().unwrap());
        let next =
            |b: &Vec<u8>| base(b) + i32::from_be_bytes(b[23..27].try_into().unwrap()) as i64 + 1;
        assert!(
            batches.windows(2).any(|w| base(&w[1]) > next(&w[0])),
            "no gap between batches: the test would not show anything"
        );

        // As a replica fetcher brings them: several batches per append, with the gaps and
        // the short batches the cleaner left.
        let follower = PartitionLog::open(&follower_path, config()).await.unwrap();
        for group in batches.chunks(5) {
            follower
                .append_replica(&group.concat())
                .await
                .expect("cleaned batches replicate");
        }
        assert_eq!(follower.log_end_offset(), leader.log_end_offset());
        assert_eq!(read_log(&follower).await, expected);
        // Reopened without a clean close: recovery scans the active segment, gaps included.
        drop(follower);
        let follower = PartitionLog::open(&follower_path, config()).await.unwrap();
        assert_eq!(follower.log_end_offset(), leader.log_end_offset());
        assert_eq!(read_log(&follower).await, expected);

        // A log that is not compacted refuses a batch that skips offsets.
        let skipping = batches
            .iter()
            .find(|b| i64::from_be_bytes(b[..8].try_into().unwrap()) > 0)
            .expect("a batch past offset 0");
        let delete_config = LogConfig {
            cleanup: CleanupPolicy::DELETE,
            ..config()
        };
        let plain = PartitionLog::open(&plain_path, delete_config)
            .await
            .unwrap();
        assert!(plain.append_replica(skipping).await.is_err());
        assert_eq!(plain.log_end_offset(), 0);
    });
}

#[test]
fn clean_keeps_the_latest_value_per_key_with_its_offset() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let log = PartitionLog::open(&path, config()).await.unwrap();
        // Keys 3, 4 and 5 are deleted in round 8 and never written again.
        const GONE: [usize; 3] = [3, 4, 5];
        for round in 0..12 {
            match round {
                0..=7 => append_round(&log, round, &[], &[]).await,
                8 => append_round(&log, round, &GONE, &[]).await,
                _ => append_round(&log, round, &[], &GONE).await,
            }
        }
        let before = read_log(&log).await;
        let expected = latest_per_key(&before);
        assert_eq!(before.len(), 12 * KEYS - 3 * GONE.len());
        let segments = log.segment_base_offsets().len();
        assert!(segments >= 5, "{segments} segments");
        let size_before = log.size_bytes();

        // Retention leaves a compact-only log alone, however old its segments.
        let mut c = log.config();
        c.retention_ms = 1;
        log.set_config(c);
        let retention = log.apply_retention(now_ms()).await.unwrap();
        assert!(retention.deleted_base_offsets.is_empty());
        c.retention_ms = -1;
        log.set_config(c);

        let outcome = log.clean(now_ms()).await.expect("clean");
        assert!(!outcome.cleaned_segments.is_empty());
        assert!(outcome.removed_records > 0);
        assert!(log.size_bytes() < size_before);
        let active_base = *log.segment_base_offsets().last().unwrap();
        assert!(!outcome.cleaned_segments.contains(&active_base));
        assert_eq!(
            log.segment_base_offsets().len(),
            segments,
            "segments are kept"
        );

        let after = read_log(&log).await;
        assert_eq!(
            latest_per_key(&after),
            expected,
            "latest value and offset per key"
        );
        assert!(after.len() < before.len());
        // Every record kept is one that was written, at its offset.
        let written: HashMap<i64, &support::KeyedRecord> =
            before.iter().map(|r| (r.0, r)).collect();
        for r in &after {
            assert_eq!(written.get(&r.0), Some(&r), "record at {}", r.0);
        }
        // Below the cleaned end, one record per key; the tombstones are still there.
        let cleaned: Vec<_> = after
            .iter()
            .filter(|r| r.0 < outcome.clean_offset)
            .collect();
        let mut seen = std::collections::HashSet::new();
        for r in &cleaned {
            assert!(
                seen.insert(r.1.clone()),
                "key {:?} twice below the clean end",
                r.1
            );
        }
        for k in GONE {
            let (offset, v) = &expected[&key(k)];
            assert!(v.is_none() && *offset < outcome.clean_offset);
        }
        // Reads from a removed offset go on with the next kept record.
        let removed = before
            .iter()
            .map(|r| r.0)
            .find(|o| !after.iter().any(|r| r.0 == *o))
            .expect("an offset was removed");
        // (A read returns one segment's bytes: here maybe only an emptied batch, which the
        // consumer steps over by its offset range.)
        let next_read = support::read_all(&log, removed, 1 << 20)
            .await
            .iter()
            .flat_map(|b| support::decode_keyed(b))
            .find(|r| r.0 >= removed);
        let next_kept = after.iter().find(|r| r.0 > removed).cloned();
        assert!(next_kept.is_some());
        assert_eq!(next_read, next_kept, "a fetch at removed offset {removed}");

        // Tombstones go once their segment was cleaned delete_retention_ms ago (new dirty
        // data first, so a pass is due).
        for round in 12..15 {
            append_round(&log, round, &[], &GONE).await;
        }
        let mut c = log.config();
        c.delete_retention_ms = 1000;
        log.set_config(c);
        let second = log.clean(now_ms() + 60_000).await.expect("second clean");
        assert!(second.removed_records > 0);
        let after2 = read_log(&log).await;
        let latest2 = latest_per_key(&after2);
        for k in 0..KEYS {
            if GONE.contains(&k) {
                assert!(!latest2.contains_key(&key(k)), "key {k} is gone entirely");
            } else {
                assert_eq!(latest2[&key(k)].1.as_deref(), Some(&value(k, 14)[..]));
            }
        }
        let old_tombstones = after2
            .iter()
            .filter(|r| r.2.is_none() && r.0 < outcome.clean_offset)
            .count();
        assert_eq!(old_tombstones, 0, "expired tombstones were dropped");

        // Reopen with every segment verified (no clean-shutdown marker, no recovery point):
        // the cleaned segments' gaps and shortened batches are accepted as they are.
        log.close().await.unwrap();
        std::fs::remove_file(path.join(CLEAN_SHUTDOWN_FILE)).unwrap();
        std::fs::remove_file(path.join("recovery-point")).unwrap();
        let log = PartitionLog::open(&path, config()).await.unwrap();
        assert!(log.recovery_report().truncations.is_empty());
        assert!(log.recovery_report().deleted_segments.is_empty());
        assert_eq!(read_log(&log).await, after2);
        // Appends go on at the same end offset.
        let end = log.log_end_offset();
        append_round(&log, 15, &[], &[]).await;
        assert_eq!(
            read_log(&log).await.last().unwrap().0,
            end + KEYS as i64 - 1
        );
        log.close().await.unwrap();
    });
}

/// The child: appends [`ROUNDS_PER_RUN`] rounds from `first_round`, prints `ready`, then
/// cleans until killed, printing `cleaned` after each pass.
fn run_child(first_round: usize, dir: PathBuf) -> ! {
    support::run(move || async move {
        let log = PartitionLog::open(&dir, config()).await.unwrap();
        for round in first_round..first_round + ROUNDS_PER_RUN {
            append_round(&log, round, &[], &[]).await;
        }
        // Seal everything appended: the cleaner never touches the active segment.
        let filler = support::encode_keyed_batch(&[(b"filler".to_vec(), Some(vec![0; 15_000]))], 0);
        log.append(&filler, 0).await.unwrap();
        log.append(&filler, 0).await.unwrap();
        println!("ready");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            let outcome = log.clean(now_ms()).await.expect("clean");
            println!("cleaned {}", outcome.cleaned_segments.len());
        }
    });
    std::process::exit(3)
}

/// Runs the child on `dir` from `first_round`, kills it `kill_after` after it is ready;
/// returns whether a clean pass had finished before the kill.
fn run_and_kill(dir: &Path, first_round: usize, kill_after: Duration) -> bool {
    let exe = std::env::current_exe().unwrap();
    let mut child = support::Killed(
        Command::new(exe)
            .args([
                "--exact",
                "kill_during_cleans_leaves_every_segment_cleaned_or_whole",
                "--nocapture",
            ])
            .env(CHILD_ENV, format!("{first_round}:{}", dir.display()))
            .env(SWAP_PAUSE_ENV, "20")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the child gets ready");
        if line == "ready" {
            break;
        }
    }
    std::thread::sleep(kill_after);
    drop(child);
    rx.try_iter().any(|l| l.starts_with("cleaned "))
}

#[test]
fn kill_during_cleans_leaves_every_segment_cleaned_or_whole() {
    if let Ok(arg) = std::env::var(CHILD_ENV) {
        let (first, dir) = arg.split_once(':').expect("<first round>:<dir>");
        run_child(first.parse().unwrap(), PathBuf::from(dir));
    }
    let dir = support::scratch_dir();
    let kills = [120u64, 260, 40, 400, 180, 330];
    let mut interrupted = 0;
    let (mut completed_swaps, mut rolled_back_files, mut last_count) = (0, 0, 0);
    for (i, ms) in kills.iter().enumerate() {
        let rounds = (i + 1) * ROUNDS_PER_RUN;
        let finished = run_and_kill(dir.path(), i * ROUNDS_PER_RUN, Duration::from_millis(*ms));
        if !finished {
            interrupted += 1;
        }
        let path = dir.path().to_path_buf();
        let (completed, removed, count) = support::run(move || async move {
            let log = PartitionLog::open(&path, config()).await.unwrap();
            let report = log.recovery_report().clone();
            assert!(
                report.truncations.is_empty(),
                "run {i}: {:?}",
                report.truncations
            );
            let leftovers: Vec<_> = std::fs::read_dir(&path)
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".swap") || n.ends_with(".cleaned"))
                .collect();
            assert!(leftovers.is_empty(), "run {i}: {leftovers:?}");
            let records = read_log(&log).await;
            let latest = latest_per_key(&records);
            for k in 0..KEYS {
                let (_, v) = &latest[&key(k)];
                assert_eq!(
                    v.as_deref(),
                    Some(&value(k, rounds - 1)[..]),
                    "run {i}: key {k} has its latest value"
                );
            }
            for (offset, k, v) in &records {
                let k = k.as_ref().unwrap();
                if k == b"filler" {
                    continue;
                }
                let v = String::from_utf8_lossy(v.as_ref().unwrap()).into_owned();
                assert!(
                    v.starts_with(&format!("{} round ", String::from_utf8_lossy(k))),
                    "run {i}: offset {offset} holds {v:?}"
                );
            }
            log.close().await.unwrap();
            (
                report.completed_swaps.len(),
                report.removed_swap_files,
                records.len(),
            )
        });
        completed_swaps += completed;
        rolled_back_files += removed;
        last_count = count;
    }
    eprintln!(
        "recovery completed {completed_swaps} swaps and rolled back {rolled_back_files} files"
    );
    // The cleans did work across the kills.
    assert!(
        last_count < kills.len() * ROUNDS_PER_RUN * KEYS,
        "{last_count} records"
    );
    // And a last, uninterrupted pass leaves one record per key below its end.
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let log = PartitionLog::open(&path, config()).await.unwrap();
        let outcome = log.clean(now_ms()).await.unwrap();
        let records = read_log(&log).await;
        let mut seen = std::collections::HashSet::new();
        for (offset, k, _) in records.iter().filter(|r| r.0 < outcome.clean_offset) {
            assert!(seen.insert(k.clone()), "key {k:?} again at {offset}");
        }
        assert!(seen.len() >= KEYS);
        log.close().await.unwrap();
    });
    eprintln!("{interrupted} of {} kills hit a clean pass", kills.len());
    assert!(interrupted >= 1, "no kill hit a clean pass");
}
