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
use futures_lite::AsyncWriteExt;
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;

use crate::kafka::frame;
use crate::kafka::response::{Part, Response};

use super::dispatch::{self, Close};
use super::memory_budget::Reservation;
use super::metrics::ShardMetrics;
use super::recv_buffer::RecvBuffer;
use super::sasl_api::{self, Gate};
use super::shard::Shard;
use crate::security::client::ClientIdentity;
use crate::security::sasl::SaslSession;

type Answer = Result<Option<Response>, Close>;

enum InFlight {
    /// The handler's answer and the charge of its memory until it is sent.
    Task(JoinHandle<(Answer, Option<Reservation>)>),
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

/// Serves one accepted connection until the client leaves or breaks the protocol.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let limits = &shard.config.profile.network;
    let _ = stream.set_read_timeout(Some(Duration::from_millis(limits.idle_timeout_ms)));
    // The writer gets its own descriptor of the same socket, so reading and writing proceed
    // independently without sharing (or locking) one stream object.
    // SAFETY: dup of a valid fd we own; the new fd is owned by the new TcpStream.
    let write_fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if write_fd < 0 {
        shard.connections.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    // SAFETY: write_fd is a fresh, owned, connected socket descriptor.
    let writer = unsafe { TcpStream::from_raw_fd(write_fd) };
    let (tx, rx) = local_channel::new_bounded::<InFlight>(limits.max_in_flight_requests as usize);
    let unanswered = Rc::new(Unanswered::default());
    let writer_task =
        glommio::spawn_local(write_answers(shard.clone(), writer, rx, unanswered.clone())).detach();
    read_requests(&shard, stream, tx, &unanswered).await;
    let _ = writer_task.await;
    shard.connections.fetch_sub(1, Ordering::Relaxed);
}

async fn read_requests(
    shard: &Rc<Shard>,
    mut stream: TcpStream,
    tx: local_channel::LocalSender<InFlight>,
    unanswered: &Unanswered,
) {
    let limits = &shard.config.profile.network;
    let chunk_bytes = limits.connection_buffer_bytes as usize;
    let idle_timeout = Duration::from_millis(limits.idle_timeout_ms);
    let memory = &shard.memory;
    let mut buf = RecvBuffer::new(chunk_bytes, memory);
    let mut client = Rc::new(ClientIdentity::anonymous(stream.peer_addr().ok()));
    let mut sasl = shard.config.security.requires_sasl().then(SaslSession::new);
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
                        (answer, None)
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
) -> (Answer, Option<Reservation>) {
    let answer = dispatch::handle(shard.clone(), frame, client).await;
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
    (answer, answer_charge)
}

/// Reads until `buf` holds at least `want` bytes; false on EOF, error or timeout.
async fn fill(stream: &mut TcpStream, buf: &mut RecvBuffer, want: usize, shard: &Shard) -> bool {
    while buf.received().len() < want {
        match buf.read_from(stream, want).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => ShardMetrics::add(&shard.metrics.bytes_received, n as u64),
        }
    }
    true
}

async fn write_answers(
    shard: Rc<Shard>,
    mut writer: TcpStream,
    rx: local_channel::LocalReceiver<InFlight>,
    unanswered: Rc<Unanswered>,
) {
    let socket = writer.as_raw_fd();
    while let Some(item) = rx.recv().await {
        let (answer, _answer_charge, task) = match item {
            InFlight::Task(task) => match task.await {
                Some((answer, charge)) => (answer, charge, true),
                None => (Err(Close("request task was cancelled".into())), None, true),
            },
            InFlight::Close(reason) => (Err(Close(reason)), None, false),
        };
        match answer {
            Ok(None) => {}
            Ok(Some(response)) => {
                if let Err(err) = send(&shard, &mut writer, socket, response).await {
                    tracing::debug!("shard {}: send failed: {err}", shard.id);
                    break;
                }
            }
            Err(Close(reason)) => {
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
    shutdown(socket);
}

fn shutdown(socket: RawFd) {
    // Wakes the reader (it sees EOF) so both halves finish.
    // SAFETY: shutdown on a socket fd we still own.
    unsafe { libc::shutdown(socket, libc::SHUT_RDWR) };
}

async fn send(
    shard: &Shard,
    writer: &mut TcpStream,
    socket: RawFd,
    response: Response,
) -> std::io::Result<()> {
    for part in response.parts {
        match part {
            Part::Memory(bytes) => {
                writer.write_all(&bytes).await?;
                ShardMetrics::add(&shard.metrics.bytes_sent, bytes.len() as u64);
            }
            Part::File(range) if !shard.config.fetch_by_splice => {
                let mut copy = vec![0u8; range.len as usize];
                // SAFETY: pread into a buffer of exactly `len` bytes we own.
                let n = unsafe {
                    libc::pread(
                        range.file.raw_fd(),
                        copy.as_mut_ptr().cast(),
                        copy.len(),
                        range.position as libc::off_t,
                    )
                };
                if n != copy.len() as isize {
                    return Err(std::io::Error::other("short read of a segment file"));
                }
                writer.write_all(&copy).await?;
                ShardMetrics::add(&shard.metrics.bytes_sent, range.len as u64);
            }
            Part::File(range) => {
                shard
                    .splicer
                    .send(
                        range.file.raw_fd(),
                        range.position,
                        range.len as usize,
                        socket,
                    )
                    .await?;
                ShardMetrics::add(&shard.metrics.bytes_sent, range.len as u64);
                ShardMetrics::add(&shard.metrics.bytes_spliced, range.len as u64);
            }
        }
    }
    Ok(())
}
