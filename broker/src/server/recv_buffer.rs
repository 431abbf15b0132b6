//! The receive buffer of one connection: it grows with the bytes that arrived, not with the
//! length a frame declares, gives oversized memory back once the frame that needed it has been
//! cut off, and holds nothing while the connection is idle. Its memory is charged to the
//! shard's [`MemoryBudget`].
//!
//! A read asks for at most `max(chunk_bytes, bytes already held)` more bytes, and never more
//! than the frame being read needs plus one chunk, so the room a read may fill doubles only
//! while data keeps coming: a client that declares a large frame and sends 10 bytes costs one
//! chunk of resident memory. A plain socket ([`SocketReceiver`], [`RecvBuffer::receive_from`])
//! is read by recv(2) straight into the allocation's unused capacity, so each received byte is
//! written once, by the kernel, and the room a read did not fill is never touched. Readers that
//! take an initialized slice (a TLS session's plaintext, [`RecvBuffer::read_from`]) get room
//! zeroed first, but only the room a read may fill, and room zeroed once is reused by later
//! reads instead of being zeroed again. When bytes come and the socket is then empty while the
//! buffer holds none, the allocation is dropped: an idle connection holds nothing.
//!
//! Charges: what the allocation holds beyond the frame reservation is an admitted charge (a
//! connection may always hold about one chunk, two while it reads). A frame larger than a chunk
//! is read only under a receiving reservation of its whole length
//! ([`RecvBuffer::reserve_frame`]), which waits for the budget; once granted, the frame gets
//! one allocation of that length, so its bytes are never copied as it arrives (the broker
//! writes its pages only as reads fill them). The frame takes that allocation when it is cut off and
//! what arrived behind it moves to a fresh buffer. A frame cut off carries an admitted charge
//! of its length until its request is done.

use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_lite::AsyncRead;
use glommio::net::TcpStream;

use super::memory_budget::{MemoryBudget, Reservation};

pub struct RecvBuffer {
    /// `bytes[..filled]` arrived from the socket; `bytes[filled..]` is zeroed room that the
    /// next [`RecvBuffer::read_from`] fills (empty for [`RecvBuffer::receive_from`], which reads
    /// into the unused capacity behind `bytes`).
    bytes: BytesMut,
    filled: usize,
    chunk_bytes: usize,
    budget: Rc<MemoryBudget>,
    /// Admitted charge: the allocation's capacity beyond `frame`.
    base: Reservation,
    /// Receiving reservation of the frame being read, when it is larger than a chunk.
    frame: Option<Reservation>,
}

impl RecvBuffer {
    pub fn new(chunk_bytes: usize, budget: &Rc<MemoryBudget>) -> Self {
        assert!(chunk_bytes > 0);
        RecvBuffer {
            bytes: BytesMut::new(),
            filled: 0,
            chunk_bytes,
            budget: budget.clone(),
            base: budget.charge(0),
            frame: None,
        }
    }

    /// Starts an empty buffer with bytes that arrived elsewhere (a connection moved from
    /// another shard with what it had received after its last request).
    pub fn take_in(&mut self, arrived: &[u8]) {
        assert!(self.filled == 0 && self.frame.is_none());
        if arrived.is_empty() {
            return;
        }
        self.bytes = BytesMut::from(arrived);
        self.filled = arrived.len();
        self.charge_capacity();
    }

    /// The bytes that arrived and are not cut off as a frame yet.
    pub fn received(&self) -> &[u8] {
        &self.bytes[..self.filled]
    }

    /// Bytes of memory the buffer holds (arrived, zeroed room and unused capacity of its
    /// allocation view).
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Bytes written at least once (zeroed or received); bounds what the buffer adds to RSS.
    /// Reads from a socket write only what arrives, so there it is what is held.
    pub fn initialized(&self) -> usize {
        self.bytes.len()
    }

    /// Bytes charged to the budget for this buffer (admitted and reserved).
    pub fn charged(&self) -> u64 {
        self.base.bytes() + self.frame.as_ref().map_or(0, Reservation::bytes)
    }

    /// Reserves the whole of a frame of `len` bytes (size prefix included) before its body is
    /// read; waits until the budget has room for it. Only for frames larger than a chunk,
    /// which is what a buffer may hold without a reservation.
    pub async fn reserve_frame(&mut self, len: usize) {
        assert!(len > self.chunk_bytes && self.frame.is_none());
        self.frame = Some(self.budget.receive(len as u64).await);
        // The frame's whole allocation at once: what arrived so far (at most two chunks) is
        // copied once here and the rest is read in place.
        let mut whole = BytesMut::with_capacity(len.max(self.filled));
        whole.extend_from_slice(&self.bytes[..self.filled]);
        self.bytes = whole;
        self.charge_capacity();
    }

    fn charge_capacity(&mut self) {
        let reserved = self.frame.as_ref().map_or(0, Reservation::bytes);
        self.base
            .set_admitted((self.bytes.capacity() as u64).saturating_sub(reserved));
    }

    /// One read towards holding `want` bytes; returns what the read gave (0: the peer closed).
    pub async fn read_from<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        want: usize,
    ) -> std::io::Result<usize> {
        self.read_with(want, Room::Zeroed, |cx, bytes, filled, end| {
            let n = ready!(Pin::new(&mut *reader).poll_read(cx, &mut bytes[filled..end]))?;
            debug_assert!(filled + n <= bytes.len());
            Poll::Ready(Ok(n))
        })
        .await
    }

    /// [`RecvBuffer::read_from`] for a reader that writes into uninitialized room (a socket):
    /// it reads into the allocation's unused capacity, which is neither zeroed nor otherwise
    /// written before, so the buffer holds exactly what arrived.
    pub async fn receive_from<R: ReadUninit>(
        &mut self,
        reader: &mut R,
        want: usize,
    ) -> std::io::Result<usize> {
        self.read_with(want, Room::Unused, |cx, bytes, filled, end| {
            debug_assert_eq!(bytes.len(), filled);
            let room = &mut bytes.spare_capacity_mut()[..end - filled];
            let room_len = room.len();
            let n = ready!(reader.poll_read_uninit(cx, room))?;
            assert!(n <= room_len, "read {n} bytes into {room_len}");
            // SAFETY: the reader initialized the first `n` bytes of the unused capacity
            // (ReadUninit's contract), which directly follow the `filled` bytes held.
            unsafe { bytes.set_len(filled + n) };
            Poll::Ready(Ok(n))
        })
        .await
    }

    /// One read by `read(cx, bytes, filled, end)`, which fills room `[filled, end)` of `bytes`
    /// and returns how much it filled.
    async fn read_with(
        &mut self,
        want: usize,
        room: Room,
        mut read: impl FnMut(
            &mut Context<'_>,
            &mut BytesMut,
            usize,
            usize,
        ) -> Poll<std::io::Result<usize>>,
    ) -> std::io::Result<usize> {
        debug_assert!(self.filled < want);
        debug_assert!(
            want <= self.chunk_bytes || self.frame.is_some(),
            "a frame larger than a chunk is read under its reservation"
        );
        std::future::poll_fn(|cx| {
            let end = self.make_room(want, room);
            match read(cx, &mut self.bytes, self.filled, end) {
                Poll::Ready(Ok(n)) => {
                    self.filled += n;
                    Poll::Ready(Ok(n))
                }
                other => {
                    self.release_if_idle();
                    other
                }
            }
        })
        .await
    }

    /// Idle (or failed): hold nothing until bytes come (the reader keeps no reference to the
    /// room of a read that is pending).
    fn release_if_idle(&mut self) {
        if self.filled == 0 && self.bytes.capacity() > 0 {
            self.bytes = BytesMut::new();
            self.charge_capacity();
        }
    }

    /// Room for the next read, zeroed or left as it is (`room`); returns its end.
    fn make_room(&mut self, want: usize, room: Room) -> usize {
        let step = self.chunk_bytes.max(self.filled);
        let mut end = (self.filled + step).min(want.max(self.filled + self.chunk_bytes));
        if self.frame.is_some() {
            // Read into the frame's allocation and no further (no reallocation, no copy).
            debug_assert!(self.bytes.capacity() >= want);
            end = end.min(self.bytes.capacity());
        }
        if room == Room::Unused {
            // Zeroed room of an earlier read_from, if any, is simply forgotten.
            self.bytes.truncate(self.filled);
        }
        let zeroed = self.bytes.len() - self.filled;
        if zeroed > 0 && zeroed >= (want - self.filled).min(self.chunk_bytes / 4) {
            // Enough zeroed room left by earlier reads: fill it before growing.
            end = end.min(self.bytes.len());
        } else if self.bytes.len() < end {
            if self.bytes.capacity() < end {
                // Exactly the room asked for (BytesMut's own growth could double it).
                let mut grown = BytesMut::with_capacity(end);
                grown.extend_from_slice(&self.bytes[..self.filled]);
                self.bytes = grown;
                self.charge_capacity();
            }
            if room == Room::Zeroed {
                // Zeroes only [len, end).
                self.bytes.resize(end, 0);
            }
        }
        end
    }

    /// Cuts the first `len` received bytes off as a frame, with the admitted charge of its
    /// bytes (which the request holds until it is done).
    pub fn split_frame(&mut self, len: usize) -> (Bytes, Reservation) {
        assert!(
            len <= self.filled,
            "frame of {len} bytes, {} held",
            self.filled
        );
        let frame = self.bytes.split_to(len).freeze();
        self.filled -= len;
        let charge = match self.frame.take() {
            Some(reserved) => reserved.admit(len as u64),
            None => self.budget.charge(len as u64),
        };
        if len > self.chunk_bytes || self.bytes.capacity() > 2 * self.chunk_bytes {
            // The allocation was grown for this frame: leave it to the frame and keep what
            // arrived behind it (at most about a chunk, see `read_from`) in a fresh buffer.
            let mut fresh = BytesMut::with_capacity(self.chunk_bytes.max(self.filled));
            fresh.extend_from_slice(&self.bytes[..self.filled]);
            self.bytes = fresh;
        }
        self.charge_capacity();
        (frame, charge)
    }
}

/// What a read is given to fill.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Room {
    /// Initialized (zeroed once) bytes, for readers that take `&mut [u8]`.
    Zeroed,
    /// The allocation's unused capacity, as it is.
    Unused,
}

/// A byte source that reads into room that may be uninitialized, as recv(2) does.
///
/// # Safety
/// When `poll_read_uninit` returns `Ready(Ok(n))`, it has written (initialized) the first `n`
/// bytes of `room`, and `n <= room.len()`; `0` means the peer closed.
pub unsafe trait ReadUninit {
    fn poll_read_uninit(
        &mut self,
        cx: &mut Context<'_>,
        room: &mut [MaybeUninit<u8>],
    ) -> Poll<std::io::Result<usize>>;
}

/// The receiving side of a plain TCP connection: recv(2) with `MSG_DONTWAIT` straight into
/// the receive buffer's unused capacity. Only when the socket is empty does it wait, through
/// the stream's own (glommio) read of one byte, which registers for readability and keeps the
/// stream's read timeout; that byte is the only one that passes through another buffer, and
/// the rest of what arrived is received behind it in the same call.
pub struct SocketReceiver {
    stream: TcpStream,
    /// The last read is pending in the stream's own read: the next poll resumes it, so the
    /// wait (and its read timeout) ends through the stream.
    waiting: bool,
}

impl SocketReceiver {
    pub fn new(stream: TcpStream) -> Self {
        SocketReceiver {
            stream,
            waiting: false,
        }
    }

    /// The socket, if no read of it is pending.
    pub fn into_stream(self) -> Option<TcpStream> {
        (!self.waiting).then_some(self.stream)
    }

    /// One nonblocking recv(2) into `room`; `None` if the socket is empty.
    fn recv(&self, room: &mut [MaybeUninit<u8>]) -> Option<std::io::Result<usize>> {
        loop {
            // SAFETY: recv writes at most `room.len()` bytes into memory we own exclusively;
            // MaybeUninit<u8> has the layout of u8 and needs no initialization to be written.
            let n = unsafe {
                libc::recv(
                    self.stream.as_raw_fd(),
                    room.as_mut_ptr().cast(),
                    room.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                return Some(Ok(n as usize));
            }
            let err = std::io::Error::last_os_error();
            match err.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => return None,
                _ => return Some(Err(err)),
            }
        }
    }
}

// SAFETY: `recv` reports the bytes the kernel wrote at the start of the room; the waiting path
// writes its one byte at room[0] and what `recv` wrote behind it.
unsafe impl ReadUninit for SocketReceiver {
    fn poll_read_uninit(
        &mut self,
        cx: &mut Context<'_>,
        room: &mut [MaybeUninit<u8>],
    ) -> Poll<std::io::Result<usize>> {
        assert!(!room.is_empty());
        if !self.waiting {
            if let Some(result) = self.recv(room) {
                return Poll::Ready(result);
            }
        }
        let mut first = [0u8; 1];
        let n = match Pin::new(&mut self.stream).poll_read(cx, &mut first) {
            Poll::Pending => {
                self.waiting = true;
                return Poll::Pending;
            }
            Poll::Ready(result) => {
                self.waiting = false;
                result?
            }
        };
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        room[0].write(first[0]);
        let more = match room.len() > 1 {
            // An error here comes back from the next read; this one has its byte.
            true => self.recv(&mut room[1..]).and_then(Result::ok).unwrap_or(0),
            false => 0,
        };
        Poll::Ready(Ok(1 + more))
    }
}

#[cfg(test)]
mod tests {
    //! Proves the buffer grows with arrived bytes only (a huge declared frame that stalls costs
    //! a chunk), that frames come out intact across many small and large reads, that the
    //! memory of a big frame is not kept once it is cut off, that an idle buffer holds nothing,
    //! and that the budget is charged what the buffer and its frames hold, by feeding a
    //! scripted reader.
    use super::*;
    use crate::server::metrics::ShardMetrics;
    use std::sync::Arc;
    use std::task::Context;

    fn budget() -> Rc<MemoryBudget> {
        MemoryBudget::new(1 << 40, Arc::new(ShardMetrics::default()))
    }

    /// Gives its data in reads of at most `step` bytes, then EOF (or, `idle_at_end`, nothing
    /// yet: pending).
    struct Scripted {
        data: Vec<u8>,
        at: usize,
        step: usize,
        idle_at_end: bool,
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            if self.idle_at_end && self.at == self.data.len() {
                return Poll::Pending;
            }
            let n = buf.len().min(self.step).min(self.data.len() - self.at);
            let at = self.at;
            buf[..n].copy_from_slice(&self.data[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(n))
        }
    }

    // SAFETY: writes the first `n` bytes of the room and returns `n`.
    unsafe impl ReadUninit for Scripted {
        fn poll_read_uninit(
            &mut self,
            _: &mut Context<'_>,
            room: &mut [MaybeUninit<u8>],
        ) -> Poll<std::io::Result<usize>> {
            if self.idle_at_end && self.at == self.data.len() {
                return Poll::Pending;
            }
            let n = room.len().min(self.step).min(self.data.len() - self.at);
            for (to, &from) in room[..n].iter_mut().zip(&self.data[self.at..]) {
                to.write(from);
            }
            self.at += n;
            Poll::Ready(Ok(n))
        }
    }

    /// Reads until `buf` holds `want` bytes (false: the reader ended first), by
    /// [`RecvBuffer::read_from`] or, `uninit`, [`RecvBuffer::receive_from`].
    fn fill_by(buf: &mut RecvBuffer, reader: &mut Scripted, want: usize, uninit: bool) -> bool {
        futures_lite::future::block_on(async {
            while buf.received().len() < want {
                let read = match uninit {
                    true => buf.receive_from(reader, want).await,
                    false => buf.read_from(reader, want).await,
                };
                if read.unwrap() == 0 {
                    return false;
                }
            }
            true
        })
    }

    fn fill(buf: &mut RecvBuffer, reader: &mut Scripted, want: usize) -> bool {
        fill_by(buf, reader, want, false)
    }

    fn receive(buf: &mut RecvBuffer, reader: &mut Scripted, want: usize) -> bool {
        fill_by(buf, reader, want, true)
    }

    const CHUNK: usize = 64 << 10;

    /// Frames with bodies of `sizes` bytes back to back (size prefixes included), each body a
    /// pattern of its index and `seed`.
    fn frames(sizes: &[usize], seed: usize) -> Vec<u8> {
        let mut data = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            data.extend_from_slice(&(size as u32).to_be_bytes());
            data.extend((0..size).map(|j| (i * seed + j) as u8));
        }
        data
    }

    fn scripted(data: Vec<u8>, step: usize) -> Scripted {
        Scripted {
            data,
            at: 0,
            step,
            idle_at_end: false,
        }
    }

    /// Cuts off the frame of body `size` that `data` holds at `at`, checks its bytes and
    /// charges and that the buffer is back to about a chunk; returns where the next one starts.
    fn cut_frame(buf: &mut RecvBuffer, data: &[u8], at: usize, size: usize) -> usize {
        let (frame, charge) = buf.split_frame(4 + size);
        assert_eq!(&frame[..], &data[at..at + 4 + size]);
        assert_eq!(charge.bytes(), 4 + size as u64);
        assert!(buf.capacity() <= 2 * CHUNK, "{}", buf.capacity());
        assert_eq!(buf.charged(), buf.capacity() as u64);
        at + 4 + size
    }

    #[test]
    fn receiving_into_unused_capacity_writes_only_what_arrived() {
        // Frames of 10 B, 3 MiB and 100 B back to back in reads of 1000 bytes, then a frame
        // declared at 100 MiB of which 10 bytes come.
        let sizes = [10usize, 3 << 20, 100];
        let mut data = frames(&sizes, 7);
        data.extend_from_slice(&(100u32 << 20).to_be_bytes());
        data.extend_from_slice(&[7; 10]);
        let mut reader = scripted(data.clone(), 1000);
        let budget = budget();
        let mut buf = RecvBuffer::new(CHUNK, &budget);
        let mut at = 0;
        for &size in &sizes {
            assert!(receive(&mut buf, &mut reader, 4));
            assert_eq!(
                buf.initialized(),
                buf.received().len(),
                "nothing but arrivals"
            );
            if 4 + size > CHUNK {
                futures_lite::future::block_on(buf.reserve_frame(4 + size));
            }
            while buf.received().len() < 4 + size {
                let n = futures_lite::future::block_on(buf.receive_from(&mut reader, 4 + size));
                assert!(n.unwrap() > 0);
                assert_eq!(buf.initialized(), buf.received().len());
                assert!(buf.charged() >= buf.capacity() as u64);
            }
            at = cut_frame(&mut buf, &data, at, size);
        }
        assert!(receive(&mut buf, &mut reader, 4));
        futures_lite::future::block_on(buf.reserve_frame(4 + (100 << 20)));
        assert!(!receive(&mut buf, &mut reader, 4 + (100 << 20)));
        assert_eq!(buf.received(), &data[at..]);
        // The 14 bytes are all that was written: no room is zeroed ahead of arrivals.
        assert_eq!(buf.initialized(), 14);
        assert_eq!(buf.charged(), 4 + (100 << 20));
    }

    #[test]
    fn a_socket_frame_in_many_small_writes_is_received_whole() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let frame: Vec<u8> = (200u32 << 10)
                    .to_be_bytes()
                    .into_iter()
                    .chain((0..200u32 << 10).map(|i| (i % 251) as u8))
                    .collect();
                let sent = frame.clone();
                let client = glommio::spawn_local(async move {
                    use futures_lite::AsyncWriteExt;
                    let mut stream = TcpStream::connect(addr).await.unwrap();
                    for piece in sent.chunks(1000) {
                        stream.write_all(piece).await.unwrap();
                        glommio::executor().yield_now().await;
                    }
                    stream.close().await.unwrap();
                });
                let accepted = listener.accept().await.unwrap();
                let mut socket = SocketReceiver::new(accepted);
                let budget = budget();
                let mut buf = RecvBuffer::new(16 << 10, &budget);
                let mut reads = 0;
                while buf.received().len() < 4 {
                    assert!(buf.receive_from(&mut socket, 4).await.unwrap() > 0);
                    reads += 1;
                }
                buf.reserve_frame(frame.len()).await;
                while buf.received().len() < frame.len() {
                    assert!(buf.receive_from(&mut socket, frame.len()).await.unwrap() > 0);
                    assert_eq!(buf.initialized(), buf.received().len());
                    reads += 1;
                }
                assert!(reads > 1, "the frame came in one read");
                let (received, _charge) = buf.split_frame(frame.len());
                assert_eq!(&received[..], &frame[..]);
                client.await;
                // The peer closed: the next read says so, and the empty buffer holds nothing.
                assert_eq!(buf.receive_from(&mut socket, 4).await.unwrap(), 0);
                drop(received);
                assert_eq!(buf.received().len(), 0);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn a_silent_socket_times_out_and_its_buffer_holds_nothing() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let client = TcpStream::connect(addr).await.unwrap();
                let accepted = listener.accept().await.unwrap();
                accepted
                    .set_read_timeout(Some(std::time::Duration::from_millis(50)))
                    .unwrap();
                let mut socket = SocketReceiver::new(accepted);
                let budget = budget();
                let mut buf = RecvBuffer::new(CHUNK, &budget);
                let err = buf.receive_from(&mut socket, 4).await.unwrap_err();
                assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
                assert_eq!((buf.capacity(), budget.used_bytes()), (0, 0));
                drop(client);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn a_declared_huge_frame_that_stalls_costs_one_chunk() {
        let mut data = (100u32 << 20).to_be_bytes().to_vec();
        data.extend_from_slice(&[7; 10]);
        let mut reader = Scripted {
            data,
            at: 0,
            step: usize::MAX,
            idle_at_end: false,
        };
        let budget = budget();
        let mut buf = RecvBuffer::new(CHUNK, &budget);
        assert!(fill(&mut buf, &mut reader, 4));
        futures_lite::future::block_on(buf.reserve_frame(4 + (100 << 20)));
        assert!(!fill(&mut buf, &mut reader, 4 + (100 << 20)));
        assert_eq!(buf.received().len(), 14);
        // Resident: the 14 bytes and the one chunk of room the pending read waits to fill;
        // the allocation of the frame's length is address space the reservation covers.
        assert_eq!(buf.initialized(), 14 + CHUNK);
        assert_eq!(buf.capacity(), 4 + (100 << 20));
        // Charged: the frame's whole reservation (the chunk is inside it).
        assert_eq!(buf.charged(), 4 + (100 << 20));
        drop(buf);
        assert_eq!(budget.used_bytes(), 0);
    }

    #[test]
    fn growth_follows_arrived_bytes_and_frames_come_out_whole() {
        // Frames of 10 B, 3 MiB and 100 B back to back, delivered in reads of 10,000 bytes.
        let sizes = [10usize, 3 << 20, 100];
        let data = frames(&sizes, 31);
        let mut reader = scripted(data.clone(), 10_000);
        let budget = budget();
        let mut buf = RecvBuffer::new(CHUNK, &budget);
        let mut at = 0;
        for &size in &sizes {
            assert!(fill(&mut buf, &mut reader, 4));
            let declared = u32::from_be_bytes(buf.received()[..4].try_into().unwrap()) as usize;
            assert_eq!(declared, size);
            if 4 + size > CHUNK {
                futures_lite::future::block_on(buf.reserve_frame(4 + size));
            }
            assert!(fill(&mut buf, &mut reader, 4 + size));
            assert!(
                buf.charged() >= buf.capacity() as u64,
                "all it holds is charged"
            );
            // Zeroed room never runs more than a read ahead of the arrived bytes.
            assert!(
                buf.initialized() <= 2 * buf.received().len() + CHUNK,
                "{} initialized for {} received",
                buf.initialized(),
                buf.received().len()
            );
            at = cut_frame(&mut buf, &data, at, size);
        }
        assert!(!fill(&mut buf, &mut reader, 4));
    }

    #[test]
    fn pipelined_small_frames_share_reads() {
        let mut data = Vec::new();
        for i in 0..1000u32 {
            data.extend_from_slice(&4u32.to_be_bytes());
            data.extend_from_slice(&i.to_be_bytes());
        }
        let mut reader = Scripted {
            data,
            at: 0,
            step: usize::MAX,
            idle_at_end: false,
        };
        let budget = budget();
        let mut buf = RecvBuffer::new(4096, &budget);
        let mut reads = 0;
        for i in 0..1000u32 {
            while buf.received().len() < 8 {
                let n = futures_lite::future::block_on(buf.read_from(&mut reader, 8)).unwrap();
                assert!(n > 0);
                reads += 1;
            }
            let (frame, _charge) = buf.split_frame(8);
            assert_eq!(&frame[4..], &i.to_be_bytes());
            assert!(buf.capacity() <= 2 * 4096);
        }
        assert!(reads < 10, "{reads} reads for 8000 bytes in 4 KiB chunks");
    }

    fn poll_once(buf: &mut RecvBuffer, reader: &mut Scripted, want: usize) -> Poll<usize> {
        let waker = std::task::Waker::noop();
        let mut read = std::pin::pin!(buf.read_from(reader, want));
        read.as_mut()
            .poll(&mut Context::from_waker(waker))
            .map(|n| n.unwrap())
    }

    use std::future::Future;

    #[test]
    fn an_idle_buffer_holds_nothing_and_a_stalled_one_its_bytes() {
        let budget = budget();
        let mut buf = RecvBuffer::new(CHUNK, &budget);
        let mut reader = Scripted {
            data: Vec::new(),
            at: 0,
            step: usize::MAX,
            idle_at_end: true,
        };
        assert!(poll_once(&mut buf, &mut reader, 4).is_pending());
        assert_eq!((buf.capacity(), budget.used_bytes()), (0, 0));
        // A whole frame and part of the next arrive; the frame is cut, the rest stalls.
        reader.data.extend_from_slice(&[0, 0, 0, 2, 9, 9, 0, 0]);
        assert_eq!(poll_once(&mut buf, &mut reader, 4), Poll::Ready(8));
        let (frame, charge) = buf.split_frame(6);
        assert_eq!(&frame[..], &[0, 0, 0, 2, 9, 9]);
        assert_eq!(
            budget.used_bytes(),
            CHUNK as u64,
            "the frame and the buffer's rest share the chunk"
        );
        assert!(poll_once(&mut buf, &mut reader, 4).is_pending());
        assert_eq!(buf.received(), &[0, 0], "a partial prefix is kept");
        assert!(buf.capacity() > 0);
        drop((frame, charge));
        let (_, charge) = {
            reader.data.extend_from_slice(&[0, 1, 7]);
            assert_eq!(poll_once(&mut buf, &mut reader, 4), Poll::Ready(3));
            buf.split_frame(5)
        };
        drop(charge);
        // Nothing held and the socket empty: the allocation goes.
        assert!(poll_once(&mut buf, &mut reader, 4).is_pending());
        assert_eq!((buf.capacity(), budget.used_bytes()), (0, 0));
    }
}
