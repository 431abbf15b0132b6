//! Zero-copy sends: segment file bytes go file -> pipe -> socket by splice, submitted to an
//! io_uring ring that belongs to the shard (the `io-uring` crate, one ring per shard), so the
//! record bytes are never copied through user space.
//!
//! Each splice is submitted at once, hard-linked to a one-byte send on a socketpair (the
//! doorbell); a task of the shard's executor sleeps in an ordinary glommio read of the other
//! end and reaps the ring when it rings, so waiting splices cost no CPU and no polling.
//! Pipes are pooled per shard; a pipe left non-empty by a failed transfer is closed, not reused.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::AsyncReadExt;
use glommio::net::UnixStream;
use io_uring::{opcode, squeue, types, IoUring};

use tokio::sync::oneshot;

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
    /// (splice, notify) entry pairs waiting for room in the submission queue, oldest last.
    backlog: RefCell<Vec<[io_uring::squeue::Entry; 2]>>,
    pipes: RefCell<Vec<Pipe>>,
    /// Write end of the completion doorbell: every splice is hard-linked to a one-byte send
    /// here, so the drain task sleeps in an ordinary (glommio) socket read until a splice ends.
    doorbell: std::os::unix::net::UnixStream,
    stopped: Cell<bool>,
}

/// The byte the doorbell sends; static so its address outlives every submission.
static DOORBELL_BYTE: [u8; 1] = [1];
/// `user_data` of doorbell sends (their completions are ignored).
const DOORBELL_ID: u64 = 0;

impl Splicer {
    /// The splicer and the read end of its doorbell, for [`Splicer::drain`].
    pub fn new(depth: u32) -> io::Result<(Rc<Splicer>, UnixStream)> {
        let (bell_rx, doorbell) = std::os::unix::net::UnixStream::pair()?;
        bell_rx.set_nonblocking(true)?;
        doorbell.set_nonblocking(true)?;
        // SAFETY: the descriptor comes from into_raw_fd, so the glommio stream owns it alone.
        let bell_rx =
            unsafe { UnixStream::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(bell_rx)) };
        let splicer = Rc::new(Splicer {
            ring: RefCell::new(IoUring::new(depth)?),
            next_id: Cell::new(1),
            pending: RefCell::new(HashMap::with_capacity(depth as usize)),
            backlog: RefCell::new(Vec::new()),
            pipes: RefCell::new(Vec::new()),
            doorbell,
            stopped: Cell::new(false),
        });
        Ok((splicer, bell_rx))
    }

    /// Runs until [`Splicer::stop`]: waits for the doorbell (a splice completed), then reaps
    /// the ring and submits what waited for room. No polling: an idle or blocked splice costs
    /// no CPU. Most splices complete inside the submit call and are reaped by [`Splicer::run`].
    pub async fn drain(self: Rc<Self>, mut bell: UnixStream) {
        let mut rung = [0u8; 512];
        while !self.stopped.get() {
            match bell.read(&mut rung).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    self.poll_ring();
                }
            }
        }
    }

    pub fn stop(&self) {
        self.stopped.set(true);
        // Ring the bell ourselves so the drain task sees the flag.
        // SAFETY: a one-byte write from a static buffer to a socket we own.
        unsafe {
            libc::send(
                self.doorbell.as_raw_fd(),
                DOORBELL_BYTE.as_ptr().cast(),
                1,
                libc::MSG_DONTWAIT,
            )
        };
    }

    fn poll_ring(&self) -> usize {
        let mut ring = self.ring.borrow_mut();
        {
            let mut backlog = self.backlog.borrow_mut();
            let mut sq = ring.submission();
            while let Some(pair) = backlog.last() {
                // A linked pair must go in one submission: wait for room for both.
                if sq.capacity() - sq.len() < 2 {
                    break;
                }
                // SAFETY: the fds in the entries stay open until the splice's completion is
                // reaped (the awaiting task holds the pipe, the file and the socket), and the
                // doorbell send reads from a static buffer.
                unsafe {
                    let _ = sq.push(&pair[0]);
                    let _ = sq.push(&pair[1]);
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
            if cqe.user_data() == DOORBELL_ID {
                continue;
            }
            if let Some(tx) = pending.remove(&cqe.user_data()) {
                let _ = tx.send(cqe.result());
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
        // Hard link: the doorbell rings whether the splice succeeded or failed.
        let splice = entry.user_data(id).flags(squeue::Flags::IO_HARDLINK);
        let bell = opcode::Send::new(
            types::Fd(self.doorbell.as_raw_fd()),
            DOORBELL_BYTE.as_ptr(),
            1,
        )
        .flags(libc::MSG_DONTWAIT)
        .build()
        .user_data(DOORBELL_ID);
        self.backlog.borrow_mut().insert(0, [splice, bell]);
        // Submit now: a splice that completes during the submit call is reaped here.
        self.poll_ring();
        let _unsubmitted = Unsubmitted { splicer: self, id };
        match rx.await.ok() {
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

/// Dropped with the awaiting future: if its entry never reached the kernel (it waited for room
/// in the submission queue), it is withdrawn, because the descriptors it names are being
/// closed with the future and their numbers may be reused.
struct Unsubmitted<'a> {
    splicer: &'a Splicer,
    id: u64,
}

impl Drop for Unsubmitted<'_> {
    fn drop(&mut self) {
        self.splicer
            .backlog
            .borrow_mut()
            .retain(|pair| pair[0].get_user_data() != self.id);
        self.splicer.pending.borrow_mut().remove(&self.id);
    }
}
