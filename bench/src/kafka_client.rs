//! A small blocking Kafka client for the bench: one TCP connection, API version negotiation,
//! typed calls for the control APIs (through the kafka-protocol crate) and a pipelined produce
//! [`Transport`](crate::engine::Transport) for the load itself. Frames are encoded, sized and
//! decoded by the broker's client core (`broker::cli::client`); this adds pipelining.
//!
//! It is deliberately not a general client: no retries, no metadata refresh, no consumer
//! groups. It speaks to any Kafka-API broker, so peers are measured the same way as ours.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest, FetchRequest,
    FetchResponse, ListOffsetsRequest, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};

use broker::cli::client;

use crate::engine::{Ack, Clock, SystemClock, Transport};

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

fn protocol_error(context: &str, err: impl std::fmt::Display) -> io::Error {
    invalid(format!("{context}: {err}"))
}

/// One connection to a Kafka-API broker.
pub struct KafkaConnection {
    stream: TcpStream,
    peer: String,
    next_correlation_id: i32,
    /// api key -> (min, max) the broker supports.
    versions: HashMap<i16, (i16, i16)>,
    receive: BytesMut,
    send: BytesMut,
}

impl KafkaConnection {
    /// Connects and negotiates API versions (ApiVersions v0: every broker answers it).
    pub fn connect(address: &str, timeout: Duration) -> io::Result<KafkaConnection> {
        let socket_address = address
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| invalid(format!("{address}: no address")))?;
        let stream = TcpStream::connect_timeout(&socket_address, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut connection = KafkaConnection {
            stream,
            peer: address.to_string(),
            next_correlation_id: 1,
            versions: HashMap::new(),
            receive: BytesMut::with_capacity(1 << 20),
            send: BytesMut::with_capacity(1 << 20),
        };
        let response: ApiVersionsResponse = connection.call(&ApiVersionsRequest::default(), 0)?;
        if response.error_code != 0 {
            return Err(invalid(format!(
                "{address}: ApiVersions error {}",
                response.error_code
            )));
        }
        connection.versions = response
            .api_keys
            .iter()
            .map(|key| (key.api_key, (key.min_version, key.max_version)))
            .collect();
        Ok(connection)
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The highest version of `key` both sides support, at most `ours_max` and at least
    /// `ours_min`.
    pub fn version(&self, key: ApiKey, ours_min: i16, ours_max: i16) -> io::Result<i16> {
        let (min, max) = self
            .versions
            .get(&(key as i16))
            .copied()
            .ok_or_else(|| invalid(format!("{}: broker lacks {key:?}", self.peer)))?;
        let version = max.min(ours_max);
        if version < min.max(ours_min) {
            return Err(invalid(format!(
                "{}: no common version of {key:?} (broker {min}..={max}, ours {ours_min}..={ours_max})",
                self.peer
            )));
        }
        Ok(version)
    }

    /// Encodes a request frame into the send buffer; returns its correlation id.
    fn encode_request<R: Request>(&mut self, request: &R, version: i16) -> io::Result<i32> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        client::encode_request_into(&mut self.send, request, version, correlation_id, "bench")
            .map_err(|err| protocol_error("encode request", err))?;
        Ok(correlation_id)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.send)?;
        self.send.clear();
        Ok(())
    }

    /// Sends `request` and waits for its response.
    pub fn call<R: Request>(&mut self, request: &R, version: i16) -> io::Result<R::Response> {
        let correlation_id = self.encode_request(request, version)?;
        self.flush()?;
        let frame = loop {
            if let Some(frame) = self.take_frame()? {
                break frame;
            }
            self.fill(None)?;
        };
        self.decode_response::<R>(frame, version, correlation_id)
    }

    fn decode_response<R: Request>(
        &self,
        frame: Bytes,
        version: i16,
        correlation_id: i32,
    ) -> io::Result<R::Response> {
        client::decode_response::<R>(frame, version, correlation_id)
            .map_err(|err| protocol_error(&self.peer, err))
    }

    /// Removes one complete frame from the receive buffer, if there is one.
    fn take_frame(&mut self) -> io::Result<Option<Bytes>> {
        if self.receive.len() < 4 {
            return Ok(None);
        }
        let prefix: [u8; 4] = self.receive[..4].try_into().expect("4 bytes");
        let length =
            client::response_size(prefix).map_err(|err| protocol_error(&self.peer, err))?;
        if self.receive.len() < 4 + length {
            self.receive.reserve(4 + length - self.receive.len());
            return Ok(None);
        }
        self.receive.advance(4);
        Ok(Some(self.receive.split_to(length).freeze()))
    }

    /// Reads what the socket has; waits at most `timeout` (None: the socket's own timeout).
    /// Returns false when the timeout passed with nothing to read.
    fn fill(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        if let Some(timeout) = timeout {
            let mut poll = libc::pollfd {
                fd: self.stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // ppoll, not poll: poll's millisecond timeout would round a wait of a few µs (the
            // next message due at 1 M msgs/s) up to a whole millisecond of added latency.
            let timeout = libc::timespec {
                tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
                tv_nsec: timeout.subsec_nanos() as libc::c_long,
            };
            // SAFETY: one valid pollfd and timespec for the duration of the call; no sigmask.
            let ready = unsafe { libc::ppoll(&mut poll, 1, &timeout, std::ptr::null()) };
            if ready < 0 {
                let err = io::Error::last_os_error();
                return if err.kind() == io::ErrorKind::Interrupted {
                    Ok(false)
                } else {
                    Err(err)
                };
            }
            if ready == 0 {
                return Ok(false);
            }
        }
        if self.receive.capacity() - self.receive.len() < 64 << 10 {
            self.receive.reserve(256 << 10);
        }
        let spare = self.receive.spare_capacity_mut();
        // SAFETY: read() only writes into the spare capacity, and we only extend the length by
        // the number of bytes it reports written.
        let buffer =
            unsafe { std::slice::from_raw_parts_mut(spare.as_mut_ptr() as *mut u8, spare.len()) };
        let read = self.stream.read(buffer)?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: connection closed by the broker", self.peer),
            ));
        }
        // SAFETY: `read` bytes were initialised by the read above.
        unsafe { self.receive.set_len(self.receive.len() + read) };
        Ok(true)
    }

    /// Metadata for `topics` (None: all topics).
    pub fn metadata(&mut self, topics: Option<&[&str]>) -> io::Result<MetadataResponse> {
        let version = self.version(ApiKey::Metadata, 1, 12)?;
        let request = MetadataRequest::default().with_topics(topics.map(|topics| {
            topics
                .iter()
                .map(|name| {
                    kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(topic_name(name)))
                })
                .collect()
        }));
        self.call(&request, version)
    }

    /// Creates `topic` with `partitions` partitions unless it exists; returns the partition
    /// count it has.
    pub fn ensure_topic(
        &mut self,
        topic: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> io::Result<i32> {
        let existing = self.partition_count(topic)?;
        if let Some(count) = existing {
            return Ok(count);
        }
        let version = self.version(ApiKey::CreateTopics, 2, 7)?;
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![
                kafka_protocol::messages::create_topics_request::CreatableTopic::default()
                    .with_name(topic_name(topic))
                    .with_num_partitions(partitions)
                    .with_replication_factor(-1)
                    .with_configs(
                        configs
                            .iter()
                            .map(|(name, value)| {
                                kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default()
                                    .with_name(StrBytes::from_string(name.to_string()))
                                    .with_value(Some(StrBytes::from_string(value.to_string())))
                            })
                            .collect(),
                    ),
            ]);
        let response = self.call(&request, version)?;
        for result in &response.topics {
            // 36 = TOPIC_ALREADY_EXISTS: another bench run created it first.
            if result.error_code != 0 && result.error_code != 36 {
                return Err(invalid(format!(
                    "{}: CreateTopics {topic}: error {} {}",
                    self.peer,
                    result.error_code,
                    result.error_message.as_ref().map_or("", |m| m.as_str())
                )));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(count) = self.partition_count(topic)? {
                return Ok(count);
            }
            if Instant::now() > deadline {
                return Err(invalid(format!(
                    "{}: topic {topic} not in metadata after creation",
                    self.peer
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn partition_count(&mut self, topic: &str) -> io::Result<Option<i32>> {
        let metadata = self.metadata(Some(&[topic]))?;
        Ok(metadata
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic) && t.error_code == 0)
            .map(|t| t.partitions.len() as i32)
            .filter(|count| *count > 0))
    }
}

impl KafkaConnection {
    /// One Fetch for `partitions` (partition, fetch offset) of `topic`.
    pub fn fetch(
        &mut self,
        topic: &str,
        partitions: &[(i32, i64)],
        max_wait_ms: i32,
        min_bytes: i32,
        max_bytes: i32,
        partition_max_bytes: i32,
    ) -> io::Result<FetchResponse> {
        // v4 is the first with RecordBatch v2; v12 is the last that names topics (13+ use ids).
        let version = self.version(ApiKey::Fetch, 4, 12)?;
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(min_bytes)
            .with_max_bytes(max_bytes)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|(partition, offset)| {
                            FetchPartition::default()
                                .with_partition(*partition)
                                .with_fetch_offset(*offset)
                                .with_current_leader_epoch(-1)
                                .with_log_start_offset(-1)
                                .with_partition_max_bytes(partition_max_bytes)
                        })
                        .collect(),
                )]);
        self.call(&request, version)
    }

    /// ListOffsets of every partition of `topic` at `timestamp` (-2 earliest, -1 latest);
    /// returns (partition, offset) in partition order.
    pub fn list_offsets(
        &mut self,
        topic: &str,
        partitions: i32,
        timestamp: i64,
    ) -> io::Result<Vec<(i32, i64)>> {
        let all: Vec<i32> = (0..partitions).collect();
        self.list_offsets_of(topic, &all, timestamp)
    }

    /// ListOffsets for `partitions` of `topic` (all led by this connection's broker).
    pub fn list_offsets_of(
        &mut self,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> io::Result<Vec<(i32, i64)>> {
        let version = self.version(ApiKey::ListOffsets, 1, 7)?;
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&partition| {
                            ListOffsetsPartition::default()
                                .with_partition_index(partition)
                                .with_current_leader_epoch(-1)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )]);
        let response = self.call(&request, version)?;
        let mut offsets = Vec::new();
        for topic_response in &response.topics {
            for partition in &topic_response.partitions {
                if partition.error_code != 0 {
                    return Err(invalid(format!(
                        "{}: ListOffsets {topic}/{}: error {}",
                        self.peer, partition.partition_index, partition.error_code
                    )));
                }
                offsets.push((partition.partition_index, partition.offset));
            }
        }
        offsets.sort_unstable();
        Ok(offsets)
    }
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// The produce side of a [`KafkaConnection`]: requests are written back to back and their
/// answers read as they come, in order (Kafka answers a connection's requests in order).
pub struct ProduceTransport<'c> {
    connection: KafkaConnection,
    clock: &'c SystemClock,
    topic: TopicName,
    acks: i16,
    timeout_ms: i32,
    version: i16,
    /// Correlation ids of the unanswered requests, oldest first.
    outstanding: std::collections::VecDeque<i32>,
}

impl<'c> ProduceTransport<'c> {
    pub fn new(
        connection: KafkaConnection,
        clock: &'c SystemClock,
        topic: &str,
        acks: i16,
    ) -> io::Result<Self> {
        // v3 is the first with RecordBatch v2; v9 (flexible) is what current clients send.
        let version = connection.version(ApiKey::Produce, 3, 9)?;
        Ok(ProduceTransport {
            connection,
            clock,
            topic: topic_name(topic),
            acks,
            timeout_ms: 30_000,
            version,
            outstanding: std::collections::VecDeque::new(),
        })
    }
}

impl Transport for ProduceTransport<'_> {
    fn send(&mut self, batches: &[(i32, Bytes)]) -> io::Result<()> {
        let request = ProduceRequest::default()
            .with_acks(self.acks)
            .with_timeout_ms(self.timeout_ms)
            .with_topic_data(vec![
                kafka_protocol::messages::produce_request::TopicProduceData::default()
                    .with_name(self.topic.clone())
                    .with_partition_data(
                        batches
                            .iter()
                            .map(|(partition, records)| {
                                kafka_protocol::messages::produce_request::PartitionProduceData::default()
                                    .with_index(*partition)
                                    .with_records(Some(records.clone()))
                            })
                            .collect(),
                    ),
            ]);
        let correlation_id = self.connection.encode_request(&request, self.version)?;
        self.connection.flush()?;
        if self.acks != 0 {
            self.outstanding.push_back(correlation_id);
        }
        Ok(())
    }

    fn poll_acks(&mut self, deadline: Duration, acks: &mut Vec<Ack>) -> io::Result<()> {
        loop {
            while let Some(frame) = self.connection.take_frame()? {
                let correlation_id = self.outstanding.pop_front().ok_or_else(|| {
                    invalid(format!("{}: unexpected response", self.connection.peer))
                })?;
                let response: ProduceResponse = self.connection.decode_response::<ProduceRequest>(
                    frame,
                    self.version,
                    correlation_id,
                )?;
                let mut failed_partitions = 0;
                let mut error_code = 0;
                for topic in &response.responses {
                    for partition in &topic.partition_responses {
                        if partition.error_code != 0 {
                            failed_partitions += 1;
                            if error_code == 0 {
                                error_code = partition.error_code;
                            }
                        }
                    }
                }
                acks.push(Ack {
                    failed_partitions,
                    error_code,
                    at: self.clock.now(),
                });
            }
            if !acks.is_empty() {
                return Ok(());
            }
            let now = self.clock.now();
            if now >= deadline && !acks.is_empty() {
                return Ok(());
            }
            let wait = deadline.saturating_sub(now);
            if self.outstanding.is_empty() {
                if !wait.is_zero() {
                    sleep_precise(wait);
                }
                return Ok(());
            }
            if !self.connection.fill(Some(wait))? && self.clock.now() >= deadline {
                return Ok(());
            }
        }
    }

    fn acks_expected(&self) -> bool {
        self.acks != 0
    }
}

/// Sleeps `wait`, spinning the last 100 µs: the schedule needs better than the scheduler's
/// ~50 µs timer slack at high rates.
fn sleep_precise(wait: Duration) {
    let until = Instant::now() + wait;
    if wait > Duration::from_micros(200) {
        std::thread::sleep(wait - Duration::from_micros(100));
    }
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}
