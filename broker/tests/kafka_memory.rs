//! Proves hostile length fields cannot make the broker take memory it has not received: the
//! broker binary runs under a 4 GiB address-space limit (RLIMIT_AS, as `prlimit --as`), so
//! an allocation by a declared size aborts it instead of hiding in untouched address space.
//! - 200 connections that each declare a 100 MiB frame, send 10 bytes and stall add little to
//!   the broker's RSS (read from /proc once the kernel shows every byte read), and a normal
//!   client is served meanwhile;
//! - frames declaring huge arrays, strings and bytes to Metadata, Produce, Fetch,
//!   CreateTopics, JoinGroup, OffsetCommit and others, in flexible and non-flexible versions,
//!   each close their connection with the refusal logged, and the broker keeps serving.
//!
//! Each test starts its own broker on a free loopback port and kills it when done, also when
//! an assertion fails (a guard's Drop, and PR_SET_PDEATHSIG should the test process die).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use broker::cli::client::Client;
use kafka_protocol::messages::{ApiKey, MetadataRequest};

const ADDRESS_SPACE_BYTES: u64 = 4 << 30;

struct Broker {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    /// Starts `broker serve` with one shard under the address-space limit; waits (at most
    /// 60 s) for the port it prints.
    fn start() -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("broker.log");
        let profile =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning/profiles/dev-2core.toml");
        let mut command = Command::new(env!("CARGO_BIN_EXE_broker"));
        command
            .arg("serve")
            .arg("--tuning")
            .arg(&profile)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        // SAFETY: only async-signal-safe calls (prctl, setrlimit) between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                let limit = libc::rlimit {
                    rlim_cur: ADDRESS_SPACE_BYTES,
                    rlim_max: ADDRESS_SPACE_BYTES,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().expect("broker binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let mut broker = Broker {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            log,
            _dir: dir,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => broker.addr = addr.parse().expect("a socket address"),
            Err(_) => panic!("broker did not start; its log:\n{}", broker.log_text()),
        }
        broker
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("broker exited ({status}); its log:\n{}", self.log_text());
        }
    }

    /// Resident memory of the broker process, bytes.
    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("broker's /proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS line");
        kib * 1024
    }

    fn serves_a_client(&mut self) {
        self.assert_alive();
        let mut client = Client::connect(&self.addr.to_string()).expect("connect");
        let response = client
            .call(&MetadataRequest::default(), 12)
            .expect("metadata answered");
        assert_eq!(response.brokers.len(), 1);
    }

    /// Server-side sockets of this broker's port: (established, with unread bytes).
    fn server_sockets(&self) -> (usize, usize) {
        let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        let port = format!(":{:04X}", self.addr.port());
        let (mut established, mut unread) = (0, 0);
        for line in table.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local address, remote address, state, tx_queue:rx_queue
            if cols.len() > 4 && cols[1].ends_with(&port) && cols[3] == "01" {
                established += 1;
                let rx_queue = cols[4].split(':').nth(1).unwrap_or("0");
                if u64::from_str_radix(rx_queue, 16).unwrap_or(0) > 0 {
                    unread += 1;
                }
            }
        }
        (established, unread)
    }
}

#[test]
fn stalled_frames_declaring_100_mib_cost_the_broker_little_memory() {
    const CONNECTIONS: usize = 200;
    let mut broker = Broker::start();
    broker.serves_a_client();
    let before = broker.rss_bytes();

    let mut stalled = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let mut stream = TcpStream::connect(broker.addr).expect("connect");
        let mut frame = (100i32 << 20).to_be_bytes().to_vec();
        frame.extend_from_slice(&[0, 3, 0, 1, 0, 0, 0, 1, 0, 0]);
        stream.write_all(&frame).expect("send prefix");
        stalled.push(stream);
    }
    // Wait until the kernel shows the broker has read every byte sent (no unread bytes on any
    // of its connections): only then has each reader grown its buffer for the frame.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (established, unread) = broker.server_sockets();
        if established >= CONNECTIONS && unread == 0 {
            break;
        }
        broker.assert_alive();
        assert!(
            Instant::now() < deadline,
            "after 60 s the broker has {established} connections, {unread} with unread bytes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    broker.serves_a_client();
    let after = broker.rss_bytes();
    let grown = after.saturating_sub(before);
    eprintln!(
        "RSS {} MiB before, {} MiB with {CONNECTIONS} stalled 100 MiB frames (+{} KiB)",
        before >> 20,
        after >> 20,
        grown >> 10
    );
    assert!(
        grown < 64 << 20,
        "RSS grew by {} MiB for {CONNECTIONS} stalled connections",
        grown >> 20
    );
    drop(stalled);
    broker.serves_a_client();
}

fn put_string(body: &mut Vec<u8>, s: &str) {
    body.extend_from_slice(&(s.len() as i16).to_be_bytes());
    body.extend_from_slice(s.as_bytes());
}

fn put_compact_string(body: &mut Vec<u8>, s: &str) {
    body.push(s.len() as u8 + 1);
    body.extend_from_slice(s.as_bytes());
}

const HUGE_COUNT: [u8; 4] = [0x7f, 0xff, 0xff, 0xff];
const HUGE_VARINT: [u8; 5] = [0xff, 0xff, 0xff, 0xff, 0x0f];

/// One request frame: size, the header version kafka-protocol expects, `body`.
fn frame(api: ApiKey, version: i16, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0; 4];
    out.extend_from_slice(&(api as i16).to_be_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&7i32.to_be_bytes());
    put_string(&mut out, "hostile");
    let valid = api.valid_versions();
    if (valid.min..=valid.max).contains(&version) && api.request_header_version(version) >= 2 {
        out.push(0); // no tagged fields in the header
    }
    out.extend_from_slice(body);
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    out
}

/// `(what, frame, the reason the log must show)`.
fn hostile_frames() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut frames = Vec::new();
    let mut add = |what, api, version, body: Vec<u8>, logged| {
        frames.push((what, frame(api, version, &body), logged));
    };
    add(
        "Metadata v0: 2^31-1 topics",
        ApiKey::Metadata,
        0,
        HUGE_COUNT.to_vec(),
        "refused Metadata v0 request (api key 3): field `topics` at body offset 0",
    );
    add(
        "Metadata v12: 2^32-2 topics (compact)",
        ApiKey::Metadata,
        12,
        HUGE_VARINT.to_vec(),
        "refused Metadata v12 request (api key 3): field `topics` at body offset 0",
    );
    let mut body = vec![0xff, 0xff, 0, 1, 0, 0, 0x03, 0xe8];
    body.extend_from_slice(&HUGE_COUNT);
    add(
        "Produce v3: 2^31-1 topics",
        ApiKey::Produce,
        3,
        body,
        "refused Produce v3 request (api key 0): field `topic_data` at body offset 8",
    );
    let mut body = vec![0, 0, 1, 0, 0, 0x03, 0xe8, 2];
    put_compact_string(&mut body, "t");
    body.extend_from_slice(&HUGE_VARINT);
    add(
        "Produce v9: a topic with 2^32-2 partitions (compact)",
        ApiKey::Produce,
        9,
        body,
        "refused Produce v9 request (api key 0): field `partition_data` at body offset 10",
    );
    let fetch_head = |version: i16| {
        let mut body = Vec::new();
        for v in [-1i32, 500, 1, 1 << 20] {
            body.extend_from_slice(&v.to_be_bytes());
        }
        body.push(0);
        if version >= 7 {
            body.extend_from_slice(&0i32.to_be_bytes());
            body.extend_from_slice(&(-1i32).to_be_bytes());
        }
        body
    };
    let mut body = fetch_head(4);
    body.extend_from_slice(&HUGE_COUNT);
    add(
        "Fetch v4: 2^31-1 topics",
        ApiKey::Fetch,
        4,
        body,
        "refused Fetch v4 request (api key 1): field `topics` at body offset 17",
    );
    let mut body = fetch_head(12);
    body.push(2);
    put_compact_string(&mut body, "t");
    body.extend_from_slice(&HUGE_VARINT);
    add(
        "Fetch v12: a topic with 2^32-2 partitions (compact)",
        ApiKey::Fetch,
        12,
        body,
        "refused Fetch v12 request (api key 1): field `partitions` at body offset 28",
    );
    let mut body = HUGE_COUNT.to_vec();
    body.extend_from_slice(&[0; 5]);
    add(
        "CreateTopics v2: 2^31-1 topics",
        ApiKey::CreateTopics,
        2,
        body,
        "refused CreateTopics v2 request (api key 19): field `topics` at body offset 0",
    );
    let mut body = vec![2];
    put_compact_string(&mut body, "t");
    body.extend_from_slice(&[0, 0, 0, 1, 0, 1]);
    body.extend_from_slice(&HUGE_VARINT);
    add(
        "CreateTopics v5: a topic with 2^32-2 assignments (compact)",
        ApiKey::CreateTopics,
        5,
        body,
        "refused CreateTopics v5 request (api key 19): field `assignments` at body offset 9",
    );
    let mut body = Vec::new();
    put_string(&mut body, "g");
    body.extend_from_slice(&30_000i32.to_be_bytes());
    put_string(&mut body, "");
    put_string(&mut body, "consumer");
    body.extend_from_slice(&HUGE_COUNT);
    add(
        "JoinGroup v0: 2^31-1 protocols",
        ApiKey::JoinGroup,
        0,
        body,
        "refused JoinGroup v0 request (api key 11): field `protocols` at body offset 19",
    );
    let mut body = Vec::new();
    put_compact_string(&mut body, "g");
    body.extend_from_slice(&30_000i32.to_be_bytes());
    body.extend_from_slice(&30_000i32.to_be_bytes());
    put_compact_string(&mut body, "");
    body.push(0); // group_instance_id null
    put_compact_string(&mut body, "consumer");
    body.push(2);
    put_compact_string(&mut body, "range");
    body.extend_from_slice(&HUGE_VARINT);
    add(
        "JoinGroup v6: protocol metadata of 2^32-2 bytes (compact)",
        ApiKey::JoinGroup,
        6,
        body,
        "refused JoinGroup v6 request (api key 11): field `metadata` at body offset 28",
    );
    let mut body = Vec::new();
    put_string(&mut body, "g");
    body.extend_from_slice(&(-1i32).to_be_bytes());
    put_string(&mut body, "");
    body.extend_from_slice(&(-1i64).to_be_bytes());
    body.extend_from_slice(&HUGE_COUNT);
    add(
        "OffsetCommit v2: 2^31-1 topics",
        ApiKey::OffsetCommit,
        2,
        body,
        "refused OffsetCommit v2 request (api key 8): field `topics` at body offset 17",
    );
    let mut body = Vec::new();
    put_compact_string(&mut body, "g");
    body.extend_from_slice(&(-1i32).to_be_bytes());
    put_compact_string(&mut body, "");
    body.push(0);
    body.push(2);
    put_compact_string(&mut body, "t");
    body.extend_from_slice(&HUGE_VARINT);
    add(
        "OffsetCommit v8: a topic with 2^32-2 partitions (compact)",
        ApiKey::OffsetCommit,
        8,
        body,
        "refused OffsetCommit v8 request (api key 8): field `partitions` at body offset 11",
    );
    let mut body = Vec::new();
    put_string(&mut body, "g");
    body.extend_from_slice(&HUGE_COUNT);
    add(
        "OffsetCommit v0 (hand decoder): 2^31-1 topics",
        ApiKey::OffsetCommit,
        0,
        body,
        "malformed OffsetCommit v0 request: topics: count larger than the request",
    );
    let mut body = vec![0, 1, 0, 0, 0x03, 0xe8];
    body.extend_from_slice(&HUGE_COUNT);
    add(
        "Produce v2 (hand decoder): 2^31-1 topics",
        ApiKey::Produce,
        2,
        body,
        "malformed Produce v2 request",
    );
    let mut body = HUGE_COUNT.to_vec();
    body.push(0);
    add(
        "DescribeGroups v0: 2^31-1 group ids",
        ApiKey::DescribeGroups,
        0,
        body,
        "refused DescribeGroups v0 request (api key 15): field `groups` at body offset 0",
    );
    add(
        "ListGroups v4: 2^32-2 state filters (compact)",
        ApiKey::ListGroups,
        4,
        HUGE_VARINT.to_vec(),
        "refused ListGroups v4 request (api key 16): field `states_filter` at body offset 0",
    );
    frames
}

/// True when the broker closed the connection (EOF or reset) within 20 s.
fn closed(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(err) => !matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn hostile_declared_lengths_close_the_connection_under_an_address_space_limit() {
    let mut broker = Broker::start();
    broker.serves_a_client();
    let frames = hostile_frames();
    for round in 0..5 {
        for (what, frame, _) in &frames {
            let mut stream = TcpStream::connect(broker.addr).expect("connect");
            stream.write_all(frame).expect("send");
            assert!(closed(&mut stream), "round {round}, {what}: not closed");
            broker.assert_alive();
        }
    }
    broker.serves_a_client();
    let log = broker.log_text();
    for (what, _, logged) in &frames {
        assert!(
            log.contains(logged),
            "{what}: `{logged}` not in the log:\n{log}"
        );
    }
}
