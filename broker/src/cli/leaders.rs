//! Where each partition of a topic is led, for the CLI's produce and consume: a Metadata
//! call, then one connection per leader broker. On a single node every partition is led by
//! the broker the command connected to, and that one connection is reused.
//!
//! A topic just created through another broker takes a moment to reach every broker, and a
//! partition has no leader for a moment after its leader died: the lookup asks again for up
//! to [`METADATA_WAIT`] while the topic is unknown or a partition has no leader, as
//! librdkafka waits for a topic's metadata.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::client::{Client, ClientError};
use super::{kafka_error, metadata};

/// How long a lookup waits for the topic to be known with a leader for every partition.
pub const METADATA_WAIT: Duration = Duration::from_secs(10);
/// Pause between two lookups.
pub const METADATA_RETRY: Duration = Duration::from_millis(100);
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const LEADER_NOT_AVAILABLE: i16 = 5;

pub struct Leaders {
    /// The `--bootstrap` addresses and the topic, for [`Leaders::refresh`].
    bootstrap_servers: String,
    topic: String,
    /// Partition -> leader broker id (-1 when offline).
    leader: BTreeMap<i32, i32>,
    /// Broker id -> `host:port` from Metadata.
    address: BTreeMap<i32, String>,
    clients: BTreeMap<i32, Client>,
    /// The bootstrap connection, used for the one broker of a single node.
    bootstrap: Option<Client>,
}

impl Leaders {
    /// Looks `topic` up through `bootstrap`, waiting up to [`METADATA_WAIT`] for it to be
    /// known with a leader for every partition; after that, an unknown topic is an error and
    /// a partition without a leader is reported when something is sent to it.
    pub fn discover(bootstrap: &str, topic: &str) -> Result<Leaders, ClientError> {
        let deadline = Instant::now() + METADATA_WAIT;
        loop {
            let waiting = Instant::now() < deadline;
            match Self::lookup(bootstrap, topic) {
                Ok(leaders) if !waiting || leaders.leader.values().all(|&l| l >= 0) => {
                    return Ok(leaders)
                }
                Ok(_) => {}
                Err((code, _))
                    if waiting
                        && [UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE].contains(&code) => {}
                Err((_, err)) => return Err(err),
            }
            std::thread::sleep(METADATA_RETRY);
        }
    }

    /// One Metadata call; an error carries the topic's error code (0: not a topic error).
    fn lookup(bootstrap: &str, topic: &str) -> Result<Leaders, (i16, ClientError)> {
        let mut client = Client::connect(bootstrap).map_err(|err| (0, err))?;
        let response = metadata(&mut client, Some(&[topic])).map_err(|err| (0, err))?;
        let entry = response
            .topics
            .first()
            .ok_or_else(|| (0, ClientError::Protocol("metadata names no topic".into())))?;
        if entry.error_code != 0 && entry.partitions.is_empty() {
            return Err((
                entry.error_code,
                kafka_error(&format!("topic {topic}"), entry.error_code, None),
            ));
        }
        let leader = entry
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.leader_id.0))
            .collect();
        let address: BTreeMap<i32, String> = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        let single = address.len() == 1;
        Ok(Leaders {
            bootstrap_servers: bootstrap.to_string(),
            topic: topic.to_string(),
            leader,
            address,
            clients: BTreeMap::new(),
            bootstrap: single.then_some(client),
        })
    }

    /// Looks the topic up again (after a leader moved): new leaders, new connections.
    pub fn refresh(&mut self) -> Result<(), ClientError> {
        *self = Self::discover(&self.bootstrap_servers, &self.topic)?;
        Ok(())
    }

    pub fn partition_count(&self) -> i32 {
        self.leader.len() as i32
    }

    /// The partitions grouped by their leader; an offline partition is an error.
    pub fn by_leader(
        &self,
        partitions: impl IntoIterator<Item = i32>,
    ) -> Result<BTreeMap<i32, Vec<i32>>, ClientError> {
        let mut grouped: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for partition in partitions {
            match self.leader.get(&partition) {
                Some(&leader) if leader >= 0 => grouped.entry(leader).or_default().push(partition),
                Some(_) => {
                    return Err(ClientError::Kafka(format!(
                        "partition {partition} has no leader (offline)"
                    )))
                }
                None => {
                    return Err(ClientError::Kafka(format!(
                        "partition {partition} does not exist"
                    )))
                }
            }
        }
        Ok(grouped)
    }

    /// The connection to broker `node`, opened on first use.
    pub fn client(&mut self, node: i32) -> Result<&mut Client, ClientError> {
        if let Some(client) = self.bootstrap.as_mut() {
            return Ok(client);
        }
        if !self.clients.contains_key(&node) {
            let address = self
                .address
                .get(&node)
                .ok_or_else(|| ClientError::Kafka(format!("broker {node} is not alive")))?;
            let client = Client::connect(address)?;
            self.clients.insert(node, client);
        }
        Ok(self.clients.get_mut(&node).expect("inserted above"))
    }
}
