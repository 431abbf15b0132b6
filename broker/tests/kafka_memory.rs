//! Proves hostile length fields cannot make the broker take memory it has not received: the
//! broker binary runs under a 4 GiB address-space limit (RLIMIT_AS, as `prlimit --as`), so
//! an allocation by a declared size aborts it instead of hiding in untouched address space.
//! - 200 connections that each declare a 100 MiB frame, send 10 bytes and stall add little to
//!   the broker's RSS (read from /proc once the kernel shows every byte read), and a normal
//!   client is served meanwhile;
//! - with a 64 MiB memory budget, 1000 connections that declare large frames and really send
//!   256 KiB of each before stalling keep the broker's RSS and its budget account inside the
//!   budget plus the stated per-connection overhead (without the budget the broker read all
//!   of it: 250 MiB), frames larger than half the budget close their connection with the
//!   reason logged, kcat still creates, produces and consumes meanwhile, and once the stalled
//!   clients leave a 24 MiB produce request is served;
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

mod kafka_support;

use std::collections::HashMap;
use std::os::fd::AsRawFd;

use broker::cli::client::Client;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, MetadataRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

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
    /// Starts `broker serve` with the one-shard dev profile under the address-space limit.
    fn start() -> Broker {
        let profile =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning/profiles/dev-2core.toml");
        Self::start_with(&profile, tempfile::tempdir().expect("temp dir"))
    }

    /// Starts `broker serve` with `profile` under the address-space limit, data and log in
    /// `dir`; waits (at most 60 s) for the port it prints.
    fn start_with(profile: &Path, dir: tempfile::TempDir) -> Broker {
        let log = dir.path().join("broker.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_broker"));
        command
            .arg("serve")
            .arg("--tuning")
            .arg(profile)
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

    /// Stops the broker with SIGTERM (a clean shutdown, which logs the shard counters) and
    /// waits at most 60 s for it to exit.
    fn stop(&mut self) {
        // SAFETY: kill(2) on the pid of our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "broker did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
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

/// Unread bytes of each connection to `broker_port`, by the client's port: what the broker's
/// socket holds unread plus what the client's socket has not sent yet.
fn unread_by_client_port(broker_port: u16) -> HashMap<u16, u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port_of = |address: &str| {
        u16::from_str_radix(address.rsplit(':').next().unwrap_or("0"), 16).unwrap_or(0)
    };
    let mut unread = HashMap::new();
    for line in table.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 5 {
            continue;
        }
        let (local, remote) = (port_of(cols[1]), port_of(cols[2]));
        let mut queues = cols[4].split(':');
        let tx = u64::from_str_radix(queues.next().unwrap_or("0"), 16).unwrap_or(0);
        let rx = u64::from_str_radix(queues.next().unwrap_or("0"), 16).unwrap_or(0);
        if local == broker_port && remote != 0 {
            *unread.entry(remote).or_insert(0) += rx;
        } else if remote == broker_port {
            *unread.entry(local).or_insert(0) += tx;
        }
    }
    unread
}

/// Raises this process's open-file limit to its hard limit (the broker child inherits it).
fn raise_open_files(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        assert!(
            limit.rlim_max >= needed,
            "the hard limit of open files ({}) is below the {needed} this test needs",
            limit.rlim_max
        );
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

/// Runs `command` with `stdin`, at most 60 s; its stdout, or a panic with its stderr.
fn run(mut command: Command, stdin: &str) -> String {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("{command:?}: {err}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{command:?} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

fn broker_cli(broker: &Broker, args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_broker"));
    command
        .args(args)
        .arg("--bootstrap")
        .arg(broker.addr.to_string());
    run(command, "")
}

/// kcat produces `count` messages to `topic` and reads them back.
fn kcat_round_trip(broker: &Broker, topic: &str, count: usize) {
    broker_cli(broker, &["topics", "create", topic, "--partitions", "1"]);
    let messages: Vec<String> = (0..count).map(|i| format!("{topic}-{i}")).collect();
    let mut produce = Command::new("kcat");
    produce.args(["-b", &broker.addr.to_string(), "-P", "-t", topic]);
    run(produce, &(messages.join("\n") + "\n"));
    let mut consume = Command::new("kcat");
    consume.args([
        "-b",
        &broker.addr.to_string(),
        "-C",
        "-t",
        topic,
        "-o",
        "beginning",
        "-e",
        "-q",
    ]);
    let consumed = run(consume, "");
    assert_eq!(consumed.lines().collect::<Vec<_>>(), messages);
}

#[test]
fn a_thousand_stalled_frames_stay_inside_the_memory_budget_and_clients_are_served() {
    const STALLED: usize = 1000;
    const BUDGET_BYTES: u64 = 64 << 20;
    const CHUNK_BYTES: u64 = 16 << 10;
    const BODY_BYTES: usize = 256 << 10;
    // What the broker may hold beyond the budget: each connection may keep up to two chunks
    // of received bytes without a reservation, plus its socket and task structures and the
    // allocator's slack.
    const OVERHEAD_BYTES: u64 = STALLED as u64 * (2 * CHUNK_BYTES + (4 << 10)) + (16 << 20);
    raise_open_files(3 * STALLED as u64 + 1000);
    let dir = tempfile::tempdir().expect("temp dir");
    let profile = dir.path().join("budget.toml");
    std::fs::write(
        &profile,
        format!(
            "[[core]]\ncpu = 0\nmemory_budget_bytes = {BUDGET_BYTES}\n[network]\n\
             max_connections = 4000\nconnection_buffer_bytes = {CHUNK_BYTES}\n"
        ),
    )
    .expect("write profile");
    let mut broker = Broker::start_with(&profile, dir);
    broker.serves_a_client();
    let before = broker.rss_bytes();

    // Half declare 100 MiB (more than half the budget: refused), half 4 MiB (fits, so each
    // waits for a reservation of its whole length); each sends 256 KiB of its body and stalls.
    let mut fitting = Vec::new();
    let mut refused = Vec::new();
    let mut sent_total = 0u64;
    for i in 0..STALLED {
        let mut stream = TcpStream::connect(broker.addr).expect("connect");
        let send_buffer: libc::c_int = 1 << 20;
        // SAFETY: setsockopt on a socket we own with an int option.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&send_buffer as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let declared: i32 = if i % 2 == 0 { 100 << 20 } else { 4 << 20 };
        let mut bytes = declared.to_be_bytes().to_vec();
        bytes.extend((0..BODY_BYTES).map(|j| (i + j) as u8));
        stream.set_nonblocking(true).expect("nonblocking");
        let mut sent = 0;
        while sent < bytes.len() {
            match stream.write(&bytes[sent..]) {
                Ok(n) => sent += n,
                Err(_) => break, // full, or already refused
            }
        }
        sent_total += sent as u64;
        let port = stream.local_addr().expect("local address").port();
        if i % 2 == 0 {
            refused.push((stream, false));
        } else {
            fitting.push((stream, port, sent as u64));
        }
    }
    assert!(
        sent_total > BUDGET_BYTES + OVERHEAD_BYTES,
        "only {sent_total} bytes sent: the test would not show a broker that reads them all"
    );

    // Wait until every 100 MiB frame is refused and the broker has read from every other
    // connection (what it reads without a reservation; the rest waits in the sockets).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for (stream, closed) in refused.iter_mut().filter(|(_, closed)| !*closed) {
            let mut byte = [0u8; 1];
            *closed = match stream.read(&mut byte) {
                Ok(0) => true,
                Ok(_) => panic!("an answer to a refused frame"),
                Err(err) => err.kind() != std::io::ErrorKind::WouldBlock,
            };
        }
        let open_refused = refused.iter().filter(|(_, closed)| !*closed).count();
        let unread = unread_by_client_port(broker.addr.port());
        let untouched = fitting
            .iter()
            .filter(|(_, port, sent)| unread.get(port).is_none_or(|unread| unread >= sent))
            .count();
        if open_refused == 0 && untouched == 0 {
            break;
        }
        broker.assert_alive();
        assert!(
            Instant::now() < deadline,
            "after 120 s: {open_refused} refused frames still open, {untouched} connections \
             not read from"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let waiting = {
        let unread = unread_by_client_port(broker.addr.port());
        fitting
            .iter()
            .filter(|(_, port, _)| unread.get(port).is_some_and(|&unread| unread > 0))
            .count()
    };
    assert!(
        waiting > 400,
        "only {waiting} of {} fitting frames wait: the budget did not hold them back",
        fitting.len()
    );

    // Clients are served meanwhile: admin, produce and consume through librdkafka.
    kcat_round_trip(&broker, "during-stall", 100);
    let mut peak_rss = 0;
    for _ in 0..10 {
        peak_rss = peak_rss.max(broker.rss_bytes());
        std::thread::sleep(Duration::from_millis(100));
    }
    let grown = peak_rss.saturating_sub(before);
    eprintln!(
        "RSS {} MiB before, {} MiB with {STALLED} stalled frames ({sent_total} bytes sent, \
         {waiting} frames waiting for memory): +{} MiB, bound {} MiB",
        before >> 20,
        peak_rss >> 20,
        grown >> 20,
        (BUDGET_BYTES + OVERHEAD_BYTES) >> 20
    );
    assert!(
        grown < BUDGET_BYTES + OVERHEAD_BYTES,
        "RSS grew by {} MiB",
        grown >> 20
    );

    // Once the stalled clients leave, a request of 24 MiB (24 batches of 1 MB) is served.
    drop(fitting);
    drop(refused);
    broker_cli(&broker, &["topics", "create", "big", "--partitions", "24"]);
    let value = vec![7u8; 1000];
    let values: Vec<&[u8]> = (0..1000).map(|_| &value[..]).collect();
    let batch = kafka_support::batch(&values);
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("big")))
            .with_partition_data(
                (0..24)
                    .map(|partition| {
                        PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(batch.clone()))
                    })
                    .collect(),
            )]);
    let mut client = Client::connect(&broker.addr.to_string()).expect("connect");
    let response = client.call(&request, 9).expect("big produce answered");
    for partition in &response.responses[0].partition_responses {
        assert_eq!(partition.error_code, 0, "partition {}", partition.index);
    }
    kcat_round_trip(&broker, "after-stall", 10);

    broker.stop();
    let log = broker.log_text();
    let refusals = log
        .matches(
            "can never fit shard 0's memory budget: frames larger than half of memory_budget_bytes",
        )
        .count();
    assert_eq!(refusals, STALLED / 2, "refusals logged");
    let peak: u64 = log
        .split("memory peak ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no memory peak in the log:\n{log}"));
    eprintln!("budget account peak: {} MiB", peak >> 20);
    // The 24 MiB request was charged; never more than the budget plus what connections may
    // hold without a reservation.
    assert!(peak >= 24 * batch.len() as u64, "peak {peak}");
    assert!(
        peak <= BUDGET_BYTES + STALLED as u64 * 2 * CHUNK_BYTES,
        "peak {peak}"
    );
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
