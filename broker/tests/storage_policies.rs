//! Proves the append-path behaviours: group commit (many concurrent appends share O_DIRECT
//! writes and fdatasyncs), the three flush policies, reads (max_bytes, whole first batch,
//! upper bound, out of range), long-poll wake-up, timestamp lookup, time-based roll and
//! rejection of bad input without side effects.
mod support;

use std::rc::Rc;
use std::time::Duration;

use broker::storage::{kafka_code, LogError, LogStats, PartitionLog};
use kafka_protocol::records::Compression;
use tuning::FlushPolicy;

fn batch(len: usize, ts: i64) -> Vec<u8> {
    support::encode_batch(&[vec![9u8; len]], ts, Compression::None)
}

async fn concurrent_appends(log: &Rc<PartitionLog>, tasks: usize, each: usize) {
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let log = log.clone();
        handles.push(glommio::spawn_local(async move {
            for _ in 0..each {
                log.append(&batch(1000, 1), 0).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await;
    }
}

/// Opens a log under `flush`, lets 32 tasks append 10 batches each, and checks they shared
/// O_DIRECT writes (fewer than 80 rounds for 320 appends).
async fn grouped_appends(
    path: &std::path::Path,
    flush: FlushPolicy,
) -> (Rc<PartitionLog>, LogStats) {
    let mut c = support::small_config();
    c.flush = flush;
    c.segment_bytes = 64 << 20;
    let log = Rc::new(PartitionLog::open(path, c).await.unwrap());
    concurrent_appends(&log, 32, 10).await;
    let s = log.stats();
    assert_eq!(s.appends, 320);
    assert!(
        s.write_rounds < 80,
        "32 concurrent appenders should share writes: {s:?}"
    );
    (log, s)
}

#[test]
fn always_groups_concurrent_appends_into_shared_writes_and_syncs() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let (log, s) = grouped_appends(&path, FlushPolicy::Always).await;
        assert!(s.syncs <= s.write_rounds, "{s:?}");
        assert!(s.syncs > 0);
        assert_eq!(log.durable_end_offset(), 320);
        log.close().await.unwrap();
    });
}

/// Polls `cond` every millisecond for up to two seconds (timings on a loaded machine vary).
async fn eventually(cond: impl Fn() -> bool) -> bool {
    for _ in 0..2000 {
        if cond() {
            return true;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    cond()
}

#[test]
fn never_does_not_sync_and_interval_syncs_later() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let mut c = support::small_config();
        c.flush = FlushPolicy::Never;
        let log = Rc::new(PartitionLog::open(path.join("never"), c).await.unwrap());
        concurrent_appends(&log, 4, 10).await;
        // Appends returned once copied; a background write puts them in the file at once.
        assert!(eventually(|| log.written_end_offset() == 40).await);
        assert_eq!(log.stats().syncs, 0);
        assert_eq!(log.durable_end_offset(), 0);
        log.flush().await.unwrap();
        assert_eq!(log.durable_end_offset(), 40);
        log.close().await.unwrap();

        c.flush = FlushPolicy::IntervalMs(300);
        let log = Rc::new(PartitionLog::open(path.join("interval"), c).await.unwrap());
        for _ in 0..3 {
            log.append(&batch(100, 1), 0).await.unwrap();
        }
        // Written at once, not synced at once...
        assert!(eventually(|| log.written_end_offset() == 3).await);
        assert!(
            log.durable_end_offset() < 3,
            "synced at once under interval_ms"
        );
        assert_eq!(log.stats().syncs, 0);
        // ...the timer syncs within the interval.
        assert!(eventually(|| log.durable_end_offset() == 3).await);
        assert_eq!(log.stats().syncs, 1);
        log.close().await.unwrap();
    });
}

#[test]
fn reads_follow_kafka_fetch_rules() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let log = Rc::new(
            PartitionLog::open(&path, support::small_config())
                .await
                .unwrap(),
        );
        let sizes = [5000usize, 100, 100, 20_000, 100];
        let mut sent = Vec::new();
        for (i, s) in sizes.iter().enumerate() {
            let b = batch(*s, 1000 * (i as i64 + 1));
            log.append(&b, 0).await.unwrap();
            sent.push(b);
        }
        // At the log end: empty. Past it or before the start: OFFSET_OUT_OF_RANGE.
        assert!(log.read(5, 1000, None).await.unwrap().is_empty());
        for bad in [6, -1] {
            let e = log.read(bad, 1000, None).await.unwrap_err();
            assert!(matches!(e, LogError::OffsetOutOfRange { .. }));
            assert_eq!(e.error_code(), kafka_code::OFFSET_OUT_OF_RANGE);
        }
        // A first batch larger than max_bytes comes whole.
        let r = log.read(3, 10, None).await.unwrap();
        assert_eq!(r.to_vec().unwrap()[16..], sent[3][16..]);
        assert_eq!(r.first_batch_offset, Some(3));
        // Otherwise the bytes are cut at max_bytes (the last batch may be partial).
        let r = log.read(0, 5100, None).await.unwrap();
        assert_eq!(r.total_bytes(), 5100);
        assert_eq!(support::split_batches(&r.to_vec().unwrap()).len(), 1);
        // The upper bound (e.g. a high watermark) keeps whole batches below it.
        let r = log.read(1, 1 << 20, Some(3)).await.unwrap();
        let got = support::split_batches(&r.to_vec().unwrap());
        assert_eq!(got.len(), 2);
        assert_eq!(r.total_bytes() as usize, sent[1].len() + sent[2].len());
        assert!(log.read(3, 1 << 20, Some(3)).await.unwrap().is_empty());
        // Timestamp lookup: first batch at or after the time.
        let t = log.offset_for_timestamp(2500).await.unwrap().unwrap();
        assert_eq!((t.offset, t.timestamp_ms), (2, 3000));
        assert_eq!(
            log.offset_for_timestamp(0).await.unwrap().unwrap().offset,
            0
        );
        assert!(log.offset_for_timestamp(6000).await.unwrap().is_none());
        // Inside an uncompressed batch the exact record is found; a compressed batch answers
        // with its base offset and max timestamp.
        let values: Vec<Vec<u8>> = (0..5).map(|i| vec![i as u8; 10]).collect();
        let plain = support::encode_batch(&values, 7000, Compression::None);
        assert_eq!(log.append(&plain, 0).await.unwrap().base_offset, 5);
        let t = log.offset_for_timestamp(7002).await.unwrap().unwrap();
        assert_eq!((t.offset, t.timestamp_ms), (7, 7002));
        // Fetching from inside a batch returns that whole batch.
        let r = log.read(7, 1 << 20, None).await.unwrap();
        assert_eq!(r.first_batch_offset, Some(5));
        assert_eq!(r.to_vec().unwrap()[16..], plain[16..]);
        let zipped = support::encode_batch(&values, 8000, Compression::Gzip);
        assert_eq!(log.append(&zipped, 0).await.unwrap().base_offset, 10);
        let t = log.offset_for_timestamp(8002).await.unwrap().unwrap();
        assert_eq!((t.offset, t.timestamp_ms), (10, 8004));

        // Long poll: a waiting fetch wakes when data arrives.
        let waiter = {
            let log = log.clone();
            glommio::spawn_local(async move {
                log.wait_for_data(15).await;
                log.read(15, 1000, None).await.unwrap().total_bytes()
            })
        };
        glommio::timer::sleep(Duration::from_millis(20)).await;
        log.append(&batch(10, 9000), 0).await.unwrap();
        assert!(waiter.await > 0);
        log.close().await.unwrap();
        assert!(matches!(log.read(0, 10, None).await, Err(LogError::Closed)));
    });
}

#[test]
fn bad_input_is_rejected_without_side_effects_and_time_rolls_segments() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let mut c = support::small_config();
        c.segment_ms = 400;
        let log = PartitionLog::open(&path, c).await.unwrap();
        let good = batch(100, 1);
        let mut bad = good.clone();
        bad[30] ^= 1;
        let mut both = good.clone();
        both.extend_from_slice(&bad);
        let e = log.append(&both, 0).await.unwrap_err();
        assert_eq!(e.error_code(), kafka_code::CORRUPT_MESSAGE);
        assert_eq!(
            log.log_end_offset(),
            0,
            "nothing of a rejected request is appended"
        );
        let big = batch(2 << 20, 1);
        assert_eq!(
            log.append(&big, 0).await.unwrap_err().error_code(),
            kafka_code::MESSAGE_TOO_LARGE
        );
        log.append(&good, 0).await.unwrap();
        log.append(&good, 0).await.unwrap();
        assert_eq!(log.segment_base_offsets(), vec![0]);
        glommio::timer::sleep(Duration::from_millis(450)).await;
        log.append(&good, 0).await.unwrap();
        assert_eq!(log.segment_base_offsets(), vec![0, 2], "rolled by age");
        log.close().await.unwrap();
    });
}

#[test]
fn readers_following_concurrent_appends_see_every_batch_intact() {
    // Readers run while writes are in flight, so results mix file ranges and in-memory bytes.
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let mut c = support::small_config();
        c.flush = FlushPolicy::Never;
        let log = Rc::new(PartitionLog::open(&path, c).await.unwrap());
        let total: i64 = 400;
        let reader = {
            let log = log.clone();
            glommio::spawn_local(async move {
                let mut offset = 0;
                let mut memory_chunks = 0;
                let mut batches = Vec::new();
                while offset < total {
                    log.wait_for_data(offset).await;
                    let r = log.read(offset, 7000, None).await.unwrap();
                    memory_chunks += r
                        .chunks
                        .iter()
                        .filter(|c| {
                            matches!(
                                c,
                                broker::storage::ReadChunk::Memory(_)
                                    | broker::storage::ReadChunk::Cached(_)
                            )
                        })
                        .count();
                    for b in support::split_batches(&r.to_vec().unwrap()) {
                        let base = i64::from_be_bytes(b[..8].try_into().unwrap());
                        if base >= offset {
                            offset = base + 1;
                            batches.push(b);
                        }
                    }
                }
                (batches, memory_chunks)
            })
        };
        let mut writers = Vec::new();
        for t in 0..4 {
            let log = log.clone();
            writers.push(glommio::spawn_local(async move {
                for i in 0..total / 4 {
                    let b = batch(500 + (i as usize * 37 + t * 101) % 3000, i);
                    log.append(&b, 0).await.unwrap();
                }
            }));
        }
        for w in writers {
            w.await;
        }
        let (batches, memory_chunks) = reader.await;
        assert_eq!(batches.len() as i64, total);
        let decoded = support::decode_batches(&batches.concat());
        assert_eq!(decoded.len() as i64, total, "every batch decodes");
        assert!(memory_chunks > 0, "some reads were served from memory");
        assert_eq!(support::read_all(&log, 0, 1 << 20).await, batches);
        log.close().await.unwrap();
    });
}

#[test]
fn raising_max_batch_bytes_takes_effect_on_the_open_log() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let mut c = support::small_config();
        c.max_batch_bytes = 64 * 1024;
        c.write_buffer_bytes = 72 * 1024;
        c.segment_bytes = 8 << 20;
        let log = PartitionLog::open(&path, c).await.unwrap();
        let big = batch(1 << 20, 1);
        assert_eq!(
            log.append(&big, 0).await.unwrap_err().error_code(),
            kafka_code::MESSAGE_TOO_LARGE
        );
        log.append(&batch(1000, 1), 0).await.unwrap();
        c.max_batch_bytes = 2 << 20;
        log.set_config(c);
        log.append(&big, 0).await.unwrap();
        log.append(&batch(1000, 1), 0).await.unwrap();
        let got = support::read_all(&log, 0, 1 << 20).await;
        assert_eq!(got.len(), 3);
        assert!(got[1][16..] == big[16..]);
        log.close().await.unwrap();
    });
}

/// The promise (a single node's high watermark): under `never` and `interval_ms` an
/// acknowledged append is written and the promised end is the written end; bytes only copied
/// into the write buffer (`append_queued`) are past it, invisible to a read bounded by it,
/// and a long-poll on it wakes when the write completes, not at the append.
#[test]
fn promised_end_is_the_written_end_under_never_and_interval() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        for (name, flush) in [
            ("never", FlushPolicy::Never),
            ("interval", FlushPolicy::IntervalMs(60_000)),
        ] {
            let mut c = support::small_config();
            c.flush = flush;
            let log = Rc::new(PartitionLog::open(path.join(name), c).await.unwrap());
            // Acknowledged: written (the kernel has it), not synced.
            let info = log.append(&batch(300, 1), 0).await.unwrap();
            assert!(log.written_end_offset() > info.last_offset, "{name}");
            assert_eq!(log.durable_end_offset(), 0, "{name}: no sync yet");
            assert_eq!(log.promised_end_offset(), log.written_end_offset());
            // Queued: readable only once written.
            let promised = log.promised_end_offset();
            let queued = log.append_queued(&batch(300, 2), 0).await.unwrap();
            assert_eq!(queued.base_offset, promised);
            assert_eq!(log.log_end_offset(), promised + 1);
            assert_eq!(
                log.promised_end_offset(),
                promised,
                "{name}: the promise moved before the write"
            );
            let r = log.read(promised, 1 << 20, Some(log.promised_end_offset()));
            assert!(r.await.unwrap().is_empty(), "{name}: read past the promise");
            log.wait_promised_past(promised).await;
            assert_eq!(log.written_end_offset(), promised + 1, "{name}");
            assert_eq!(log.promised_end_offset(), promised + 1, "{name}");
            let r = log.read(promised, 1 << 20, Some(log.promised_end_offset()));
            let got = support::split_batches(&r.await.unwrap().to_vec().unwrap());
            assert_eq!(got.len(), 1, "{name}: the written batch is readable");
            log.close().await.unwrap();
        }
    });
}

/// Under `always` the promised end is the synced end: while many appends are in flight it is
/// never past what was fdatasync'ed, and each acknowledged append is below it.
#[test]
fn promised_end_is_the_synced_end_under_always() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let mut c = support::small_config();
        c.flush = FlushPolicy::Always;
        c.segment_bytes = 64 << 20;
        let log = Rc::new(PartitionLog::open(&path, c).await.unwrap());
        let done = Rc::new(std::cell::Cell::new(false));
        let watcher = {
            let (log, done) = (log.clone(), done.clone());
            glommio::spawn_local(async move {
                let mut ahead = 0u64;
                while !done.get() {
                    let promised = log.promised_end_offset();
                    assert!(
                        promised <= log.durable_end_offset(),
                        "promised past the sync"
                    );
                    if log.log_end_offset() > promised {
                        ahead += 1;
                    }
                    glommio::executor().yield_now().await;
                }
                ahead
            })
        };
        let mut writers = Vec::new();
        for _ in 0..16 {
            let log = log.clone();
            writers.push(glommio::spawn_local(async move {
                for _ in 0..10 {
                    let info = log.append(&batch(1000, 1), 0).await.unwrap();
                    assert!(log.promised_end_offset() > info.last_offset);
                    assert!(log.durable_end_offset() > info.last_offset);
                }
            }));
        }
        for w in writers {
            w.await;
        }
        done.set(true);
        let ahead = watcher.await;
        assert!(ahead > 0, "appends were never seen ahead of the sync");
        assert_eq!(log.promised_end_offset(), 160);
        log.close().await.unwrap();
    });
}

/// Group commit under `never`: appends wait for their write, yet concurrent ones share it.
#[test]
fn never_acknowledges_after_the_write_and_groups_concurrent_appends() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let (log, s) = grouped_appends(&path, FlushPolicy::Never).await;
        assert_eq!(log.written_end_offset(), 320);
        assert_eq!(s.syncs, 0);
        log.close().await.unwrap();
    });
}
