//! The IO shell of a server (standalone, or one member of a ZAB ensemble): sockets,
//! threads and clocks around the sans-IO [`RequestProcessor`]; ZAB ([`crate::ensemble`])
//! keeps the files.
//!
//! Why plain threads and not glommio here: the coordinator is a control-plane service with
//! at most a few thousand connections and small requests; its cost is dominated by the
//! fdatasync of the transaction log, which group commit amortises. Blocking std IO keeps
//! this shell small and obviously correct, and leaves the one state machine on one thread:
//!
//! * an acceptor thread enforces `maxClientCnxns` per IP and the profile's total connection
//!   limit;
//! * per connection, a reader thread cuts frames (length checked against `jute.maxbuffer`)
//!   and a writer thread coalesces outgoing frames into one `write` per burst and reports
//!   the bytes it wrote to the core;
//! * the core thread takes connection events (a bounded channel: a busy core slows readers
//!   down, which is TCP back-pressure for clients), runs session expiry on a timer and
//!   carries out the [`RequestProcessor`]'s effects;
//! * the ZAB node ([`crate::ensemble`]) keeps the log and snapshots, recovers them at start
//!   and applies commits to the processor on its driver thread, so the processor sits
//!   behind a mutex shared by both threads. A standalone server is an ensemble of one (no
//!   peer port): the same files, recovery and write path. A standalone data dir of the
//!   earlier format (`version-2/`) is converted first ([`crate::standalone_import`]).
//!
//! With `secureClientPort` a second acceptor serves the same core over TLS ([`crate::tls`]):
//! its reader and writer threads run the same frame loops through the TLS stream halves,
//! and a verified client certificate gives the session the identity `x509:<subject>`. The
//! plain port's loops are the same code instantiated for a bare `TcpStream`.
//!
//! A client that does not read its answers holds a bounded number of bytes: the processor
//! counts what it hands out against what the writer reports written, and past zoo.cfg's
//! `connectionQueueBytesMax` it holds that client's reads back and asks this shell to stop
//! reading its socket ([`Effect::StopReading`]): the reader thread waits at its
//! [`ReadGate`] and the client feels TCP back-pressure, as with ZooKeeper's throttled
//! connections. A writer that makes no progress for `maxSessionTimeout` (the client read
//! nothing for longer than any session may stay silent) closes the connection, and so does
//! a queue of more than `connection_queue_frames` frames (many small ones, e.g. watch
//! events), both with a logged reason.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{select, Receiver, Sender, TrySendError};

use crate::config::ZooConfig;
use crate::data_tree::DataTree;
use crate::ensemble::{lock, Ensemble, SharedProcessor};
use crate::four_letter;
use crate::metrics::{MetricsBackend, MetricsEndpoint, MetricsSource};
use crate::request_processor::{Effect, Now, ProcessorConfig, RequestProcessor};
use crate::session;
use crate::standalone_import::{self, ImportError};
use crate::tls::{TlsAcceptor, TlsError, TlsReader, TlsWriter};
use crate::watch::ConnId;

/// What the shell needs besides zoo.cfg (from the tuning profile).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub zoo: ZooConfig,
    /// Total client connections; more are accepted and closed at once.
    pub max_connections: u32,
    /// fdatasync the log before acknowledging (zoo.cfg `forceSync` and the profile's flush
    /// policy must both allow skipping it; only a standalone server skips it, ensemble
    /// members always sync).
    pub sync_log: bool,
    /// Frames queued towards one connection before it is considered stuck and closed.
    pub connection_queue_frames: usize,
}

impl ServerOptions {
    pub fn new(zoo: ZooConfig) -> Self {
        ServerOptions {
            sync_log: zoo.force_sync,
            zoo,
            max_connections: 10_000,
            connection_queue_frames: 16_384,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("standalone data dir of the earlier format: {0}")]
    Import(#[from] ImportError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// ZAB could not start (recovery of the log and snapshots, the peer port, myid).
    #[error("{0}")]
    Zab(String),
    #[error("secure client port: {0}")]
    Tls(#[from] TlsError),
    #[error("Prometheus endpoint: {0}")]
    Metrics(#[from] crate::metrics::EndpointError),
}

enum CoreEvent {
    Open {
        conn: ConnId,
        remote: SocketAddr,
        out: Sender<Outbound>,
        stream: TcpStream,
        gate: Arc<ReadGate>,
    },
    Connect {
        conn: ConnId,
        body: Vec<u8>,
    },
    Frame {
        conn: ConnId,
        body: Vec<u8>,
    },
    FourLetter {
        conn: ConnId,
        word: &'static str,
    },
    /// The TLS handshake verified a client certificate with this subject (sent before the
    /// connection's first frame).
    Certificate {
        conn: ConnId,
        subject: String,
    },
    Closed {
        conn: ConnId,
    },
    Shutdown,
}

enum Outbound {
    /// A frame the processor handed out: its bytes are reported back once written.
    Frame(Vec<u8>),
    /// Bytes the processor does not count (a four-letter word's answer).
    Text(Vec<u8>),
    Close,
}

/// Bytes written to one connection's socket, reported by its writer to the core.
type Written = (ConnId, usize);

/// Where a connection's reader waits while the processor holds too many unwritten bytes
/// for it; shared by the reader, the writer and the core.
#[derive(Default)]
struct ReadGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    stopped: bool,
    closed: bool,
}

impl ReadGate {
    fn set(&self, change: impl FnOnce(&mut GateState)) {
        change(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_all();
    }

    fn stop(&self) {
        self.set(|s| s.stopped = true);
    }

    fn resume(&self) {
        self.set(|s| s.stopped = false);
    }

    /// The connection is going away: a waiting reader returns.
    fn close(&self) {
        self.set(|s| s.closed = true);
    }

    /// Blocks while reading is stopped; false once the connection is closing.
    fn wait_open(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while state.stopped && !state.closed {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        !state.closed
    }
}

/// A running server; dropping it does not stop it, call [`ServerHandle::shutdown`].
pub struct ServerHandle {
    addr: SocketAddr,
    secure_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    events: Sender<CoreEvent>,
    core: Option<JoinHandle<()>>,
    acceptors: Vec<JoinHandle<()>>,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The secure (TLS) client port's address, when zoo.cfg sets `secureClientPort`.
    pub fn secure_addr(&self) -> Option<SocketAddr> {
        self.secure_addr
    }

    /// The Prometheus endpoint's address, when zoo.cfg names the Prometheus metrics provider.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops accepting, closes every connection, flushes the log and joins the threads.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.events.send(CoreEvent::Shutdown);
        // Wake the acceptors blocked in accept().
        for addr in std::iter::once(self.addr).chain(self.secure_addr) {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(200));
        }
        for t in self.acceptors.drain(..) {
            let _ = t.join();
        }
        if let Some(t) = self.core.take() {
            let _ = t.join();
        }
    }

    /// Blocks until the core thread ends (it ends only on shutdown or when ZAB stopped on a
    /// storage failure).
    pub fn wait(mut self) {
        if let Some(t) = self.core.take() {
            let _ = t.join();
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The client ports: plain, and TLS with its acceptor when `secureClientPort` is set.
struct Listeners {
    plain: TcpListener,
    secure: Option<(TcpListener, Arc<TlsAcceptor>)>,
}

fn bind(zoo: &ZooConfig) -> Result<Listeners, StartError> {
    let plain = TcpListener::bind((zoo.client_port_address, zoo.client_port)).map_err(io_err(
        format!("bind {}:{}", zoo.client_port_address, zoo.client_port),
    ))?;
    let secure = match (zoo.secure_client_port, &zoo.tls) {
        (Some(port), Some(settings)) => {
            let acceptor = Arc::new(TlsAcceptor::new(settings.clone())?);
            let listener = TcpListener::bind((zoo.secure_client_port_address, port)).map_err(
                io_err(format!(
                    "bind {}:{port} (secureClientPort)",
                    zoo.secure_client_port_address
                )),
            )?;
            Some((listener, acceptor))
        }
        _ => None,
    };
    Ok(Listeners { plain, secure })
}

/// Recovers the data dir (converting a standalone one of the earlier format), binds the
/// client port and starts serving.
pub fn start(opts: ServerOptions) -> Result<ServerHandle, StartError> {
    let zoo = opts.zoo.clone();
    std::fs::create_dir_all(&zoo.data_dir).map_err(io_err(zoo.data_dir.display().to_string()))?;
    std::fs::create_dir_all(&zoo.data_log_dir)
        .map_err(io_err(zoo.data_log_dir.display().to_string()))?;
    if zoo.is_standalone() {
        standalone_import::convert(&zoo.data_dir, &zoo.data_log_dir)?;
    }
    let listener = bind(&zoo)?;
    let started = Instant::now();
    let mut pcfg = processor_config(&zoo);
    // Writes go through ZAB (to this server itself when standalone), which also takes the
    // snapshots: the processor must not serialize the tree for nothing.
    pcfg.ensemble = true;
    pcfg.snap_count = u64::MAX;
    let now = Now {
        mono_ms: 0,
        wall_ms: wall_ms(),
    };
    let processor = Arc::new(Mutex::new(RequestProcessor::new(
        pcfg,
        DataTree::new(),
        now,
    )));
    // ZAB recovers the state (its files under `dataDir/zab` and `dataLogDir/zab`) and
    // restores it into the processor before the client port serves.
    let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
    let ensemble = Ensemble::start(&zoo, processor.clone(), started, wake_tx, opts.sync_log)
        .map_err(StartError::Zab)?;
    serve(&opts, listener, processor, ensemble, started, wake_rx)
}

fn processor_config(zoo: &ZooConfig) -> ProcessorConfig {
    let mut pcfg = ProcessorConfig::for_tick(zoo.server_id(), zoo.tick_ms);
    pcfg.min_session_timeout_ms = zoo.min_session_timeout_ms;
    pcfg.max_session_timeout_ms = zoo.max_session_timeout_ms;
    pcfg.snap_count = zoo.snap_count;
    pcfg.max_outstanding_requests = zoo.global_outstanding_limit as usize;
    pcfg.connection_queue_bytes_max =
        usize::try_from(zoo.connection_queue_bytes_max).unwrap_or(usize::MAX);
    pcfg.super_digest = zoo.super_digest.clone();
    pcfg
}

fn serve(
    opts: &ServerOptions,
    listeners: Listeners,
    processor: SharedProcessor,
    ensemble: Ensemble,
    started: Instant,
    wake_rx: Receiver<()>,
) -> Result<ServerHandle, StartError> {
    let zoo = opts.zoo.clone();
    let addr = listeners.plain.local_addr().map_err(io_err("local_addr"))?;
    let secure_addr = match &listeners.secure {
        Some((l, _)) => Some(l.local_addr().map_err(io_err("local_addr"))?),
        None => None,
    };
    let metrics = match &zoo.metrics {
        Some(settings) => {
            let source = MetricsSource {
                processor: processor.clone(),
                backend: if ensemble.state.standalone {
                    MetricsBackend::Standalone(ensemble.node())
                } else {
                    MetricsBackend::Ensemble {
                        node: ensemble.node(),
                        state: ensemble.state.clone(),
                        voters: zoo.servers.len(),
                    }
                },
                started,
                export_process_metrics: settings.export_process_metrics,
            };
            Some(MetricsEndpoint::start(settings, source)?)
        }
        None => None,
    };
    let metrics_addr = metrics.as_ref().map(MetricsEndpoint::local_addr);
    let what = if ensemble.state.standalone {
        "standalone"
    } else {
        "ensemble"
    };
    let (event_tx, event_rx) = crossbeam_channel::bounded(4096);
    // Unbounded, and always taken by the core: a writer must never wait on the core (the
    // core may be waiting for commits), and each report stands for bytes already written.
    let (written_tx, written_rx) = crossbeam_channel::unbounded::<Written>();
    let stop = Arc::new(AtomicBool::new(false));
    let core = {
        let zoo = zoo.clone();
        let connection_queue_frames = opts.connection_queue_frames;
        std::thread::Builder::new()
            .name("coordinator-core".into())
            .spawn(move || {
                Core {
                    processor,
                    ensemble,
                    conns: HashMap::new(),
                    zoo,
                    started,
                    connection_queue_frames,
                    metrics,
                }
                .run(event_rx, wake_rx, written_rx)
            })
            .map_err(io_err("spawn core thread"))?
    };
    // Said before the acceptors start: the listeners are bound already, and a client that is
    // answered (e.g. `ruok`) must find the line in the log.
    tracing::info!("serving ZooKeeper clients on {addr} ({what})");
    if let Some(secure) = secure_addr {
        tracing::info!("serving ZooKeeper clients over TLS on {secure} (secureClientPort)");
    }
    let mut acceptors = Vec::new();
    {
        // One set of limits for both ports: maxClientCnxns counts a client's connections
        // to either.
        let limits = AcceptLimits {
            per_ip_max: zoo.max_client_cnxns,
            total_max: opts.max_connections,
            max_frame_bytes: zoo.jute_max_buffer_bytes as usize + 1024,
            write_stall_max: Duration::from_millis(zoo.max_session_timeout_ms.max(1) as u64),
            per_ip: Arc::new(Mutex::new(HashMap::new())),
            total: Arc::new(AtomicUsize::new(0)),
            next_conn: Arc::new(AtomicU64::new(1)),
        };
        if let Some((listener, tls)) = listeners.secure {
            let stop = stop.clone();
            let events = event_tx.clone();
            let written = written_tx.clone();
            let limits = limits.clone();
            acceptors.push(
                std::thread::Builder::new()
                    .name("coordinator-accept-tls".into())
                    .spawn(move || accept_loop(listener, Some(tls), stop, events, written, limits))
                    .map_err(io_err("spawn acceptor thread"))?,
            );
        }
        let stop = stop.clone();
        let events = event_tx.clone();
        acceptors.push(
            std::thread::Builder::new()
                .name("coordinator-accept".into())
                .spawn(move || accept_loop(listeners.plain, None, stop, events, written_tx, limits))
                .map_err(io_err("spawn acceptor thread"))?,
        );
    }
    Ok(ServerHandle {
        addr,
        secure_addr,
        metrics_addr,
        stop,
        events: event_tx,
        core: Some(core),
        acceptors,
    })
}

#[derive(Clone)]
struct AcceptLimits {
    per_ip_max: u32,
    total_max: u32,
    max_frame_bytes: usize,
    /// A write to a client that makes no progress for this long closes the connection.
    write_stall_max: Duration,
    per_ip: Arc<Mutex<HashMap<IpAddr, u32>>>,
    total: Arc<AtomicUsize>,
    /// Connection ids, unique across both ports' acceptors.
    next_conn: Arc<AtomicU64>,
}

impl AcceptLimits {
    fn admit(&self, ip: IpAddr) -> bool {
        if self.total.load(Ordering::SeqCst) >= self.total_max as usize {
            return false;
        }
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let count = per_ip.entry(ip).or_insert(0);
        if self.per_ip_max != 0 && *count >= self.per_ip_max {
            return false;
        }
        *count += 1;
        self.total.fetch_add(1, Ordering::SeqCst);
        true
    }

    fn release(&self, ip: IpAddr) {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = per_ip.get_mut(&ip) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                per_ip.remove(&ip);
            }
        }
        self.total.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<TlsAcceptor>>,
    stop: Arc<AtomicBool>,
    events: Sender<CoreEvent>,
    written: Sender<Written>,
    limits: AcceptLimits,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let Ok(remote) = stream.peer_addr() else {
            continue;
        };
        if !limits.admit(remote.ip()) {
            tracing::warn!(
                "too many connections from {} (max {} per IP, {} total); closing",
                remote.ip(),
                limits.per_ip_max,
                limits.total_max
            );
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        let conn: ConnId = limits.next_conn.fetch_add(1, Ordering::Relaxed);
        let spawned = match &tls {
            None => spawn_connection(conn, stream, remote, &events, &written, &limits),
            Some(tls) => {
                spawn_tls_connection(conn, stream, remote, tls, &events, &written, &limits)
            }
        };
        if let Err(e) = spawned {
            tracing::warn!("connection {remote}: {e}");
            limits.release(remote.ip());
        }
    }
}

fn spawn_connection(
    conn: ConnId,
    stream: TcpStream,
    remote: SocketAddr,
    events: &Sender<CoreEvent>,
    written: &Sender<Written>,
    limits: &AcceptLimits,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let reader = stream.try_clone()?;
    let writer = stream.try_clone()?;
    writer.set_write_timeout(Some(limits.write_stall_max))?;
    start_connection(
        conn, stream, reader, writer, remote, events, written, limits,
    )
}

/// A connection to the secure port: the TLS session starts with the configuration current
/// now (files reloaded if they changed); the handshake runs on the reader thread.
fn spawn_tls_connection(
    conn: ConnId,
    stream: TcpStream,
    remote: SocketAddr,
    tls: &TlsAcceptor,
    events: &Sender<CoreEvent>,
    written: &Sender<Written>,
    limits: &AcceptLimits,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (reader, writer) = crate::tls::split(tls.config(), &stream)?;
    writer
        .tcp()
        .set_write_timeout(Some(limits.write_stall_max))?;
    start_connection(
        conn, stream, reader, writer, remote, events, written, limits,
    )
}

/// What the frame loops need of a connection's reading half.
trait ReadHalf: Read + Send + 'static {
    fn set_read_timeout(&self, timeout: Option<Duration>);
    fn shutdown(&self);
    /// A verified client certificate's subject, once known.
    fn take_peer_subject(&mut self) -> Option<String>;
}

impl ReadHalf for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) {
        let _ = TcpStream::set_read_timeout(self, timeout);
    }
    fn shutdown(&self) {
        let _ = TcpStream::shutdown(self, Shutdown::Both);
    }
    fn take_peer_subject(&mut self) -> Option<String> {
        None
    }
}

impl ReadHalf for TlsReader {
    fn set_read_timeout(&self, timeout: Option<Duration>) {
        let _ = self.tcp().set_read_timeout(timeout);
    }
    fn shutdown(&self) {
        let _ = self.tcp().shutdown(Shutdown::Both);
    }
    fn take_peer_subject(&mut self) -> Option<String> {
        TlsReader::take_peer_subject(self)
    }
}

/// What the write loop needs of a connection's writing half.
trait WriteHalf: Write + Send + 'static {
    fn close(&self);
}

impl WriteHalf for TcpStream {
    fn close(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

impl WriteHalf for TlsWriter {
    fn close(&self) {
        TlsWriter::close(self);
    }
}

#[allow(clippy::too_many_arguments)]
fn start_connection(
    conn: ConnId,
    stream: TcpStream,
    reader: impl ReadHalf,
    writer: impl WriteHalf,
    remote: SocketAddr,
    events: &Sender<CoreEvent>,
    written: &Sender<Written>,
    limits: &AcceptLimits,
) -> std::io::Result<()> {
    let (out_tx, out_rx) = crossbeam_channel::unbounded::<Outbound>();
    let gate = Arc::new(ReadGate::default());
    if events
        .send(CoreEvent::Open {
            conn,
            remote,
            out: out_tx,
            stream,
            gate: gate.clone(),
        })
        .is_err()
    {
        return Ok(());
    }
    {
        let gate = gate.clone();
        let written = written.clone();
        std::thread::Builder::new()
            .name(format!("zk-conn-{conn}-w"))
            .stack_size(128 << 10)
            .spawn(move || {
                write_loop(conn, writer, out_rx, &written);
                gate.close();
            })?;
    }
    let events = events.clone();
    let limits = limits.clone();
    std::thread::Builder::new()
        .name(format!("zk-conn-{conn}-r"))
        .stack_size(128 << 10)
        .spawn(move || {
            read_loop(conn, reader, &events, &gate, limits.max_frame_bytes);
            limits.release(remote.ip());
            let _ = events.send(CoreEvent::Closed { conn });
        })?;
    Ok(())
}

/// How long a new connection may take to send its connect request (or four-letter word);
/// after that, session expiry is what closes idle connections.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

fn read_loop(
    conn: ConnId,
    mut stream: impl ReadHalf,
    events: &Sender<CoreEvent>,
    gate: &ReadGate,
    max_frame_bytes: usize,
) {
    let mut first = true;
    stream.set_read_timeout(Some(CONNECT_TIMEOUT));
    loop {
        if !gate.wait_open() {
            return;
        }
        let mut len_bytes = [0u8; 4];
        if stream.read_exact(&mut len_bytes).is_err() {
            return;
        }
        if first {
            if let Some(word) = four_letter::detect(len_bytes) {
                let _ = events.send(CoreEvent::FourLetter { conn, word });
                return;
            }
        }
        let len = i32::from_be_bytes(len_bytes);
        if len < 0 || len as usize > max_frame_bytes {
            // ZooKeeper's "Len error": the connection is dropped.
            tracing::info!(conn, len, "frame length out of range; closing connection");
            stream.shutdown();
            return;
        }
        let mut body = vec![0u8; len as usize];
        if stream.read_exact(&mut body).is_err() {
            return;
        }
        if first {
            stream.set_read_timeout(None);
            // A TLS client's certificate is verified by now (the handshake preceded the
            // frame); its identity reaches the core before the connect request.
            if let Some(subject) = stream.take_peer_subject() {
                if events
                    .send(CoreEvent::Certificate { conn, subject })
                    .is_err()
                {
                    return;
                }
            }
        }
        let event = if first {
            CoreEvent::Connect { conn, body }
        } else {
            CoreEvent::Frame { conn, body }
        };
        first = false;
        if events.send(event).is_err() {
            return;
        }
    }
}

fn write_loop(
    conn: ConnId,
    mut stream: impl WriteHalf,
    rx: Receiver<Outbound>,
    written: &Sender<Written>,
) {
    let mut buf = Vec::with_capacity(64 << 10);
    'outer: while let Ok(first) = rx.recv() {
        buf.clear();
        let mut counted = 0;
        let mut close = false;
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Outbound::Frame(f) => {
                    counted += f.len();
                    buf.extend_from_slice(&f);
                }
                Outbound::Text(t) => buf.extend_from_slice(&t),
                Outbound::Close => {
                    close = true;
                    break;
                }
            }
            next = if buf.len() < (1 << 20) {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !buf.is_empty() {
            if let Err(e) = stream.write_all(&buf) {
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) {
                    tracing::info!(
                        conn,
                        "the client read none of its answers for longer than maxSessionTimeout; closing"
                    );
                }
                break 'outer;
            }
        }
        if counted > 0 && written.send((conn, counted)).is_err() {
            break;
        }
        if close {
            break;
        }
    }
    stream.close();
}

struct ConnHandle {
    out: Sender<Outbound>,
    stream: TcpStream,
    gate: Arc<ReadGate>,
}

impl ConnHandle {
    /// Closes the socket now (queued frames are dropped) and releases a waiting reader.
    fn abort(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        self.gate.close();
    }
}

struct Core {
    processor: SharedProcessor,
    /// Where state changes go (ZAB, an ensemble of one when standalone).
    ensemble: Ensemble,
    conns: HashMap<ConnId, ConnHandle>,
    zoo: ZooConfig,
    started: Instant,
    connection_queue_frames: usize,
    /// The Prometheus endpoint; stopped before the ensemble (it holds the ZAB node).
    metrics: Option<MetricsEndpoint>,
}

impl Core {
    fn now(&self) -> Now {
        Now {
            mono_ms: self.started.elapsed().as_millis() as u64,
            wall_ms: wall_ms(),
        }
    }

    fn run(
        mut self,
        events: Receiver<CoreEvent>,
        mut wake: Receiver<()>,
        mut written: Receiver<Written>,
    ) {
        // Expiry checks (and an ensemble follower's reports of its clients' activity to the
        // leader) at the expiry bucket width, so a session ends within ~2 buckets of its timeout.
        let check_every =
            Duration::from_millis(session::expiry_interval_ms(self.zoo.tick_ms as u64).max(10));
        let mut next_check = Instant::now() + check_every;
        let never = crossbeam_channel::never();
        loop {
            let timeout = next_check.saturating_duration_since(Instant::now());
            // While too many proposals are uncommitted, take only commits: readers then block
            // on the full event channel and clients feel TCP back-pressure.
            let events_or_never = if lock(&self.processor).accepting_requests() {
                &events
            } else {
                &never
            };
            select! {
                // Writers report bytes written: held reads may be answered now.
                recv(written) -> w => match w {
                    Ok((conn, bytes)) => {
                        let mut p = lock(&self.processor);
                        p.written(conn, bytes);
                        while let Ok((conn, bytes)) = written.try_recv() {
                            p.written(conn, bytes);
                        }
                    }
                    // Every writer and the acceptor are gone: stop selecting on it.
                    Err(_) => written = crossbeam_channel::never(),
                },
                // The ZAB driver changed the processor: its effects wait for dispatch.
                recv(wake) -> w => {
                    if w.is_err() {
                        // Every waker is gone (a disconnected receiver is always ready):
                        // stop selecting on it, or this loop never sleeps again.
                        wake = crossbeam_channel::never();
                    }
                }
                recv(events_or_never) -> e => match e {
                    Ok(CoreEvent::Shutdown) | Err(_) => break,
                    Ok(e) => self.handle(e),
                },
                default(timeout) => {}
            }
            if Instant::now() >= next_check {
                next_check = Instant::now() + check_every;
                if let Some(why) = self.ensemble.failure() {
                    // Serving without a log would acknowledge nothing; ZooKeeper exits too.
                    tracing::error!("ZAB stopped ({why}); shutting down");
                    break;
                }
                let now = self.now();
                lock(&self.processor).tick(now);
            }
            if !self.dispatch() {
                tracing::error!("the forwarder to ZAB stopped; shutting down");
                break;
            }
        }
        for (_, c) in self.conns.drain() {
            c.abort();
        }
        if let Some(m) = self.metrics.take() {
            m.stop();
        }
        self.ensemble.shutdown();
    }

    fn handle(&mut self, e: CoreEvent) {
        let now = self.now();
        match e {
            CoreEvent::Open {
                conn,
                remote,
                out,
                stream,
                gate,
            } => {
                self.conns.insert(conn, ConnHandle { out, stream, gate });
                lock(&self.processor).open(conn, remote.to_string());
            }
            CoreEvent::Connect { conn, body } => {
                if !self.ensemble.state.serving.load(Ordering::SeqCst) {
                    // Like a ZooKeeper server in election: no sessions until a leader is
                    // established; the client tries the next server.
                    if let Some(c) = self.conns.get(&conn) {
                        let _ = c.out.send(Outbound::Close);
                    }
                    return;
                }
                lock(&self.processor).connect(conn, &body, now)
            }
            CoreEvent::Frame { conn, body } => lock(&self.processor).request(conn, &body, now),
            CoreEvent::Certificate { conn, subject } => {
                let is_super = self.zoo.x509_super_user.as_deref() == Some(subject.as_str());
                let mut p = lock(&self.processor);
                p.add_connection_identity(conn, crate::acl::AuthId::new("x509", &subject));
                if is_super {
                    p.add_connection_identity(conn, crate::acl::AuthId::new("super", ""));
                }
            }
            CoreEvent::FourLetter { conn, word } => {
                let mode = self.ensemble.state.mode_name();
                let text = four_letter::answer(word, &lock(&self.processor), &self.zoo, mode);
                if let Some(c) = self.conns.get(&conn) {
                    let _ = c.out.send(Outbound::Text(text.into_bytes()));
                    let _ = c.out.send(Outbound::Close);
                }
            }
            CoreEvent::Closed { conn } => {
                // The reader ended; the writer still sends what is queued (a four-letter
                // word's answer) and closes.
                lock(&self.processor).closed(conn);
                self.conns.remove(&conn);
            }
            CoreEvent::Shutdown => {}
        }
    }

    /// Carries out the processor's effects; false when the forwarder to ZAB is gone.
    fn dispatch(&mut self) -> bool {
        // Taken under the lock, carried out without it: forwarding may block, and the ZAB
        // driver may be waiting for the lock meanwhile.
        let effects = lock(&self.processor).take_effects();
        for effect in effects {
            match effect {
                Effect::Send { conn, frame } => {
                    let stuck = match self.conns.get(&conn) {
                        Some(c) => {
                            c.out.len() >= self.connection_queue_frames
                                || matches!(
                                    c.out.try_send(Outbound::Frame(frame)),
                                    Err(TrySendError::Disconnected(_))
                                )
                        }
                        None => false,
                    };
                    if stuck {
                        tracing::warn!(
                            conn,
                            "more than {} frames wait for a client that does not read them; closing",
                            self.connection_queue_frames
                        );
                        if let Some(c) = self.conns.get(&conn) {
                            c.abort();
                        }
                    }
                }
                Effect::StopReading { conn } => {
                    if let Some(c) = self.conns.get(&conn) {
                        tracing::debug!(conn, "answers wait unread; reading paused");
                        c.gate.stop();
                    }
                }
                Effect::ResumeReading { conn } => {
                    if let Some(c) = self.conns.get(&conn) {
                        tracing::debug!(conn, "answers read; reading resumed");
                        c.gate.resume();
                    }
                }
                Effect::Close { conn } => {
                    if let Some(c) = self.conns.get(&conn) {
                        let _ = c.out.send(Outbound::Close);
                    }
                }
                Effect::Forward { payload } => {
                    if !self.ensemble.forward(payload) {
                        return false;
                    }
                }
                Effect::Propose { zxid, .. } => {
                    // Only a processor outside an ensemble proposes itself; this one forwards.
                    debug_assert!(false, "proposal {zxid:#x} from an ensemble processor");
                    tracing::error!("proposal {zxid:#x} from an ensemble processor dropped");
                }
                Effect::Snapshot { zxid, .. } => {
                    // ZAB takes the snapshots (the processor's snap_count is off).
                    debug_assert!(false, "snapshot {zxid:#x} from an ensemble processor");
                }
            }
        }
        true
    }
}
