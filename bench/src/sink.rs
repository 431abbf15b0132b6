//! A Kafka-protocol sink that stores nothing: it answers ApiVersions, Metadata, CreateTopics,
//! ListOffsets and Produce (every batch acknowledged, offsets counted) and discards the
//! records. `bench produce --sink` drives it to measure the generator's own ceiling: whatever
//! a real broker adds is on top of this. It is a measuring instrument, not a broker: it keeps
//! no data and serves no Fetch.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

/// Largest request the sink reads, bytes.
const MAX_REQUEST_BYTES: usize = 128 << 20;

/// Topic name -> next offset of each partition.
type Topics = Arc<Mutex<HashMap<String, Vec<i64>>>>;

/// A running sink; stops when dropped.
pub struct Sink {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Sink {
    /// Listens on a free loopback port.
    pub fn start() -> io::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let topics: Topics = Arc::default();
        let acceptor = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("sink-accept".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((stream, _)) => {
                                let topics = topics.clone();
                                let stop = stop.clone();
                                let _ = std::thread::Builder::new().name("sink-conn".into()).spawn(
                                    move || {
                                        let _ = serve(stream, address, &topics, &stop);
                                    },
                                );
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                })?
        };
        Ok(Sink {
            address,
            stop,
            acceptor: Some(acceptor),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn serve(
    mut stream: TcpStream,
    address: SocketAddr,
    topics: &Topics,
    stop: &AtomicBool,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut receive = BytesMut::with_capacity(1 << 20);
    let mut send = BytesMut::with_capacity(1 << 16);
    let mut chunk = vec![0u8; 1 << 20];
    while !stop.load(Ordering::Relaxed) {
        let read = match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(read) => read,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(err) => return Err(err),
        };
        receive.extend_from_slice(&chunk[..read]);
        while receive.len() >= 4 {
            let length = i32::from_be_bytes(receive[..4].try_into().expect("4 bytes"));
            if length < 8 || length as usize > MAX_REQUEST_BYTES {
                return Err(invalid(format!("bad frame length {length}")));
            }
            if receive.len() < 4 + length as usize {
                break;
            }
            receive.advance(4);
            let mut frame = receive.split_to(length as usize).freeze();
            answer(&mut frame, address, topics, &mut send)?;
        }
        if !send.is_empty() {
            stream.write_all(&send)?;
            send.clear();
        }
    }
    Ok(())
}

fn put_response<R: Encodable + HeaderVersion>(
    send: &mut BytesMut,
    correlation_id: i32,
    response: &R,
    version: i16,
    header_version: i16,
) -> io::Result<()> {
    let start = send.len();
    send.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(send, header_version)
        .map_err(|err| invalid(err.to_string()))?;
    response
        .encode(send, version)
        .map_err(|err| invalid(err.to_string()))?;
    let length = (send.len() - start - 4) as i32;
    send[start..start + 4].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

/// Answers one request frame into `send` (nothing for a Produce with acks=0).
fn answer(
    frame: &mut Bytes,
    address: SocketAddr,
    topics: &Topics,
    send: &mut BytesMut,
) -> io::Result<()> {
    let header = kafka_protocol::protocol::decode_request_header_from_buffer(frame)
        .map_err(|err| invalid(err.to_string()))?;
    let version = header.request_api_version;
    let key = ApiKey::try_from(header.request_api_key)
        .map_err(|_| invalid(format!("unknown api key {}", header.request_api_key)))?;
    let response_header = key.response_header_version(version);
    let id = header.correlation_id;
    let decode_error = |err: &dyn std::fmt::Display| invalid(format!("{key:?} v{version}: {err}"));
    match key {
        ApiKey::ApiVersions => put_response(send, id, &api_versions(), version.min(3), 0),
        ApiKey::Metadata => {
            let request =
                MetadataRequest::decode(frame, version).map_err(|err| decode_error(&err))?;
            let response = metadata(&request, address, topics)?;
            put_response(send, id, &response, version, response_header)
        }
        ApiKey::CreateTopics => {
            let request =
                CreateTopicsRequest::decode(frame, version).map_err(|err| decode_error(&err))?;
            let response = create_topics(&request, topics)?;
            put_response(send, id, &response, version, response_header)
        }
        ApiKey::ListOffsets => {
            let request =
                ListOffsetsRequest::decode(frame, version).map_err(|err| decode_error(&err))?;
            let response = list_offsets(&request, topics)?;
            put_response(send, id, &response, version, response_header)
        }
        ApiKey::Produce => {
            let request =
                ProduceRequest::decode(frame, version).map_err(|err| decode_error(&err))?;
            let response = produce(&request, topics)?;
            if request.acks == 0 {
                return Ok(());
            }
            put_response(send, id, &response, version, response_header)
        }
        other => Err(invalid(format!("the sink does not serve {other:?}"))),
    }
}

fn lock(topics: &Topics) -> io::Result<MutexGuard<'_, HashMap<String, Vec<i64>>>> {
    topics.lock().map_err(|_| invalid("poisoned".into()))
}

/// The APIs and versions the sink serves.
fn api_versions() -> ApiVersionsResponse {
    let keys = [
        (ApiKey::Produce, 3, 9),
        (ApiKey::Metadata, 1, 12),
        (ApiKey::ListOffsets, 1, 7),
        (ApiKey::CreateTopics, 2, 7),
        (ApiKey::ApiVersions, 0, 3),
    ];
    ApiVersionsResponse::default().with_api_keys(
        keys.iter()
            .map(|(key, min, max)| {
                ApiVersion::default()
                    .with_api_key(*key as i16)
                    .with_min_version(*min)
                    .with_max_version(*max)
            })
            .collect(),
    )
}

/// The sink as the one broker (id 0) leading every partition of the topics asked for (all
/// known ones when none are named); an unknown topic gets UNKNOWN_TOPIC_OR_PARTITION.
fn metadata(
    request: &MetadataRequest,
    address: SocketAddr,
    topics: &Topics,
) -> io::Result<MetadataResponse> {
    let known = lock(topics)?.clone();
    let names: Vec<String> = match &request.topics {
        Some(list) => list
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .collect(),
        None => known.keys().cloned().collect(),
    };
    Ok(MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(0))
            .with_host(StrBytes::from_string(address.ip().to_string()))
            .with_port(address.port() as i32)])
        .with_controller_id(BrokerId(0))
        .with_topics(
            names
                .iter()
                .map(|name| {
                    let topic = MetadataResponseTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(name.clone()))));
                    match known.get(name) {
                        Some(partitions) => topic.with_partitions(
                            (0..partitions.len() as i32)
                                .map(|p| {
                                    MetadataResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_leader_id(BrokerId(0))
                                        .with_replica_nodes(vec![BrokerId(0)])
                                        .with_isr_nodes(vec![BrokerId(0)])
                                })
                                .collect(),
                        ),
                        None => topic.with_error_code(3), // UNKNOWN_TOPIC_OR_PARTITION
                    }
                })
                .collect(),
        ))
}

/// Topics created with their partition counts (at least one), offsets from 0; an existing
/// one gets TOPIC_ALREADY_EXISTS and stays as it is.
fn create_topics(
    request: &CreateTopicsRequest,
    topics: &Topics,
) -> io::Result<CreateTopicsResponse> {
    let mut known = lock(topics)?;
    let results = request
        .topics
        .iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let partitions = topic.num_partitions.max(1);
            let exists = known.contains_key(&name);
            known
                .entry(name)
                .or_insert_with(|| vec![0; partitions as usize]);
            CreatableTopicResult::default()
                .with_name(topic.name.clone())
                .with_error_code(if exists { 36 } else { 0 })
                .with_num_partitions(partitions)
                .with_replication_factor(1)
        })
        .collect();
    Ok(CreateTopicsResponse::default().with_topics(results))
}

/// The end offset (records counted so far) for a latest-offset query, 0 for any other.
fn list_offsets(request: &ListOffsetsRequest, topics: &Topics) -> io::Result<ListOffsetsResponse> {
    let known = lock(topics)?;
    Ok(ListOffsetsResponse::default().with_topics(
        request
            .topics
            .iter()
            .map(|topic| {
                let offsets = known.get(topic.name.0.as_str());
                ListOffsetsTopicResponse::default()
                    .with_name(topic.name.clone())
                    .with_partitions(
                        topic
                            .partitions
                            .iter()
                            .map(|p| {
                                let end = offsets
                                    .and_then(|o| o.get(p.partition_index as usize))
                                    .copied();
                                let offset = if p.timestamp == -1 {
                                    end.unwrap_or(0)
                                } else {
                                    0
                                };
                                ListOffsetsPartitionResponse::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(if end.is_some() { 0 } else { 3 })
                                    .with_offset(offset)
                                    .with_timestamp(-1)
                            })
                            .collect(),
                    )
            })
            .collect(),
    ))
}

/// Every batch acknowledged at the partition's next offset, which moves on by its record
/// count; the records themselves are dropped.
fn produce(request: &ProduceRequest, topics: &Topics) -> io::Result<ProduceResponse> {
    let mut known = lock(topics)?;
    let responses: Vec<TopicProduceResponse> = request
        .topic_data
        .iter()
        .map(|topic| {
            let mut offsets = known.get_mut(topic.name.0.as_str());
            TopicProduceResponse::default()
                .with_name(topic.name.clone())
                .with_partition_responses(
                    topic
                        .partition_data
                        .iter()
                        .map(|partition| {
                            let records: i64 = partition
                                .records
                                .as_ref()
                                .map(|bytes| {
                                    crate::consume::batch_headers(bytes)
                                        .map(|(h, _)| h.records as i64)
                                        .sum()
                                })
                                .unwrap_or(0);
                            let slot = offsets
                                .as_mut()
                                .and_then(|o| o.get_mut(partition.index as usize));
                            let (error_code, base_offset) = match slot {
                                Some(next) => {
                                    let base = *next;
                                    *next += records;
                                    (0, base)
                                }
                                None => (3, -1),
                            };
                            PartitionProduceResponse::default()
                                .with_index(partition.index)
                                .with_error_code(error_code)
                                .with_base_offset(base_offset)
                                .with_log_append_time_ms(-1)
                        })
                        .collect(),
                )
        })
        .collect();
    Ok(ProduceResponse::default().with_responses(responses))
}
