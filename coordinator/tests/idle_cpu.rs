//! A standalone server with nothing to do must not burn CPU: its core thread sleeps on its
//! channels and the session-expiry timer, right after start and after clients have come and
//! gone (a session closed, a session abandoned until it expires, with ephemerals and
//! watches). Measured from the core thread's CPU time in `/proc/self/task` (Linux only).
//!
//! Regression: the standalone core thread selected on a wake channel whose sender had been
//! dropped when `server::start` returned, so every `select!` returned at once and an idle
//! coordinator sat at one full core.
#![cfg(target_os = "linux")]

mod support;

use std::time::{Duration, Instant};

use support::{RawSession, Server};
use zookeeper_client as zk;

/// The core thread's name as the kernel keeps it (15 bytes of "coordinator-core").
const CORE_THREAD_COMM: &str = "coordinator-cor";
/// How long the server is watched while idle.
const IDLE_WINDOW: Duration = Duration::from_millis(1500);
/// CPU the core thread may use in that window: ticks of the expiry timer cost microseconds;
/// a spinning thread uses the whole window (or, on a busy 2-core host, at least half).
const IDLE_BUDGET: Duration = Duration::from_millis(150);

/// CPU time (user + system) used so far by this process's coordinator core threads. Only one
/// server runs in this test binary, so that is its core thread.
fn core_thread_cpu() -> Duration {
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let mut ticks = 0u64;
    let mut found = 0;
    for entry in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = entry.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if comm.trim_end() != CORE_THREAD_COMM {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // After "pid (comm) ": field 3 (state) onwards; utime and stime are fields 14 and 15.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .collect();
        ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        found += 1;
    }
    assert_eq!(found, 1, "expected one {CORE_THREAD_COMM} thread");
    Duration::from_millis(ticks * 1000 / ticks_per_s)
}

fn assert_idle(what: &str) {
    let before = core_thread_cpu();
    let start = Instant::now();
    std::thread::sleep(IDLE_WINDOW);
    let used = core_thread_cpu() - before;
    let wall = start.elapsed();
    assert!(
        used <= IDLE_BUDGET,
        "{what}: the idle core thread used {used:?} of CPU in {wall:?} (budget {IDLE_BUDGET:?})"
    );
}

/// Opens a session over a raw socket, creates the ephemeral `path`, sets a data watch on
/// `watched`, and returns the socket: dropping it abandons the session (no closeSession),
/// which then expires.
fn abandoned_session(addr: &str, path: &str, watched: &str) -> RawSession {
    let mut s = RawSession::connect(addr, 400);
    assert_eq!(s.create(1, path, b"x", 1), 0, "create {path} failed");
    s.send_get_data(2, watched, true);
    s.answer();
    s
}

async fn connect(addr: &str) -> zk::Client {
    tokio::time::timeout(
        Duration::from_secs(10),
        zk::Client::connector()
            .with_session_timeout(Duration::from_millis(800))
            .connect(addr),
    )
    .await
    .expect("connect timed out")
    .expect("connect")
}

#[test]
fn idle_server_does_not_spin() {
    let server = Server::start("");
    let addr = server.addr();
    // Let start-up settle (recovery, the first snapshot check) before measuring.
    std::thread::sleep(Duration::from_millis(200));
    assert_idle("right after start");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
            let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
            // A session that closes itself, with an ephemeral and data/child/exists watches.
            let client = connect(&addr).await;
            client.create("/brokers", b"", &persistent).await.unwrap();
            client.create("/brokers/1", b"", &ephemeral).await.unwrap();
            let _w1 = client.get_and_watch_data("/brokers").await.unwrap();
            let _w2 = client.list_and_watch_children("/brokers").await.unwrap();
            let _w3 = client.check_and_watch_stat("/controller").await.unwrap();
            // A session abandoned with its socket: it expires.
            let raw = abandoned_session(&addr, "/brokers/2", "/brokers");
            drop(raw);
            drop(client);
            // Wait (from a fresh session, closed afterwards) until both ephemerals are gone.
            let probe = connect(&addr).await;
            loop {
                if probe.list_children("/brokers").await.unwrap().is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            drop(probe);
        })
        .await
        .expect("sessions did not end in time");
    });
    drop(rt);
    // Give the closes time to land.
    std::thread::sleep(Duration::from_millis(300));
    assert_idle("after clients came and went");
}
