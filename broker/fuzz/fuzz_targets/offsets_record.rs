//! A record of `__consumer_offsets` read back at start-up (the file may be damaged or written
//! by another broker): the key and both value kinds decode to a value or an error.
#![no_main]

use broker::group::records::{GroupMetadataValue, OffsetCommitValue, OffsetsKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = OffsetsKey::decode(data);
    let _ = OffsetCommitValue::decode(data);
    let _ = GroupMetadataValue::decode(data);
});
