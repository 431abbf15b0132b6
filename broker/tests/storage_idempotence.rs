//! Proves a partition log keeps an idempotent producer's batches exactly once: a retried
//! batch is answered with the offsets it got the first time and is not appended again, a
//! gap or an older epoch is refused with Kafka's error code and appends nothing, and
//! producers without an id are untouched. Batches come from kafka-protocol's encoder.
mod support;

use broker::storage::producer_state::{INVALID_PRODUCER_EPOCH, OUT_OF_ORDER_SEQUENCE_NUMBER};
use broker::storage::PartitionLog;
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
