//! Bad input on an SSL connection after its handshake: bytes that are no TLS record, a record
//! that does not decrypt, a record longer than TLS allows, and a client gone mid-frame. Each
//! closes that connection only (the broker stops reading it: its count of open connections goes
//! back), never panics, and the broker keeps serving TLS and plain clients. A rustls client;
//! certificates made with the openssl CLI in a temp dir.

mod kafka_support;
mod tls_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use broker::cli::client::{decode_response, encode_request_into, response_size, Client};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiVersionsRequest;
use tls_support::TlsNode;

/// One ApiVersions v3 round trip over `stream`.
fn api_versions(stream: &mut impl ReadWriteStream, correlation_id: i32) {
    let mut frame = BytesMut::new();
    let request = ApiVersionsRequest::default()
        .with_client_software_name("tls-input-test".into())
        .with_client_software_version("1".into());
    encode_request_into(&mut frame, &request, 3, correlation_id, "tls-input-test").unwrap();
    stream.write_all(&frame).unwrap();
    stream.flush().unwrap();
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).unwrap();
    let mut body = vec![0u8; response_size(prefix).unwrap()];
    stream.read_exact(&mut body).unwrap();
    let response =
        decode_response::<ApiVersionsRequest>(Bytes::from(body), 3, correlation_id).unwrap();
    assert_eq!(response.error_code, 0);
}

trait ReadWriteStream: Read + Write {}
impl<S: Read + Write> ReadWriteStream for S {}

fn open_connections(node: &TlsNode) -> u64 {
    node.server
        .metrics
        .iter()
        .map(|m| m.connections_open.load(Ordering::Relaxed))
        .sum()
}

/// Reads `socket` until the broker closes it (EOF or reset); false if it stays open 10 s.
fn closed_by_broker(socket: &mut TcpStream) -> bool {
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut sink = [0u8; 4096];
    loop {
        match socket.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue, // an alert, say
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(err) if err.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

/// Waits until the broker counts `count` open connections (it closes its end on its own time).
fn wait_for_open_connections(node: &TlsNode, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_connections(node) != count {
        assert!(
            Instant::now() < deadline,
            "{} connections open, {count} expected",
            open_connections(node)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// After one good round trip over TLS, `bad` goes to the raw socket: the broker closes that
/// connection, and new TLS and plain connections are served.
fn closes_only_that_connection(node: &TlsNode, bad: &[u8]) {
    let mut tls = node.connect();
    api_versions(&mut tls, 1);
    assert_eq!(open_connections(node), 1);
    let mut socket = tls.sock;
    socket.write_all(bad).unwrap();
    assert!(
        closed_by_broker(&mut socket),
        "the broker closed the connection"
    );
    wait_for_open_connections(node, 0);
    let mut again = node.connect();
    api_versions(&mut again, 2);
    drop(again);
    let mut plain = Client::connect(&node.server.addr.to_string()).unwrap();
    plain
        .call(&ApiVersionsRequest::default(), 0)
        .expect("plain clients are served");
    drop(plain);
    wait_for_open_connections(node, 0);
}

fn node(dir: &std::path::Path) -> TlsNode {
    let config = kafka_support::config(kafka_support::dev_profile(), &dir.join("data"));
    TlsNode::start(config, dir)
}

#[test]
fn bad_records_after_the_handshake_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    // Not a TLS record at all: a Kafka frame in the clear.
    closes_only_that_connection(&node, &[0, 0, 0, 8, 0, 18, 0, 0, 0, 0, 0, 1]);
    // An application-data record (type 23, TLS 1.2 header) whose bytes do not decrypt.
    let mut forged = vec![23, 3, 3, 0, 64];
    forged.extend_from_slice(&[0x5a; 64]);
    closes_only_that_connection(&node, &forged);
    // A record declaring 65535 bytes, more than any TLS record may hold: refused from its
    // header, before the broker waits for (or keeps room for) what it declares.
    closes_only_that_connection(&node, &[23, 3, 3, 0xff, 0xff, 1, 2, 3]);
}

#[test]
fn a_client_gone_mid_frame_leaves_the_broker_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let mut tls = node.connect();
    api_versions(&mut tls, 1);
    // Half a frame (it declares 100 bytes), then the socket closes without close_notify.
    tls.write_all(&[0, 0, 0, 100, 0, 18, 0, 3]).unwrap();
    tls.flush().unwrap();
    drop(tls);
    wait_for_open_connections(&node, 0);
    let mut again = node.connect();
    api_versions(&mut again, 2);
}
