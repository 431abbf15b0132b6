//! `bench coordinator`: create / setData / getData load against any ZooKeeper-protocol
//! ensemble (ours or Apache ZooKeeper), with many clients and many requests in flight per
//! client, latencies into HdrHistogram.
//!
//! Each client is a thread with its own session. Requests are pipelined up to `in_flight`
//! (ZooKeeper answers a session's requests in order), so a request's latency is its answer
//! time minus its send time; with `in_flight = 1` this is the synchronous latency a caller
//! sees. Frames are encoded and decoded with the coordinator's jute codec
//! ([`coordinator::jute`]), the one implementation of ZooKeeper's wire format in this project.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::report::{LatencyHistogram, RunCounts, Summary};

use coordinator::jute::codes::{create_mode, err, op, perms, xid};
use coordinator::jute::records::{
    Acl, ConnectRequest, ConnectResponse, CreateRequest, ReplyHeader, Request, RequestHeader,
};
use coordinator::jute::{Reader, Writer};

pub const OP_CREATE: i32 = op::CREATE;
/// exists: the failover check reads back every acknowledged create with it.
pub const OP_EXISTS: i32 = op::EXISTS;
/// ZooKeeper's NODEEXISTS.
pub const ERROR_NODE_EXISTS: i32 = err::NODE_EXISTS;
/// ZooKeeper's NONODE.
pub const ERROR_NO_NODE: i32 = err::NO_NODE;
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
        let mut body = Writer::new();
        ConnectRequest {
            protocol_version: 0,
            last_zxid_seen,
            timeout_ms: session_timeout_ms,
            session_id,
            passwd: password.to_vec(),
            read_only: Some(false),
        }
        .encode(&mut body);
        client.write_frame(&body.bytes)?;
        client.flush()?;
        let reply = ConnectResponse::decode(&client.read_frame()?)
            .map_err(|e| invalid(format!("{address}: bad ConnectResponse: {e}")))?;
        client.negotiated_timeout_ms = reply.timeout_ms;
        client.session_id = reply.session_id;
        client.password = reply.passwd;
        if client.negotiated_timeout_ms <= 0 {
            return Err(io::Error::other(SessionRefused(address.to_string())));
        }
        client
            .stream
            .set_read_timeout(Some(Duration::from_secs(15)))?;
        Ok(client)
    }

    fn write_frame(&mut self, body: &[u8]) -> io::Result<()> {
        self.send
            .extend_from_slice(&(body.len() as i32).to_be_bytes());
        self.send.extend_from_slice(body);
        Ok(())
    }

    /// Queues a request frame: header `(xid, op)` then `request`'s body.
    fn write_request(&mut self, xid: i32, op: i32, request: &Request) -> io::Result<()> {
        let mut body = Writer::new();
        RequestHeader { xid, op }.encode(&mut body);
        request.encode(&mut body);
        self.write_frame(&body.bytes)
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
        let path = path.to_string();
        let request = match op {
            op::CREATE => Request::Create {
                op,
                request: CreateRequest {
                    path,
                    data: Some(data.to_vec()),
                    acl: vec![Acl::world_anyone(perms::ALL)],
                    flags: create_mode::PERSISTENT,
                    ttl_ms: None,
                },
            },
            op::SET_DATA => Request::SetData {
                path,
                data: Some(data.to_vec()),
                version: -1,
            },
            op::GET_DATA => Request::GetData { path, watch: false },
            op::EXISTS => Request::Exists { path, watch: false },
            _ => return Err(invalid(format!("op {op} is not used by the bench"))),
        };
        self.write_request(xid, op, &request)?;
        Ok(xid)
    }

    /// Reads the next reply to a request (pings and watch events are skipped); returns its
    /// xid and error code.
    pub fn next_reply(&mut self) -> io::Result<(i32, i32)> {
        loop {
            let frame = self.read_frame()?;
            let header = ReplyHeader::decode(&mut Reader::new(&frame))
                .map_err(|e| invalid(format!("bad reply header: {e}")))?;
            self.last_zxid_seen = self.last_zxid_seen.max(header.zxid);
            if header.xid == xid::PING || header.xid == xid::NOTIFICATION {
                continue;
            }
            return Ok((header.xid, header.err));
        }
    }

    /// Sends a ping if the session has been quiet for a third of its timeout.
    fn keep_alive(&mut self) -> io::Result<()> {
        if self.last_sent.elapsed() > Duration::from_millis(self.negotiated_timeout_ms as u64 / 3) {
            self.write_request(xid::PING, op::PING, &Request::Ping)?;
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
        self.write_request(self.next_xid, op::CLOSE_SESSION, &Request::CloseSession)?;
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
                        CoordinatorOp::Set => op::SET_DATA,
                        CoordinatorOp::Get => op::GET_DATA,
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
