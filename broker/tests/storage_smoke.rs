//! Proves the basic life cycle of a partition log: append from concurrent tasks, read back
//! across a segment roll, close and reopen with the same content. Batches come from
//! kafka-protocol's encoder and are decoded again by its decoder.
mod support;

use broker::storage::PartitionLog;
use kafka_protocol::records::Compression;
use std::rc::Rc;

#[test]
fn append_read_reopen() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let log = Rc::new(
            PartitionLog::open(&path, support::small_config())
                .await
                .unwrap(),
        );
        let mut tasks = Vec::new();
        for t in 0..4u8 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                for i in 0..20u8 {
                    let batch = support::encode_batch(
                        &[vec![t; 10_000 + i as usize], vec![i; 3]],
                        1000,
                        Compression::None,
                    );
                    log.append(&batch, 5).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        assert_eq!(log.log_end_offset(), 160);
        assert!(log.segment_base_offsets().len() > 1, "rolled");
        let batches = support::read_all(&log, 0, 64 * 1024).await;
        let bases: Vec<i64> = batches
            .iter()
            .map(|b| i64::from_be_bytes(b[..8].try_into().unwrap()))
            .collect();
        assert_eq!(batches.len(), 80, "{bases:?}");
        let all: Vec<u8> = batches.concat();
        let decoded = support::decode_batches(&all);
        let mut next = 0;
        for (base, values) in &decoded {
            assert_eq!(*base, next);
            next += values.len() as i64;
        }
        assert_eq!(next, 160);
        log.close().await.unwrap();
        let log = PartitionLog::open(&path, support::small_config())
            .await
            .unwrap();
        assert!(log.recovery_report().clean_shutdown);
        assert_eq!(log.log_end_offset(), 160);
        let again = support::read_all(&log, 0, 64 * 1024).await;
        assert_eq!(again, batches);
        log.close().await.unwrap();
    });
}
