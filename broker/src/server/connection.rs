//! One client connection: a reader that cuts the byte stream into request frames and starts a
//! handler task per request, and a writer that sends the answers back in request order.
//!
//! At most `max_in_flight_requests` requests are read ahead of their answers; beyond that the
//! reader stops reading, so a client that does not read its answers is slowed by TCP instead of
//! growing the broker. The receive buffer ([`RecvBuffer`]) grows with the bytes that arrived,
//! in reads of `connection_buffer_bytes` that double while data keeps coming, never with the
//! length a frame declares, and falls back to one chunk after a big frame; a connection that
//! declares a 100 MiB frame and stalls costs about one chunk. Frames larger than
//! `max_request_bytes` and malformed requests close the connection; other connections are
//! unaffected.
//!
//! On a SASL listener, every frame before authentication goes through [`sasl_api`] in the
//! reader itself, in order (no handler runs for it), until SaslAuthenticate succeeds.
//!
//! Transport: a PLAINTEXT or SASL_PLAINTEXT connection reads from the accepted socket straight
//! into its receive buffer's unused capacity ([`SocketReceiver`]) and writes to a dup of it (no
//! state shared between the halves), sending segment bytes by splice and the pieces of an
//! answer that are in memory (a Fetch from the batch cache: framing and one piece per batch)
//! in one sendmsg(2) ([`super::socket_send`]). An SSL or SASL_SSL
//! connection first completes the TLS handshake (bounded by the idle timeout; on SSL a client
//! certificate's subject becomes the principal), then reads and writes through the two halves
//! of its one rustls session ([`tls_session`]), copying segment bytes through a bounded buffer.
//! The same reader and writer code serves both.
//!
//! Moving: with more than one shard, a partition lives on one shard and a request for it that
//! arrives on another crosses the mesh there and back. A connection whose Produce and Fetch
//! requests name only partitions of one other shard ([`MOVE_AFTER_REQUESTS`] of them in a row,
//! nothing in between naming partitions elsewhere) is handed to that shard: its reader stops
//! reading, waits until every request read is answered, and the socket (a duplicate of its
//! descriptor), the bytes received after the last request, the principal it authenticated as
//! and, on SSL and SASL_SSL, its TLS session (keys, sequence numbers and whatever it still
//! buffers) go to the owner over the mesh, which serves the connection from there on; the
//! client sees nothing. A SASL connection moves only once authenticated (before, it names no
//! partitions).
//!
//! Memory budget (the policy; the account is [`MemoryBudget`]): an idle connection holds no
//! buffer. A connection may always hold about one chunk of received bytes. A frame larger than
//! a chunk is read only once its whole length is reserved from the receiving half of the
//! budget; the reservation waits in FIFO order (the connection is not read meanwhile: TCP
//! back-pressure), at most `idle_timeout_ms`, and a frame larger than that half closes the
//! connection. Past the budget, a connection with a request in flight reads again only once the
//! budget is within its limit or its requests are answered, so each connection still gets one
//! request at a time through. The frame and its answer are charged until the answer is sent.

use std::cell::Cell;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_lite::{AsyncWrite, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;

use crate::kafka::frame;
use crate::kafka::response::{Part, Response};

use super::dispatch::{self, Close, RequestContext, Route};
use super::memory_budget::Reservation;
use super::metrics::{RequestTiming, ShardMetrics};
use super::partition_ops::ShardRequest;
use super::recv_buffer::{RecvBuffer, SocketReceiver};
use super::sasl_api::{self, Gate};
use super::shard::Shard;
use super::socket_send::{write_all_vectored, PlainWriter};
use super::tls_session::{self, TlsReader};
use crate::security::client::ClientIdentity;
use crate::security::listener::SecurityProtocol;
use crate::security::sasl::SaslSession;

type Answer = Result<Option<Response>, Close>;

/// What a request's task hands the writer: the answer, the charge of its memory until it is
/// sent, and its timing for the metrics (none for answers the SASL gate gives).
type Served = (Answer, Option<Reservation>, Option<RequestTiming>);

enum InFlight {
    Task(JoinHandle<Served>),
    Close(String),
}

/// Requests of one connection read and not answered yet; the writer wakes the reader when it
/// answers one.
#[derive(Default)]
struct Unanswered {
    count: Cell<usize>,
    reader: Cell<Option<Waker>>,
    /// The connection moves to another shard: the writer ends without shutting the socket.
    moving: Cell<bool>,
}

impl Unanswered {
    fn answered(&self) {
        debug_assert!(self.count.get() > 0);
        self.count.set(self.count.get() - 1);
        if let Some(waker) = self.reader.take() {
            waker.wake();
        }
    }

    /// Resolves once every request read is answered.
    async fn all_answered(&self) {
        std::future::poll_fn(|cx| {
            if self.count.get() == 0 {
                Poll::Ready(())
            } else {
                self.reader.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

/// Produce and Fetch requests in a row naming only partitions of one other shard after which a
/// connection moves there.
pub const MOVE_AFTER_REQUESTS: u32 = 16;

/// Serves one connection accepted on listener `listener` until the client leaves or breaks
/// the protocol.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, listener: usize) {
    let client = open(&shard, &stream, listener);
    if shard.listeners[listener].protocol.uses_tls() {
        serve_tls(&shard, stream, client).await;
    } else {
        serve_plain(&shard, stream, client, Bytes::new(), None).await;
    }
    close(&shard);
}

/// Serves a connection another shard handed over (see "Moving" above); `received` is what
/// arrived after its last request there, `principal` who it authenticated as there (SASL or a
/// client certificate), `tls` its TLS session on an SSL or SASL_SSL listener.
pub async fn serve_moved(shard: Rc<Shard>, moved: MovedConnection) {
    let MovedConnection {
        socket,
        listener,
        received,
        principal,
        tls,
    } = moved;
    // SAFETY: a connected socket descriptor we own, given to the stream that closes it.
    let stream = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
    ShardMetrics::add(&shard.metrics.connections_moved_in, 1);
    // The connection count of the process is the one of the shard it left (which gives its
    // place back when that end finishes).
    shard.connections.fetch_add(1, Ordering::Relaxed);
    let mut client = open(&shard, &stream, listener);
    if let Some(principal) = &principal {
        client = client.authenticated(principal);
    }
    match tls {
        Some(session) => {
            serve_tls_session(&shard, stream, *session, client, received, principal).await
        }
        None => serve_plain(&shard, stream, client, received, principal).await,
    }
    close(&shard);
}

/// A connection on its way to the shard owning its partitions ([`ShardRequest::MoveConnection`]).
pub struct MovedConnection {
    /// The connected socket (a duplicate of the descriptor the old shard served).
    pub socket: OwnedFd,
    /// The index of the listener it came in on.
    pub listener: usize,
    /// Bytes (plaintext) that arrived after its last request.
    pub received: Bytes,
    /// Who it authenticated as (SASL, or a client certificate on SSL).
    pub principal: Option<String>,
    /// Its TLS session (SSL and SASL_SSL), with whatever the session still buffers.
    pub tls: Option<Box<rustls::ServerConnection>>,
}

fn open(shard: &Shard, stream: &TcpStream, listener: usize) -> ClientIdentity {
    let _ = stream.set_nodelay(true);
    let limits = &shard.config.profile.network;
    let _ = stream.set_read_timeout(Some(Duration::from_millis(limits.idle_timeout_ms)));
    ShardMetrics::add(&shard.metrics.connections_open, 1);
    ClientIdentity::anonymous(stream.peer_addr().ok()).on_listener(listener)
}

fn close(shard: &Shard) {
    shard.connections.fetch_sub(1, Ordering::Relaxed);
    shard
        .metrics
        .connections_open
        .fetch_sub(1, Ordering::Relaxed);
}

/// PLAINTEXT and SASL_PLAINTEXT: the writer gets its own descriptor of the same socket, so
/// reading and writing proceed independently without sharing (or locking) one stream object,
/// and segment bytes are spliced from the file to the socket. `principal`: the connection
/// authenticated as it on the shard it moved from.
async fn serve_plain(
    shard: &Rc<Shard>,
    stream: TcpStream,
    client: ClientIdentity,
    received: Bytes,
    principal: Option<String>,
) {
    let Some(writer) = duplicate(&stream) else {
        return;
    };
    let socket = Socket {
        fd: writer.as_raw_fd(),
        splice: shard.config.fetch_by_splice,
    };
    let listener = client.listener;
    let reader = SocketReceiver::new(stream);
    let start = Start {
        client,
        received,
        movable: shard.shard_count > 1,
        principal,
    };
    let (reader, moving) = run(shard, reader, PlainWriter(writer), socket, start).await;
    let Some(moving) = moving else {
        return;
    };
    // No read is pending on the socket (the reader stopped between requests): its descriptor
    // can go to the owner; this shard's stream closes its own copy.
    if let Some(stream) = reader.into_stream() {
        hand_over(shard, stream, listener, moving, None).await;
    }
}

/// A second stream on the socket of `stream` (its own descriptor), for the writing half.
fn duplicate(stream: &TcpStream) -> Option<TcpStream> {
    // SAFETY: dup of a valid fd we own; the new fd is owned by the new TcpStream.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    // SAFETY: a fresh, owned, connected socket descriptor.
    (fd >= 0).then(|| unsafe { TcpStream::from_raw_fd(fd) })
}

/// Sends a connection that stopped between requests to the shard owning its partitions.
async fn hand_over(
    shard: &Shard,
    stream: TcpStream,
    listener: usize,
    moving: Move,
    tls: Option<Box<rustls::ServerConnection>>,
) {
    // SAFETY: dup of the valid socket descriptor the stream owns.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    drop(stream);
    if fd < 0 {
        return;
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    tracing::debug!(
        "shard {}: connection moves to shard {}, which owns its partitions",
        shard.id,
        moving.to_shard
    );
    let request = ShardRequest::MoveConnection(MovedConnection {
        socket,
        listener,
        received: moving.received,
        principal: moving.principal,
        tls,
    });
    // If the owner is gone (the server stops), the socket closes with the request.
    let _ = shard.mesh.call(moving.to_shard, request).await;
}

/// SSL and SASL_SSL: the handshake, then one TLS session whose reading and writing halves
/// share it ([`tls_session`]); segment bytes are read into a bounded buffer and encrypted. A
/// handshake longer than the idle timeout, a client without a required certificate or with
/// one of an unknown CA ends the connection before any request.
async fn serve_tls(shard: &Rc<Shard>, stream: TcpStream, client: ClientIdentity) {
    let Some(tls) = &shard.tls else {
        debug_assert!(false, "a TLS listener without a TLS configuration");
        return;
    };
    let acceptor = futures_rustls::TlsAcceptor::from(tls.server_config());
    let idle_timeout = Duration::from_millis(shard.config.profile.network.idle_timeout_ms);
    let handshake =
        futures_lite::future::or(async { Some(acceptor.accept(stream).await) }, async {
            glommio::timer::sleep(idle_timeout).await;
            None
        })
        .await;
    let session = match handshake {
        Some(Ok(session)) => session,
        Some(Err(err)) => {
            tracing::info!(
                "shard {}: TLS handshake with {}: {err}",
                shard.id,
                client.peer
            );
            return;
        }
        None => {
            tracing::info!(
                "shard {}: TLS handshake with {} timed out",
                shard.id,
                client.peer
            );
            return;
        }
    };
    let (stream, session) = session.into_inner();
    let mut client = client;
    if shard.listeners[client.listener].protocol == SecurityProtocol::Ssl {
        if let Some(cert) = session.peer_certificates().and_then(|c| c.first()) {
            match crate::security::tls::certificate_principal(cert) {
                Ok(principal) => {
                    tracing::info!(
                        "shard {}: {} authenticated by certificate as principal {principal}",
                        shard.id,
                        client.peer
                    );
                    client = client.authenticated(&principal);
                }
                Err(err) => {
                    tracing::info!("shard {}: {}: {err}", shard.id, client.peer);
                    return;
                }
            }
        }
    }
    serve_tls_session(shard, stream, session, client, Bytes::new(), None).await;
}

/// Serves an SSL or SASL_SSL connection whose handshake is done, here or on the shard it moved
/// from; moves it with its session when its partitions live on another shard.
async fn serve_tls_session(
    shard: &Rc<Shard>,
    stream: TcpStream,
    session: rustls::ServerConnection,
    client: ClientIdentity,
    received: Bytes,
    principal: Option<String>,
) {
    let Some(write_stream) = duplicate(&stream) else {
        return;
    };
    let socket = Socket {
        fd: write_stream.as_raw_fd(),
        splice: false,
    };
    let listener = client.listener;
    let (reader, writer) = tls_session::split(stream, write_stream, session);
    let start = Start {
        client,
        received,
        movable: shard.shard_count > 1,
        principal,
    };
    let (Decrypted(reader), moving) = run(shard, Decrypted(reader), writer, socket, start).await;
    let Some(moving) = moving else {
        return;
    };
    if let Some((stream, session)) = reader.into_parts() {
        hand_over(shard, stream, listener, moving, Some(Box::new(session))).await;
    }
}

/// How a connection's reader fills its receive buffer.
trait Incoming {
    /// One read towards `buf` holding `want` bytes; returns what it gave (0: the peer closed).
    async fn read_into(&mut self, buf: &mut RecvBuffer, want: usize) -> std::io::Result<usize>;
}

impl Incoming for SocketReceiver {
    async fn read_into(&mut self, buf: &mut RecvBuffer, want: usize) -> std::io::Result<usize> {
        buf.receive_from(self, want).await
    }
}

/// A TLS session's reading half: rustls hands out plaintext through `&mut [u8]`, so it is read
/// into zeroed room.
struct Decrypted(TlsReader);

impl Incoming for Decrypted {
    async fn read_into(&mut self, buf: &mut RecvBuffer, want: usize) -> std::io::Result<usize> {
        buf.read_from(&mut self.0, want).await
    }
}

/// The connection's socket as the writer sees it.
#[derive(Clone, Copy)]
struct Socket {
    /// Shut down when the writer ends (the reader then sees EOF).
    fd: RawFd,
    /// Send file ranges by splice to this fd (plain sockets); else read and write them.
    splice: bool,
}

/// How a connection's reader starts.
struct Start {
    client: ClientIdentity,
    /// Bytes that arrived before (on the shard the connection moved from).
    received: Bytes,
    /// It may move to the shard owning its partitions.
    movable: bool,
    /// It authenticated as this principal on the shard it moved from (SASL, or a client
    /// certificate on SSL).
    principal: Option<String>,
}

/// A connection leaving for shard `to_shard`, with the bytes that arrived after its last
/// request and the principal it authenticated as (SASL).
struct Move {
    to_shard: usize,
    received: Bytes,
    principal: Option<String>,
}

/// The partitions a connection's recent requests named: how many Produce and Fetch requests in
/// a row named only partitions of shard `candidate` (another shard). Updated by the request
/// tasks as they are served.
#[derive(Default)]
struct Affinity {
    candidate: Cell<Option<usize>>,
    streak: Cell<u32>,
}

impl Affinity {
    fn served(&self, route: Route) {
        match route {
            Route::None => {}
            Route::Here | Route::Mixed => {
                self.candidate.set(None);
                self.streak.set(0);
            }
            Route::Only(owner) if self.candidate.get() == Some(owner) => {
                self.streak.set(self.streak.get().saturating_add(1));
            }
            Route::Only(owner) => {
                self.candidate.set(Some(owner));
                self.streak.set(1);
            }
        }
    }

    /// The shard to move to, once the streak is long enough.
    fn destination(&self) -> Option<usize> {
        self.candidate
            .get()
            .filter(|_| self.streak.get() >= MOVE_AFTER_REQUESTS)
    }
}

/// Serves the connection until it ends or moves; gives the reader back with the move.
async fn run<R, W>(
    shard: &Rc<Shard>,
    mut reader: R,
    writer: W,
    socket: Socket,
    start: Start,
) -> (R, Option<Move>)
where
    R: Incoming,
    W: AsyncWrite + Unpin + 'static,
{
    let limits = &shard.config.profile.network;
    let (tx, rx) = local_channel::new_bounded::<InFlight>(limits.max_in_flight_requests as usize);
    let unanswered = Rc::new(Unanswered::default());
    let writer_task = glommio::spawn_local(write_answers(
        shard.clone(),
        writer,
        socket,
        rx,
        unanswered.clone(),
    ))
    .detach();
    let moving = read_requests(shard, &mut reader, start, tx, &unanswered).await;
    let _ = writer_task.await;
    (reader, moving)
}

async fn read_requests<R: Incoming>(
    shard: &Rc<Shard>,
    stream: &mut R,
    start: Start,
    tx: local_channel::LocalSender<InFlight>,
    unanswered: &Unanswered,
) -> Option<Move> {
    let limits = &shard.config.profile.network;
    let chunk_bytes = limits.connection_buffer_bytes as usize;
    let idle_timeout = Duration::from_millis(limits.idle_timeout_ms);
    let memory = &shard.memory;
    let mut buf = RecvBuffer::new(chunk_bytes, memory);
    buf.take_in(&start.received);
    let mut sasl = shard.listeners[start.client.listener]
        .protocol
        .requires_sasl()
        .then(|| match start.principal {
            Some(principal) => SaslSession::authenticated(principal),
            None => SaslSession::new(),
        });
    let mut client = Rc::new(start.client);
    let affinity = Rc::new(Affinity::default());
    loop {
        if start.movable && affinity.destination().is_some() {
            // Between requests: once everything read is answered, the connection can go.
            unanswered.all_answered().await;
            // A connection moves with its principal; one still authenticating over SASL (it
            // named no partition yet, so this does not happen) stays.
            let authenticating = sasl.as_ref().is_some_and(|s| s.principal().is_none());
            if let (Some(to_shard), false) = (affinity.destination(), authenticating) {
                unanswered.moving.set(true);
                let received = Bytes::copy_from_slice(buf.received());
                return Some(Move {
                    to_shard,
                    received,
                    principal: (!client.is_anonymous()).then(|| client.principal.to_string()),
                });
            }
        }
        if unanswered.count.get() > 0 && memory.used_bytes() > memory.limit_bytes() {
            ShardMetrics::add(&shard.metrics.memory_waits, 1);
            futures_lite::future::or(
                async { drop(memory.receive(0).await) },
                unanswered.all_answered(),
            )
            .await;
        }
        if !fill(stream, &mut buf, 4, shard).await {
            return None;
        }
        let prefix = buf.received();
        let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let body_len = match frame::check_size(size, limits.max_request_bytes) {
            Ok(len) => len,
            Err(err) => {
                let _ = tx.send(InFlight::Close(err.to_string())).await;
                return None;
            }
        };
        let frame_len = 4 + body_len;
        if frame_len > chunk_bytes {
            if frame_len as u64 > memory.receiving_limit_bytes() {
                let reason = format!(
                    "a frame of {frame_len} bytes can never fit shard {}'s memory budget: frames \
                     larger than half of memory_budget_bytes ({} bytes) are refused",
                    shard.id,
                    memory.limit_bytes()
                );
                let _ = tx.send(InFlight::Close(reason)).await;
                return None;
            }
            if memory.would_wait(frame_len as u64) {
                ShardMetrics::add(&shard.metrics.memory_waits, 1);
            }
            let reserved = futures_lite::future::or(
                async {
                    buf.reserve_frame(frame_len).await;
                    true
                },
                async {
                    glommio::timer::sleep(idle_timeout).await;
                    false
                },
            )
            .await;
            if !reserved {
                let reason = format!(
                    "a frame of {frame_len} bytes waited {} ms for shard {}'s memory budget",
                    limits.idle_timeout_ms, shard.id
                );
                let _ = tx.send(InFlight::Close(reason)).await;
                return None;
            }
        }
        if !fill(stream, &mut buf, frame_len, shard).await {
            return None;
        }
        let (mut frame, frame_charge) = buf.split_frame(frame_len);
        let received = std::time::Instant::now();
        frame.advance(4);
        ShardMetrics::add(&shard.metrics.requests, 1);
        if let Some(session) = sasl.as_mut().filter(|s| s.principal().is_none()) {
            let gate = sasl_api::before_authentication(shard, session, &client.peer, frame);
            if let Some(principal) = session.principal() {
                client = Rc::new(client.authenticated(principal));
            }
            match gate {
                Ok(Gate::Serve(served)) => frame = served,
                Ok(Gate::Answer { response, close }) => {
                    let task = glommio::spawn_local(async move {
                        let answer: Answer = Ok(Some(response));
                        (answer, None, None)
                    })
                    .detach();
                    unanswered.count.set(unanswered.count.get() + 1);
                    if tx.send(InFlight::Task(task)).await.is_err() {
                        return None;
                    }
                    if let Some(reason) = close {
                        let _ = tx.send(InFlight::Close(reason)).await;
                        return None;
                    }
                    continue;
                }
                Err(Close(reason)) => {
                    let _ = tx.send(InFlight::Close(reason)).await;
                    return None;
                }
            }
        }
        let task = glommio::spawn_local(serve_request(
            shard.clone(),
            frame,
            frame_charge,
            client.clone(),
            received,
            affinity.clone(),
        ))
        .detach();
        unanswered.count.set(unanswered.count.get() + 1);
        if tx.send(InFlight::Task(task)).await.is_err() {
            return None;
        }
    }
}

/// Serves one request; the frame is charged until its handler is done, the answer's memory
/// from then until it is sent.
async fn serve_request(
    shard: Rc<Shard>,
    frame: bytes::Bytes,
    frame_charge: Reservation,
    client: Rc<ClientIdentity>,
    received: std::time::Instant,
    affinity: Rc<Affinity>,
) -> Served {
    let handler_started = std::time::Instant::now();
    // The header's first fields (a shorter frame closes the connection in the handler).
    let header = |at: usize| {
        frame
            .get(at..at + 2)
            .map_or(-1, |b| i16::from_be_bytes([b[0], b[1]]))
    };
    let (api_key, api_version) = (header(0), header(2));
    let context = RequestContext::default();
    let answer = dispatch::handle(shard.clone(), frame, client, &context).await;
    affinity.served(context.route.get());
    let timing = RequestTiming {
        api_key,
        api_version,
        received,
        handler_started,
        handler_done: std::time::Instant::now(),
        remote_us: context.remote_us.get(),
    };
    drop(frame_charge);
    let answer_charge = match &answer {
        Ok(Some(response)) => {
            // Cached pieces count too: they keep their buffers alive after the batch cache
            // lets them go, until the answer is sent.
            let bytes: usize = response
                .parts
                .iter()
                .filter_map(Part::in_memory)
                .map(<[u8]>::len)
                .sum();
            Some(shard.memory.charge(bytes as u64))
        }
        _ => None,
    };
    (answer, answer_charge, Some(timing))
}

/// Reads until `buf` holds at least `want` bytes; false on EOF, error or timeout.
async fn fill<R: Incoming>(
    stream: &mut R,
    buf: &mut RecvBuffer,
    want: usize,
    shard: &Shard,
) -> bool {
    while buf.received().len() < want {
        match stream.read_into(buf, want).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => ShardMetrics::add(&shard.metrics.bytes_received, n as u64),
        }
    }
    true
}

async fn write_answers<W: AsyncWrite + Unpin>(
    shard: Rc<Shard>,
    mut writer: W,
    socket: Socket,
    rx: local_channel::LocalReceiver<InFlight>,
    unanswered: Rc<Unanswered>,
) {
    while let Some(item) = rx.recv().await {
        let (answer, _answer_charge, timing, task) = match item {
            InFlight::Task(task) => match task.await {
                Some((answer, charge, timing)) => (answer, charge, timing, true),
                None => (
                    Err(Close("request task was cancelled".into())),
                    None,
                    None,
                    true,
                ),
            },
            InFlight::Close(reason) => (Err(Close(reason)), None, None, false),
        };
        match answer {
            Ok(None) => {
                if let Some(timing) = &timing {
                    let now = std::time::Instant::now();
                    shard.metrics.request_done(timing, now, now);
                }
            }
            Ok(Some(response)) => {
                let send_started = std::time::Instant::now();
                if let Err(err) = send(&shard, &mut writer, socket, response).await {
                    tracing::debug!("shard {}: send failed: {err}", shard.id);
                    break;
                }
                if let Some(timing) = &timing {
                    let sent = std::time::Instant::now();
                    shard.metrics.request_done(timing, send_started, sent);
                }
            }
            Err(Close(reason)) => {
                if let Some(timing) = &timing {
                    shard.metrics.request_closed(timing.api_key);
                }
                tracing::info!("shard {}: closing connection: {reason}", shard.id);
                break;
            }
        }
        if task {
            unanswered.answered();
        }
    }
    // No more answers: a reader waiting for them must not wait on.
    unanswered.count.set(0);
    if let Some(waker) = unanswered.reader.take() {
        waker.wake();
    }
    if !unanswered.moving.get() {
        shutdown(socket.fd);
    }
}

fn shutdown(socket: RawFd) {
    // Wakes the reader (it sees EOF) so both halves finish.
    // SAFETY: shutdown on a socket fd we still own.
    unsafe { libc::shutdown(socket, libc::SHUT_RDWR) };
}

/// The largest piece of a file range read into memory at a time when it is not spliced.
const FILE_COPY_CHUNK_BYTES: usize = 256 * 1024;

async fn send<W: AsyncWrite + Unpin>(
    shard: &Shard,
    writer: &mut W,
    socket: Socket,
    response: Response,
) -> std::io::Result<()> {
    let mut copy = Vec::new();
    let mut pieces = Vec::new();
    let mut parts = response.parts.into_iter().peekable();
    while let Some(part) = parts.next() {
        match part {
            Part::Memory(_) | Part::Cached(_) => {
                // The pieces in memory up to the next file range leave in one vectored write.
                pieces.push(part);
                while parts.peek().is_some_and(|next| next.in_memory().is_some()) {
                    pieces.extend(parts.next());
                }
                write_all_vectored(writer, pieces.iter().filter_map(Part::in_memory)).await?;
                let len: usize = pieces.iter().map(Part::len).sum();
                ShardMetrics::add(&shard.metrics.bytes_sent, len as u64);
                pieces.clear();
            }
            Part::File(range) if !socket.splice => {
                // Bounded: the range goes through one buffer of at most a chunk.
                let mut position = range.position;
                let end = range.position + range.len as u64;
                while position < end {
                    let len = ((end - position) as usize).min(FILE_COPY_CHUNK_BYTES);
                    copy.resize(len, 0);
                    // SAFETY: pread into a buffer of exactly `len` bytes we own.
                    let n = unsafe {
                        libc::pread(
                            range.file.raw_fd(),
                            copy.as_mut_ptr().cast(),
                            len,
                            position as libc::off_t,
                        )
                    };
                    if n != len as isize {
                        return Err(std::io::Error::other("short read of a segment file"));
                    }
                    writer.write_all(&copy).await?;
                    position += len as u64;
                }
                ShardMetrics::add(&shard.metrics.bytes_sent, range.len as u64);
                ShardMetrics::add(&shard.metrics.bytes_copied, range.len as u64);
            }
            Part::File(range) => {
                shard
                    .splicer
                    .send(
                        range.file.raw_fd(),
                        range.position,
                        range.len as usize,
                        socket.fd,
                    )
                    .await?;
                ShardMetrics::add(&shard.metrics.bytes_sent, range.len as u64);
                ShardMetrics::add(&shard.metrics.bytes_spliced, range.len as u64);
            }
        }
    }
    if !socket.splice {
        // A TLS session may hold the end of the answer in its buffer.
        writer.flush().await?;
    }
    Ok(())
}
