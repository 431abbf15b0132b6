//! With two shards, a connection whose Produce and Fetch requests name only the other shard's
//! partitions is handed to that shard: the move happens between requests while the client keeps
//! requests in flight, every request is answered once and in order, nothing it produced is lost
//! or reordered, and the owner serves the connection from then on without the mesh. Over
//! PLAINTEXT, and over SSL, where the TLS session moves with the socket (a rustls client; the
//! certificates are made with the openssl CLI in a temp dir).

mod kafka_support;
mod tls_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use broker::cli::client::{decode_response, encode_request_into, response_size, Client};
use broker::server::connection::MOVE_AFTER_REQUESTS;
use broker::server::metrics::ShardMetrics;
use broker::server::ServerHandle;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ProduceRequest;

/// A client's connection: a TCP stream or a TLS session over one.
trait ReadWrite: Read + Write {}
impl<S: Read + Write> ReadWrite for S {}

/// Sends `count` Produce requests to `partition` in one write (all in flight at once), then
/// reads the answers: each must answer its request, in order, with the next base offset.
fn produce_pipelined(
    stream: &mut impl ReadWrite,
    first_correlation_id: i32,
    partition: i32,
    count: i32,
    next_offset: &mut i64,
) {
    let mut frames = BytesMut::new();
    for i in 0..count {
        let batch = kafka_support::batch(&[format!("m{}", *next_offset + i as i64).as_bytes()]);
        let request = kafka_support::produce_request("mv", partition, batch);
        encode_request_into(
            &mut frames,
            &request,
            9,
            first_correlation_id + i,
            "move-test",
        )
        .unwrap();
    }
    stream.write_all(&frames).unwrap();
    for i in 0..count {
        let mut prefix = [0u8; 4];
        stream.read_exact(&mut prefix).unwrap();
        let mut body = vec![0u8; response_size(prefix).unwrap()];
        stream.read_exact(&mut body).unwrap();
        let response =
            decode_response::<ProduceRequest>(Bytes::from(body), 9, first_correlation_id + i)
                .unwrap_or_else(|err| panic!("answer {i} of {count}: {err}"));
        let answer = &response.responses[0].partition_responses[0];
        assert_eq!(
            (answer.error_code, answer.base_offset),
            (0, *next_offset),
            "answer {i} of {count}"
        );
        *next_offset += 1;
    }
}

#[test]
fn a_connection_moves_to_the_shard_owning_its_partitions_with_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let server = kafka_support::start(kafka_support::two_shards_profile(), dir.path());
    let connect = |addr: SocketAddr| {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
    };
    moves_with_requests_in_flight(&server, server.addr, connect);
}

#[test]
fn a_tls_connection_moves_with_its_session_and_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let config = kafka_support::config(
        kafka_support::two_shards_profile(),
        &dir.path().join("data"),
    );
    let node = tls_support::TlsNode::start(config, dir.path());
    moves_with_requests_in_flight(&node.server, node.ssl, |_| node.connect());
}

/// Produces over a connection to `addr` (made by `connect`) until it moved to the shard owning
/// its partition, with requests in flight throughout; then checks that nothing was lost.
fn moves_with_requests_in_flight<S: ReadWrite>(
    server: &ServerHandle,
    addr: SocketAddr,
    connect: impl Fn(SocketAddr) -> S,
) {
    broker::cli::topics_create(&server.addr.to_string(), "mv", 2, -1, &[]).unwrap();
    let counter = |get: fn(&ShardMetrics) -> &std::sync::atomic::AtomicU64| -> Vec<u64> {
        server
            .metrics
            .iter()
            .map(|m| ShardMetrics::get(get(m)))
            .collect()
    };
    let accepted_before = counter(|m| &m.connections_accepted);
    let mut stream = connect(addr);
    // One produce to partition 0 tells which shard the connection is on and whether partition
    // 0 is that shard's (no mesh request) or the other's.
    let mesh_before: u64 = counter(|m| &m.requests_forwarded_in).iter().sum();
    let mut offsets = [0i64; 2];
    produce_pipelined(&mut stream, 1, 0, 1, &mut offsets[0]);
    let accepted: Vec<u64> = counter(|m| &m.connections_accepted)
        .iter()
        .zip(&accepted_before)
        .map(|(after, before)| after - before)
        .collect();
    let here = accepted
        .iter()
        .position(|&n| n == 1)
        .expect("one shard accepted");
    let there = 1 - here;
    let crossed = counter(|m| &m.requests_forwarded_in).iter().sum::<u64>() > mesh_before;
    let remote_partition = if crossed { 0 } else { 1 };

    // Requests for the other shard's partition, 8 in flight at a time: the connection moves
    // after MOVE_AFTER_REQUESTS of them, between two requests, and answers stay in order.
    let rounds = (MOVE_AFTER_REQUESTS as i32 / 8) + 3;
    let mut correlation_id = 100;
    for _ in 0..rounds {
        produce_pipelined(
            &mut stream,
            correlation_id,
            remote_partition,
            8,
            &mut offsets[remote_partition as usize],
        );
        correlation_id += 8;
    }
    let moved = counter(|m| &m.connections_moved_in);
    assert_eq!(moved[there], 1, "the connection moved to shard {there}");
    assert_eq!(moved[here], 0);

    // Now on the owner: its requests no longer cross the mesh.
    let mesh_after_move = counter(|m| &m.requests_forwarded_in);
    produce_pipelined(
        &mut stream,
        correlation_id,
        remote_partition,
        8,
        &mut offsets[remote_partition as usize],
    );
    assert_eq!(
        counter(|m| &m.requests_forwarded_in),
        mesh_after_move,
        "no mesh requests once the connection is on the owner"
    );
    drop(stream);

    // Everything produced is there, once and in order.
    let mut client = Client::connect(&server.addr.to_string()).unwrap();
    let produced = offsets[remote_partition as usize];
    let records = kafka_support::fetch_every_record(&mut client, "mv", remote_partition);
    let expected: Vec<(i64, Bytes)> = (0..produced)
        .map(|o| (o, Bytes::from(format!("m{o}"))))
        .collect();
    assert_eq!(records, expected);
}
