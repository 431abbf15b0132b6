//! Proves the broker answers protocol misuse with the right Kafka error code or a closed
//! connection, never a panic, and keeps serving other clients: each test sends one kind of bad
//! input over a raw socket to an in-process server, then checks a good client still works.

mod kafka_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use broker::cli::client::Client;
use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::MetadataRequest;

fn raw(addr: std::net::SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// True when the server closed the connection (EOF or reset) instead of answering.
fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(err) => {
            err.kind() != std::io::ErrorKind::WouldBlock
                && err.kind() != std::io::ErrorKind::TimedOut
        }
    }
}

fn header(buf: &mut BytesMut, key: i16, version: i16, correlation: i32) {
    buf.put_i16(key);
    buf.put_i16(version);
    buf.put_i32(correlation);
    buf.put_i16(4);
    buf.put_slice(b"test");
}

fn framed(body: BytesMut) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as i32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn good_client_works(addr: std::net::SocketAddr) {
    let mut client = Client::connect(&addr.to_string()).unwrap();
    let response = client.call(&MetadataRequest::default(), 12).unwrap();
    assert_eq!(response.brokers.len(), 1);
}

fn topic(addr: std::net::SocketAddr, name: &str, partitions: i32) {
    broker::cli::topics_create(&addr.to_string(), name, partitions, -1, &[]).unwrap();
}

/// The error code of a produce of `records`.
fn produce(client: &mut Client, topic: &str, partition: i32, records: bytes::Bytes) -> i16 {
    kafka_support::produce(client, topic, partition, records).0
}

#[test]
fn oversize_frame_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = kafka_support::start(kafka_support::dev_profile(), dir.path());
    let mut stream = raw(server.addr);
    stream.write_all(&(200i32 << 20).to_be_bytes()).unwrap();
    assert!(closed(&mut stream));
    let mut stream = raw(server.addr);
    stream.write_all(&(-7i32).to_be_bytes()).unwrap();
    assert!(closed(&mut stream));
    good_client_works(server.addr);
}

#[test]
fn truncated_frame_and_disconnect_mid_request_leave_the_server_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = kafka_support::start(kafka_support::dev_profile(), dir.path());
    for cut in [2usize, 6, 30] {
        let mut body = BytesMut::new();
        header(&mut body, 3, 12, 1);
        body.put_slice(&[0u8; 40]);
        let frame = framed(body);
        let mut stream = raw(server.addr);
        stream.write_all(&frame[..cut.min(frame.len())]).unwrap();
        drop(stream);
    }
    // A header that claims more bytes than the frame holds: malformed, the connection closes.
    let mut body = BytesMut::new();
    body.put_i16(3);
    body.put_i16(1);
    body.put_i32(5);
    body.put_i16(100);
    let mut stream = raw(server.addr);
    stream.write_all(&framed(body)).unwrap();
    assert!(closed(&mut stream));
    good_client_works(server.addr);
}

#[test]
fn unknown_api_key_and_unsupported_version_close_or_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = kafka_support::start(kafka_support::dev_profile(), dir.path());
    // Unknown API key 999: closed.
    let mut body = BytesMut::new();
    header(&mut body, 999, 0, 1);
    let mut stream = raw(server.addr);
    stream.write_all(&framed(body)).unwrap();
    assert!(closed(&mut stream));
    // Metadata v99: closed.
    let mut body = BytesMut::new();
    header(&mut body, 3, 99, 2);
    let mut stream = raw(server.addr);
    stream.write_all(&framed(body)).unwrap();
    assert!(closed(&mut stream));
    // ApiVersions v9: a v0 answer with UNSUPPORTED_VERSION (35) and the same connection lives.
    let mut body = BytesMut::new();
    header(&mut body, 18, 9, 3);
    let mut stream = raw(server.addr);
    stream.write_all(&framed(body)).unwrap();
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).unwrap();
    let mut answer = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer[0..4], &3i32.to_be_bytes());
    assert_eq!(&answer[4..6], &35i16.to_be_bytes());
    // Produce v2: advertised, answered per partition with UNSUPPORTED_VERSION.
    let mut body = BytesMut::new();
    header(&mut body, 0, 2, 4);
    body.put_i16(1);
    body.put_i32(1000);
    body.put_i32(1);
    body.put_i16(1);
    body.put_slice(b"t");
    body.put_i32(1);
    body.put_i32(0);
    body.put_i32(0);
    stream.write_all(&framed(body)).unwrap();
    stream.read_exact(&mut size).unwrap();
    let mut answer = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer[0..4], &4i32.to_be_bytes());
    // correlation, topics=1, name(2+1), partitions=1, partition=0, error
    assert_eq!(&answer[19..21], &35i16.to_be_bytes());
    good_client_works(server.addr);
}

#[test]
fn bad_crc_is_refused_with_corrupt_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = kafka_support::start(kafka_support::dev_profile(), dir.path());
    topic(server.addr, "crc", 1);
    let mut client = Client::connect(&server.addr.to_string()).unwrap();
    let good = kafka_support::batch(&[b"hello", b"world"]);
    let mut bad = good.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert_eq!(
        produce(&mut client, "crc", 0, bad.into()),
        2,
        "CORRUPT_MESSAGE"
    );
    // The same connection still works and the good batch lands at offset 0.
    assert_eq!(produce(&mut client, "crc", 0, good), 0);
    good_client_works(server.addr);
}

#[test]
fn a_bad_later_batch_refuses_the_whole_record_set() {
    let dir = tempfile::tempdir().unwrap();
    let server = kafka_support::start(kafka_support::dev_profile(), dir.path());
    topic(server.addr, "half", 1);
    let mut client = Client::connect(&server.addr.to_string()).unwrap();
    let good = kafka_support::batch(&[b"one", b"two"]);
    let mut bad = kafka_support::batch(&[b"three"]).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let request = [&good[..], &good[..], &bad[..]].concat();
    assert_eq!(
        produce(&mut client, "half", 0, request.into()),
        2,
        "CORRUPT_MESSAGE"
    );
    // Nothing of it was appended: the next batch lands at offset 0.
    assert_eq!(kafka_support::produce(&mut client, "half", 0, good), (0, 0));
}

#[test]
fn unknown_topic_or_partition_gets_error_3() {
    let dir = tempfile::tempdir().unwrap();
    let server = kafka_support::start(kafka_support::dev_profile(), dir.path());
    topic(server.addr, "known", 2);
    let mut client = Client::connect(&server.addr.to_string()).unwrap();
    let records = kafka_support::batch(&[b"x"]);
    assert_eq!(produce(&mut client, "nope", 0, records.clone()), 3);
    assert_eq!(produce(&mut client, "known", 7, records.clone()), 3);
    assert_eq!(produce(&mut client, "known", -1, records.clone()), 3);
    assert_eq!(produce(&mut client, "known", 1, records), 0);
    good_client_works(server.addr);
}

#[test]
fn a_client_that_never_reads_is_bounded_by_in_flight_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = kafka_support::start(kafka_support::dev_profile(), dir.path());
    // Pipeline many Metadata requests without reading answers: the server stops reading at
    // the in-flight limit (the socket buffers fill) instead of queueing without bound.
    let mut stream = raw(server.addr);
    stream
        .set_write_timeout(Some(Duration::from_millis(2000)))
        .unwrap();
    let mut body = BytesMut::new();
    header(&mut body, 3, 1, 1);
    body.put_i32(-1);
    let frame = framed(body);
    let mut written = 0usize;
    for _ in 0..2_000_000 {
        match stream.write(&frame) {
            Ok(n) => written += n,
            Err(_) => break,
        }
    }
    assert!(
        written < 2_000_000 * frame.len(),
        "writes must block eventually"
    );
    good_client_works(server.addr);
}
