//! Proves the data tree stays lean: 1,000,000 znodes of 100 bytes each (under 1,000 parents)
//! must fit in well under 1 GiB of resident memory, measured from /proc/self/statm around
//! building the tree by applying create transactions. Ignored by default (it takes a few
//! seconds in debug builds); run with `cargo test -p coordinator --test memory -- --ignored`.

use coordinator::data_tree::DataTree;
use coordinator::jute::codes::{op, perms};
use coordinator::txn::{CreateTxn, Txn, TxnBody, TxnHeader};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
#[ignore]
fn a_million_100_byte_znodes_fit_in_memory() {
    const NODES: i64 = 1_000_000;
    const PARENTS: i64 = 1_000;
    let before = rss_bytes();
    let mut tree = DataTree::new();
    let mut zxid = 0;
    let mut triggers = Vec::new();
    let mut apply = |tree: &mut DataTree, path: String, parent_cversion: i32| {
        zxid += 1;
        let txn = Txn {
            header: TxnHeader {
                session_id: 0,
                cxid: 0,
                time_ms: 1_700_000_000_000 + zxid,
            },
            body: TxnBody::Create(CreateTxn {
                path,
                data: Some(vec![b'x'; 100]),
                perms: perms::ALL,
                ephemeral_owner: 0,
                parent_cversion,
                op: op::CREATE,
            }),
        };
        triggers.clear();
        tree.apply(zxid, &txn, &mut triggers);
    };
    for p in 0..PARENTS {
        apply(&mut tree, format!("/bench{p:04}"), p as i32 + 1);
    }
    for i in 0..NODES {
        let parent = i % PARENTS;
        let n = i / PARENTS;
        apply(
            &mut tree,
            format!("/bench{parent:04}/node-{n:010}"),
            n as i32 + 1,
        );
    }
    assert_eq!(tree.node_count() as i64, NODES + PARENTS + 4);
    let used = rss_bytes().saturating_sub(before);
    println!(
        "{} znodes of 100 B: {:.1} MiB resident ({} B per znode)",
        NODES,
        used as f64 / (1 << 20) as f64,
        used / NODES as u64
    );
    assert!(used < 700 << 20, "tree used {} MiB", used >> 20);
    // The snapshot is serialized on the core thread: report the pause it costs.
    let started = std::time::Instant::now();
    let bytes = tree.serialize();
    println!(
        "serialize: {} MiB in {} ms",
        bytes.len() >> 20,
        started.elapsed().as_millis()
    );
    assert_eq!(
        DataTree::deserialize(&bytes).unwrap().digest(),
        tree.digest()
    );
}
