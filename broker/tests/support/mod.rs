//! Shared helpers of the storage tests: a glommio executor per test, scratch directories on a
//! real (O_DIRECT-capable) disk, and record batches built by an independent encoder (the
//! kafka-protocol crate), so our parser is checked against a second implementation.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;

use broker::storage::{LogConfig, PartitionLog};
use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// A child process (of a crash test), killed and reaped when dropped.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `f` on a fresh glommio executor and returns its output.
pub fn run<T, F>(f: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: Future<Output = T> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move { f().await })
        .expect("spawn executor")
        .join()
        .expect("executor thread")
}

/// A scratch directory under the crate's target dir (a real disk: O_DIRECT does not work on
/// tmpfs).
pub fn scratch_dir() -> tempfile::TempDir {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("test-scratch");
    std::fs::create_dir_all(&base).expect("scratch base");
    tempfile::Builder::new()
        .prefix("storage-")
        .tempdir_in(base)
        .expect("scratch dir")
}

/// Small segments and indexes so tests cross many boundaries.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 * 1024,
        segment_ms: 7 * 24 * 3600 * 1000,
        retention_ms: -1,
        retention_bytes: -1,
        flush: tuning::FlushPolicy::Always,
        index_interval_bytes: 1024,
        max_batch_bytes: (1 << 20) + 12,
        write_buffer_bytes: 2 << 20,
        preallocate_bytes: 1 << 20,
        preallocate_zeroes: true,
        cleanup: broker::storage::CleanupPolicy::DELETE,
        delete_retention_ms: 86_400_000,
        min_cleanable_dirty_ratio_ppm: 500_000,
        min_compaction_lag_ms: 0,
    }
}

/// One batch encoded by kafka-protocol: `values.len()` records, timestamps from
/// `timestamp_ms`, the given codec.
pub fn encode_batch(values: &[Vec<u8>], timestamp_ms: i64, compression: Compression) -> Vec<u8> {
    encode_producer_batch(values, timestamp_ms, compression, (-1, -1, -1))
}

/// [`encode_batch`] from an idempotent producer: `(producer_id, producer_epoch,
/// base_sequence)`; `(-1, -1, -1)` for none.
pub fn encode_producer_batch(
    values: &[Vec<u8>],
    timestamp_ms: i64,
    compression: Compression,
    (producer_id, producer_epoch, base_sequence): (i64, i16, i32),
) -> Vec<u8> {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch unless offset - sequence stays constant; this
            // keeps all records in one batch with baseSequence `base_sequence`.
            sequence: base_sequence + i as i32,
            timestamp: timestamp_ms + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::copy_from_slice(v)),
            headers: Default::default(),
        })
        .collect();
    encode_records(&records, compression)
}

fn encode_records(records: &[Record], compression: Compression) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("kafka-protocol encodes the batch");
    buf.to_vec()
}

/// One uncompressed batch of keyed records (`None` value: a tombstone), timestamps from
/// `timestamp_ms`.
pub fn encode_keyed_batch(records: &[(Vec<u8>, Option<Vec<u8>>)], timestamp_ms: i64) -> Vec<u8> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1 + i as i32,
            timestamp: timestamp_ms + i as i64,
            key: Some(Bytes::copy_from_slice(k)),
            value: v.as_ref().map(|v| Bytes::copy_from_slice(v)),
            headers: Default::default(),
        })
        .collect();
    encode_records(&records, Compression::None)
}

/// The records of one whole batch, decoded by kafka-protocol: `(offset, key, value)`.
pub type KeyedRecord = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

pub fn decode_keyed(batch: &[u8]) -> Vec<KeyedRecord> {
    let mut one = Bytes::copy_from_slice(batch);
    let set = RecordBatchDecoder::decode(&mut one).expect("kafka-protocol decodes the batch");
    set.records
        .iter()
        .map(|r| {
            (
                r.offset,
                r.key.as_ref().map(|k| k.to_vec()),
                r.value.as_ref().map(|v| v.to_vec()),
            )
        })
        .collect()
}

/// Decodes every complete batch of `bytes` with kafka-protocol; a partial trailing batch
/// (as a size-limited fetch may return) is ignored. Returns (base offset, values) per batch.
pub fn decode_batches(bytes: &[u8]) -> Vec<(i64, Vec<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 12 <= bytes.len() {
        let len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
        if pos + 12 + len > bytes.len() {
            break;
        }
        let mut one = Bytes::copy_from_slice(&bytes[pos..pos + 12 + len]);
        let set = RecordBatchDecoder::decode(&mut one).expect("kafka-protocol decodes the batch");
        let base = i64::from_be_bytes(bytes[pos..pos + 8].try_into().unwrap());
        out.push((
            base,
            set.records
                .iter()
                .map(|r| r.value.as_ref().map(|v| v.to_vec()).unwrap_or_default())
                .collect(),
        ));
        pos += 12 + len;
    }
    out
}

/// Splits concatenated batches into whole batches (raw bytes), dropping a partial tail.
pub fn split_batches(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 12 <= bytes.len() {
        let len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
        if pos + 12 + len > bytes.len() {
            break;
        }
        out.push(bytes[pos..pos + 12 + len].to_vec());
        pos += 12 + len;
    }
    out
}

/// Reads the whole log from `from` with fetches of `max_bytes`, as a consumer would, and
/// returns the whole batches in order.
pub async fn read_all(log: &PartitionLog, from: i64, max_bytes: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let r = log.read(offset, max_bytes, None).await.expect("read");
        if r.is_empty() {
            break;
        }
        let bytes = r.to_vec().expect("read file ranges");
        let batches = split_batches(&bytes);
        assert!(
            !batches.is_empty(),
            "a non-empty read holds at least one whole batch"
        );
        for b in batches {
            let base = i64::from_be_bytes(b[..8].try_into().unwrap());
            let last_delta = i32::from_be_bytes(b[23..27].try_into().unwrap()) as i64;
            if base + last_delta >= offset {
                offset = base + last_delta + 1;
                out.push(b);
            }
        }
    }
    out
}
