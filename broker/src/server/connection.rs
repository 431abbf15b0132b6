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
//! state shared between the halves), sending segment bytes by splice. An SSL or SASL_SSL connection first completes the TLS handshake (bounded by the idle
//! timeout; on SSL a client certificate's subject becomes the principal), then reads and
//! writes through the two halves of its one rustls session, copying segment bytes through a
//! bounded buffer. The same reader and writer code serves both.
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
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Buf;
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;

use crate::kafka::frame;
use crate::kafka::response::{Part, Response};

use super::dispatch::{self, Close};
use super::memory_budget::Reservation;
use super::metrics::{RequestTiming, ShardMetrics};
use super::recv_buffer::{RecvBuffer, SocketReceiver};
use super::sasl_api::{self, Gate};
use super::shard::Shard;
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

/// Serves one connection accepted on listener `listener` until the client leaves or breaks
/// the protocol.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, listener: usize) {
    let _ = stream.set_nodelay(true);
    let limits = &shard.config.profile.network;
    let _ = stream.set_read_timeout(Some(Duration::from_millis(limits.idle_timeout_ms)));
    let client = ClientIdentity::anonymous(stream.peer_addr().ok()).on_listener(listener);
    ShardMetrics::add(&shard.metrics.connections_open, 1);
    if shard.listeners[listener].protocol.uses_tls() {
        serve_tls(&shard, stream, client).await;
    } else {
        serve_plain(&shard, stream, client).await;
    }
    shard.connections.fetch_sub(1, Ordering::Relaxed);
    shard
        .metrics
        .connections_open
        .fetch_sub(1, Ordering::Relaxed);
}

/// PLAINTEXT and SASL_PLAINTEXT: the writer gets its own descriptor of the same socket, so
/// reading and writing proceed independently without sharing (or locking) one stream object,
/// and segment bytes are spliced from the file to the socket.
async fn serve_plain(shard: &Rc<Shard>, stream: TcpStream, client: ClientIdentity) {
    // SAFETY: dup of a valid fd we own; the new fd is owned by the new TcpStream.
    let write_fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if write_fd < 0 {
        return;
    }
    // SAFETY: write_fd is a fresh, owned, connected socket descriptor.
    let writer = unsafe { TcpStream::from_raw_fd(write_fd) };
    let socket = Socket {
        fd: write_fd,
        splice: shard.config.fetch_by_splice,
    };
    run(shard, SocketReceiver::new(stream), writer, socket, client).await;
}

/// SSL and SASL_SSL: one TLS session, its reading and writing halves split (behind a lock
/// only the two halves of this connection take); segment bytes are read into a bounded
/// buffer and encrypted. A handshake longer than the idle timeout, a client without a
/// required certificate or with one of an unknown CA ends the connection before any request.
async fn serve_tls(shard: &Rc<Shard>, stream: TcpStream, client: ClientIdentity) {
    let Some(tls) = &shard.tls else {
        debug_assert!(false, "a TLS listener without a TLS configuration");
        return;
    };
    let fd = stream.as_raw_fd();
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
    let mut client = client;
    if shard.listeners[client.listener].protocol == SecurityProtocol::Ssl {
        if let Some(cert) = session
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
        {
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
    let (reader, writer) = futures_lite::io::split(session);
    let socket = Socket { fd, splice: false };
    run(shard, Decrypted(reader), writer, socket, client).await;
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
struct Decrypted<R>(R);

impl<R: AsyncRead + Unpin> Incoming for Decrypted<R> {
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

async fn run<R, W>(shard: &Rc<Shard>, reader: R, writer: W, socket: Socket, client: ClientIdentity)
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
    read_requests(shard, reader, client, tx, &unanswered).await;
    let _ = writer_task.await;
}

async fn read_requests<R: Incoming>(
    shard: &Rc<Shard>,
    mut stream: R,
    client: ClientIdentity,
    tx: local_channel::LocalSender<InFlight>,
    unanswered: &Unanswered,
) {
    let limits = &shard.config.profile.network;
    let chunk_bytes = limits.connection_buffer_bytes as usize;
    let idle_timeout = Duration::from_millis(limits.idle_timeout_ms);
    let memory = &shard.memory;
    let mut buf = RecvBuffer::new(chunk_bytes, memory);
    let mut sasl = shard.listeners[client.listener]
        .protocol
        .requires_sasl()
        .then(SaslSession::new);
    let mut client = Rc::new(client);
    loop {
        if unanswered.count.get() > 0 && memory.used_bytes() > memory.limit_bytes() {
            ShardMetrics::add(&shard.metrics.memory_waits, 1);
            futures_lite::future::or(
                async { drop(memory.receive(0).await) },
                unanswered.all_answered(),
            )
            .await;
        }
        if !fill(&mut stream, &mut buf, 4, shard).await {
            return;
        }
        let prefix = buf.received();
        let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let body_len = match frame::check_size(size, limits.max_request_bytes) {
            Ok(len) => len,
            Err(err) => {
                let _ = tx.send(InFlight::Close(err.to_string())).await;
                return;
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
                return;
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
                return;
            }
        }
        if !fill(&mut stream, &mut buf, frame_len, shard).await {
            return;
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
                        return;
                    }
                    if let Some(reason) = close {
                        let _ = tx.send(InFlight::Close(reason)).await;
                        return;
                    }
                    continue;
                }
                Err(Close(reason)) => {
                    let _ = tx.send(InFlight::Close(reason)).await;
                    return;
                }
            }
        }
        let task = glommio::spawn_local(serve_request(
            shard.clone(),
            frame,
            frame_charge,
            client.clone(),
            received,
        ))
        .detach();
        unanswered.count.set(unanswered.count.get() + 1);
        if tx.send(InFlight::Task(task)).await.is_err() {
            return;
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
) -> Served {
    let handler_started = std::time::Instant::now();
    // The header's first fields (a shorter frame closes the connection in the handler).
    let header = |at: usize| {
        frame
            .get(at..at + 2)
            .map_or(-1, |b| i16::from_be_bytes([b[0], b[1]]))
    };
    let (api_key, api_version) = (header(0), header(2));
    let remote_us = Cell::new(0);
    let answer = dispatch::handle(shard.clone(), frame, client, &remote_us).await;
    let timing = RequestTiming {
        api_key,
        api_version,
        received,
        handler_started,
        handler_done: std::time::Instant::now(),
        remote_us: remote_us.get(),
    };
    drop(frame_charge);
    let answer_charge = match &answer {
        Ok(Some(response)) => {
            let bytes: usize = response
                .parts
                .iter()
                .map(|part| match part {
                    Part::Memory(bytes) => bytes.len(),
                    Part::File(_) => 0,
                })
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
    shutdown(socket.fd);
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
    for part in response.parts {
        match part {
            Part::Memory(bytes) => {
                writer.write_all(&bytes).await?;
                ShardMetrics::add(&shard.metrics.bytes_sent, bytes.len() as u64);
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
