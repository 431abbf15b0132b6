//! TCP transport between ensemble members: one connection per pair of servers.
//!
//! The server with the larger myid dials (with a handshake carrying both ids); the smaller
//! one accepts, which keeps exactly one connection per pair without a tie-break protocol.
//! Each connection has a reader thread (frames in, validated, handed to the node as events)
//! and a writer thread (a bounded queue of encoded frames out, written in batches). A
//! dialer reconnects with exponential backoff (50 ms up to 1 s). Every connection has an id;
//! the node ignores traffic from a connection it has replaced, which gives the core the
//! FIFO-or-disconnect channel it assumes.
//!
//! With a quorum secret configured, both sides of every connection prove they know it right
//! after the handshake ([`super::peer_auth`]); a peer that cannot is closed before ZAB sees it.
//!
//! Std threads, not glommio: a ZAB ensemble has a handful of peer connections carrying
//! batched messages, the log's fdatasync blocks anyway, and blocking sockets keep this
//! shell small and independent of whichever runtime the client-protocol layer uses.

use std::io::{BufWriter, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rkyv::util::AlignedVec;
use tuning::progress::{Progress, PROGRESS_INTERVAL};

use super::frame::{read_frame_with_progress, read_handshake, write_handshake};
use super::message::Message;
use super::peer_auth::{prove_as_acceptor, prove_as_dialer, QuorumSecret};
use super::zxid::ServerId;

/// What the transport reports to the node.
#[derive(Debug)]
pub enum NetEvent {
    /// A new connection with `peer`; it replaces any earlier one.
    Connected {
        /// The other server.
        peer: ServerId,
        /// Connection id.
        conn: u64,
        /// Where to send frames.
        link: Link,
    },
    /// The connection ended (closed, failed, or sent a bad frame).
    Closed {
        /// The other server.
        peer: ServerId,
        /// Connection id.
        conn: u64,
        /// Why.
        reason: String,
    },
    /// A validated message.
    Inbound {
        /// The sender.
        peer: ServerId,
        /// Connection id.
        conn: u64,
        /// The message.
        msg: Message,
    },
}

/// The sending half of a connection.
#[derive(Debug)]
pub struct Link {
    tx: SyncSender<Vec<u8>>,
    stream: TcpStream,
}

impl Link {
    /// Queues a frame; false when the queue is full or the connection is gone (the caller
    /// then closes the link: a dropped message must look like a broken connection).
    pub fn send(&self, frame: Vec<u8>) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Closes the connection in both directions.
    pub fn close(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Where the transport delivers events; returns false once the node is gone.
pub type EventSink = Arc<dyn Fn(NetEvent) -> bool + Send + Sync>;

/// Transport limits.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This server.
    pub my_id: ServerId,
    /// Every other server's peer address.
    pub peers: Vec<(ServerId, SocketAddr)>,
    /// Largest frame accepted.
    pub max_frame_bytes: usize,
    /// Frames queued per connection before the connection is declared broken.
    pub send_queue_frames: usize,
    /// The ensemble's shared secret: peers must prove it ([`super::peer_auth`]). None: peers
    /// are not authenticated.
    pub quorum_secret: Option<QuorumSecret>,
}

/// The running transport threads (acceptor and dialers).
pub struct Transport {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Handshakes in progress at once; more connections are closed at once (an unauthenticated
/// flood must not create unbounded threads).
const HANDSHAKES_MAX: usize = 32;

impl Transport {
    /// Starts accepting on `listener` and dialing every peer with a smaller myid.
    pub fn start(
        cfg: TransportConfig,
        listener: TcpListener,
        sink: EventSink,
    ) -> std::io::Result<Transport> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        listener.set_nonblocking(true)?;
        {
            let (stop, sink, cfg) = (stop.clone(), sink.clone(), cfg.clone());
            threads.push(
                thread::Builder::new()
                    .name(format!("zab-accept-{}", cfg.my_id))
                    .spawn(move || accept_loop(listener, cfg, stop, sink))?,
            );
        }
        for &(peer, addr) in &cfg.peers {
            if peer >= cfg.my_id {
                continue;
            }
            let (stop, sink, cfg) = (stop.clone(), sink.clone(), cfg.clone());
            threads.push(
                thread::Builder::new()
                    .name(format!("zab-dial-{}-{}", cfg.my_id, peer))
                    .spawn(move || dial_loop(peer, addr, cfg, stop, sink))?,
            );
        }
        Ok(Transport { stop, threads })
    }

    /// Stops accepting and dialing and waits for those threads. Connections end when the
    /// node closes its links.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn sleep_unless_stopped(stop: &AtomicBool, total: Duration) {
    let step = Duration::from_millis(10);
    let mut slept = Duration::ZERO;
    while slept < total && !stop.load(Ordering::SeqCst) {
        thread::sleep(step);
        slept += step;
    }
}

fn accept_loop(
    listener: TcpListener,
    cfg: TransportConfig,
    stop: Arc<AtomicBool>,
    sink: EventSink,
) {
    let pending = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, addr)) => {
                if pending.fetch_add(1, Ordering::SeqCst) >= HANDSHAKES_MAX {
                    pending.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!(%addr, "too many peer handshakes in progress; closing");
                    let _ = stream.shutdown(Shutdown::Both);
                    continue;
                }
                let (cfg2, sink2, pending2) = (cfg.clone(), sink.clone(), pending.clone());
                // The handshake may stall; do it off the accept thread.
                let spawned =
                    thread::Builder::new()
                        .name("zab-handshake".into())
                        .spawn(move || {
                            if let Err(e) = accept_one(stream, &cfg2, sink2, &pending2) {
                                tracing::warn!(%addr, error = %e, "rejected a peer connection");
                            }
                        });
                if spawned.is_err() {
                    pending.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn accept_one(
    stream: TcpStream,
    cfg: &TransportConfig,
    sink: EventSink,
    pending: &AtomicUsize,
) -> Result<(), String> {
    let shaken = handshake(&stream, cfg);
    pending.fetch_sub(1, Ordering::SeqCst);
    let peer = match shaken {
        Ok(peer) => peer,
        Err(e) => {
            let _ = stream.shutdown(Shutdown::Both);
            return Err(e);
        }
    };
    run_connection(peer, stream, cfg, &sink);
    Ok(())
}

fn handshake(mut stream: &TcpStream, cfg: &TransportConfig) -> Result<ServerId, String> {
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let peer = read_handshake(&mut stream, cfg.my_id).map_err(|e| e.to_string())?;
    if peer <= cfg.my_id || !cfg.peers.iter().any(|&(id, _)| id == peer) {
        return Err(format!("server {peer} may not dial server {}", cfg.my_id));
    }
    if let Some(secret) = &cfg.quorum_secret {
        prove_as_acceptor(&mut stream, secret, peer, cfg.my_id)?;
    }
    stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    Ok(peer)
}

fn dial_loop(
    peer: ServerId,
    addr: SocketAddr,
    cfg: TransportConfig,
    stop: Arc<AtomicBool>,
    sink: EventSink,
) {
    let mut backoff = Duration::from_millis(50);
    while !stop.load(Ordering::SeqCst) {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(mut stream) => {
                if write_handshake(&mut stream, cfg.my_id, peer).is_ok()
                    && dialer_proves(&mut stream, &cfg, peer)
                {
                    backoff = Duration::from_millis(50);
                    if let Some(reader) = run_connection(peer, stream, &cfg, &sink) {
                        let _ = reader.join();
                    }
                }
                sleep_unless_stopped(&stop, Duration::from_millis(50));
            }
            Err(_) => {
                sleep_unless_stopped(&stop, backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// With a quorum secret: the dialer's side of [`super::peer_auth`], bounded in time; a
/// failure is logged (a misconfigured secret shows up here on the dialing server).
fn dialer_proves(stream: &mut TcpStream, cfg: &TransportConfig, peer: ServerId) -> bool {
    let Some(secret) = &cfg.quorum_secret else {
        return true;
    };
    let proved = stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())
        .and_then(|()| prove_as_dialer(stream, secret, cfg.my_id, peer))
        .and_then(|()| stream.set_read_timeout(None).map_err(|e| e.to_string()));
    match proved {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(peer, error = %e, "quorum authentication failed");
            let _ = stream.shutdown(Shutdown::Both);
            false
        }
    }
}

/// Registers a connection with the node and starts its reader and writer threads; returns
/// the reader's handle (it ends when the connection does).
fn run_connection(
    peer: ServerId,
    stream: TcpStream,
    cfg: &TransportConfig,
    sink: &EventSink,
) -> Option<JoinHandle<()>> {
    let _ = stream.set_nodelay(true);
    let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(cfg.send_queue_frames.max(1));
    let (Ok(for_link), Ok(for_writer)) = (stream.try_clone(), stream.try_clone()) else {
        let _ = stream.shutdown(Shutdown::Both);
        return None;
    };
    let link = Link {
        tx,
        stream: for_link,
    };
    if !sink(NetEvent::Connected { peer, conn, link }) {
        let _ = stream.shutdown(Shutdown::Both);
        return None;
    }
    tracing::debug!(peer, conn, "peer connected");
    let _ = thread::Builder::new()
        .name(format!("zab-write-{peer}"))
        .spawn(move || write_loop(peer, for_writer, rx));
    let max = cfg.max_frame_bytes;
    let sink = sink.clone();
    thread::Builder::new()
        .name(format!("zab-read-{peer}"))
        .spawn(move || read_loop(peer, conn, stream, max, sink))
        .ok()
}

/// Frames at least this large (in practice SNAPs: proposal batches stay under 1 MiB) are
/// written and read in pieces with a progress line per second.
pub const TRANSFER_LOGGED_BYTES: usize = 4 << 20;
/// The piece written at once from a large frame.
const WRITE_PIECE_BYTES: usize = 1 << 20;

fn write_loop(peer: ServerId, stream: TcpStream, rx: Receiver<Vec<u8>>) {
    let mut w = BufWriter::with_capacity(64 * 1024, &stream);
    while let Ok(frame) = rx.recv() {
        let mut ok = write_frame(peer, &mut w, &frame);
        // Batch whatever else is queued into the same flush.
        while ok {
            match rx.try_recv() {
                Ok(more) => ok = write_frame(peer, &mut w, &more),
                Err(_) => break,
            }
        }
        if !ok || w.flush().is_err() {
            break;
        }
    }
    // The node dropped the link or the socket failed: end the connection either way.
    let _ = stream.shutdown(Shutdown::Both);
}

/// Writes one queued frame (a large one with its progress logged); false on a failure.
fn write_frame(peer: ServerId, w: &mut impl Write, frame: &[u8]) -> bool {
    if frame.len() >= TRANSFER_LOGGED_BYTES {
        write_logged(peer, w, frame)
    } else {
        w.write_all(frame).is_ok()
    }
}

/// The progress of a transfer of `total` bytes with `peer` (`direction`: "sending to",
/// "receiving from"), and the span its lines are logged in, which carries the `peer` field.
fn transfer_progress(
    peer: ServerId,
    direction: &str,
    total: usize,
    now: Instant,
) -> (Progress, tracing::Span) {
    let what = format!("{direction} server {peer}");
    let progress = Progress::started_at(what, "bytes", total as u64, PROGRESS_INTERVAL, now);
    (progress, tracing::info_span!("zab_transfer", peer))
}

/// Writes a large frame in pieces, logging progress once per second.
fn write_logged(peer: ServerId, w: &mut impl Write, frame: &[u8]) -> bool {
    let (mut progress, span) = transfer_progress(peer, "sending to", frame.len(), Instant::now());
    let mut done = 0;
    for piece in frame.chunks(WRITE_PIECE_BYTES) {
        if w.write_all(piece).is_err() {
            return false;
        }
        done += piece.len();
        if let Some(line) = progress.advance_to(done as u64, Instant::now()) {
            span.in_scope(|| line.log());
        }
    }
    let elapsed = progress.elapsed();
    tracing::info!(
        peer,
        total = frame.len(),
        unit = "bytes",
        elapsed_ms = elapsed.as_millis() as u64,
        "sent {} bytes to server {peer} in {:.1} s",
        frame.len(),
        elapsed.as_secs_f64()
    );
    true
}

/// The progress callback of one frame read from `peer`: a line per second for a large one.
fn receive_logger(peer: ServerId) -> impl FnMut(usize, usize) {
    let mut progress: Option<(Progress, tracing::Span)> = None;
    move |received, total| {
        if total < TRANSFER_LOGGED_BYTES {
            return;
        }
        let now = Instant::now();
        let (p, span) =
            progress.get_or_insert_with(|| transfer_progress(peer, "receiving from", total, now));
        if let Some(line) = p.advance_to(received as u64, now) {
            span.in_scope(|| line.log());
        }
    }
}

/// A read buffer grown past this (by a SNAP frame, as large as a whole snapshot) is let go
/// after its message, instead of staying allocated for the life of the connection.
const READ_BUF_KEPT_BYTES: usize = 8 << 20;

fn read_loop(
    peer: ServerId,
    conn: u64,
    stream: TcpStream,
    max_frame_bytes: usize,
    sink: EventSink,
) {
    let mut r = std::io::BufReader::with_capacity(64 * 1024, &stream);
    let mut buf: AlignedVec<16> = AlignedVec::new();
    let reason = loop {
        match read_frame_with_progress(&mut r, &mut buf, max_frame_bytes, receive_logger(peer)) {
            Ok(msg) => {
                if buf.capacity() > READ_BUF_KEPT_BYTES {
                    buf = AlignedVec::new();
                }
                if !sink(NetEvent::Inbound { peer, conn, msg }) {
                    break "node stopped".to_string();
                }
            }
            Err(e) => break e.to_string(),
        }
    };
    let _ = stream.shutdown(Shutdown::Both);
    sink(NetEvent::Closed { peer, conn, reason });
}

#[cfg(test)]
mod tests {
    //! Proves a slow 6 MiB frame, written by the peer writer's code and read by the reader's,
    //! logs progress lines (`tuning::progress`, bytes done of the total) on both sides (a
    //! writer and a reader that take 0.3 s per MiB), and the sender its completion line.
    use super::*;
    use std::io::Read;
    use tuning::logging::captured;

    /// Reads or writes at most 1 MiB per call, each taking 0.3 s.
    struct Slow<T>(T);
    impl<T: Write> Write for Slow<T> {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            thread::sleep(Duration::from_millis(300));
            self.0.write(&b[..b.len().min(1 << 20)])
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.0.flush()
        }
    }
    impl<T: Read> Read for Slow<T> {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            thread::sleep(Duration::from_millis(300));
            let n = b.len().min(1 << 20);
            self.0.read(&mut b[..n])
        }
    }

    #[test]
    fn a_slow_large_frame_logs_progress_on_both_sides() {
        let msg = Message::Sync {
            kind: super::super::message::SyncKind::Snap {
                zxid: 7,
                data: vec![5u8; 6 << 20],
            },
        };
        let frame = super::super::frame::encode_frame(&msg).unwrap();
        let mut wire = Vec::new();
        let sent = captured(|| assert!(write_frame(3, &mut Slow(&mut wire), &frame)));
        assert_eq!(wire, frame);
        assert!(sent.contains("sending to server 3: "), "{sent}");
        assert!(
            sent.contains(&format!(" of {} bytes", frame.len())),
            "{sent}"
        );
        assert!(
            sent.contains(&format!("sent {} bytes to server 3 in", frame.len())),
            "{sent}"
        );

        let mut buf: AlignedVec<16> = AlignedVec::new();
        let mut got = None;
        let received = captured(|| {
            got = Some(
                read_frame_with_progress(
                    &mut Slow(wire.as_slice()),
                    &mut buf,
                    64 << 20,
                    receive_logger(3),
                )
                .unwrap(),
            )
        });
        assert_eq!(got, Some(msg));
        assert!(received.contains("receiving from server 3: "), "{received}");
        assert!(
            received.contains(&format!(" of {} bytes", frame.len() - 4)),
            "{received}"
        );
    }
}
