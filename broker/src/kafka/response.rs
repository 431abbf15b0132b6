//! A response on its way to the socket: in-memory chunks and, for Fetch, byte ranges of
//! segment files that go file -> socket by splice.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::Encodable;

use crate::storage::batch_cache::CachedBytes;
use crate::storage::FileRange;

/// One piece of a response, in order.
pub enum Part {
    Memory(Bytes),
    /// Record bytes the shard's batch cache holds, written to the socket from its buffer.
    Cached(CachedBytes),
    File(FileRange),
}

impl Part {
    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        match self {
            Part::Memory(bytes) => bytes.len(),
            Part::Cached(bytes) => bytes.len(),
            Part::File(range) => range.len as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of a part held in memory; `None` for a file range.
    pub fn in_memory(&self) -> Option<&[u8]> {
        match self {
            Part::Memory(bytes) => Some(bytes),
            Part::Cached(bytes) => Some(bytes),
            Part::File(_) => None,
        }
    }
}

/// A whole response frame (size prefix included) as parts.
pub struct Response {
    pub parts: Vec<Part>,
}

impl Response {
    pub fn memory(frame: Bytes) -> Response {
        Response {
            parts: vec![Part::Memory(frame)],
        }
    }

    /// Bytes on the wire, size prefix included.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Part::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Encodes a response frame: size, correlation id, header tagged fields (header v1), body.
pub fn encode<T: Encodable>(
    correlation_id: i32,
    header_version: i16,
    body: &T,
    version: i16,
) -> Bytes {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    buf.put_i32(correlation_id);
    if header_version >= 1 {
        buf.put_u8(0);
    }
    if let Err(err) = body.encode(&mut buf, version) {
        // Our own response did not fit the version's schema: a bug, reported and answered with
        // an empty frame the client will reject, rather than a panic in the broker.
        tracing::error!("cannot encode response v{version}: {err}");
        buf.truncate(8);
    }
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    buf.freeze()
}
