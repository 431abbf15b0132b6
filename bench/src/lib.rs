//! The bench harness: load generators and benchmarks that report throughput and
//! coordinated-omission-free tail latency (HdrHistogram), always beside a limit of this host
//! measured in the same run. It drives servers only through their public protocols (Kafka,
//! ZooKeeper), so it measures peers the same way it measures ours; the one exception is
//! [`storage`], which drives the broker's storage engine directly to compare it with the disk.

pub mod charts;
pub mod consume;
pub mod coordinator;
pub mod coordinator_failover;
pub mod e2e;
pub mod embedded;
pub mod engine;
pub mod hiccup;
pub mod kafka_client;
pub mod limits;
pub mod produce;
pub mod record_batch;
pub mod report;
pub mod sink;
pub mod storage;
pub mod verify;
