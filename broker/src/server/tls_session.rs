//! A server TLS session over a glommio socket, split into a reading and a writing half that
//! can be put back together into their parts (the socket and the rustls `ServerConnection`),
//! so that a connection can move to another shard with its session (`connection.rs`,
//! "Moving").
//!
//! The halves share the one `ServerConnection` through an `Rc<RefCell<_>>` that each borrows
//! only inside a poll (a shard is one thread and a poll never awaits). The reading half takes
//! ciphertext from the socket through [`SocketReceiver`] (nonblocking recv(2), then glommio's
//! wait with the stream's read timeout) and hands out plaintext; the writing half encrypts
//! into rustls' bounded send buffer and writes it to a duplicate of the socket with one
//! sendmsg(2) per batch of records ([`super::socket_send`]).
//! What either half holds when the connection moves (plaintext not yet read, records not yet
//! decrypted, records not yet sent) lives in the `ServerConnection` and moves with it.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::ServerConnection;

use super::recv_buffer::{ReadUninit, SocketReceiver};
use super::socket_send::poll_send_vectored;

/// The reading half: plaintext out of the session.
pub struct TlsReader {
    socket: SocketReceiver,
    session: Rc<RefCell<ServerConnection>>,
}

/// The writing half: plaintext into the session, records out to the socket.
pub struct TlsWriter {
    socket: TcpStream,
    session: Rc<RefCell<ServerConnection>>,
}

/// Splits a session whose handshake is done: `stream` reads, `write_stream` (a duplicate of
/// the same socket) writes.
pub fn split(
    stream: TcpStream,
    write_stream: TcpStream,
    session: ServerConnection,
) -> (TlsReader, TlsWriter) {
    let session = Rc::new(RefCell::new(session));
    (
        TlsReader {
            socket: SocketReceiver::new(stream),
            session: session.clone(),
        },
        TlsWriter {
            socket: write_stream,
            session,
        },
    )
}

impl TlsReader {
    /// The socket and the session, once the writing half is gone and no read of the socket is
    /// pending; `None` otherwise.
    pub fn into_parts(self) -> Option<(TcpStream, ServerConnection)> {
        let session = Rc::try_unwrap(self.session).ok()?.into_inner();
        Some((self.socket.into_stream()?, session))
    }
}

/// rustls reads records through `std::io::Read`: a poll of the socket, with "not yet" as
/// `WouldBlock` (the waker is registered by then).
struct RecordsIn<'a, 'b> {
    socket: &'a mut SocketReceiver,
    cx: &'a mut Context<'b>,
}

impl Read for RecordsIn<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // SAFETY: an initialized slice seen as possibly uninitialized room; the receiver only
        // writes received bytes into it, which keeps it initialized.
        let room = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
        match self.socket.poll_read_uninit(self.cx, room) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl AsyncRead for TlsReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut session = this.session.borrow_mut();
        loop {
            match session.reader().read(buf) {
                // Ok(0): the client sent close_notify.
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Poll::Ready(Err(err)),
            }
            let mut records = RecordsIn {
                socket: &mut this.socket,
                cx,
            };
            match session.read_tls(&mut records) {
                // The socket ended without close_notify.
                Ok(0) => return Poll::Ready(Ok(0)),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(err) => return Poll::Ready(Err(err)),
            }
            if let Err(err) = session.process_new_packets() {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, err)));
            }
        }
    }
}

/// rustls writes records through `std::io::Write`: sendmsg(2) of every record it hands over
/// at once, and when the socket is full, glommio's wait for room (as `WouldBlock`).
struct RecordsOut<'a, 'b> {
    socket: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl Write for RecordsOut<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match poll_send_vectored(self.socket, self.cx, bufs) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsWriter {
    /// Writes records until the session holds none; pending while the socket is full.
    fn poll_send_records(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut session = self.session.borrow_mut();
        while session.wants_write() {
            let mut records = RecordsOut {
                socket: &mut self.socket,
                cx,
            };
            match session.write_tls(&mut records) {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TlsWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        loop {
            // Bounded: rustls takes plaintext only while its send buffer has room.
            let taken = this.session.borrow_mut().writer().write_vectored(bufs)?;
            if taken > 0 {
                return Poll::Ready(Ok(taken));
            }
            std::task::ready!(this.poll_send_records(cx))?;
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send_records(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.session.borrow_mut().send_close_notify();
        this.poll_send_records(cx)
    }
}
