//! Proves recovery keeps exactly the intact prefix: a log is written (several segments), then
//! "crashes" (dropped without close) or closes cleanly, then its active segment is cut, has a
//! byte flipped, or has its tail zeroed at a random position (proptest). On reopen the log
//! must hold exactly the batches that end before the damage, continue appending at the next
//! offset, and report a truncation when non-zero bytes were cut. A flip inside the
//! partitionLeaderEpoch field is not generated: Kafka's format has no checksum over it.
//! Also: missing or corrupt indexes of sealed segments are rebuilt.
mod support;

use std::path::Path;

use broker::storage::segment::segment_file;
use broker::storage::PartitionLog;
use kafka_protocol::records::Compression;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy)]
enum Damage {
    Truncate,
    Flip(u8),
    ZeroTail,
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        Just(Damage::Truncate),
        (1u8..=255).prop_map(Damage::Flip),
        Just(Damage::ZeroTail),
    ]
}

fn config() -> broker::storage::LogConfig {
    let mut c = support::small_config();
    c.segment_bytes = 64 * 1024;
    c.index_interval_bytes = 512;
    c.flush = tuning::FlushPolicy::Never;
    c.preallocate_bytes = 128 * 1024;
    c
}

async fn fill(log: &PartitionLog, seed: u64, batches: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    for i in 0..batches {
        let n = rng.gen_range(1..4);
        let values: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                let len = rng.gen_range(1..3000);
                (0..len).map(|_| rng.gen()).collect()
            })
            .collect();
        let codec = if rng.gen_bool(0.2) {
            Compression::Lz4
        } else {
            Compression::None
        };
        let batch = support::encode_batch(&values, 1_700_000_000_000 + i as i64, codec);
        log.append(&batch, 1).await.expect("append");
    }
}

fn apply(path: &Path, at: u64, size: u64, damage: Damage) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    match damage {
        Damage::Truncate => f.set_len(at).unwrap(),
        Damage::Flip(x) => {
            let mut b = [0u8];
            f.read_exact_at(&mut b, at).unwrap();
            b[0] ^= x;
            f.write_all_at(&b, at).unwrap();
        }
        Damage::ZeroTail => f
            .write_all_at(&vec![0u8; (size - at) as usize], at)
            .unwrap(),
    }
}

fn check_case(seed: u64, batches: usize, where_frac: f64, damage: Damage, clean: bool) {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let log = PartitionLog::open(&path, config()).await.unwrap();
        fill(&log, seed, batches).await;
        let stored = support::read_all(&log, 0, 1 << 20).await;
        let active_base = *log.segment_base_offsets().last().unwrap();
        if clean {
            log.close().await.unwrap();
        } else {
            log.flush().await.unwrap();
        }
        drop(log);

        // Positions of the active segment's batches.
        let mut active = Vec::new(); // (start, end, index in stored)
        let mut pos = 0u64;
        for (i, b) in stored.iter().enumerate() {
            let base = i64::from_be_bytes(b[..8].try_into().unwrap());
            if base >= active_base {
                active.push((pos, pos + b.len() as u64, i));
                pos += b.len() as u64;
            }
        }
        let size = pos;
        let mut at = ((size as f64) * where_frac) as u64;
        if let Damage::Flip(_) = damage {
            // Skip the leader epoch (bytes 12..16 of a batch): no checksum covers it.
            if let Some(&(start, _, _)) = active.iter().find(|(s, e, _)| *s <= at && at < *e) {
                if (start + 12..start + 16).contains(&at) {
                    at = start + 16;
                }
            }
        }
        let at = at.min(size.saturating_sub(1));
        let file = segment_file(&path, active_base, "log");
        apply(&file, at, size, damage);

        // Batches that end at or before the damage survive (a cut exactly at a batch end
        // keeps that batch; a flip or zeroing inside a batch loses it).
        let mut kept_active = active.iter().take_while(|(_, end, _)| *end <= at).count();
        // Zeroing bytes that were already zero (a batch often ends with a zero header count)
        // changes nothing: that batch is intact and stays.
        if let (Damage::ZeroTail, Some(&(start, _, i))) = (damage, active.get(kept_active)) {
            if stored[i][(at - start) as usize..].iter().all(|b| *b == 0) {
                kept_active += 1;
            }
        }
        let first_active = active.first().map_or(stored.len(), |a| a.2);
        let expected: Vec<Vec<u8>> = stored[..first_active + kept_active].to_vec();
        let expected_end = expected
            .last()
            .map_or(active_base, |b| {
                i64::from_be_bytes(b[..8].try_into().unwrap())
                    + i32::from_be_bytes(b[23..27].try_into().unwrap()) as i64
                    + 1
            })
            .max(active_base);

        let log = PartitionLog::open(&path, config()).await.unwrap();
        let report = log.recovery_report().clone();
        let got = support::read_all(&log, 0, 1 << 20).await;
        assert_eq!(
            got.len(),
            expected.len(),
            "kept batches ({damage:?} at {at} of {size}, clean {clean}): {report:?}"
        );
        assert!(got == expected, "kept bytes differ");
        assert_eq!(log.log_end_offset(), expected_end);
        let cut_end = active.get(kept_active).map(|a| a.0);
        // A truncation is reported when the cut bytes were not all zeros (zeros look like
        // padding): a cut that leaves only the zero high bytes of a baseOffset is silent.
        let nonzero_cut = match damage {
            Damage::Flip(_) => true,
            Damage::Truncate => active.get(kept_active).is_some_and(|&(start, _, i)| {
                stored[i][..(at - start) as usize].iter().any(|b| *b != 0)
            }),
            Damage::ZeroTail => false,
        };
        if nonzero_cut {
            assert_eq!(report.truncations.len(), 1, "{report:?}");
            assert_eq!(report.truncations[0].position, cut_end.unwrap());
        }
        // The log continues at the next offset.
        let batch =
            support::encode_batch(&[b"after".to_vec()], 1_800_000_000_000, Compression::None);
        let info = log.append(&batch, 2).await.unwrap();
        assert_eq!(info.base_offset, expected_end);
        let again = support::read_all(&log, 0, 1 << 20).await;
        assert_eq!(again.len(), expected.len() + 1);
        assert!(again[..expected.len()] == expected[..]);
        assert!(again[expected.len()][16..] == batch[16..]);
        log.close().await.unwrap();
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn crash_recovery_keeps_exactly_the_intact_prefix(
        seed in any::<u64>(),
        batches in 5usize..60,
        where_frac in 0.0f64..1.0,
        damage in damage(),
    ) {
        check_case(seed, batches, where_frac, damage, false);
    }

    #[test]
    fn torn_tail_after_clean_close_is_cut(
        seed in any::<u64>(),
        batches in 5usize..60,
        where_frac in 0.0f64..1.0,
    ) {
        check_case(seed, batches, where_frac, Damage::Truncate, true);
    }
}

#[test]
fn missing_or_corrupt_sealed_indexes_are_rebuilt() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let log = PartitionLog::open(&path, config()).await.unwrap();
        fill(&log, 7, 120).await;
        let stored = support::read_all(&log, 0, 1 << 20).await;
        let bases = log.segment_base_offsets();
        assert!(bases.len() >= 4, "{bases:?}");
        let ts = log
            .offset_for_timestamp(1_700_000_000_000 + 60)
            .await
            .unwrap();
        log.close().await.unwrap();
        drop(log);
        std::fs::remove_file(segment_file(&path, bases[0], "index")).unwrap();
        std::fs::write(segment_file(&path, bases[1], "index"), [1u8, 2, 3]).unwrap();
        std::fs::write(segment_file(&path, bases[2], "timeindex"), [0u8; 13]).unwrap();
        let log = PartitionLog::open(&path, config()).await.unwrap();
        let rebuilt = &log.recovery_report().rebuilt_indexes;
        assert_eq!(rebuilt.len(), 3, "{rebuilt:?}");
        assert_eq!(support::read_all(&log, 0, 1 << 20).await, stored);
        assert_eq!(
            log.offset_for_timestamp(1_700_000_000_000 + 60)
                .await
                .unwrap(),
            ts
        );
        // Every offset is found through the rebuilt indexes.
        let mut offset = 0;
        for b in &stored {
            let r = log.read(offset, 1, None).await.unwrap();
            assert_eq!(r.to_vec().unwrap(), *b);
            offset = i64::from_be_bytes(b[..8].try_into().unwrap())
                + i32::from_be_bytes(b[23..27].try_into().unwrap()) as i64
                + 1;
        }
        log.close().await.unwrap();
    });
}

#[test]
fn damage_in_an_unsynced_sealed_segment_cuts_it_and_drops_later_segments() {
    // Without a recovery point covering them, sealed segments are verified like the active
    // one; a bad batch cuts its segment and every later segment goes (Kafka's rule), so the
    // log stays contiguous.
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let log = PartitionLog::open(&path, config()).await.unwrap();
        fill(&log, 11, 120).await;
        let stored = support::read_all(&log, 0, 1 << 20).await;
        let bases = log.segment_base_offsets();
        assert!(bases.len() >= 4, "{bases:?}");
        log.flush().await.unwrap();
        drop(log);
        std::fs::remove_file(path.join(broker::storage::recovery::RECOVERY_POINT_FILE)).ok();
        // Flip a byte in the middle of the second segment's third batch.
        let second: Vec<&Vec<u8>> = stored
            .iter()
            .filter(|b| {
                let o = i64::from_be_bytes(b[..8].try_into().unwrap());
                o >= bases[1] && o < bases[2]
            })
            .collect();
        assert!(second.len() >= 3);
        let at = (second[0].len() + second[1].len() + second[2].len() / 2) as u64;
        apply(
            &segment_file(&path, bases[1], "log"),
            at,
            0,
            Damage::Flip(0x40),
        );
        let log = PartitionLog::open(&path, config()).await.unwrap();
        let report = log.recovery_report().clone();
        assert_eq!(report.deleted_segments, bases[2..].to_vec(), "{report:?}");
        assert_eq!(report.truncations.len(), 1);
        assert_eq!(log.segment_base_offsets(), bases[..2].to_vec());
        let kept = support::read_all(&log, 0, 1 << 20).await;
        let first_count = stored.len()
            - stored
                .iter()
                .filter(|b| i64::from_be_bytes(b[..8].try_into().unwrap()) >= bases[1])
                .count();
        assert_eq!(kept.len(), first_count + 2);
        assert!(kept[..] == stored[..first_count + 2]);
        for b in &bases[2..] {
            assert!(!segment_file(&path, *b, "log").exists());
        }
        // Appends continue in the cut segment.
        let next = log.log_end_offset();
        let batch = support::encode_batch(&[b"x".to_vec()], 5, Compression::None);
        assert_eq!(log.append(&batch, 0).await.unwrap().base_offset, next);
        log.close().await.unwrap();
    });
}

#[test]
fn damage_in_a_synced_sealed_segment_is_reported_not_repaired() {
    // Below the recovery point a sealed segment is trusted; a bad batch after its last index
    // entry is an error naming the file and position rather than a silent loss of the
    // segments after it.
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let log = PartitionLog::open(&path, config()).await.unwrap();
        fill(&log, 12, 120).await;
        let bases = log.segment_base_offsets();
        log.close().await.unwrap();
        drop(log);
        let file = segment_file(&path, bases[0], "log");
        let len = std::fs::metadata(&file).unwrap().len();
        apply(&file, len - 10, len, Damage::Flip(1));
        let e = PartitionLog::open(&path, config())
            .await
            .err()
            .expect("refuses to open");
        assert!(
            matches!(e, broker::storage::LogError::Corrupt { .. }),
            "{e}"
        );
        assert!(e.to_string().contains("00000000000000000000.log"), "{e}");
        assert_eq!(
            e.error_code(),
            broker::storage::kafka_code::KAFKA_STORAGE_ERROR
        );
    });
}
