//! A ZooKeeper client request body: the first byte picks the opcode (every opcode the server
//! decodes, plus a few it does not), the rest is the body. Also the ConnectRequest.
#![no_main]

use coordinator::hostile_client::OPCODES;
use coordinator::jute::records::{ConnectRequest, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let _ = Request::decode(OPCODES[selector as usize % OPCODES.len()], body);
    let _ = ConnectRequest::decode(data);
});
