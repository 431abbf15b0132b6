//! Cluster mode: brokers that register in a ZooKeeper-protocol coordinator (ours, or Apache
//! ZooKeeper), elect a controller there, and keep topic assignments and partition states in
//! Kafka's ZooKeeper-mode znode layout, so operators' tools carry over.
//!
//! - [`znodes`]: the paths and Kafka's JSON for each.
//! - [`assignment`]: replica assignment for new topics (Kafka's spread, racks).
//! - [`controller`]: the controller's decisions, a sans-IO state machine (events in, writes out).
//! - [`view`]: what a broker knows of the cluster, as shards read it.
//! - [`users`]: SCRAM credentials under `/config/users` and their change notifications.
//! - [`agent`]: the IO shell: the ZooKeeper session on its own thread, registration, watches,
//!   the controller seat, and the channels to the shards.
//! - [`acl_znodes`]: ACLs in the `/kafka-acl*` znodes (the authorizer's store).
//!
//! Without `--coordinator` none of this runs and the broker is a single node.

pub mod acl_znodes;
pub mod agent;
pub mod assignment;
pub mod controller;
pub mod replica;
#[cfg(test)]
mod sim_rng;
pub mod topic_changes;
pub mod users;
pub mod view;
pub mod znodes;

pub use agent::{AgentHandle, ClusterConfig, Command};
pub use controller::{Controller, LeaderAndIsr};
pub use view::ClusterView;
