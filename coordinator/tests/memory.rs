//! Proves the data tree stays lean: 100,000 znodes of 100 bytes each (under 100 parents),
//! built by applying create transactions, take at most `BYTES_PER_ZNODE_MAX` bytes of
//! resident memory each, measured from /proc/self/statm around building the tree (this test
//! is alone in its binary, so nothing else allocates meanwhile). The snapshot of that tree
//! reloads with the same digest.
//!
//! `COORDINATOR_MEMORY_ZNODES=1000000 cargo test --release -p coordinator --test memory --
//! --nocapture` checks and reports the same at another size (the 1M figure in
//! docs/coordinator.md); the suite runs 100,000, a few seconds in a debug build.
#![cfg(target_os = "linux")]

use coordinator::data_tree::DataTree;
use coordinator::jute::codes::{op, perms};
use coordinator::jute::records::Acl;
use coordinator::txn::{CreateTxn, Txn, TxnBody, TxnHeader};

/// Znodes built when `COORDINATOR_MEMORY_ZNODES` is not set.
const ZNODES_DEFAULT: u64 = 100_000;
/// Znodes per parent.
const CHILDREN_PER_PARENT: u64 = 1_000;
/// Data of each znode.
const DATA_BYTES: usize = 100;
/// Resident bytes one znode may take: its 100 bytes of data, its path, its Stat, its name
/// in its parent's child set, the allocator's rounding. Measured (debug build, 2026-11):
/// 391 B at 100k, 409 B at 1M.
const BYTES_PER_ZNODE_MAX: u64 = 600;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no memory-safety preconditions.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    pages * page_bytes
}

fn znodes() -> u64 {
    match std::env::var("COORDINATOR_MEMORY_ZNODES") {
        Ok(v) => v
            .parse()
            .expect("COORDINATOR_MEMORY_ZNODES is a number of znodes"),
        Err(_) => ZNODES_DEFAULT,
    }
}

#[test]
fn znodes_of_100_bytes_take_few_hundred_bytes_each() {
    let nodes = znodes();
    let parents = nodes.div_ceil(CHILDREN_PER_PARENT).max(1);
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
                data: Some(vec![b'x'; DATA_BYTES]),
                acl: vec![Acl::world_anyone(perms::ALL)],
                ephemeral_owner: 0,
                parent_cversion,
                op: op::CREATE,
            }),
        };
        triggers.clear();
        tree.apply(zxid, &txn, &mut triggers);
    };
    for p in 0..parents {
        apply(&mut tree, format!("/bench{p:04}"), p as i32 + 1);
    }
    for i in 0..nodes {
        let parent = i % parents;
        let n = i / parents;
        apply(
            &mut tree,
            format!("/bench{parent:04}/node-{n:010}"),
            n as i32 + 1,
        );
    }
    // The root, /zookeeper and its two children come with a fresh tree.
    assert_eq!(tree.node_count() as u64, nodes + parents + 4);
    let used = rss_bytes().saturating_sub(before);
    let per_znode = used / nodes;
    println!(
        "{nodes} znodes of {DATA_BYTES} B: {:.1} MiB resident, {per_znode} B per znode (max {BYTES_PER_ZNODE_MAX})",
        used as f64 / (1 << 20) as f64,
    );
    assert!(
        per_znode <= BYTES_PER_ZNODE_MAX,
        "{per_znode} B per znode ({} MiB for {nodes})",
        used >> 20
    );
    // The snapshot is serialized off the core thread; report what it costs.
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
