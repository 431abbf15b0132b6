//! Uncompressed RecordBatch v2 built with kafka-protocol's encoder, for the places that make
//! batches off the hot path: the console producer, the group coordinator's offsets batches,
//! tests, and the bench's generator (through its codec choice).

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// A record at `offset` of its batch: no transaction, no idempotence, no headers.
pub fn plain_record(
    offset: i64,
    timestamp_ms: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        // The encoder starts a new batch unless offset - sequence stays constant; this keeps
        // one batch and writes baseSequence -1 from offset 0 (no idempotence).
        sequence: offset as i32 - 1,
        timestamp: timestamp_ms,
        key,
        value,
        headers: Default::default(),
    }
}

/// `records` (offsets 0, 1, ... as [`plain_record`] makes them) as one uncompressed batch.
pub fn encode(records: &[Record]) -> Result<Bytes, String> {
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, records, &options).map_err(|err| err.to_string())?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn records_encode_as_one_batch_that_decodes_back() {
        let records: Vec<Record> = (0..3)
            .map(|i| {
                let key = (i != 1).then(|| Bytes::from(format!("k{i}")));
                let value = (i != 2).then(|| Bytes::from(format!("v{i}")));
                plain_record(i, 1_700_000_000_000 + i, key, value)
            })
            .collect();
        let mut batch = encode(&records).unwrap();
        let sets = RecordBatchDecoder::decode_all(&mut batch).unwrap();
        assert_eq!(sets.len(), 1, "one batch");
        let fields = |records: &[Record]| -> Vec<_> {
            records
                .iter()
                .map(|r| {
                    (
                        r.offset,
                        r.timestamp,
                        r.key.clone(),
                        r.value.clone(),
                        r.sequence,
                    )
                })
                .collect()
        };
        assert_eq!(fields(&sets[0].records), fields(&records));
        assert_eq!(
            sets[0].records[0].sequence, -1,
            "baseSequence -1: no idempotence"
        );
    }
}
