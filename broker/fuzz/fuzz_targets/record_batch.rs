//! The records of a Produce request (or of a segment file being recovered): RecordBatch v2
//! validation must answer a Kafka error code for any bytes, never panic.
#![no_main]

use broker::storage::record_batch::{validate_batches, BatchHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = BatchHeader::parse(data);
    let _ = validate_batches(data, 1 << 20);
});
