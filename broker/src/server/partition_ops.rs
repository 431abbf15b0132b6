//! What one shard asks another: the control shard (shard 0) creates and deletes topics and
//! broadcasts the result; data requests go to the shard that owns the partition.

use crate::topics::{Topic, TopicError};

/// One topic of a CreateTopics request, as the control shard needs it.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    pub name: String,
    /// -1 means the broker default.
    pub num_partitions: i32,
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
    pub validate_only: bool,
}

/// A request sent over the mesh.
pub enum ShardRequest {
    /// To shard 0: create these topics.
    CreateTopics(Vec<CreateSpec>),
    /// To shard 0: delete these topics.
    DeleteTopics(Vec<String>),
    /// From shard 0 to every shard: a topic now exists; open the partitions you own.
    TopicAdded(Topic),
    /// From shard 0 to every shard: a topic is gone; close and remove your partitions.
    TopicRemoved(String),
}

/// The answer to a [`ShardRequest`].
pub enum ShardReply {
    /// Per topic, in request order: partitions created, or why not.
    Topics(Vec<(String, Result<Topic, TopicError>)>),
    Done,
}
