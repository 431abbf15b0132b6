//! Sending several buffers with one sendmsg(2) on a glommio socket: an answer made of many
//! pieces in memory (a Fetch served from the batch cache is a frame header and one piece per
//! batch) leaves in one system call instead of one per piece. The call is nonblocking; when
//! the socket is full, glommio's own write waits for room (and keeps the stream's write
//! timeout).

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::AsyncWrite;
use glommio::net::TcpStream;

/// One sendmsg(2) of `bufs` (at most `UIO_MAXIOV` of them) to `stream`; pending, with the
/// waker registered, while the socket has no room.
pub fn poll_send_vectored(
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    let Some(first) = bufs.iter().find(|b| !b.is_empty()) else {
        return Poll::Ready(Ok(0));
    };
    loop {
        // SAFETY: a zeroed msghdr is valid; its iovecs point at `bufs` (IoSlice has iovec's
        // layout), which outlive the call.
        let sent = unsafe {
            let mut message: libc::msghdr = std::mem::zeroed();
            message.msg_iov = bufs.as_ptr() as *mut libc::iovec;
            message.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
            libc::sendmsg(
                stream.as_raw_fd(),
                &message,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if sent >= 0 {
            return Poll::Ready(Ok(sent as usize));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            // glommio tries a send of its own first, then registers for writability.
            io::ErrorKind::WouldBlock => return Pin::new(&mut *stream).poll_write(cx, first),
            _ => return Poll::Ready(Err(err)),
        }
    }
}

/// A plain TCP stream whose vectored writes are one sendmsg(2) (glommio's write the rest).
pub struct PlainWriter(pub TcpStream);

impl AsyncWrite for PlainWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        poll_send_vectored(&mut self.get_mut().0, cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_close(cx)
    }
}

/// Writes every byte of `pieces` in as few vectored writes as the writer takes.
pub async fn write_all_vectored<'a, W: AsyncWrite + Unpin>(
    writer: &mut W,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'a>> = pieces
        .into_iter()
        .filter(|piece| !piece.is_empty())
        .map(IoSlice::new)
        .collect();
    let mut left = &mut slices[..];
    while !left.is_empty() {
        let n =
            std::future::poll_fn(|cx| Pin::new(&mut *writer).poll_write_vectored(cx, left)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut left, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// Takes at most `per_call` bytes a write, across as many slices as that covers, and is
    /// not ready every other call.
    struct Trickle {
        written: Vec<u8>,
        per_call: usize,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.calls += 1;
            if this.calls % 2 == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut taken = 0;
            for buf in bufs {
                let n = buf.len().min(this.per_call - taken);
                this.written.extend_from_slice(&buf[..n]);
                taken += n;
                if taken == this.per_call {
                    break;
                }
            }
            Poll::Ready(Ok(taken))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn every_byte_leaves_in_order_across_partial_vectored_writes() {
        let pieces: Vec<Bytes> = ["head", "", "a", "bcdefghij", "", "klmnopqrstuvwxyz0123"]
            .into_iter()
            .map(|piece| Bytes::from_static(piece.as_bytes()))
            .collect();
        for per_call in [1, 3, 7, 64] {
            let mut writer = Trickle {
                written: Vec::new(),
                per_call,
                calls: 0,
            };
            futures_lite::future::block_on(write_all_vectored(
                &mut writer,
                pieces.iter().map(|p| &p[..]),
            ))
            .unwrap();
            assert_eq!(writer.written, pieces.concat(), "{per_call} bytes a call");
        }
    }

    #[test]
    fn a_writer_that_takes_nothing_is_an_error_not_a_loop() {
        let mut writer = Trickle {
            written: Vec::new(),
            per_call: 0,
            calls: 0,
        };
        let pieces = [Bytes::from_static(b"x")];
        let err = futures_lite::future::block_on(write_all_vectored(
            &mut writer,
            pieces.iter().map(|p| &p[..]),
        ));
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::WriteZero);
    }
}
