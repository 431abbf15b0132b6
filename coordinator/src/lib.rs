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
//! sans-IO server core), [`txn_log`] and [`snapshot`] (durability), [`replicator`] (the seam
//! to ZAB), [`ensemble`] (the processor as ZAB's application), [`zab`] (the replication protocol between servers), [`four_letter`]
//! (ruok/srvr/stat/mntr), [`metrics`] (the Prometheus endpoint), [`server`] (the IO shell), [`tls`] (the secure client port).

pub mod acl;
pub mod config;
pub mod data_tree;
pub mod ensemble;
pub mod four_letter;
pub mod hostile_client;
pub mod jute;
pub mod metrics;
pub mod pending_changes;
pub mod replicator;
pub mod request_processor;
pub mod server;
pub mod session;
pub mod snapshot;
pub mod tls;
pub mod txn;
pub mod txn_log;
pub mod watch;
pub mod zab;
