//! The broker: a thread-per-core streaming broker that speaks the Apache Kafka wire protocol.
//!
//! Each configured core runs one glommio shard that owns its partitions, memory and io_uring
//! rings. This crate holds the storage engine ([`storage`]: partition logs of segments holding
//! Kafka RecordBatch v2 exactly as produced), the Kafka protocol pieces ([`kafka`]), the
//! shard-per-core server ([`server`]), topic metadata ([`topics`]), cluster mode ([`cluster`]:
//! registration, controller and metadata in a ZooKeeper-protocol coordinator), client
//! authentication ([`security`]: SCRAM credentials and exchanges), the operator commands
//! ([`cli`]) and the disk measurements of `broker tuning probe` ([`disk_probe`]). It is not the coordinator (see the `coordinator` crate).

pub mod cli;
pub mod cluster;
pub mod data_file;
pub mod disk_probe;
pub mod group;
pub mod histogram;
pub mod kafka;
pub mod security;
pub mod server;
pub mod storage;
pub mod topics;
