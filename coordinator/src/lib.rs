//! The coordinator: a ZooKeeper-protocol metadata service replicated with ZAB.
//!
//! Brokers use it for registration, controller election and topic metadata; any ZooKeeper
//! client (zkCli, kazoo, Curator) can use it for the usual recipes. The ZAB core and the
//! session/watch logic are sans-IO state machines; this crate also holds the IO shell that
//! drives them. It is not a Kafka component and knows nothing of topics.
//!
//! Map of the crate: [`config`] (zoo.cfg), [`jute`] (wire codec), [`txn`] (replicated
//! transactions), [`data_tree`] (znodes), [`acl`] (ACLs and authentication),
//! [`pending_changes`] (write validation),
//! [`session`] and [`watch`] (liveness and notifications), [`request_processor`] (the
//! sans-IO server core), [`ensemble`] (the processor as ZAB's application, for an ensemble
//! member and for a standalone server, which is an ensemble of one), [`zab`] (replication
//! and durability: the log, snapshots and recovery), [`standalone_import`] (converts a
//! standalone data dir of the earlier format), [`four_letter`] (ruok/srvr/stat/mntr),
//! [`metrics`] (the Prometheus endpoint), [`server`] (the IO shell), [`tls`] (the secure
//! client port).

pub mod acl;
pub mod config;
pub mod data_tree;
pub mod ensemble;
pub mod four_letter;
pub mod hostile_client;
pub mod jute;
pub mod metrics;
pub mod pending_changes;
pub mod request_processor;
pub mod server;
pub mod session;
pub mod standalone_import;
pub mod tls;
pub mod txn;
pub mod watch;
pub mod zab;
