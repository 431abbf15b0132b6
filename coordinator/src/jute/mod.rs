//! The jute codec: ZooKeeper's client wire format.
//!
//! Jute is big-endian; every frame on the client port is a 4-byte signed length followed by
//! that many bytes. The first frame of a connection is a bare `ConnectRequest` (no header);
//! later frames start with a `RequestHeader` (xid, opcode) and the server answers with a
//! `ReplyHeader` (xid, zxid, err) plus the response record. This module holds the primitive
//! reader/writer ([`Reader`], [`Writer`]), the opcode and error-code numbers ([`codes`]) and
//! the request/response records ([`records`]). Decoders are total: truncated or malformed
//! input yields a [`DecodeError`], never a panic, and no length read from the wire allocates
//! more than the bytes actually present.

pub mod codes;
pub mod records;

/// Why a jute record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record truncated: needed {needed} bytes at offset {offset}, {available} left")]
    Truncated {
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("negative or oversized length {length} at offset {offset}")]
    BadLength { offset: usize, length: i32 },
    #[error("string at offset {offset} is not UTF-8")]
    NotUtf8 { offset: usize },
    #[error("invalid value {value} for {field} at offset {offset}")]
    BadValue {
        field: &'static str,
        value: i64,
        offset: usize,
    },
}

/// A cursor over a received jute record.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, offset: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The unread tail (for records whose body is parsed later, by opcode).
    pub fn rest(&self) -> &'a [u8] {
        &self.bytes[self.offset..]
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                offset: self.offset,
                needed: n,
                available: self.remaining(),
            });
        }
        let out = &self.bytes[self.offset..self.offset + n];
        self.offset += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn read_bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.take(1)?[0] != 0)
    }

    pub fn read_i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub fn read_i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// A length prefix: -1 means null (returned as `None`); other negatives and lengths past
    /// the end of the record are errors, so a hostile length never drives an allocation.
    fn read_len(&mut self, element_bytes_min: usize) -> Result<Option<usize>, DecodeError> {
        let offset = self.offset;
        let length = self.read_i32()?;
        if length == -1 {
            return Ok(None);
        }
        if length < 0 || (length as usize).saturating_mul(element_bytes_min) > self.remaining() {
            return Err(DecodeError::BadLength { offset, length });
        }
        Ok(Some(length as usize))
    }

    /// A jute `buffer`; null decodes as empty, as ZooKeeper's servers treat it.
    pub fn read_buffer(&mut self) -> Result<&'a [u8], DecodeError> {
        match self.read_len(1)? {
            None => Ok(&[]),
            Some(n) => self.take(n),
        }
    }

    /// A jute `buffer` that keeps null (length -1) apart from empty, for znode data.
    pub fn read_opt_buffer(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        match self.read_len(1)? {
            None => Ok(None),
            Some(n) => self.take(n).map(Some),
        }
    }

    /// A jute `ustring`; null decodes as empty.
    pub fn read_string(&mut self) -> Result<&'a str, DecodeError> {
        let offset = self.offset;
        let bytes = self.read_buffer()?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8 { offset })
    }

    /// A `vector<ustring>`; null decodes as empty.
    pub fn read_string_vec(&mut self) -> Result<Vec<String>, DecodeError> {
        let n = self.read_len(4)?.unwrap_or(0);
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.read_string()?.to_owned());
        }
        Ok(out)
    }

    /// The element count of a vector of records at least `element_bytes_min` long each.
    pub fn read_vec_len(&mut self, element_bytes_min: usize) -> Result<usize, DecodeError> {
        Ok(self.read_len(element_bytes_min.max(1))?.unwrap_or(0))
    }
}

/// Appends jute-encoded values to a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    pub bytes: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer { bytes: Vec::new() }
    }

    /// A writer that starts a frame: 4 bytes of length are reserved and patched by
    /// [`Writer::finish_frame`].
    pub fn frame() -> Self {
        Writer { bytes: vec![0; 4] }
    }

    /// Writes the frame length into the reserved prefix and returns the frame.
    pub fn finish_frame(mut self) -> Vec<u8> {
        let body_len = (self.bytes.len() - 4) as u32;
        self.bytes[..4].copy_from_slice(&body_len.to_be_bytes());
        self.bytes
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.bytes.push(v as u8);
        self
    }

    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn buffer(&mut self, v: &[u8]) -> &mut Self {
        self.i32(v.len() as i32);
        self.bytes.extend_from_slice(v);
        self
    }

    /// A `buffer` that may be null (written as length -1).
    pub fn opt_buffer(&mut self, v: Option<&[u8]>) -> &mut Self {
        match v {
            Some(v) => self.buffer(v),
            None => self.i32(-1),
        }
    }

    pub fn string(&mut self, v: &str) -> &mut Self {
        self.buffer(v.as_bytes())
    }

    pub fn string_vec<S: AsRef<str>>(&mut self, v: &[S]) -> &mut Self {
        self.i32(v.len() as i32);
        for s in v {
            self.string(s.as_ref());
        }
        self
    }
}
