//! Zero-copy sends: segment file bytes go file -> pipe -> socket by splice, submitted to an
//! io_uring ring that belongs to the shard (the `io-uring` crate, one ring per shard), so the
//! record bytes are never copied through user space.
//!
//! Each splice is submitted at once (most complete inside the submit call); a task of the
//! shard's executor drains the rest: while operations are in flight it polls the completion
//! queue with short backoff sleeps, so other tasks keep running and a splice blocked on a full
//! socket costs no CPU.
//! Pipes are pooled per shard; a pipe left non-empty by a failed transfer is closed, not reused.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use io_uring::{opcode, types, IoUring};

use super::oneshot;

/// Bytes one pipe holds (F_SETPIPE_SZ); one file -> pipe step moves at most this much.
const PIPE_BYTES: usize = 1 << 20;
/// Pipes kept for reuse per shard.
const PIPE_POOL_MAX: usize = 64;

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

fn new_pipe() -> io::Result<Pipe> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // A bigger pipe means fewer round trips; the default (64 KiB) is kept if the limit refuses.
    // SAFETY: fcntl on an fd we own.
    let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES as i32) };
    let capacity = if size > 0 { size as usize } else { 64 * 1024 };
    Ok(Pipe {
        read,
        write,
        capacity,
    })
}

/// The shard's splice ring.
pub struct Splicer {
    ring: RefCell<IoUring>,
    next_id: Cell<u64>,
    pending: RefCell<HashMap<u64, oneshot::Sender<i32>>>,
    /// Entries waiting for room in the submission queue.
    backlog: RefCell<Vec<io_uring::squeue::Entry>>,
    pipes: RefCell<Vec<Pipe>>,
    drainer: RefCell<Option<std::task::Waker>>,
    stopped: Cell<bool>,
}

impl Splicer {
    pub fn new(depth: u32) -> io::Result<Rc<Splicer>> {
        Ok(Rc::new(Splicer {
            ring: RefCell::new(IoUring::new(depth)?),
            next_id: Cell::new(1),
            pending: RefCell::new(HashMap::with_capacity(depth as usize)),
            backlog: RefCell::new(Vec::new()),
            pipes: RefCell::new(Vec::new()),
            drainer: RefCell::new(None),
            stopped: Cell::new(false),
        }))
    }

    /// Runs until [`Splicer::stop`]: submits and reaps the ring while operations are in
    /// flight, sleeping between polls with a backoff (10 us doubling to 200 us) so a splice
    /// waiting on a full socket costs no CPU; most splices complete at submit time and never
    /// reach this loop (see [`Splicer::run`]).
    pub async fn drain(self: Rc<Self>) {
        let mut backoff_us = 10u64;
        while !self.stopped.get() {
            if self.pending.borrow().is_empty() {
                backoff_us = 10;
                WaitForWork(&self).await;
                continue;
            }
            if self.poll_ring() > 0 {
                backoff_us = 10;
                glommio::yield_if_needed().await;
            } else {
                glommio::timer::sleep(Duration::from_micros(backoff_us)).await;
                backoff_us = (backoff_us * 2).min(200);
            }
        }
    }

    pub fn stop(&self) {
        self.stopped.set(true);
        if let Some(waker) = self.drainer.borrow_mut().take() {
            waker.wake();
        }
    }

    fn poll_ring(&self) -> usize {
        let mut ring = self.ring.borrow_mut();
        {
            let mut backlog = self.backlog.borrow_mut();
            let mut sq = ring.submission();
            while let Some(entry) = backlog.last() {
                // SAFETY: the fds in the entry stay open until its completion is reaped: the
                // awaiting task holds the pipe and the file/socket owners.
                if unsafe { sq.push(entry) }.is_err() {
                    break;
                }
                backlog.pop();
            }
        }
        if let Err(err) = ring.submit() {
            if err.raw_os_error() != Some(libc::EBUSY) && err.raw_os_error() != Some(libc::EAGAIN) {
                tracing::error!("io_uring submit: {err}");
            }
        }
        let mut completed = 0;
        let mut pending = self.pending.borrow_mut();
        for cqe in ring.completion() {
            if let Some(tx) = pending.remove(&cqe.user_data()) {
                tx.send(cqe.result());
            }
            completed += 1;
        }
        completed
    }

    async fn run(&self, entry: io_uring::squeue::Entry) -> io::Result<usize> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        self.backlog.borrow_mut().insert(0, entry.user_data(id));
        // Submit now: a splice from the page cache, or into a socket with room, completes
        // during the submit call and is reaped here without a trip through the drain task.
        self.poll_ring();
        if !self.pending.borrow().is_empty() {
            if let Some(waker) = self.drainer.borrow_mut().take() {
                waker.wake();
            }
        }
        match rx.await {
            Some(result) if result >= 0 => Ok(result as usize),
            Some(result) => Err(io::Error::from_raw_os_error(-result)),
            None => Err(io::Error::other("splice ring stopped")),
        }
    }

    fn take_pipe(&self) -> io::Result<Pipe> {
        match self.pipes.borrow_mut().pop() {
            Some(pipe) => Ok(pipe),
            None => new_pipe(),
        }
    }

    /// Sends `len` bytes of `file` from `position` to `socket`, without copying them through
    /// user space. Errors leave the socket in an unknown state: the caller closes it.
    pub async fn send(
        &self,
        file: RawFd,
        mut position: u64,
        len: usize,
        socket: RawFd,
    ) -> io::Result<()> {
        let pipe = self.take_pipe()?;
        let mut remaining = len;
        while remaining > 0 {
            let chunk = remaining.min(pipe.capacity) as u32;
            let entry = opcode::Splice::new(
                types::Fd(file),
                position as i64,
                types::Fd(pipe.write.as_raw_fd()),
                -1,
                chunk,
            )
            .build();
            let filled = self.run(entry).await?;
            if filled == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("segment file ended at position {position}, {remaining} bytes short"),
                ));
            }
            let mut in_pipe = filled;
            while in_pipe > 0 {
                let entry = opcode::Splice::new(
                    types::Fd(pipe.read.as_raw_fd()),
                    -1,
                    types::Fd(socket),
                    -1,
                    in_pipe as u32,
                )
                .build();
                match self.run(entry).await {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(sent) => in_pipe -= sent,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        glommio::timer::sleep(Duration::from_micros(100)).await;
                    }
                    Err(err) => return Err(err),
                }
            }
            position += filled as u64;
            remaining -= filled;
        }
        let mut pipes = self.pipes.borrow_mut();
        if pipes.len() < PIPE_POOL_MAX {
            pipes.push(pipe);
        }
        Ok(())
    }
}

/// Resolves when the splicer has work or is stopped.
struct WaitForWork<'a>(&'a Splicer);

impl std::future::Future for WaitForWork<'_> {
    type Output = ();
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if !self.0.pending.borrow().is_empty() || self.0.stopped.get() {
            return std::task::Poll::Ready(());
        }
        *self.0.drainer.borrow_mut() = Some(cx.waker().clone());
        std::task::Poll::Pending
    }
}
