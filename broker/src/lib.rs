//! The broker: a thread-per-core streaming broker that speaks the Apache Kafka wire protocol.
//!
//! Each configured core runs one glommio shard that owns its partitions, memory and io_uring
//! rings. This crate holds the storage engine ([`storage`]: partition logs of segments holding
//! Kafka RecordBatch v2 exactly as produced) and, in later modules, the Kafka front end and the
//! cluster logic. It is not the coordinator (see the `coordinator` crate) and not a client.

pub mod group;
pub mod storage;
