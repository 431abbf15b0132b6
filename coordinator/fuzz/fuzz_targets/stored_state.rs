//! What a server reads back from disk or receives in a SNAP: snapshots of the tree,
//! transactions and forwarded requests. Damage gives an error naming what is wrong.
#![no_main]

use coordinator::data_tree::DataTree;
use coordinator::txn::{ForwardedRequest, Txn};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Txn::decode(data);
    let _ = ForwardedRequest::decode(data);
    let _ = DataTree::deserialize(data);
    let mut with_magic = b"ZNTREE01".to_vec();
    with_magic.extend_from_slice(data);
    let _ = DataTree::deserialize(&with_magic);
});
