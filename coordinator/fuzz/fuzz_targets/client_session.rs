//! A whole client session against the request processor: an established session, then
//! frames cut from the input (a 2-byte length, then that many bytes, repeated) as an
//! established connection may send them, every proposal committed at once. The processor
//! answers or closes; it must never panic.
#![no_main]

use coordinator::hostile_client::HostileClient;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut client = HostileClient::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize % 512;
        let end = (2 + len).min(rest.len());
        client.send(&rest[2..end]);
        rest = &rest[end..];
    }
    client.close();
});
