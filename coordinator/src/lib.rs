//! The coordinator: a ZooKeeper-protocol metadata service replicated with ZAB.
//!
//! Brokers use it for registration, controller election and topic metadata; any ZooKeeper
//! client (zkCli, kazoo, Curator) can use it for the usual recipes. The ZAB core and the
//! session/watch logic are sans-IO state machines; this crate also holds the IO shell that
//! drives them. It is not a Kafka component and knows nothing of topics.
pub mod zab;
