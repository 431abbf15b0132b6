//! `broker log-dirs describe [--topic T]`: every broker's log directory with the size and
//! offset lag of each partition log in it, through DescribeLogDirs sent to each broker that
//! Metadata lists (as Kafka's `kafka-log-dirs.sh --describe` does).

use std::collections::BTreeSet;

use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::{DescribeLogDirsRequest, MetadataRequest};

use super::client::{Client, ClientError};

/// `log-dirs describe`.
pub fn log_dirs_describe(bootstrap: &str, topics: &[String]) -> Result<(), ClientError> {
    let mut client = Client::connect(bootstrap)?;
    let metadata = client.call(&MetadataRequest::default().with_topics(None), 12)?;
    // Only the partitions of the topics asked for (all of them when none was).
    let wanted = if topics.is_empty() {
        None
    } else {
        let names: BTreeSet<&str> = topics.iter().map(String::as_str).collect();
        Some(
            metadata
                .topics
                .iter()
                .filter(|t| {
                    t.name
                        .as_ref()
                        .is_some_and(|n| names.contains(n.0.as_str()))
                })
                .map(|t| {
                    DescribableLogDirTopic::default()
                        .with_topic(t.name.clone().unwrap_or_default())
                        .with_partitions(t.partitions.iter().map(|p| p.partition_index).collect())
                })
                .collect(),
        )
    };
    let mut brokers: Vec<_> = metadata.brokers.iter().collect();
    brokers.sort_by_key(|b| b.node_id.0);
    println!(
        "{:<8} {:<40} {:<10} {:>14} {:>10}",
        "BROKER", "TOPIC", "PARTITION", "SIZE_BYTES", "OFFSET_LAG"
    );
    for broker in brokers {
        let address = format!("{}:{}", broker.host.as_str(), broker.port);
        let mut to_broker = Client::connect(&address)?;
        let request = DescribeLogDirsRequest::default().with_topics(wanted.clone());
        let response = to_broker.call(&request, 4)?;
        if response.error_code != 0 {
            return Err(ClientError::Kafka(format!(
                "describe log dirs of broker {}: error code {}",
                broker.node_id.0, response.error_code
            )));
        }
        for dir in &response.results {
            println!(
                "# broker {} log dir {} (error code {}, {} of {} bytes usable)",
                broker.node_id.0,
                dir.log_dir.as_str(),
                dir.error_code,
                dir.usable_bytes,
                dir.total_bytes
            );
            for topic in &dir.topics {
                for partition in &topic.partitions {
                    println!(
                        "{:<8} {:<40} {:<10} {:>14} {:>10}",
                        broker.node_id.0,
                        topic.name.0.as_str(),
                        partition.partition_index,
                        partition.partition_size,
                        partition.offset_lag
                    );
                }
            }
        }
    }
    Ok(())
}
