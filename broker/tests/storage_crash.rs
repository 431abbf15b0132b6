//! Proves a partition log keeps its flush policy's promise when its process is killed
//! (SIGKILL) in the middle of concurrent appends while a consumer tails it: a kill loses
//! everything the process held in memory (the write buffer, a write round not issued yet) and
//! nothing the kernel already has. The test binary runs itself as a child that appends batches
//! from eight tasks into small segments, printing each acknowledgement with the log's written
//! end offset at that moment, and tails the log as a single node's consumer does (reads below
//! `promised_end_offset()`, long-polls with `wait_promised_past`), printing every batch it
//! read. The parent kills it after a few hundred acknowledgements, reopens the log and checks,
//! under each policy (`always`, `interval_ms`, `never`):
//!
//! * every acknowledged batch is there, byte for byte, at the offset it was acknowledged with
//!   (under `never` and `interval_ms` an append is acknowledged once written, so a process
//!   crash loses none);
//! * every batch the consumer read is there at the offset it was read at;
//! * every batch below the largest written end offset the child reported is there;
//! * the log is a run of whole batches from offset 0 without gaps, each one decodable by
//!   kafka-protocol and equal to a batch the child sent (nothing half-written or foreign is
//!   visible), recovery reports an unclean shutdown, appends continue at the next offset, and a
//!   clean close and reopen keeps everything.
mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use broker::storage::{LogConfig, PartitionLog};
use kafka_protocol::records::Compression;
use tuning::FlushPolicy;

/// Set in the child's environment to `<policy>:<log dir>`: the test then plays the child.
const CHILD_ENV: &str = "STORAGE_CRASH_CHILD";
/// Concurrent appending tasks in the child.
const APPENDERS: u64 = 8;
/// A child still alive this long after it started stops by itself (its parent is gone).
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(120);
/// How long the parent waits for the acknowledgements it kills after.
const ACKS_TIMEOUT: Duration = Duration::from_secs(60);

fn config(flush: FlushPolicy) -> LogConfig {
    let mut c = support::small_config();
    c.flush = flush;
    c
}

fn policy_name(flush: FlushPolicy) -> &'static str {
    match flush {
        FlushPolicy::Always => "always",
        FlushPolicy::Never => "never",
        FlushPolicy::IntervalMs(_) => "interval",
    }
}

/// The values of batch `id`: 1 to 4 records of 200 B to 3 KB, so batches straddle pages
/// and segments at every alignment; the content names the batch.
fn values(id: u64) -> Vec<Vec<u8>> {
    let records = 1 + (id % 4) as usize;
    (0..records)
        .map(|r| {
            let len = 200 + ((id * 7919 + r as u64 * 104_729) % 2800) as usize;
            let tag = format!("batch {id} record {r} ");
            tag.bytes().cycle().take(len).collect()
        })
        .collect()
}

fn batch(id: u64) -> Vec<u8> {
    support::encode_batch(
        &values(id),
        1_700_000_000_000 + id as i64,
        Compression::None,
    )
}

/// The batch id a batch of the child names in its first record.
fn batch_id(values: &[Vec<u8>]) -> Option<u64> {
    let first = String::from_utf8_lossy(values.first()?).into_owned();
    first
        .strip_prefix("batch ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// The child: appends until killed, printing `ack <id> <base offset> <written end offset>`,
/// and tails the log as a consumer, printing `saw <id> <base offset>` for each batch read.
fn run_child(flush: FlushPolicy, dir: PathBuf) -> ! {
    support::run(move || async move {
        let log = Rc::new(PartitionLog::open(&dir, config(flush)).await.unwrap());
        let next_id = Rc::new(std::cell::Cell::new(0u64));
        let started = Instant::now();
        let mut tasks = Vec::new();
        let consumer = log.clone();
        tasks.push(glommio::spawn_local(async move {
            let mut offset = 0i64;
            while started.elapsed() < CHILD_LIFETIME_MAX {
                consumer.wait_promised_past(offset).await;
                let high_watermark = consumer.promised_end_offset();
                let read = consumer
                    .read(offset, 64 << 10, Some(high_watermark))
                    .await
                    .expect("read");
                let bytes = read.to_vec().expect("read file ranges");
                for (base, values) in support::decode_batches(&bytes) {
                    let id = batch_id(&values).expect("a batch the child sent");
                    assert!(
                        base + values.len() as i64 <= high_watermark,
                        "read past the HW"
                    );
                    if base >= offset {
                        println!("saw {id} {base}");
                        offset = base + values.len() as i64;
                    }
                }
            }
        }));
        for _ in 0..APPENDERS {
            let (log, next_id) = (log.clone(), next_id.clone());
            tasks.push(glommio::spawn_local(async move {
                while started.elapsed() < CHILD_LIFETIME_MAX {
                    let id = next_id.get();
                    next_id.set(id + 1);
                    let info = log.append(&batch(id), 0).await.expect("append");
                    println!("ack {id} {} {}", info.base_offset, log.written_end_offset());
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    });
    eprintln!("storage_crash child: nobody killed me");
    std::process::exit(3)
}

struct Ack {
    id: u64,
    base_offset: i64,
    written_end_offset: i64,
}

/// A batch the child's consumer read: its id and the offset it was read at.
struct Seen {
    id: u64,
    base_offset: i64,
}

/// Runs the child on `dir` and kills it once it printed `kill_after` acknowledgements;
/// returns every acknowledgement and every batch read it printed before it died.
fn append_then_kill(
    test_name: &str,
    flush: FlushPolicy,
    dir: &Path,
    kill_after: usize,
) -> (Vec<Ack>, Vec<Seen>) {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(
            CHILD_ENV,
            format!("{}:{}", policy_name(flush), dir.display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child");
    let mut child = support::Killed(child);
    let stdout = child.0.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let parse = |line: &str| -> Option<Ack> {
        let mut f = line.strip_prefix("ack ")?.split(' ');
        Some(Ack {
            id: f.next()?.parse().ok()?,
            base_offset: f.next()?.parse().ok()?,
            written_end_offset: f.next()?.parse().ok()?,
        })
    };
    let parse_seen = |line: &str| -> Option<Seen> {
        let mut f = line.strip_prefix("saw ")?.split(' ');
        Some(Seen {
            id: f.next()?.parse().ok()?,
            base_offset: f.next()?.parse().ok()?,
        })
    };
    let mut acks = Vec::new();
    let mut seen = Vec::new();
    let deadline = Instant::now() + ACKS_TIMEOUT;
    while acks.len() < kill_after {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                acks.extend(parse(&line));
                seen.extend(parse_seen(&line));
            }
            Err(_) => panic!(
                "the child printed {} acknowledgements in {ACKS_TIMEOUT:?}, not {kill_after}",
                acks.len()
            ),
        }
    }
    drop(child);
    // What it printed before it died is still in the pipe.
    for line in lines.iter() {
        acks.extend(parse(&line));
        seen.extend(parse_seen(&line));
    }
    reader.join().unwrap();
    (acks, seen)
}

/// Kills a child appending under `flush`, then checks the reopened log (module doc).
fn crash_and_check(test_name: &str, flush: FlushPolicy, kill_after: usize) {
    if let Ok(role) = std::env::var(CHILD_ENV) {
        let (policy, dir) = role.split_once(':').expect("policy:dir");
        if policy == policy_name(flush) {
            run_child(flush, PathBuf::from(dir));
        }
        return;
    }
    let dir = support::scratch_dir();
    let (acks, read) = append_then_kill(test_name, flush, dir.path(), kill_after);
    assert!(
        !read.is_empty(),
        "the consumer read nothing before the kill"
    );
    let path = dir.path().to_path_buf();
    let acked = acks.len();
    let written_end = acks.iter().map(|a| a.written_end_offset).max().unwrap();
    support::run(move || async move {
        let log = PartitionLog::open(&path, config(flush)).await.unwrap();
        assert!(
            !log.recovery_report().clean_shutdown,
            "a killed process left no clean-shutdown marker"
        );
        let stored = support::read_all(&log, 0, 1 << 20).await;
        // A run of whole batches from 0, each one the child sent, none twice.
        let mut next_offset = 0i64;
        let mut seen = HashMap::new();
        for got in &stored {
            assert_eq!(
                i64::from_be_bytes(got[..8].try_into().unwrap()),
                next_offset,
                "a gap in the offsets"
            );
            let decoded = support::decode_batches(got);
            assert_eq!(decoded.len(), 1, "one whole batch at {next_offset}");
            let id = batch_id(&decoded[0].1)
                .unwrap_or_else(|| panic!("a batch the child did not send at {next_offset}"));
            let sent = batch(id);
            assert!(
                got[16..] == sent[16..] && got[8..12] == sent[8..12],
                "batch {id} at offset {next_offset} differs from what was sent"
            );
            assert!(seen.insert(id, next_offset).is_none(), "batch {id} twice");
            next_offset += values(id).len() as i64;
        }
        assert_eq!(log.log_end_offset(), next_offset);
        // Everything the policy promised.
        assert!(
            next_offset >= written_end,
            "{flush:?}: the log ends at {next_offset}, below the written end {written_end} reported before the kill"
        );
        for ack in &acks {
            assert_eq!(
                seen.get(&ack.id),
                Some(&ack.base_offset),
                "{flush:?}: acknowledged batch {} (offset {}) is not there after the kill",
                ack.id,
                ack.base_offset
            );
        }
        for got in &read {
            assert_eq!(
                seen.get(&got.id),
                Some(&got.base_offset),
                "{flush:?}: batch {} read at offset {} is not there after the kill",
                got.id,
                got.base_offset
            );
        }
        eprintln!(
            "storage_crash {flush:?}: {acked} acknowledged, {} read by the consumer, {} batches \
             ({next_offset} records) recovered, written end {written_end} at the last ack",
            read.len(),
            stored.len()
        );
        // The log goes on from there, and a clean reopen keeps it all.
        let more = batch(1_000_000);
        let info = log.append(&more, 0).await.unwrap();
        assert_eq!(info.base_offset, next_offset);
        log.close().await.unwrap();
        drop(log);
        let log = PartitionLog::open(&path, config(flush)).await.unwrap();
        assert!(log.recovery_report().clean_shutdown);
        assert!(log.recovery_report().truncations.is_empty());
        let all = support::read_all(&log, 0, 1 << 20).await;
        assert_eq!(all.len(), stored.len() + 1);
        assert_eq!(
            all[..stored.len()],
            stored[..],
            "the recovered batches stay"
        );
        let last = &all[stored.len()];
        assert_eq!(
            i64::from_be_bytes(last[..8].try_into().unwrap()),
            next_offset
        );
        assert!(
            last[16..] == more[16..],
            "the batch appended after recovery"
        );
        log.close().await.unwrap();
    });
}

#[test]
fn kill_during_appends_keeps_every_acknowledged_and_read_batch_under_always() {
    crash_and_check(
        "kill_during_appends_keeps_every_acknowledged_and_read_batch_under_always",
        FlushPolicy::Always,
        300,
    );
}

#[test]
fn kill_during_appends_keeps_every_acknowledged_and_read_batch_under_never() {
    crash_and_check(
        "kill_during_appends_keeps_every_acknowledged_and_read_batch_under_never",
        FlushPolicy::Never,
        2000,
    );
}

#[test]
fn kill_during_appends_keeps_every_acknowledged_and_read_batch_under_interval() {
    crash_and_check(
        "kill_during_appends_keeps_every_acknowledged_and_read_batch_under_interval",
        FlushPolicy::IntervalMs(50),
        2000,
    );
}
