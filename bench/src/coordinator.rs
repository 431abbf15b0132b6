//! `bench coordinator`: create / setData / getData load against any ZooKeeper-protocol
//! ensemble (ours or Apache ZooKeeper), with many clients and many requests in flight per
//! client, latencies into HdrHistogram.
//!
//! Each client is a thread with its own session. Requests are pipelined up to `in_flight`
//! (ZooKeeper answers a session's requests in order), so a request's latency is its answer
//! time minus its send time; with `in_flight = 1` this is the synchronous latency a caller
//! sees. The jute encoding here is the minimum the load needs: connect, create, setData,
//! getData, ping, closeSession.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::report::{LatencyHistogram, RunCounts, Summary};

pub const OP_CREATE: i32 = 1;
/// exists: the failover check reads back every acknowledged create with it.
pub const OP_EXISTS: i32 = 3;
const OP_GET_DATA: i32 = 4;
const OP_SET_DATA: i32 = 5;
const OP_PING: i32 = 11;
const OP_CLOSE_SESSION: i32 = -11;
const XID_PING: i32 = -2;
const XID_WATCH_EVENT: i32 = -1;
/// ZooKeeper's NODEEXISTS.
pub const ERROR_NODE_EXISTS: i32 = -110;
/// ZooKeeper's NONODE.
pub const ERROR_NO_NODE: i32 = -101;
/// Largest reply the client reads, bytes (ZooKeeper's jute.maxbuffer default + slack).
const MAX_REPLY_BYTES: usize = (1 << 20) + 1024;

/// Which request the load sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CoordinatorOp {
    /// Creates new persistent znodes.
    Create,
    /// Overwrites existing znodes (version -1).
    Set,
    /// Reads existing znodes.
    Get,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct CoordinatorOptions {
    /// Server addresses; client i connects to servers[i % len].
    pub servers: Vec<String>,
    pub op: CoordinatorOp,
    pub clients: usize,
    pub in_flight: usize,
    pub duration: Duration,
    /// Stop each client after this many requests (for loading a fixed number of znodes).
    pub requests_per_client: Option<u64>,
    pub data_bytes: usize,
    /// Parent of the znodes used; created if missing.
    pub root: String,
    /// Znodes pre-created for `set` / `get`.
    pub keys: u64,
    pub session_timeout_ms: i32,
}

/// The server answered a ConnectRequest with a zero timeout: the session is expired or
/// unknown (a new connection, not a retry, is then needed).
#[derive(Debug)]
pub struct SessionRefused(pub String);

impl std::fmt::Display for SessionRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: session refused (expired or unknown)", self.0)
    }
}

impl std::error::Error for SessionRefused {}

/// True when `err` is a [`SessionRefused`].
pub fn is_session_refused(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|e| e.is::<SessionRefused>())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn put_i32(out: &mut Vec<u8>, value: i32) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_i64(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_buffer(out: &mut Vec<u8>, bytes: &[u8]) {
    put_i32(out, bytes.len() as i32);
    out.extend_from_slice(bytes);
}

/// One session on one server.
pub struct ZkClient {
    stream: TcpStream,
    receive: Vec<u8>,
    send: Vec<u8>,
    next_xid: i32,
    pub session_id: i64,
    /// The session's password, for resuming it on another server.
    pub password: Vec<u8>,
    pub negotiated_timeout_ms: i32,
    /// The highest zxid in any reply: a server further behind refuses to resume the session.
    pub last_zxid_seen: i64,
    last_sent: Instant,
}

impl ZkClient {
    /// Opens a session.
    pub fn connect(address: &str, session_timeout_ms: i32) -> io::Result<ZkClient> {
        Self::resume(
            address,
            session_timeout_ms,
            0,
            &[0; 16],
            0,
            Duration::from_secs(10),
        )
    }

    /// Opens a connection that resumes session `session_id` (0: a new session), as a client
    /// does after its server went away; `connect_timeout` bounds the TCP connect and the
    /// ConnectResponse wait.
    pub fn resume(
        address: &str,
        session_timeout_ms: i32,
        session_id: i64,
        password: &[u8],
        last_zxid_seen: i64,
        connect_timeout: Duration,
    ) -> io::Result<ZkClient> {
        let socket_address = address
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| invalid(format!("{address}: no address")))?;
        let stream = TcpStream::connect_timeout(&socket_address, connect_timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(connect_timeout))?;
        let mut client = ZkClient {
            stream,
            receive: Vec::with_capacity(1 << 16),
            send: Vec::with_capacity(1 << 16),
            next_xid: 1,
            session_id: 0,
            password: Vec::new(),
            negotiated_timeout_ms: 0,
            last_zxid_seen,
            last_sent: Instant::now(),
        };
        let mut body = Vec::new();
        put_i32(&mut body, 0); // protocolVersion
        put_i64(&mut body, last_zxid_seen);
        put_i32(&mut body, session_timeout_ms);
        put_i64(&mut body, session_id);
        put_buffer(&mut body, password);
        body.push(0); // readOnly = false
        client.write_frame(&body)?;
        client.flush()?;
        let reply = client.read_frame()?;
        // protocolVersion, timeOut, sessionId, passwd (length-prefixed).
        if reply.len() < 4 + 4 + 8 + 4 {
            return Err(invalid(format!("{address}: short ConnectResponse")));
        }
        client.negotiated_timeout_ms = i32::from_be_bytes(reply[4..8].try_into().expect("4"));
        client.session_id = i64::from_be_bytes(reply[8..16].try_into().expect("8"));
        let password_len = i32::from_be_bytes(reply[16..20].try_into().expect("4"));
        client.password = usize::try_from(password_len)
            .ok()
            .and_then(|n| reply.get(20..20 + n))
            .ok_or_else(|| invalid(format!("{address}: bad password in ConnectResponse")))?
            .to_vec();
        if client.negotiated_timeout_ms <= 0 {
            return Err(io::Error::other(SessionRefused(address.to_string())));
        }
        client
            .stream
            .set_read_timeout(Some(Duration::from_secs(15)))?;
        Ok(client)
    }

    fn write_frame(&mut self, body: &[u8]) -> io::Result<()> {
        put_i32(&mut self.send, body.len() as i32);
        self.send.extend_from_slice(body);
        Ok(())
    }

    /// Sends the queued requests.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.send.is_empty() {
            self.stream.write_all(&self.send)?;
            self.send.clear();
            self.last_sent = Instant::now();
        }
        Ok(())
    }

    fn read_frame(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if self.receive.len() >= 4 {
                let length = i32::from_be_bytes(self.receive[..4].try_into().expect("4"));
                if length < 0 || length as usize > MAX_REPLY_BYTES {
                    return Err(invalid(format!("bad reply length {length}")));
                }
                let total = 4 + length as usize;
                if self.receive.len() >= total {
                    let frame = self.receive[4..total].to_vec();
                    self.receive.drain(..total);
                    return Ok(frame);
                }
            }
            let mut chunk = [0u8; 64 << 10];
            let read = self.stream.read(&mut chunk)?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the session",
                ));
            }
            self.receive.extend_from_slice(&chunk[..read]);
        }
    }

    /// Queues a request; returns its xid.
    pub fn queue(&mut self, op: i32, path: &str, data: &[u8]) -> io::Result<i32> {
        let xid = self.next_xid;
        self.next_xid = self.next_xid.wrapping_add(1).max(1);
        let mut body = Vec::with_capacity(64 + path.len() + data.len());
        put_i32(&mut body, xid);
        put_i32(&mut body, op);
        put_buffer(&mut body, path.as_bytes());
        match op {
            OP_CREATE => {
                put_buffer(&mut body, data);
                put_i32(&mut body, 1); // one ACL: world:anyone, all permissions
                put_i32(&mut body, 31);
                put_buffer(&mut body, b"world");
                put_buffer(&mut body, b"anyone");
                put_i32(&mut body, 0); // persistent
            }
            OP_SET_DATA => {
                put_buffer(&mut body, data);
                put_i32(&mut body, -1);
            }
            OP_GET_DATA | OP_EXISTS => body.push(0), // no watch
            _ => return Err(invalid(format!("op {op} is not used by the bench"))),
        }
        self.write_frame(&body)?;
        Ok(xid)
    }

    /// Reads the next reply to a request (pings and watch events are skipped); returns its
    /// xid and error code.
    pub fn next_reply(&mut self) -> io::Result<(i32, i32)> {
        loop {
            let frame = self.read_frame()?;
            if frame.len() < 16 {
                return Err(invalid(format!("short reply of {} bytes", frame.len())));
            }
            let xid = i32::from_be_bytes(frame[0..4].try_into().expect("4"));
            let zxid = i64::from_be_bytes(frame[4..12].try_into().expect("8"));
            let err = i32::from_be_bytes(frame[12..16].try_into().expect("4"));
            self.last_zxid_seen = self.last_zxid_seen.max(zxid);
            if xid == XID_PING || xid == XID_WATCH_EVENT {
                continue;
            }
            return Ok((xid, err));
        }
    }

    /// Sends a ping if the session has been quiet for a third of its timeout.
    fn keep_alive(&mut self) -> io::Result<()> {
        if self.last_sent.elapsed() > Duration::from_millis(self.negotiated_timeout_ms as u64 / 3) {
            let mut body = Vec::new();
            put_i32(&mut body, XID_PING);
            put_i32(&mut body, OP_PING);
            self.write_frame(&body)?;
            self.flush()?;
        }
        Ok(())
    }

    /// Sends one request and waits for its answer; returns the error code.
    pub fn call(&mut self, op: i32, path: &str, data: &[u8]) -> io::Result<i32> {
        let xid = self.queue(op, path, data)?;
        self.flush()?;
        let (reply_xid, err) = self.next_reply()?;
        if reply_xid != xid {
            return Err(invalid(format!("reply xid {reply_xid} for request {xid}")));
        }
        Ok(err)
    }

    /// Closes the session (its ephemerals go).
    pub fn close(mut self) -> io::Result<()> {
        let mut body = Vec::new();
        put_i32(&mut body, self.next_xid);
        put_i32(&mut body, OP_CLOSE_SESSION);
        self.write_frame(&body)?;
        self.flush()?;
        let _ = self.next_reply();
        Ok(())
    }
}

/// Creates `root` and, for set/get, the keys; ignores NODEEXISTS.
fn prepare(options: &CoordinatorOptions) -> io::Result<()> {
    let mut client = ZkClient::connect(&options.servers[0], options.session_timeout_ms)?;
    let check = |err: i32, path: &str| {
        if err != 0 && err != ERROR_NODE_EXISTS {
            Err(invalid(format!("create {path}: ZooKeeper error {err}")))
        } else {
            Ok(())
        }
    };
    check(client.call(OP_CREATE, &options.root, b"")?, &options.root)?;
    if options.op != CoordinatorOp::Create {
        let data = vec![b'x'; options.data_bytes];
        let mut xids = 0;
        for key in 0..options.keys {
            client.queue(OP_CREATE, &format!("{}/k{key}", options.root), &data)?;
            xids += 1;
            if xids == 256 || key + 1 == options.keys {
                client.flush()?;
                for _ in 0..xids {
                    let (_, err) = client.next_reply()?;
                    check(err, "key")?;
                }
                xids = 0;
            }
        }
    }
    client.close()
}

/// The result of a run.
pub struct CoordinatorResult {
    pub summary: Summary,
    pub histogram: LatencyHistogram,
}

/// Runs the load.
pub fn run(options: &CoordinatorOptions) -> Result<CoordinatorResult, String> {
    if options.servers.is_empty() || options.clients == 0 || options.in_flight == 0 {
        return Err("need servers, clients >= 1 and in_flight >= 1".into());
    }
    prepare(options).map_err(|err| format!("prepare: {err}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let histogram = Arc::new(Mutex::new(LatencyHistogram::default()));
    let started = Instant::now();
    let mut threads = Vec::new();
    for client_index in 0..options.clients {
        let options = options.clone();
        let (stop, errors, histogram) = (stop.clone(), errors.clone(), histogram.clone());
        threads.push(std::thread::spawn(move || -> io::Result<u64> {
            let address = &options.servers[client_index % options.servers.len()];
            let mut client = ZkClient::connect(address, options.session_timeout_ms)?;
            let data = vec![b'v'; options.data_bytes];
            let mut local = LatencyHistogram::default();
            let mut sent_at = std::collections::VecDeque::with_capacity(options.in_flight);
            let (mut sent, mut done) = (0u64, 0u64);
            let limit = options.requests_per_client.unwrap_or(u64::MAX);
            let deadline = started + options.duration;
            loop {
                let sending =
                    sent < limit && Instant::now() < deadline && !stop.load(Ordering::Relaxed);
                while sending && sent_at.len() < options.in_flight && sent < limit {
                    let path = match options.op {
                        CoordinatorOp::Create => format!("{}/c{client_index}-{sent}", options.root),
                        _ => format!(
                            "{}/k{}",
                            options.root,
                            (sent * 7919 + client_index as u64) % options.keys.max(1)
                        ),
                    };
                    let op = match options.op {
                        CoordinatorOp::Create => OP_CREATE,
                        CoordinatorOp::Set => OP_SET_DATA,
                        CoordinatorOp::Get => OP_GET_DATA,
                    };
                    client.queue(op, &path, &data)?;
                    sent_at.push_back(Instant::now());
                    sent += 1;
                }
                client.flush()?;
                let Some(at) = sent_at.pop_front() else { break };
                let (_, err) = client.next_reply()?;
                local.record(at.elapsed());
                done += 1;
                if err != 0 {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                if done % 1024 == 0 {
                    if let Ok(mut shared) = histogram.lock() {
                        shared.add(&local);
                    }
                    local.reset();
                    client.keep_alive()?;
                }
            }
            if let Ok(mut shared) = histogram.lock() {
                shared.add(&local);
            }
            client.close()?;
            Ok(done)
        }));
    }
    let mut total = 0;
    let mut failure = None;
    for thread in threads {
        match thread.join() {
            Ok(Ok(done)) => total += done,
            Ok(Err(err)) => failure = Some(err.to_string()),
            Err(_) => failure = Some("a client thread panicked".into()),
        }
    }
    if let Some(failure) = failure {
        return Err(failure);
    }
    let elapsed = started.elapsed();
    let histogram = histogram.lock().map_err(|_| "poisoned")?.clone();
    let workload = match options.op {
        CoordinatorOp::Create => "coordinator:create",
        CoordinatorOp::Set => "coordinator:set",
        CoordinatorOp::Get => "coordinator:get",
    };
    Ok(CoordinatorResult {
        summary: Summary::new(
            RunCounts {
                workload,
                msgs: total,
                bytes: total * options.data_bytes as u64,
                elapsed,
                errors: errors.load(Ordering::Relaxed),
                schedule_kept: true,
                target_msgs_per_s: None,
            },
            &histogram,
        ),
        histogram,
    })
}

/// Resident set size of process `pid`, bytes (from /proc).
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .ok_or_else(|| invalid(format!("/proc/{pid}/status has no VmRSS")))
}
