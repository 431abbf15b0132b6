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
