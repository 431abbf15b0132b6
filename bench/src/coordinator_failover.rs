//! `bench coordinator-failover`: how long an ensemble (ours or Apache ZooKeeper) takes to
//! accept writes again after its leader is killed with SIGKILL, and whether it kept every
//! write it acknowledged.
//!
//! One client, connected to a follower, creates znodes synchronously. A second thread sends
//! SIGKILL to the leader's process (found with the `srvr` four-letter word) after a warm-up.
//! The client then does what a ZooKeeper client library does: on a broken connection it
//! resumes its session (id, password, last zxid seen) on the next reachable server and goes
//! on writing. The figure is the time from the kill to the answer of the first create that
//! was *sent after* the kill, so it includes noticing the leader's death, the election, the
//! new leader's synchronization and the client's reconnect. Afterwards every acknowledged
//! path is read back with `exists`.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::coordinator::{
    is_session_refused, ZkClient, ERROR_NODE_EXISTS, ERROR_NO_NODE, OP_CREATE, OP_EXISTS,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct FailoverOptions {
    /// Client addresses of every server of the ensemble.
    pub servers: Vec<String>,
    /// The process id of each server, in the order of `servers`.
    pub pids: Vec<u32>,
    /// Writing time before the kill.
    pub kill_after: Duration,
    /// Writing time after the first write that succeeded after the kill.
    pub write_after: Duration,
    /// Give up when no write succeeded this long after the kill.
    pub give_up_after: Duration,
    pub session_timeout_ms: i32,
    pub data_bytes: usize,
    /// Parent znode of the writes; created if missing.
    pub root: String,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverResult {
    /// Client address of the server that was killed.
    pub killed_leader: String,
    /// Client address of the server the writer started on.
    pub writer_server: String,
    /// From SIGKILL to the answer of the first create sent after it, milliseconds.
    pub kill_to_first_write_ms: f64,
    pub acknowledged_before_kill: u64,
    pub acknowledged_after_kill: u64,
    /// Creates whose connection broke before their answer: committed or not, either is allowed.
    pub in_doubt: u64,
    /// Creates answered with an error code (a live ensemble answers none).
    pub refused: u64,
    /// Acknowledged creates that `exists` no longer finds afterwards (must be 0).
    pub lost: u64,
    /// Session resumptions the writer needed.
    pub reconnects: u64,
    /// Server the writer was on at the end, and whether the session survived (it must).
    pub final_server: String,
}

impl FailoverResult {
    /// A short text report.
    pub fn render(&self) -> String {
        format!(
            "coordinator failover: leader {} killed; first write after {:.0} ms\n  \
             acknowledged {} before / {} after the kill, {} in doubt, {} refused, {} lost; \
             {} reconnects (writer {} -> {})",
            self.killed_leader,
            self.kill_to_first_write_ms,
            self.acknowledged_before_kill,
            self.acknowledged_after_kill,
            self.in_doubt,
            self.refused,
            self.lost,
            self.reconnects,
            self.writer_server,
            self.final_server,
        )
    }
}

/// Sends a four-letter word and returns the whole answer.
pub fn four_letter(address: &str, word: &str) -> io::Result<String> {
    let socket_address = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other(format!("{address}: no address")))?;
    let mut stream = TcpStream::connect_timeout(&socket_address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(word.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// The `Mode:` line of `srvr` (leader, follower, standalone), if the server answers it.
pub fn server_mode(address: &str) -> Option<String> {
    let answer = four_letter(address, "srvr").ok()?;
    answer
        .lines()
        .find_map(|line| line.strip_prefix("Mode: "))
        .map(|mode| mode.trim().to_string())
}

/// The writer's connection, resumed on another server when it breaks.
struct Writer<'a> {
    options: &'a FailoverOptions,
    client: ZkClient,
    server: usize,
    reconnects: u64,
}

impl Writer<'_> {
    /// Resumes the session on the servers after the current one, round robin, until one
    /// accepts it or `deadline` passes. A server that answers with a zero timeout declared
    /// the session expired: that is a failure of the run, not something to retry.
    fn reconnect(&mut self, deadline: Instant) -> Result<(), String> {
        let n = self.options.servers.len();
        let mut attempt = 0usize;
        loop {
            let index = (self.server + 1 + attempt) % n;
            let address = &self.options.servers[index];
            match ZkClient::resume(
                address,
                self.options.session_timeout_ms,
                self.client.session_id,
                &self.client.password,
                self.client.last_zxid_seen,
                Duration::from_millis(500),
            ) {
                Ok(client) => {
                    self.client = client;
                    self.server = index;
                    self.reconnects += 1;
                    return Ok(());
                }
                Err(err) if is_session_refused(&err) => return Err(err.to_string()),
                Err(_) if Instant::now() >= deadline => {
                    return Err("no server accepted the session before the deadline".into());
                }
                Err(_) => {
                    attempt += 1;
                    if attempt % n == 0 {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
    }
}

/// Runs the measurement. The caller owns the processes; the leader is left dead.
pub fn run(options: &FailoverOptions) -> Result<FailoverResult, String> {
    if options.servers.len() < 3 || options.pids.len() != options.servers.len() {
        return Err("need at least 3 servers and one --server-pid per --connect address".into());
    }
    let modes: Vec<Option<String>> = options.servers.iter().map(|a| server_mode(a)).collect();
    let leader = modes
        .iter()
        .position(|m| m.as_deref() == Some("leader"))
        .ok_or_else(|| format!("no server reports Mode: leader ({modes:?})"))?;
    let follower = modes
        .iter()
        .position(|m| m.as_deref() == Some("follower"))
        .ok_or_else(|| format!("no server reports Mode: follower ({modes:?})"))?;
    let client = ZkClient::connect(&options.servers[follower], options.session_timeout_ms)
        .map_err(|e| format!("{}: {e}", options.servers[follower]))?;
    let mut writer = Writer {
        options,
        client,
        server: follower,
        reconnects: 0,
    };
    match writer.client.call(OP_CREATE, &options.root, b"") {
        Ok(0) | Ok(ERROR_NODE_EXISTS) => {}
        Ok(code) => return Err(format!("create {}: ZooKeeper error {code}", options.root)),
        Err(e) => return Err(format!("create {}: {e}", options.root)),
    }

    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let killer = {
        let killed_at = killed_at.clone();
        let pid = options.pids[leader];
        let wait = options.kill_after;
        std::thread::spawn(move || -> io::Result<()> {
            std::thread::sleep(wait);
            // SAFETY: kill(2) with a pid the caller gave us; no memory is shared.
            let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let at = Instant::now();
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Ok(mut slot) = killed_at.lock() {
                *slot = Some(at);
            }
            Ok(())
        })
    };

    let data = vec![b'f'; options.data_bytes];
    let mut acknowledged = Vec::new();
    let (mut before, mut after, mut in_doubt, mut refused) = (0u64, 0u64, 0u64, 0u64);
    let mut first_after: Option<Duration> = None;
    let mut next = 0u64;
    let run_deadline = Instant::now() + options.kill_after + options.give_up_after;
    loop {
        let kill = killed_at.lock().ok().and_then(|slot| *slot);
        let now = Instant::now();
        match (kill, first_after) {
            (_, Some(first)) if now >= kill.unwrap_or(now) + first + options.write_after => break,
            (None, None) if now >= run_deadline => break,
            (Some(at), None) if now >= at + options.give_up_after => break,
            _ => {}
        }
        let path = format!("{}/f{next:010}", options.root);
        next += 1;
        let sent_at = Instant::now();
        let answer = writer
            .client
            .queue(OP_CREATE, &path, &data)
            .and_then(|_| writer.client.flush())
            .and_then(|_| writer.client.next_reply());
        match answer {
            Ok((_, 0)) => {
                let answered_at = Instant::now();
                acknowledged.push(path);
                match kill {
                    Some(at) if sent_at >= at => {
                        after += 1;
                        first_after.get_or_insert(answered_at - at);
                    }
                    _ => before += 1,
                }
            }
            Ok((_, _code)) => refused += 1,
            Err(_) => {
                in_doubt += 1;
                let deadline = Instant::now() + options.give_up_after;
                writer.reconnect(deadline)?;
            }
        }
    }
    killer
        .join()
        .map_err(|_| "the killer thread panicked".to_string())?
        .map_err(|e| format!("kill -9 {}: {e}", options.pids[leader]))?;
    if killed_at.lock().ok().and_then(|slot| *slot).is_none() {
        return Err("the leader was not killed".into());
    }
    let first = first_after.ok_or_else(|| {
        format!(
            "no write succeeded within {:?} of the kill ({} reconnects)",
            options.give_up_after, writer.reconnects
        )
    })?;

    // Read back every acknowledged create, pipelined.
    let mut lost = 0u64;
    for chunk in acknowledged.chunks(256) {
        for path in chunk {
            writer
                .client
                .queue(OP_EXISTS, path, b"")
                .map_err(|e| format!("exists: {e}"))?;
        }
        writer.client.flush().map_err(|e| format!("exists: {e}"))?;
        for _ in chunk {
            match writer.client.next_reply() {
                Ok((_, 0)) => {}
                Ok((_, ERROR_NO_NODE)) => lost += 1,
                Ok((_, code)) => return Err(format!("exists: ZooKeeper error {code}")),
                Err(e) => return Err(format!("exists: {e}")),
            }
        }
    }
    let final_server = options.servers[writer.server].clone();
    let _ = writer.client.close();
    Ok(FailoverResult {
        killed_leader: options.servers[leader].clone(),
        writer_server: options.servers[follower].clone(),
        kill_to_first_write_ms: first.as_secs_f64() * 1000.0,
        acknowledged_before_kill: before,
        acknowledged_after_kill: after,
        in_doubt,
        refused,
        lost,
        reconnects: writer.reconnects,
        final_server,
    })
}
