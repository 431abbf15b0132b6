//! Where each partition of a topic is led, for the CLI's produce and consume: one Metadata
//! call, then one connection per leader broker. On a single node every partition is led by
//! the broker the command connected to, and that one connection is reused.

use std::collections::BTreeMap;

use super::client::{Client, ClientError};
use super::{kafka_error, metadata};

pub struct Leaders {
    /// Partition -> leader broker id (-1 when offline).
    leader: BTreeMap<i32, i32>,
    /// Broker id -> `host:port` from Metadata.
    address: BTreeMap<i32, String>,
    clients: BTreeMap<i32, Client>,
    /// The bootstrap connection, used for the one broker of a single node.
    bootstrap: Option<Client>,
}

impl Leaders {
    /// Looks `topic` up through `bootstrap`.
    pub fn discover(bootstrap: &str, topic: &str) -> Result<Leaders, ClientError> {
        let mut client = Client::connect(bootstrap)?;
        let response = metadata(&mut client, Some(&[topic]))?;
        let entry = response
            .topics
            .first()
            .ok_or_else(|| ClientError::Protocol("metadata names no topic".into()))?;
        if entry.error_code != 0 && entry.partitions.is_empty() {
            return Err(kafka_error(
                &format!("topic {topic}"),
                entry.error_code,
                None,
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
            leader,
            address,
            clients: BTreeMap::new(),
            bootstrap: single.then_some(client),
        })
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
