//! Proves bad peer input is an error for that connection only: against a live two-of-three
//! ensemble on loopback, raw sockets send garbage instead of a handshake, a handshake from a
//! server that may not dial, an oversized frame, an invalid rkyv archive and a flood of silent
//! connections; each such connection is closed by the server, and the ensemble keeps
//! committing writes afterwards. With a quorum secret, servers that share it form the
//! ensemble, while a peer that claims a server id with a wrong secret, or with none, is
//! closed before ZAB sees it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use coordinator::zab::frame::write_handshake;
use coordinator::zab::peer_auth::{prove_as_dialer, QuorumSecret};
use coordinator::zab::{Application, NodeConfig, Role, ZabNode, Zxid};

/// How long a step may take before the test fails as hung: generous for a debug build on a
/// loaded machine; each wait ends as soon as its condition holds.
const HANG_GUARD: Duration = Duration::from_secs(60);

struct Nothing;

impl Application for Nothing {
    fn apply(&mut self, _zxid: Zxid, _payload: &[u8]) {}
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(&mut self, _zxid: Zxid, _snapshot: &[u8]) {}
}

fn assert_closed_by_server(mut s: TcpStream, what: &str) {
    s.set_read_timeout(Some(HANG_GUARD)).expect("timeout");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e)
            if e.kind() != std::io::ErrorKind::WouldBlock
                && e.kind() != std::io::ErrorKind::TimedOut => {}
        other => panic!("{what}: connection not closed by the server: {other:?}"),
    }
}

fn write_committed(nodes: &[ZabNode]) -> Zxid {
    let end = Instant::now() + HANG_GUARD;
    loop {
        for n in nodes {
            let s = n.status();
            if s.role == Role::Leading && s.serving {
                if let Ok(z) = n.propose_and_wait(b"ok".to_vec(), Duration::from_secs(2)) {
                    return z;
                }
            }
        }
        assert!(Instant::now() < end, "the ensemble stopped committing");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Servers 1 and 2 of a three-server ensemble on loopback (3 stays down; 1 and 2 are a
/// quorum), with `secret` as their quorum secret; their nodes and every server's address.
fn two_of_three(
    dir: &std::path::Path,
    secret: Option<&QuorumSecret>,
) -> (Vec<ZabNode>, BTreeMap<u64, SocketAddr>) {
    let mut listeners = BTreeMap::new();
    let mut addrs: BTreeMap<u64, SocketAddr> = BTreeMap::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        addrs.insert(id, l.local_addr().expect("addr"));
        listeners.insert(id, l);
    }
    drop(listeners.remove(&3));
    let mut nodes = Vec::new();
    for (id, l) in listeners {
        let base = dir.join(format!("s{id}"));
        let mut cfg = NodeConfig::new(id, addrs.clone(), base.join("data"), base.join("log"));
        cfg.quorum_secret = secret.cloned();
        nodes.push(ZabNode::start_with_listener(cfg, l, Nothing).expect("start"));
    }
    (nodes, addrs)
}

#[test]
fn zab_transport_rejects_bad_peers_and_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, addrs) = two_of_three(dir.path(), None);
    let target = addrs[&1];
    write_committed(&nodes);

    // Garbage instead of a handshake.
    let mut s = TcpStream::connect(target).expect("connect");
    s.write_all(&[0x42; 24]).expect("write");
    assert_closed_by_server(s, "garbage handshake");

    // A server with a smaller id may not dial server 1 (and 0 is not a server).
    let mut s = TcpStream::connect(target).expect("connect");
    write_handshake(&mut s, 0, 1).expect("write");
    assert_closed_by_server(s, "handshake from a server that may not dial");

    // A handshake meant for another server.
    let mut s = TcpStream::connect(target).expect("connect");
    write_handshake(&mut s, 3, 2).expect("write");
    assert_closed_by_server(s, "handshake for the wrong server");

    // Impersonating server 3: an oversized frame.
    let mut s = TcpStream::connect(target).expect("connect");
    write_handshake(&mut s, 3, 1).expect("write");
    s.write_all(&u32::MAX.to_be_bytes()).expect("write");
    assert_closed_by_server(s, "oversized frame");

    // Impersonating server 3: a frame whose body is not a valid archive.
    let mut s = TcpStream::connect(target).expect("connect");
    write_handshake(&mut s, 3, 1).expect("write");
    let mut frame = 32u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0xff; 32]);
    s.write_all(&frame).expect("write");
    assert_closed_by_server(s, "invalid archive");

    // A flood of silent connections is bounded and does not stop the ensemble.
    let flood: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(target).ok())
        .collect();
    write_committed(&nodes);
    drop(flood);

    let z = write_committed(&nodes);
    let end = Instant::now() + HANG_GUARD;
    while nodes.iter().any(|n| n.applied_zxid() < z) {
        assert!(Instant::now() < end, "followers stopped applying");
        std::thread::sleep(Duration::from_millis(5));
    }
    for n in nodes {
        n.shutdown();
    }
}

#[test]
fn only_peers_that_prove_the_quorum_secret_join() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = QuorumSecret::new(b"a shared secret of the ensemble\n").expect("secret");
    // Server 3 stays down: an impostor plays it.
    let (nodes, addrs) = two_of_three(dir.path(), Some(&secret));
    // 1 and 2 proved the secret to each other: they commit.
    write_committed(&nodes);
    let target = addrs[&1];

    // Claiming server 3 with a wrong secret: refused by server 1, which never proves
    // itself to the impostor either.
    let wrong = QuorumSecret::new(b"not the ensemble's secret").expect("secret");
    let mut s = TcpStream::connect(target).expect("connect");
    s.set_read_timeout(Some(HANG_GUARD)).expect("timeout");
    write_handshake(&mut s, 3, 1).expect("write");
    assert!(prove_as_dialer(&mut s, &wrong, 3, 1).is_err());
    assert_closed_by_server(s, "wrong quorum secret");

    // Claiming server 3 without any secret: straight to ZAB frames after the handshake.
    let mut s = TcpStream::connect(target).expect("connect");
    write_handshake(&mut s, 3, 1).expect("write");
    let mut frame = 64u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0u8; 64]);
    s.write_all(&frame).expect("write");
    // The server's challenge comes first; the frame is not an answer to it.
    s.set_read_timeout(Some(HANG_GUARD)).expect("timeout");
    let mut nonce = [0u8; 32];
    s.read_exact(&mut nonce).expect("the server's nonce");
    assert_closed_by_server(s, "no quorum secret");

    // The right secret passes the check (the node then takes the connection as server 3's).
    let mut s = TcpStream::connect(target).expect("connect");
    s.set_read_timeout(Some(HANG_GUARD)).expect("timeout");
    write_handshake(&mut s, 3, 1).expect("write");
    prove_as_dialer(&mut s, &secret, 3, 1).expect("the right secret is accepted");
    drop(s);

    write_committed(&nodes);
    for n in nodes {
        n.shutdown();
    }
}
