//! Proves a partition log survives its process being killed (SIGKILL) in the middle of
//! concurrent appends, which loses everything the process held in memory (the write buffer,
//! a write round not issued yet) and nothing the kernel already has. The test binary runs
//! itself as a child that appends batches from eight tasks into small segments and prints
//! each acknowledgement with the log's written end offset at that moment; the parent kills
//! it after a few hundred acknowledgements, reopens the log and checks:
//!
//! * flush policy `always`: every acknowledged batch is there, byte for byte, at the offset
//!   it was acknowledged with;
//! * flush policy `never` (acknowledged from memory): every batch below the largest written
//!   end offset the child reported is there; acknowledged batches above it may be lost,
//!   which the policy allows;
//! * both: the log is a run of whole batches from offset 0 without gaps, each one decodable
//!   by kafka-protocol and equal to a batch the child sent (nothing half-written or foreign
//!   is visible), recovery reports an unclean shutdown, appends continue at the next offset,
//!   and a clean close and reopen keeps everything.
mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// The child: appends until killed, printing `ack <id> <base offset> <written end offset>`.
fn run_child(flush: FlushPolicy, dir: PathBuf) -> ! {
    support::run(move || async move {
        let log = Rc::new(PartitionLog::open(&dir, config(flush)).await.unwrap());
        let next_id = Rc::new(std::cell::Cell::new(0u64));
        let started = Instant::now();
        let mut tasks = Vec::new();
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

/// The child process, killed (and reaped) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Ack {
    id: u64,
    base_offset: i64,
    written_end_offset: i64,
}

/// Runs the child on `dir` and kills it once it printed `kill_after` acknowledgements;
/// returns every acknowledgement it printed before it died.
fn append_then_kill(
    test_name: &str,
    flush: FlushPolicy,
    dir: &Path,
    kill_after: usize,
) -> Vec<Ack> {
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
    let mut child = Killed(child);
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
    let mut acks = Vec::new();
    let deadline = Instant::now() + ACKS_TIMEOUT;
    while acks.len() < kill_after {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => acks.extend(parse(&line)),
            Err(_) => panic!(
                "the child printed {} acknowledgements in {ACKS_TIMEOUT:?}, not {kill_after}",
                acks.len()
            ),
        }
    }
    drop(child);
    // What it printed before it died is still in the pipe.
    acks.extend(lines.iter().filter_map(|l| parse(&l)));
    reader.join().unwrap();
    acks
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
    let acks = append_then_kill(test_name, flush, dir.path(), kill_after);
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
            let first = String::from_utf8_lossy(&decoded[0].1[0]).into_owned();
            let id: u64 = first
                .strip_prefix("batch ")
                .and_then(|rest| rest.split(' ').next())
                .and_then(|id| id.parse().ok())
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
        let mut lost = 0;
        for ack in &acks {
            match seen.get(&ack.id) {
                Some(&offset) => assert_eq!(offset, ack.base_offset, "batch {}", ack.id),
                None => {
                    assert!(
                        flush != FlushPolicy::Always,
                        "acknowledged batch {} (offset {}) lost under `always`",
                        ack.id,
                        ack.base_offset
                    );
                    assert!(
                        ack.base_offset >= written_end,
                        "batch {} at {} lost though below the written end {written_end}",
                        ack.id,
                        ack.base_offset
                    );
                    lost += 1;
                }
            }
        }
        eprintln!(
            "storage_crash {flush:?}: {acked} acknowledged, {} batches ({next_offset} records) recovered, \
             {lost} acknowledged from memory lost, written end {written_end} at the last ack",
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
fn kill_during_appends_keeps_every_acknowledged_batch_under_always() {
    crash_and_check(
        "kill_during_appends_keeps_every_acknowledged_batch_under_always",
        FlushPolicy::Always,
        300,
    );
}

#[test]
fn kill_during_appends_keeps_every_written_batch_under_never() {
    crash_and_check(
        "kill_during_appends_keeps_every_written_batch_under_never",
        FlushPolicy::Never,
        2000,
    );
}
