//! Produce v0-2: advertised (librdkafka needs the range to start at 0 to use compression) but
//! refused, since those versions carry message sets older than RecordBatch v2. The request is
//! parsed just enough to answer UNSUPPORTED_VERSION for every partition it names.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::codes;
use super::frame::{take_i16, take_i32};

/// The response frame, or `None` for acks=0 (no response) or a malformed body (close).
pub fn refuse(correlation_id: i32, version: i16, mut body: Bytes) -> Option<Result<Bytes, ()>> {
    let acks = match take_i16(&mut body) {
        Some(acks) => acks,
        None => return Some(Err(())),
    };
    let parsed = parse(&mut body);
    if acks == 0 {
        return None;
    }
    let topics = match parsed {
        Some(topics) => topics,
        None => return Some(Err(())),
    };
    let mut out = BytesMut::new();
    out.put_i32(0);
    out.put_i32(correlation_id);
    out.put_i32(topics.len() as i32);
    for (name, partitions) in topics {
        out.put_i16(name.len() as i16);
        out.put_slice(&name);
        out.put_i32(partitions.len() as i32);
        for partition in partitions {
            out.put_i32(partition);
            out.put_i16(codes::UNSUPPORTED_VERSION);
            out.put_i64(-1);
            if version >= 2 {
                out.put_i64(-1);
            }
        }
    }
    if version >= 1 {
        out.put_i32(0);
    }
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Some(Ok(out.freeze()))
}

type Topics = Vec<(Bytes, Vec<i32>)>;

fn parse(body: &mut Bytes) -> Option<Topics> {
    take_i32(body)?; // timeout_ms
    let topic_count = take_i32(body)?;
    // Each topic needs at least 6 bytes, so a count larger than that is a lie.
    if topic_count < 0 || topic_count as usize > body.remaining() / 6 {
        return None;
    }
    let mut topics = Vec::with_capacity(topic_count as usize);
    for _ in 0..topic_count {
        let name_len = take_i16(body)?;
        if name_len < 0 || name_len as usize > body.remaining() {
            return None;
        }
        let name = body.split_to(name_len as usize);
        let partition_count = take_i32(body)?;
        if partition_count < 0 || partition_count as usize > body.remaining() / 8 {
            return None;
        }
        let mut partitions = Vec::with_capacity(partition_count as usize);
        for _ in 0..partition_count {
            partitions.push(take_i32(body)?);
            let records_len = take_i32(body)?;
            if records_len > 0 {
                if records_len as usize > body.remaining() {
                    return None;
                }
                body.advance(records_len as usize);
            }
        }
        topics.push((name, partitions));
    }
    Some(topics)
}

#[cfg(test)]
mod tests {
    //! Proves a Produce v2 request gets UNSUPPORTED_VERSION per partition and a truncated one
    //! is refused, by building the bytes by hand.
    use super::*;

    #[test]
    fn v2_request_is_refused_per_partition() {
        let mut body = BytesMut::new();
        body.put_i16(1);
        body.put_i32(1000);
        body.put_i32(1);
        body.put_i16(1);
        body.put_slice(b"t");
        body.put_i32(1);
        body.put_i32(4);
        body.put_i32(3);
        body.put_slice(b"abc");
        let mut frame = refuse(5, 2, body.freeze()).unwrap().unwrap();
        assert_eq!(frame.get_i32() as usize, frame.len());
        assert_eq!(frame.get_i32(), 5);
        assert_eq!(frame.get_i32(), 1);
        assert_eq!(frame.get_i16(), 1);
        frame.advance(1);
        assert_eq!(frame.get_i32(), 1);
        assert_eq!(frame.get_i32(), 4);
        assert_eq!(frame.get_i16(), codes::UNSUPPORTED_VERSION);
    }

    #[test]
    fn truncated_request_is_an_error() {
        let body = Bytes::from_static(&[0, 1, 0, 0, 3, 232, 0, 0, 0, 9]);
        assert!(matches!(refuse(1, 1, body), Some(Err(()))));
    }
}
