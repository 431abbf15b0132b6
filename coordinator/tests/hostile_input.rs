//! Proves every decoder that reads bytes from a socket, a peer or a file is total: arbitrary
//! bytes (and mutations of valid encodings) produce a value or an error, never a panic, and
//! the request processor survives arbitrary frames on an established connection. How:
//! proptest generates the inputs.

use coordinator::data_tree::DataTree;
use coordinator::hostile_client::{HostileClient, OPCODES as OPS};
use coordinator::jute::codes::op;
use coordinator::jute::records::{ConnectRequest, Request};
use coordinator::txn::{ForwardedRequest, Txn};
use proptest::prelude::*;

/// Valid encodings to mutate: a snapshot of a small tree, transactions and requests.
fn samples() -> Vec<(i32, Vec<u8>)> {
    use coordinator::jute::records::{Acl, CreateRequest, MultiOp};
    use coordinator::jute::Writer;
    let mut out = Vec::new();
    let create = CreateRequest {
        path: "/a/b".into(),
        data: Some(b"data".to_vec()),
        acl: vec![Acl::world_anyone(31)],
        flags: 2,
        ttl_ms: None,
    };
    for (code, req) in [
        (
            op::CREATE,
            Request::Create {
                op: op::CREATE,
                request: create.clone(),
            },
        ),
        (
            op::MULTI,
            Request::Multi(vec![
                MultiOp::Create {
                    op: op::CREATE2,
                    request: create.clone(),
                },
                MultiOp::Check {
                    path: "/c".into(),
                    version: 1,
                },
                MultiOp::SetData {
                    path: "/s".into(),
                    data: Some(vec![1; 8]),
                    version: -1,
                },
            ]),
        ),
        (
            op::SET_WATCHES,
            Request::SetWatches {
                watches: coordinator::jute::records::SetWatches {
                    relative_zxid: 5,
                    data: vec!["/x".into()],
                    ..Default::default()
                },
                v2: false,
            },
        ),
    ] {
        let mut w = Writer::new();
        req.encode(&mut w);
        out.push((code, w.bytes));
    }
    let mut w = Writer::new();
    HostileClient::connect_request().encode(&mut w);
    out.push((-1, w.bytes));
    let mut client = HostileClient::new();
    client.send_request(op::CREATE, &{
        let mut w = Writer::new();
        create.encode(&mut w);
        w.bytes
    });
    let txn = coordinator::txn::Txn {
        header: coordinator::txn::TxnHeader {
            session_id: 1,
            cxid: 7,
            time_ms: 0,
        },
        body: coordinator::txn::TxnBody::Delete { path: "/a".into() },
    };
    out.push((-2, txn.encode()));
    let p = &client.processor;
    out.push((-3, p.tree().serialize()));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn mutated_valid_encodings_never_panic(
        index in 0usize..64,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in any::<usize>(),
    ) {
        let samples = samples();
        let (code, mut bytes) = samples[index % samples.len()].clone();
        for (pos, value) in flips {
            let n = bytes.len();
            bytes[pos % n] = value;
        }
        let cut = cut % (bytes.len() + 1);
        for input in [&bytes[..], &bytes[..cut]] {
            match code {
                -1 => { let _ = ConnectRequest::decode(input); }
                -2 => { let _ = Txn::decode(input); }
                -3 => { let _ = DataTree::deserialize(input); }
                op_code => { let _ = Request::decode(op_code, input); }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), op_index in 0..OPS.len()) {
        let _ = Request::decode(OPS[op_index], &bytes);
        let _ = ConnectRequest::decode(&bytes);
        let _ = Txn::decode(&bytes);
        let _ = ForwardedRequest::decode(&bytes);
        let _ = DataTree::deserialize(&bytes);
        let mut with_magic = b"ZNTREE01".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = DataTree::deserialize(&with_magic);
    }

    #[test]
    fn processor_survives_arbitrary_frames(frames in proptest::collection::vec(
        (0..OPS.len(), proptest::collection::vec(any::<u8>(), 0..64)), 1..20)) {
        let mut client = HostileClient::new();
        for (op_index, body) in frames {
            client.send_request(OPS[op_index], &body);
        }
        client.close();
    }
}
