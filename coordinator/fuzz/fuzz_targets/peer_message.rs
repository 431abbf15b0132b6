//! A frame from another ensemble member: the rkyv archive is validated before use, so any
//! bytes give a message or an error.
#![no_main]

use coordinator::zab::frame::decode_message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_message(data);
});
