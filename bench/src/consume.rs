//! `bench consume` and the read-back of `--verify`: fetch a topic from given offsets to the
//! offsets it had when the run started, through the Kafka Fetch API.
//!
//! Throughput counts records from batch headers (no decoding, as a consumer's I/O path sees
//! them); the read-back decodes every record (kafka-protocol's decoder, any codec) to check
//! the numbers `--verify` put in.

use std::io;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use kafka_protocol::records::RecordBatchDecoder;

use crate::kafka_client::KafkaConnection;
use crate::produce::NUMBERED_PREFIX_BYTES;
use crate::report::{LatencyHistogram, RunCounts, Summary};
use crate::verify::ReadBack;

/// One whole batch found in a fetch response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub last_offset: i64,
    pub records: u32,
    /// The whole batch, bytes.
    pub length: usize,
}

/// Walks the whole batches at the start of `records`; a partial batch at the end (a fetch cut
/// by max_bytes) is left out.
pub fn batch_headers(records: &[u8]) -> impl Iterator<Item = (BatchHeader, &[u8])> {
    let mut rest = records;
    std::iter::from_fn(move || {
        if rest.len() < 61 {
            return None;
        }
        let base_offset = i64::from_be_bytes(rest[0..8].try_into().ok()?);
        let batch_length = i32::from_be_bytes(rest[8..12].try_into().ok()?);
        if batch_length < 49 || rest.len() < 12 + batch_length as usize {
            return None;
        }
        let length = 12 + batch_length as usize;
        let last_offset_delta = i32::from_be_bytes(rest[23..27].try_into().ok()?);
        let records = i32::from_be_bytes(rest[57..61].try_into().ok()?);
        let (batch, tail) = rest.split_at(length);
        rest = tail;
        Some((
            BatchHeader {
                base_offset,
                last_offset: base_offset + last_offset_delta as i64,
                records: records.max(0) as u32,
                length,
            },
            batch,
        ))
    })
}

/// Reads `partitions` from `from[p]` up to (not including) `until[p]`, calling `on_batch` with
/// each whole batch; records fetch latencies into `latency`.
pub fn read_range(
    connection: &mut KafkaConnection,
    topic: &str,
    from: &[(i32, i64)],
    until: &[(i32, i64)],
    deadline: Instant,
    latency: &mut LatencyHistogram,
    mut on_batch: impl FnMut(i32, BatchHeader, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut positions: Vec<(i32, i64)> = from.to_vec();
    let end = |partition: i32| {
        until
            .iter()
            .find(|(p, _)| *p == partition)
            .map_or(0, |(_, o)| *o)
    };
    loop {
        let wanted: Vec<(i32, i64)> = positions
            .iter()
            .copied()
            .filter(|(partition, offset)| *offset < end(*partition))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("read-back incomplete at {wanted:?}"),
            ));
        }
        let started = Instant::now();
        let response = connection.fetch(topic, &wanted, 500, 1, 64 << 20, 8 << 20)?;
        latency.record(started.elapsed());
        advance(&response, topic, &mut positions, &mut on_batch)?;
    }
}

/// Walks the whole batches of a fetch `response` that start at or after each partition's
/// position, calls `on_batch` with each, and moves the positions past them.
pub fn advance(
    response: &kafka_protocol::messages::FetchResponse,
    topic: &str,
    positions: &mut [(i32, i64)],
    on_batch: &mut impl FnMut(i32, BatchHeader, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    for topic_response in &response.responses {
        for data in &topic_response.partitions {
            if data.error_code != 0 {
                return Err(io::Error::other(format!(
                    "fetch {topic}/{}: error {}",
                    data.partition_index, data.error_code
                )));
            }
            let Some(records) = &data.records else {
                continue;
            };
            let Some(position) = positions
                .iter_mut()
                .find(|(p, _)| *p == data.partition_index)
            else {
                continue;
            };
            for (header, batch) in batch_headers(records) {
                if header.last_offset < position.1 {
                    continue; // a batch that starts before the fetch offset
                }
                on_batch(data.partition_index, header, batch)?;
                position.1 = header.last_offset + 1;
            }
        }
    }
    Ok(())
}

/// Decodes the numbered messages of one batch (see `produce --verify`); calls `on_message`
/// with each and its intended send time (ns since the Unix epoch).
pub fn numbered_messages(
    partition: i32,
    batch: &[u8],
    mut on_message: impl FnMut(ReadBack, u64),
) -> io::Result<()> {
    let mut bytes = Bytes::copy_from_slice(batch);
    let set = RecordBatchDecoder::decode(&mut bytes).map_err(|err| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("partition {partition}: {err}"),
        )
    })?;
    for record in &set.records {
        let value = record.value.as_ref().map(|v| v.as_ref()).unwrap_or(&[]);
        if value.len() < NUMBERED_PREFIX_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "partition {partition} offset {}: value too short to be numbered",
                    record.offset
                ),
            ));
        }
        let mut prefix = &value[..NUMBERED_PREFIX_BYTES];
        let message = ReadBack {
            partition,
            offset: record.offset,
            connection: prefix.get_u32(),
            sequence: prefix.get_u64(),
        };
        on_message(message, prefix.get_u64());
    }
    Ok(())
}

/// Consumes `topic` from its earliest offsets to the latest offsets it has now; reports
/// msgs/s, MB/s (record batch bytes) and fetch latency.
pub fn consume_existing(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Summary, String> {
    let mut connection = KafkaConnection::connect(bootstrap, Duration::from_secs(10))
        .map_err(|err| format!("connect {bootstrap}: {err}"))?;
    let metadata = connection
        .metadata(Some(&[topic]))
        .map_err(|err| err.to_string())?;
    let partitions = metadata
        .topics
        .first()
        .filter(|t| t.error_code == 0)
        .map(|t| t.partitions.len() as i32)
        .ok_or_else(|| format!("topic {topic} does not exist"))?;
    let earliest = connection
        .list_offsets(topic, partitions, -2)
        .map_err(|err| err.to_string())?;
    let latest = connection
        .list_offsets(topic, partitions, -1)
        .map_err(|err| err.to_string())?;
    let mut latency = LatencyHistogram::default();
    let (mut msgs, mut bytes) = (0u64, 0u64);
    let started = Instant::now();
    read_range(
        &mut connection,
        topic,
        &earliest,
        &latest,
        started + timeout,
        &mut latency,
        |_, header, _| {
            msgs += header.records as u64;
            bytes += header.length as u64;
            Ok(())
        },
    )
    .map_err(|err| err.to_string())?;
    Ok(Summary::new(
        RunCounts {
            workload: "consume",
            msgs,
            bytes,
            elapsed: started.elapsed(),
            errors: 0,
            schedule_kept: true,
            target_msgs_per_s: None,
        },
        &latency,
    ))
}

#[cfg(test)]
mod tests {
    //! Proves batch walking stops at a partial batch and reads counts from the headers.
    use super::*;
    use crate::record_batch::{encode_with_codec, Codec};

    #[test]
    fn batch_headers_skip_a_cut_batch() {
        let records: Vec<(Option<Bytes>, Bytes)> =
            (0..5).map(|i| (None, Bytes::from(vec![i; 10]))).collect();
        let one = encode_with_codec(Codec::None, 0, &records);
        let mut two = one.to_vec();
        two[..8].copy_from_slice(&0i64.to_be_bytes());
        let mut second = one.to_vec();
        second[..8].copy_from_slice(&5i64.to_be_bytes());
        two.extend_from_slice(&second);
        two.extend_from_slice(&one[..one.len() - 3]);
        let headers: Vec<BatchHeader> = batch_headers(&two).map(|(h, _)| h).collect();
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[1].base_offset, 5);
        assert_eq!(headers[1].last_offset, 9);
        assert_eq!(headers[1].records, 5);
    }
}
