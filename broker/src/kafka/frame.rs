//! Request frames: the 4-byte size prefix and the request header.
//!
//! The first 8 bytes of a request (api key, version, correlation id) are read by hand so an
//! unknown API key or version can still be answered or logged with its correlation id; the
//! rest of the header (client id, tagged fields) is decoded with `kafka-protocol`.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;

/// Why a frame cannot be served; every variant closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is larger than the limit of {1} bytes")]
    TooLarge(i64, u32),
    #[error("frame size {0} is negative or too small for a request header")]
    BadSize(i32),
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("request header of api {0} v{1} is malformed")]
    BadHeader(i16, i16),
}

/// Checks a frame's size prefix against the limit; returns the body length.
pub fn check_size(size: i32, max_request_bytes: u32) -> Result<usize, FrameError> {
    if size < 8 {
        return Err(FrameError::BadSize(size));
    }
    if size as u32 > max_request_bytes {
        return Err(FrameError::TooLarge(size as i64, max_request_bytes));
    }
    Ok(size as usize)
}

/// The parsed header of one request, and the body after it.
pub struct Request {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    /// The header's client id (empty when absent).
    pub client_id: String,
    pub body: Bytes,
}

/// First 8 bytes of a frame, readable even for unknown APIs.
pub fn peek_ids(frame: &[u8]) -> Option<(i16, i16, i32)> {
    if frame.len() < 8 {
        return None;
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    Some((key, version, correlation))
}

/// Splits a frame (size prefix removed) into header and body. The body is a slice of the same
/// buffer, so record bytes decoded from it point into the receive buffer.
pub fn parse(mut frame: Bytes) -> Result<Request, FrameError> {
    let (key, version, correlation_id) = peek_ids(&frame).ok_or(FrameError::BadSize(0))?;
    let api_key = ApiKey::try_from(key).map_err(|_| FrameError::UnknownApiKey(key))?;
    if api_key == ApiKey::ApiVersions && !(0..=4).contains(&version) {
        // A newer client than the codec knows: only the correlation id matters for the answer.
        return Ok(Request {
            api_key,
            api_version: version,
            correlation_id,
            client_id: String::new(),
            body: Bytes::new(),
        });
    }
    let valid = api_key.valid_versions();
    let header_version = if (valid.min..=valid.max).contains(&version) {
        api_key.request_header_version(version)
    } else {
        // Outside what the codec knows (old Produce, future versions): the v1 header (client
        // id, no tagged fields) is enough for the handler to refuse the version.
        1
    };
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|_| FrameError::BadHeader(key, version))?;
    Ok(Request {
        api_key,
        api_version: version,
        correlation_id,
        client_id: header
            .client_id
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default(),
        body: frame,
    })
}

/// Reads an i16/i32 from a body, or `None` when it is truncated (never panics).
pub fn take_i32(buf: &mut Bytes) -> Option<i32> {
    (buf.remaining() >= 4).then(|| buf.get_i32())
}

pub fn take_i16(buf: &mut Bytes) -> Option<i16> {
    (buf.remaining() >= 2).then(|| buf.get_i16())
}

#[cfg(test)]
mod tests {
    //! Proves size limits and header parsing refuse bad input without panicking, by feeding
    //! crafted frames.
    use super::*;

    #[test]
    fn sizes_are_checked() {
        assert_eq!(check_size(-5, 1024), Err(FrameError::BadSize(-5)));
        assert_eq!(check_size(2, 1024), Err(FrameError::BadSize(2)));
        assert_eq!(
            check_size(2048, 1024),
            Err(FrameError::TooLarge(2048, 1024))
        );
        assert_eq!(check_size(100, 1024), Ok(100));
    }

    #[test]
    fn unknown_key_and_truncated_header_are_errors() {
        let frame = Bytes::from_static(&[0x7f, 0x00, 0, 1, 0, 0, 0, 9]);
        assert_eq!(parse(frame).err(), Some(FrameError::UnknownApiKey(0x7f00)));
        // Metadata v1 with a client id length running past the end.
        let frame = Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0, 9, 0, 50, b'a']);
        assert!(matches!(parse(frame), Err(FrameError::BadHeader(3, 1))));
    }

    #[test]
    fn body_follows_header() {
        let frame = Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0, 9, 0, 1, b'c', 0xAA, 0xBB]);
        let request = parse(frame).unwrap();
        assert_eq!(request.api_key, ApiKey::Metadata);
        assert_eq!(request.correlation_id, 9);
        assert_eq!(&request.body[..], &[0xAA, 0xBB]);
    }
}
