//! Proves a client that pipelines reads of a 1 MB znode and never reads its answers cannot
//! make the server buffer unbounded bytes, and that nobody else notices. A standalone
//! server runs in-process (free loopback port, default `connectionQueueBytesMax` of 4 MiB);
//! a raw jute session sends 300 getData requests (300 MB of answers) and reads nothing.
//! While it stalls, the largest per-connection queue (`mntr`'s
//! `zk_largest_connection_queue_bytes`) reaches the bound and stays at most one answer above
//! it, and this process's resident memory grows by far less than the answers asked for;
//! another session gets its answers meanwhile. Then the stalled client reads: every answer
//! comes, in order, intact (back-pressure, not loss), and the queue empties.
#![cfg(target_os = "linux")]

mod support;

use std::time::{Duration, Instant};

use coordinator::config::DEFAULT_CONNECTION_QUEUE_BYTES_MAX;
use support::{get_data_bytes, mntr, RawSession, Server};

/// Data of the znode read over and over.
const DATA_BYTES: usize = 1_000_000;
/// getData requests pipelined by the client that does not read.
const READS: i32 = 300;
/// What one answer adds on top of the data: length prefix, reply header, buffer length, Stat.
const ANSWER_OVERHEAD_BYTES: usize = 4 + 16 + 4 + 68;
/// Resident memory the server may gain while the client stalls: the 4 MiB queue, the
/// writer's coalescing buffer and allocator slack. Without the bound it would hold nearly
/// all of the 300 MB asked for.
const RSS_GROWTH_MAX_BYTES: u64 = 96 << 20;
/// How long the queue is watched after it reached the bound, to see it does not grow.
const WATCH_AFTER_BOUND: Duration = Duration::from_secs(2);

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no memory-safety preconditions.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    pages * page_bytes
}

fn largest_queue_bytes(addr: &str) -> usize {
    mntr(addr, "zk_largest_connection_queue_bytes")
        .parse()
        .unwrap()
}

#[test]
fn a_client_that_does_not_read_is_held_to_the_queue_bound() {
    // Sessions (and the writer's patience, maxSessionTimeout) outlast the stall on purpose.
    let server = Server::start("4lw.commands.whitelist=*\nmaxSessionTimeout=60000\n");
    let addr = server.addr();
    let bound = DEFAULT_CONNECTION_QUEUE_BYTES_MAX as usize;
    let answer_bytes = DATA_BYTES + ANSWER_OVERHEAD_BYTES;
    let data: Vec<u8> = (0..DATA_BYTES).map(|i| (i % 251) as u8).collect();

    let mut other = RawSession::connect(&addr, 30_000);
    assert_eq!(other.create(1, "/big", &data, 0), 0);
    // One answer through the whole path first, so its one-off allocations are in the
    // baseline.
    other.send_get_data(2, "/big", false);
    assert_eq!(get_data_bytes(&other.answer().1), data);
    let rss_before = rss_bytes();

    let mut stalled = RawSession::connect(&addr, 30_000);
    for xid in 1..=READS {
        stalled.send_get_data(xid, "/big", false);
    }

    // The queue fills up to the bound (the socket buffers take the first few MB)...
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut largest = 0;
    while largest < bound {
        assert!(
            Instant::now() < deadline,
            "the stalled connection's queue never reached the bound: {largest} bytes"
        );
        std::thread::sleep(Duration::from_millis(20));
        largest = largest_queue_bytes(&addr);
    }
    // ...and stays there, whatever else happens meanwhile.
    let mut rss_peak = rss_bytes();
    let watch_until = Instant::now() + WATCH_AFTER_BOUND;
    let mut xid = 3;
    while Instant::now() < watch_until {
        other.send_get_data(xid, "/big", false);
        let (header, body) = other.answer();
        assert_eq!((header.xid, header.err), (xid, 0));
        assert_eq!(get_data_bytes(&body), data, "another client's answer");
        assert_eq!(other.create(xid + 1, &format!("/n{xid}"), b"", 0), 0);
        xid += 2;
        largest = largest.max(largest_queue_bytes(&addr));
        rss_peak = rss_peak.max(rss_bytes());
        std::thread::sleep(Duration::from_millis(50));
    }
    let rss_growth = rss_peak.saturating_sub(rss_before);
    eprintln!(
        "connection_queue: largest queue {largest} B (bound {bound} B), resident memory +{} MiB \
         while {} MB of answers were asked for",
        rss_growth >> 20,
        READS as usize * answer_bytes / 1_000_000
    );
    assert!(
        largest <= bound + answer_bytes,
        "{largest} bytes queued for one connection (bound {bound} + one answer)"
    );
    assert!(
        rss_growth <= RSS_GROWTH_MAX_BYTES,
        "resident memory grew by {} MiB while a client did not read",
        rss_growth >> 20
    );

    // The stalled client reads at last: every answer, in order.
    for xid in 1..=READS {
        let (header, body) = stalled.answer();
        assert_eq!((header.xid, header.err), (xid, 0));
        assert_eq!(get_data_bytes(&body), data, "answer {xid}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while largest_queue_bytes(&addr) != 0 {
        assert!(Instant::now() < deadline, "the queue never emptied");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its session still works: reading was paused, not dropped.
    stalled.send_get_data(READS + 1, "/big", false);
    assert_eq!(stalled.answer().0.err, 0);
}
