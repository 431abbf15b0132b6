//! The receive buffer of one connection: it grows with the bytes that arrived, not with the
//! length a frame declares, and gives oversized memory back once the frame that needed it has
//! been cut off.
//!
//! A read asks for at most `max(chunk_bytes, bytes already held)` more bytes, and never more
//! than the frame being read needs plus one chunk, so the buffer doubles only while data keeps
//! coming: a client that declares a 100 MiB frame and sends 10 bytes costs one chunk. The room
//! a read fills is zeroed first (the socket API takes an initialized slice), but only that room,
//! and room zeroed once is reused by later reads instead of being zeroed again. A frame larger
//! than a chunk leaves its allocation to the frame (the request handler holds it); the bytes
//! that arrived behind it move to a fresh chunk-sized buffer, so an idle connection holds about
//! one chunk.

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt};

pub struct RecvBuffer {
    /// `bytes[..filled]` arrived from the socket; `bytes[filled..]` is zeroed room that the
    /// next read fills.
    bytes: BytesMut,
    filled: usize,
    chunk_bytes: usize,
}

impl RecvBuffer {
    pub fn new(chunk_bytes: usize) -> Self {
        assert!(chunk_bytes > 0);
        RecvBuffer {
            bytes: BytesMut::with_capacity(chunk_bytes),
            filled: 0,
            chunk_bytes,
        }
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
    pub fn initialized(&self) -> usize {
        self.bytes.len()
    }

    /// One read towards holding `want` bytes; returns what the read gave (0: the peer closed).
    pub async fn read_from<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        want: usize,
    ) -> std::io::Result<usize> {
        debug_assert!(self.filled < want);
        let step = self.chunk_bytes.max(self.filled);
        let mut end = (self.filled + step).min(want.max(self.filled + self.chunk_bytes));
        let room = self.bytes.len() - self.filled;
        if room >= (want - self.filled).min(self.chunk_bytes / 4) {
            // Enough zeroed room left by earlier reads: fill it before growing.
            end = end.min(self.bytes.len());
        } else if self.bytes.len() < end {
            // Zeroes only [len, end).
            self.bytes.resize(end, 0);
        }
        let n = reader.read(&mut self.bytes[self.filled..end]).await?;
        self.filled += n;
        debug_assert!(self.filled <= self.bytes.len());
        Ok(n)
    }

    /// Cuts the first `len` received bytes off as a frame.
    pub fn split_frame(&mut self, len: usize) -> Bytes {
        assert!(
            len <= self.filled,
            "frame of {len} bytes, {} held",
            self.filled
        );
        let frame = self.bytes.split_to(len).freeze();
        self.filled -= len;
        if len > self.chunk_bytes || self.bytes.capacity() > 2 * self.chunk_bytes {
            // The allocation was grown for this frame: leave it to the frame and keep what
            // arrived behind it (at most about a chunk, see `read_from`) in a fresh buffer.
            let mut fresh = BytesMut::with_capacity(self.chunk_bytes.max(self.filled));
            fresh.extend_from_slice(&self.bytes[..self.filled]);
            self.bytes = fresh;
        }
        frame
    }
}

#[cfg(test)]
mod tests {
    //! Proves the buffer grows with arrived bytes only (a huge declared frame that stalls costs
    //! a chunk), that frames come out intact across many small and large reads, and that the
    //! memory of a big frame is not kept once it is cut off, by feeding a scripted reader.
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Gives its data in reads of at most `step` bytes, then EOF.
    struct Scripted {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.step).min(self.data.len() - self.at);
            let at = self.at;
            buf[..n].copy_from_slice(&self.data[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(n))
        }
    }

    fn fill(buf: &mut RecvBuffer, reader: &mut Scripted, want: usize) -> bool {
        futures_lite::future::block_on(async {
            while buf.received().len() < want {
                if buf.read_from(reader, want).await.unwrap() == 0 {
                    return false;
                }
            }
            true
        })
    }

    const CHUNK: usize = 64 << 10;

    #[test]
    fn a_declared_huge_frame_that_stalls_costs_one_chunk() {
        let mut data = (100u32 << 20).to_be_bytes().to_vec();
        data.extend_from_slice(&[7; 10]);
        let mut reader = Scripted {
            data,
            at: 0,
            step: usize::MAX,
        };
        let mut buf = RecvBuffer::new(CHUNK);
        assert!(fill(&mut buf, &mut reader, 4));
        assert!(!fill(&mut buf, &mut reader, 4 + (100 << 20)));
        assert_eq!(buf.received().len(), 14);
        // The one chunk the first read zeroed, which the pending read waits to fill.
        assert_eq!(buf.initialized(), CHUNK);
        assert_eq!(buf.capacity(), CHUNK);
    }

    #[test]
    fn growth_follows_arrived_bytes_and_frames_come_out_whole() {
        // Frames of 10 B, 3 MiB and 100 B back to back, delivered in reads of 10,000 bytes.
        let sizes = [10usize, 3 << 20, 100];
        let mut data = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            data.extend_from_slice(&(size as u32).to_be_bytes());
            data.extend((0..size).map(|j| (i * 31 + j) as u8));
        }
        let mut reader = Scripted {
            data: data.clone(),
            at: 0,
            step: 10_000,
        };
        let mut buf = RecvBuffer::new(CHUNK);
        let mut at = 0;
        for &size in &sizes {
            assert!(fill(&mut buf, &mut reader, 4));
            let declared = u32::from_be_bytes(buf.received()[..4].try_into().unwrap()) as usize;
            assert_eq!(declared, size);
            assert!(fill(&mut buf, &mut reader, 4 + size));
            // Zeroed room never runs more than a read ahead of the arrived bytes.
            assert!(
                buf.initialized() <= 2 * buf.received().len() + CHUNK,
                "{} initialized for {} received",
                buf.initialized(),
                buf.received().len()
            );
            let frame = buf.split_frame(4 + size);
            assert_eq!(&frame[..], &data[at..at + 4 + size]);
            at += 4 + size;
            // After a frame, the buffer is back to about a chunk.
            assert!(buf.capacity() <= 2 * CHUNK, "{}", buf.capacity());
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
        };
        let mut buf = RecvBuffer::new(4096);
        let mut reads = 0;
        for i in 0..1000u32 {
            while buf.received().len() < 8 {
                let n = futures_lite::future::block_on(buf.read_from(&mut reader, 8)).unwrap();
                assert!(n > 0);
                reads += 1;
            }
            let frame = buf.split_frame(8);
            assert_eq!(&frame[4..], &i.to_be_bytes());
            assert!(buf.capacity() <= 2 * 4096);
        }
        assert!(reads < 10, "{reads} reads for 8000 bytes in 4 KiB chunks");
    }
}
