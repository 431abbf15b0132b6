//! Proves a multi-batch append (the record set of one partition in a Produce request) is
//! all-or-nothing to readers: a later batch that fails validation or the idempotence check
//! leaves nothing of the request in the log, and while concurrent multi-batch appends fill the
//! write buffer, the promised end offset (a single node's high watermark: what consumers may
//! read) only ever stops at the end of a whole request, never between two of its batches.
mod support;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use broker::storage::producer_state::OUT_OF_ORDER_SEQUENCE_NUMBER;
use broker::storage::PartitionLog;
use kafka_protocol::records::Compression;

fn plain(tag: u8, bytes: usize) -> Vec<u8> {
    support::encode_batch(&[vec![tag; bytes]], 1000, Compression::None)
}

#[test]
fn a_bad_later_batch_leaves_nothing_of_the_request() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let log = PartitionLog::open(&path, support::small_config())
            .await
            .unwrap();
        let good = plain(1, 100);
        let mut bad = plain(2, 100);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let request = [good.clone(), good.clone(), bad].concat();
        let err = log.append(&request, 0).await.unwrap_err();
        assert_eq!(err.error_code(), 2, "CORRUPT_MESSAGE: {err}");
        assert_eq!(log.log_end_offset(), 0);
        // An idempotent producer's request whose second batch leaves a gap.
        let first = support::encode_producer_batch(&[vec![3]], 1000, Compression::None, (5, 0, 0));
        let gap = support::encode_producer_batch(&[vec![4]], 1000, Compression::None, (5, 0, 2));
        let err = log
            .append(&[first.clone(), gap].concat(), 0)
            .await
            .unwrap_err();
        assert_eq!(err.error_code(), OUT_OF_ORDER_SEQUENCE_NUMBER, "{err}");
        assert_eq!(log.log_end_offset(), 0);
        assert!(support::read_all(&log, 0, 1 << 20).await.is_empty());
        // The producer's first batch was not recorded either: it is appended now, once.
        let info = log.append(&first, 0).await.unwrap();
        assert_eq!((info.base_offset, info.records), (0, 1));
        log.close().await.unwrap();
    });
}

/// A leader's record set that fits the write buffer has its CRC-32Cs computed while it is
/// copied into the buffer, in pieces; a larger one is checked before anything is copied. A
/// mismatch at the far end of a large batch is caught either way, leaves nothing behind, and
/// what is appended next reads back byte for byte.
#[test]
fn a_crc_mismatch_is_caught_whether_checked_in_the_copy_or_before_it() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let mut config = support::small_config();
        config.segment_bytes = 64 << 20;
        // The smallest buffer the log accepts: one largest batch and two pages.
        config.write_buffer_bytes = 4096;
        let log = PartitionLog::open(&path, config).await.unwrap();
        let corrupt_last_byte = |mut batch: Vec<u8>| {
            let last = batch.len() - 1;
            batch[last] ^= 0x5a;
            batch
        };
        let small = plain(1, 100);
        let large = |tag| plain(tag, 200 * 1024);
        // Fits the buffer: the CRC is computed in the copy.
        let fitting = [small.clone(), corrupt_last_byte(large(2))].concat();
        // Three batches of 600 KiB are more than the buffer: checked before the copy.
        let spilling = [plain(3, 600 << 10), plain(4, 600 << 10)].concat();
        let spilling_bad = [spilling.clone(), corrupt_last_byte(plain(5, 600 << 10))].concat();
        for request in [&fitting, &spilling_bad] {
            let err = log.append(request, 0).await.unwrap_err();
            assert_eq!(err.error_code(), 2, "CORRUPT_MESSAGE: {err}");
            assert_eq!(log.log_end_offset(), 0);
        }
        assert!(support::read_all(&log, 0, 1 << 20).await.is_empty());
        let good = [small.clone(), large(6)].concat();
        let info = log.append(&good, 0).await.unwrap();
        assert_eq!((info.base_offset, info.records), (0, 2));
        let info = log.append(&spilling, 0).await.unwrap();
        assert_eq!((info.base_offset, info.records), (2, 2));
        let sent = [small, large(6), plain(3, 600 << 10), plain(4, 600 << 10)];
        let read = support::read_all(&log, 0, 4 << 20).await;
        assert_eq!(read.len(), sent.len());
        for (offset, (got, want)) in read.iter().zip(&sent).enumerate() {
            assert_eq!(
                i64::from_be_bytes(got[..8].try_into().unwrap()),
                offset as i64
            );
            // Past baseOffset, batchLength and partitionLeaderEpoch (rewritten on append).
            assert!(got[16..] == want[16..], "batch at offset {offset} differs");
        }
        log.close().await.unwrap();
    });
}

#[test]
fn readers_never_see_part_of_a_request() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let mut config = support::small_config();
        config.flush = tuning::FlushPolicy::Never;
        config.segment_bytes = 64 << 20;
        config.write_buffer_bytes = 2 << 20;
        let log = Rc::new(PartitionLog::open(&path, config).await.unwrap());
        // Each request: three batches of ~200 KB; four appenders fill the 2 MiB buffer, so
        // write rounds run while requests are waiting to be copied.
        const APPENDERS: usize = 4;
        const REQUESTS: usize = 25;
        let ends = Rc::new(RefCell::new(BTreeSet::from([0i64])));
        let seen = Rc::new(RefCell::new(Vec::new()));
        let watcher = {
            let (log, seen) = (log.clone(), seen.clone());
            glommio::spawn_local(async move {
                let total = (APPENDERS * REQUESTS * 3) as i64;
                let mut at = 0;
                while at < total {
                    log.wait_promised_past(at).await;
                    at = log.promised_end_offset();
                    seen.borrow_mut().push(at);
                }
            })
        };
        let mut tasks = Vec::new();
        for a in 0..APPENDERS {
            let (log, ends) = (log.clone(), ends.clone());
            tasks.push(glommio::spawn_local(async move {
                for r in 0..REQUESTS {
                    let tag = (a * REQUESTS + r) as u8;
                    let request = [
                        plain(tag, 200_000),
                        plain(tag, 190_000),
                        plain(tag, 210_000),
                    ]
                    .concat();
                    let info = log.append(&request, 0).await.unwrap();
                    assert_eq!(info.last_offset - info.base_offset, 2);
                    ends.borrow_mut().insert(info.last_offset + 1);
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        watcher.await;
        let (ends, seen) = (ends.take(), seen.take());
        assert!(seen.len() > 1, "{seen:?}");
        for at in &seen {
            assert!(
                ends.contains(at),
                "the high watermark stopped inside a request at {at}"
            );
        }
        assert!(log.stats().write_rounds > 1);
        log.close().await.unwrap();
    });
}
