//! A small blocking Kafka client for the operator commands and tests: one TCP connection,
//! one request at a time, messages encoded and decoded with `kafka-protocol`. The framing
//! functions ([`encode_request`], [`encode_request_into`], [`decode_response`],
//! [`response_size`], and [`round_trip`] over an async stream) are the one Kafka client core:
//! the brokers' replica fetchers and their inter-broker SASL step send the same frames over
//! glommio sockets, and the bench's pipelined connection (`bench::kafka_client`) queues them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

/// What went wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("{0}")]
    Kafka(String),
}

/// Largest response this client accepts, bytes.
const RESPONSE_BYTES_MAX: usize = 256 << 20;

pub struct Client {
    stream: TcpStream,
    correlation_id: i32,
}

impl Client {
    /// Connects to the first reachable of a comma-separated `host:port` list.
    pub fn connect(bootstrap: &str) -> Result<Client, ClientError> {
        let mut last = None;
        let mut stream = None;
        for address in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match TcpStream::connect(address) {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(err) => last = Some(ClientError::Connect(address.to_string(), err)),
            }
        }
        let stream = match (stream, last) {
            (Some(stream), _) => stream,
            (None, Some(err)) => return Err(err),
            (None, None) => {
                return Err(ClientError::Connect(
                    bootstrap.to_string(),
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address given"),
                ))
            }
        };
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Client {
            stream,
            correlation_id: 0,
        })
    }

    /// Sends one request and waits for its response.
    pub fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let frame = encode_request(request, version, self.correlation_id, "broker-cli")?;
        self.stream.write_all(&frame)?;
        let frame = self.read_frame()?;
        decode_response::<R>(frame, version, self.correlation_id)
    }

    fn read_frame(&mut self) -> Result<Bytes, ClientError> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let mut frame = vec![0u8; response_size(size)?];
        self.stream.read_exact(&mut frame)?;
        Ok(Bytes::from(frame))
    }
}

/// One request frame, size prefix included: the header for `version` and the body.
pub fn encode_request<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &'static str,
) -> Result<BytesMut, ClientError> {
    let mut buf = BytesMut::new();
    encode_request_into(&mut buf, request, version, correlation_id, client_id)?;
    Ok(buf)
}

/// Appends one request frame to `buf` (a pipelining client queues several before a write).
pub fn encode_request_into<R: Request>(
    buf: &mut BytesMut,
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &'static str,
) -> Result<(), ClientError> {
    let api_key = ApiKey::try_from(R::KEY)
        .map_err(|_| ClientError::Protocol(format!("unknown api key {}", R::KEY)))?;
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(client_id)));
    let start = buf.len();
    buf.put_i32(0);
    header
        .encode(buf, api_key.request_header_version(version))
        .map_err(|err| ClientError::Protocol(err.to_string()))?;
    request
        .encode(buf, version)
        .map_err(|err| ClientError::Protocol(err.to_string()))?;
    let size = (buf.len() - start - 4) as i32;
    buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// Decodes a response frame (size prefix removed) to request `R` of `version`, checking it
/// answers `correlation_id`.
pub fn decode_response<R: Request>(
    mut frame: Bytes,
    version: i16,
    correlation_id: i32,
) -> Result<R::Response, ClientError> {
    let api_key = ApiKey::try_from(R::KEY)
        .map_err(|_| ClientError::Protocol(format!("unknown api key {}", R::KEY)))?;
    // ApiVersions is answered with header v0 whatever the request version (KIP-511), so a
    // client can read the answer of a version the broker does not know.
    let header_version = if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(version)
    };
    let header = ResponseHeader::decode(&mut frame, header_version)
        .map_err(|err| ClientError::Protocol(err.to_string()))?;
    if header.correlation_id != correlation_id {
        return Err(ClientError::Protocol(format!(
            "correlation id {} answered, {correlation_id} expected",
            header.correlation_id
        )));
    }
    R::Response::decode(&mut frame, version).map_err(|err| ClientError::Protocol(err.to_string()))
}

/// One request and its answer on an async stream (the broker's own connections to other
/// brokers, over TCP or TLS): the answer's size must be at most `answer_bytes_max`.
pub async fn round_trip<S, R>(
    stream: &mut S,
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &'static str,
    answer_bytes_max: usize,
) -> Result<R::Response, String>
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
    R: Request,
{
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let frame = encode_request(request, version, correlation_id, client_id)
        .map_err(|err| err.to_string())?;
    stream
        .write_all(&frame)
        .await
        .map_err(|err| err.to_string())?;
    let mut size = [0u8; 4];
    stream
        .read_exact(&mut size)
        .await
        .map_err(|err| err.to_string())?;
    let size = response_size(size).map_err(|err| err.to_string())?;
    if size > answer_bytes_max {
        return Err(format!(
            "an answer of {size} bytes (at most {answer_bytes_max})"
        ));
    }
    let mut body = vec![0u8; size];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|err| err.to_string())?;
    decode_response::<R>(Bytes::from(body), version, correlation_id).map_err(|err| err.to_string())
}

/// A response's size prefix, checked against the largest response accepted.
pub fn response_size(prefix: [u8; 4]) -> Result<usize, ClientError> {
    let size = i32::from_be_bytes(prefix);
    if size < 4 || size as usize > RESPONSE_BYTES_MAX {
        return Err(ClientError::Protocol(format!("bad response size {size}")));
    }
    Ok(size as usize)
}

/// Splits `bytes` (a Fetch response's records) into complete RecordBatch v2 frames; a partial
/// batch at the end (cut by max_bytes) is dropped, as clients do.
pub fn complete_batches(mut bytes: Bytes) -> Vec<Bytes> {
    let mut batches = Vec::new();
    while bytes.len() >= 12 {
        let len = (&bytes[8..12]).get_i32();
        if len < 0 || bytes.len() < 12 + len as usize {
            break;
        }
        batches.push(bytes.split_to(12 + len as usize));
    }
    batches
}
