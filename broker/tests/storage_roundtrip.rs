//! Proves that randomized batches (values of 1 B .. 1 MiB, some compressed by kafka-protocol
//! with gzip/snappy/lz4/zstd) appended from concurrent tasks come back byte for byte (only
//! baseOffset and partitionLeaderEpoch rewritten) across segment rolls, through reads of
//! various sizes, after a clean reopen and after a crash (no close) and reopen; kafka-protocol
//! decodes the read bytes to the same values. The shard's batch cache is on, smaller than the
//! data, so reads mix rounds served from memory and file ranges.
mod support;

use std::cell::RefCell;
use std::rc::Rc;

use broker::storage::PartitionLog;
use kafka_protocol::records::Compression;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// An appended batch as sent, its values, and the base offset the log assigned.
type Appended = (Vec<u8>, Vec<Vec<u8>>, i64);

/// A value size spread log-uniformly over 1 B .. 1 MiB.
fn value_size(rng: &mut StdRng) -> usize {
    let exp = rng.gen_range(0.0..20.0f64);
    (2f64.powf(exp) as usize).clamp(1, 1 << 20)
}

fn random_batch(rng: &mut StdRng, ts: i64) -> (Vec<u8>, Vec<Vec<u8>>) {
    let codec = match rng.gen_range(0..8) {
        0 => Compression::Gzip,
        1 => Compression::Snappy,
        2 => Compression::Lz4,
        3 => Compression::Zstd,
        _ => Compression::None,
    };
    let mut values = Vec::new();
    let mut total = 0;
    let n = rng.gen_range(1..6);
    for _ in 0..n {
        let size = value_size(rng);
        if total + size > (1 << 20) && !values.is_empty() {
            break;
        }
        total += size;
        let fill: u8 = rng.gen();
        // Half random bytes (incompressible), half runs (compressible).
        let v: Vec<u8> = if rng.gen_bool(0.5) {
            (0..size).map(|_| rng.gen()).collect()
        } else {
            vec![fill; size]
        };
        values.push(v);
    }
    (support::encode_batch(&values, ts, codec), values)
}

#[test]
fn randomized_batches_round_trip_across_rolls_and_reopens() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        // A batch cache smaller than the data: reads mix cached rounds and file ranges.
        broker::storage::batch_cache::set_limit(2 << 20);
        let mut config = support::small_config();
        config.segment_bytes = 3 << 20;
        config.max_batch_bytes = (1 << 20) + 4096;
        let log = Rc::new(PartitionLog::open(&path, config).await.unwrap());
        // (appended batch, its values, assigned base offset)
        let appended: Rc<RefCell<Vec<Appended>>> = Rc::default();
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let log = log.clone();
            let appended = appended.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut rng = StdRng::seed_from_u64(0x5eed + t);
                for i in 0..25 {
                    let (batch, values) = random_batch(&mut rng, 1_700_000_000_000 + i);
                    let info = log.append(&batch, 3).await.expect("append");
                    assert_eq!(info.last_offset - info.base_offset + 1, values.len() as i64);
                    appended
                        .borrow_mut()
                        .push((batch, values, info.base_offset));
                }
            }));
        }
        // A consumer tailing the log while it is written: its reads cross the fill buffer, the
        // round in flight, the cached rounds and the files of sealed segments.
        let tailer = {
            let log = log.clone();
            glommio::spawn_local(async move {
                let mut tailed: Vec<Vec<u8>> = Vec::new();
                let mut offset = 0i64;
                while tailed.len() < 100 {
                    let read = log.read(offset, 300_000, None).await.expect("tail read");
                    let bytes = read.to_vec().expect("read file ranges");
                    for b in support::split_batches(&bytes) {
                        let base = i64::from_be_bytes(b[..8].try_into().unwrap());
                        let last_delta = i32::from_be_bytes(b[23..27].try_into().unwrap());
                        if base >= offset {
                            offset = base + last_delta as i64 + 1;
                            tailed.push(b);
                        }
                    }
                    glommio::timer::sleep(std::time::Duration::from_micros(200)).await;
                }
                tailed
            })
        };
        for t in tasks {
            t.await;
        }
        let tailed = tailer.await;
        let mut appended = appended.borrow().clone();
        appended.sort_by_key(|a| a.2);
        let segments = log.segment_base_offsets();
        assert!(
            segments.len() >= 3,
            "expected several rolls, got {segments:?}"
        );

        let check = |batches: &[Vec<u8>], appended: &[Appended]| {
            assert_eq!(batches.len(), appended.len());
            for (got, (sent, values, base)) in batches.iter().zip(appended) {
                assert_eq!(i64::from_be_bytes(got[..8].try_into().unwrap()), *base);
                assert_eq!(
                    i32::from_be_bytes(got[12..16].try_into().unwrap()),
                    3,
                    "leader epoch"
                );
                assert_eq!(&got[8..12], &sent[8..12]);
                assert!(got[16..] == sent[16..], "batch at offset {base} changed");
                let decoded = support::decode_batches(got);
                assert_eq!(&decoded[0].1, values);
            }
        };
        check(&tailed, &appended);
        for max_bytes in [1usize, 100_000, 4 << 20] {
            check(&support::read_all(&log, 0, max_bytes).await, &appended);
        }
        log.close().await.unwrap();
        drop(log);

        let log = PartitionLog::open(&path, config).await.unwrap();
        assert!(log.recovery_report().clean_shutdown);
        assert!(log.recovery_report().truncations.is_empty());
        assert_eq!(log.segment_base_offsets(), segments);
        check(&support::read_all(&log, 0, 1 << 20).await, &appended);
        // Crash: append more, do not close.
        let mut rng = StdRng::seed_from_u64(99);
        for i in 0..5 {
            let (batch, values) = random_batch(&mut rng, 1_800_000_000_000 + i);
            let info = log.append(&batch, 3).await.unwrap();
            appended.push((batch, values, info.base_offset));
        }
        drop(log);
        let log = PartitionLog::open(&path, config).await.unwrap();
        assert!(!log.recovery_report().clean_shutdown);
        assert!(
            log.recovery_report().truncations.is_empty(),
            "{:?}",
            log.recovery_report()
        );
        check(&support::read_all(&log, 0, 1 << 20).await, &appended);
        log.close().await.unwrap();
    });
}
