//! Changes to existing topics: their config overrides (AlterConfigs, IncrementalAlterConfigs)
//! and added partitions (CreatePartitions). On a single node the control shard decides them
//! against the topic store and broadcasts the new [`Topic`]; in cluster mode they are written
//! to the coordinator (`server::cluster`) and reach every broker through its view. Either way
//! each shard applies the new topic to its view and to the logs it owns: new settings take
//! effect at the next append, roll or retention pass, new partitions are opened.
//!
//! Also the per-shard half of DescribeLogDirs: the sizes and lags of the logs a shard owns.

use std::rc::Rc;

use crate::cluster::agent::{self, Command};
use crate::cluster::assignment::{self, AssignmentError};
use crate::topics::{self, ConfigAlteration, Topic, TopicError};

use super::partition_ops::{LogDirPartition, PartitionsSpec, ShardRequest, TopicResults};
use super::shard::Shard;

impl Shard {
    /// Changes topics' config overrides via the control shard (or the coordinator).
    pub async fn alter_topic_configs(
        self: &Rc<Self>,
        alterations: Vec<ConfigAlteration>,
    ) -> TopicResults {
        if self.cluster.is_some() {
            return self.alter_configs_in_cluster(alterations).await;
        }
        let names = alterations.iter().map(|a| a.topic.clone()).collect();
        self.on_control_shard(
            names,
            alterations,
            |alterations| self.alter_configs_here(alterations),
            ShardRequest::AlterConfigs,
        )
        .await
    }

    /// Adds partitions to topics via the control shard (or the coordinator).
    pub async fn create_partitions(self: &Rc<Self>, specs: Vec<PartitionsSpec>) -> TopicResults {
        if self.cluster.is_some() {
            return self.create_partitions_in_cluster(specs).await;
        }
        let names = specs.iter().map(|s| s.name.clone()).collect();
        self.on_control_shard(
            names,
            specs,
            |specs| self.create_partitions_here(specs),
            ShardRequest::CreatePartitions,
        )
        .await
    }

    /// On the control shard of a single node: each alteration applied to the stored topic,
    /// persisted, then broadcast.
    pub(super) async fn alter_configs_here(
        self: &Rc<Self>,
        alterations: Vec<ConfigAlteration>,
    ) -> TopicResults {
        let store = self.store.as_ref().expect("shard 0 holds the store");
        let mut results = Vec::with_capacity(alterations.len());
        for alteration in alterations {
            let known = store.borrow().topics().get(&alteration.topic).cloned();
            let result = match known {
                None => Err(TopicError::UnknownTopic(alteration.topic.clone())),
                Some(mut topic) => {
                    match topics::alter_configs(
                        &topic.configs,
                        alteration.replace_all,
                        &alteration.ops,
                    ) {
                        Err(err) => Err(err),
                        Ok(configs) if alteration.validate_only || configs == topic.configs => {
                            topic.configs = configs;
                            Ok(topic)
                        }
                        Ok(configs) => {
                            topic.configs = configs;
                            let change = format!("config overrides now {:?}", topic.configs);
                            self.store_and_broadcast(topic, &change).await
                        }
                    }
                }
            };
            results.push((alteration.topic, result));
        }
        results
    }

    /// On the control shard of a single node: new partitions placed on the least loaded
    /// shards, the topic persisted, then broadcast (each owner opens its new logs).
    pub(super) async fn create_partitions_here(
        self: &Rc<Self>,
        specs: Vec<PartitionsSpec>,
    ) -> TopicResults {
        let store = self.store.as_ref().expect("shard 0 holds the store");
        let mut results = Vec::with_capacity(specs.len());
        for spec in specs {
            let known = store.borrow().topics().get(&spec.name).cloned();
            let result = match known {
                None => Err(TopicError::UnknownTopic(spec.name.clone())),
                Some(topic) => match self.check_added_partitions(&topic, &spec) {
                    Err(err) => Err(err),
                    Ok(added) if spec.validate_only => {
                        let mut topic = topic;
                        topic.shards.extend(std::iter::repeat_n(0, added));
                        Ok(topic)
                    }
                    Ok(added) => {
                        let mut topic = topic;
                        let mut owned =
                            super::cluster::shard_loads(&**store.borrow(), self.shard_count);
                        topic
                            .shards
                            .extend(topics::place_partitions(&mut owned, added));
                        let change = format!("{} partitions now", topic.partition_count());
                        self.store_and_broadcast(topic, &change).await
                    }
                },
            };
            results.push((spec.name, result));
        }
        results
    }

    /// On the control shard of a single node: persists the changed topic, then has every
    /// shard apply it.
    async fn store_and_broadcast(
        self: &Rc<Self>,
        topic: Topic,
        change: &str,
    ) -> Result<Topic, TopicError> {
        let store = self.store.as_ref().expect("shard 0 holds the store");
        store.borrow_mut().put(topic.clone())?;
        tracing::info!("topic `{}`: {change}", topic.name);
        self.broadcast(|| ShardRequest::TopicUpdated(topic.clone()))
            .await;
        Ok(topic)
    }

    /// Checks a CreatePartitions request against the topic as it is (both modes): the count
    /// must grow and stay within the limit, explicit assignments must name one replica list
    /// per new partition (on a single node: this broker only), and the data directory must
    /// hold the partitions this broker gets. Returns how many partitions are added.
    pub(super) fn check_added_partitions(
        &self,
        topic: &Topic,
        spec: &PartitionsSpec,
    ) -> Result<usize, TopicError> {
        let current = topic.partition_count();
        if topic.name == crate::group::OFFSETS_TOPIC {
            // Groups are mapped to its partitions by count: adding some would move them.
            return Err(TopicError::PartitionCount(format!(
                "the partition count of {} cannot change",
                topic.name
            )));
        }
        if spec.count < current {
            return Err(TopicError::PartitionCount(format!(
                "topic `{}` has {current} partitions, more than the requested {}",
                topic.name, spec.count
            )));
        }
        if spec.count == current {
            return Err(TopicError::PartitionCount(format!(
                "topic `{}` already has {current} partitions",
                topic.name
            )));
        }
        if spec.count > topics::PARTITIONS_PER_TOPIC_MAX {
            return Err(TopicError::InvalidPartitions(spec.count));
        }
        let added = (spec.count - current) as usize;
        if let Some(assignments) = &spec.assignments {
            if assignments.len() != added {
                return Err(TopicError::InvalidReplicaAssignment(format!(
                    "{added} partitions are added but {} assignments were given",
                    assignments.len()
                )));
            }
            let node = self.config.node_id;
            if self.cluster.is_none() && assignments.iter().any(|replicas| replicas != &[node]) {
                return Err(TopicError::InvalidReplicaAssignment(format!(
                    "a single-node broker holds every partition: each assignment must be [{node}]"
                )));
            }
        }
        crate::storage::disk_budget::check_new_partitions(&self.config.data_dir, added as u64)
            .map_err(TopicError::NoSpace)?;
        Ok(added)
    }

    /// Cluster mode: each alteration written to the coordinator by the agent; answered once
    /// this shard's view of the topic carries the new overrides.
    async fn alter_configs_in_cluster(
        self: &Rc<Self>,
        alterations: Vec<ConfigAlteration>,
    ) -> TopicResults {
        let mut results = Vec::with_capacity(alterations.len());
        for alteration in alterations {
            let name = alteration.topic.clone();
            let validate_only = alteration.validate_only;
            let written = self
                .ask_agent(|reply| Command::AlterTopicConfigs { alteration, reply })
                .await;
            let result = match written {
                Err(err) => Err(err),
                Ok(configs) if validate_only => match self.topic(&name) {
                    Some(topic) => Ok(Topic {
                        configs,
                        ..(*topic).clone()
                    }),
                    None => Err(TopicError::UnknownTopic(name.clone())),
                },
                Ok(configs) => {
                    let applied = self
                        .wait_for_view(|shard, _| {
                            shard.topic(&name).is_some_and(|t| t.configs == configs)
                        })
                        .await;
                    match self.topic(&name) {
                        Some(topic) if applied => Ok((*topic).clone()),
                        _ => Err(TopicError::TimedOut(format!(
                            "the configs of topic `{name}` were written but did not reach this \
                             broker within {} s",
                            super::cluster::ADMIN_WAIT.as_secs()
                        ))),
                    }
                }
            };
            results.push((name, result));
        }
        results
    }

    /// Cluster mode: this broker assigns the new partitions' replicas from its view and the
    /// agent appends them to the topic's znode; answered once the controller gave them
    /// leaders and this shard knows them.
    async fn create_partitions_in_cluster(
        self: &Rc<Self>,
        specs: Vec<PartitionsSpec>,
    ) -> TopicResults {
        let mut results = Vec::with_capacity(specs.len());
        for spec in specs {
            let name = spec.name.clone();
            results.push((name, self.add_partitions_in_cluster(spec).await));
        }
        results
    }

    async fn add_partitions_in_cluster(
        self: &Rc<Self>,
        spec: PartitionsSpec,
    ) -> Result<Topic, TopicError> {
        let view = self.cluster_view().expect("cluster mode");
        let Some(known) = view.topics.get(&spec.name) else {
            return Err(TopicError::UnknownTopic(spec.name));
        };
        // As Kafka: no new partitions while one of the topic's partitions moves (the agent
        // checks again against the znode it rewrites).
        let moving: Vec<usize> = (0..known.partitions.len())
            .filter(|&p| known.partitions[p].reassignment.in_progress())
            .collect();
        if !moving.is_empty() {
            return Err(TopicError::ReassignmentInProgress(format!(
                "topic `{}` has partitions being reassigned ({moving:?}); add partitions once \
                 that is done",
                spec.name
            )));
        }
        let existing: Vec<Vec<i32>> = known
            .partitions
            .iter()
            .map(|p| p.replicas.clone())
            .collect();
        let mut topic = Topic {
            name: spec.name.clone(),
            id: known.id,
            shards: vec![0; existing.len()],
            configs: known.configs.clone(),
            replicas: existing.clone(),
        };
        let added = self.check_added_partitions(&topic, &spec)?;
        let registered = view.brokers.keys().copied().collect();
        let replicas = assignment::assign_added(
            &agent::candidates(&view),
            &existing,
            added,
            super::cluster::random_usize(),
            spec.assignments.as_deref(),
            &registered,
        )
        .map_err(|err| match err {
            AssignmentError::ReplicationFactor(why) => {
                TopicError::InvalidReplicationFactor(existing[0].len() as i16, why)
            }
            AssignmentError::Assignment(why) => TopicError::InvalidReplicaAssignment(why),
        })?;
        topic.replicas.extend(replicas.iter().cloned());
        topic.shards.extend(std::iter::repeat_n(0, added));
        if spec.validate_only {
            return Ok(topic);
        }
        let name = spec.name.clone();
        self.ask_agent(|reply| Command::AddPartitions {
            name: name.clone(),
            id: topic.id,
            current: existing.len(),
            added: replicas,
            reply,
        })
        .await?;
        let count = topic.shards.len();
        let ready = self
            .wait_for_view(|shard, view| {
                view.topics
                    .get(&name)
                    .is_some_and(|t| t.partitions.len() == count)
                    && view.topic_online(&name)
                    && shard.topic(&name).is_some_and(|t| t.shards.len() == count)
            })
            .await;
        match self.topic(&name) {
            Some(local) if ready => Ok((*local).clone()),
            _ => Err(TopicError::TimedOut(format!(
                "partitions were added to topic `{name}` but not every one had a leader within \
                 {} s",
                super::cluster::ADMIN_WAIT.as_secs()
            ))),
        }
    }

    /// Any shard: a known topic changed (configs, partitions). Logs it owns take the new
    /// settings, partitions it now owns and has not opened are opened, then the view changes.
    pub(super) async fn topic_updated(self: &Rc<Self>, topic: Topic) {
        if let Err(err) = self.open_added_partitions(&topic).await {
            tracing::error!("shard {}: topic {}: {err}", self.id, topic.name);
        }
        let config = super::partitions::log_config(self, &topic);
        for partition in 0..topic.partition_count() {
            if let Some(log) = self.partitions.get(&topic.name, partition) {
                log.set_config(config);
            }
        }
        self.topics
            .borrow_mut()
            .insert(topic.name.clone(), Rc::new(topic));
    }

    /// This shard's partition logs with their sizes and offset lags (DescribeLogDirs).
    pub fn log_dir_partitions(&self) -> Vec<LogDirPartition> {
        self.partitions
            .named()
            .into_iter()
            .map(|(topic, partition, log)| {
                let offset_lag = self
                    .partitions
                    .replica(&topic, partition)
                    // Kafka's measure: how far the log end is below the high watermark.
                    .map_or(0, |replica| {
                        (replica.high_watermark() - log.log_end_offset()).max(0)
                    });
                LogDirPartition {
                    size_bytes: log.size_bytes(),
                    offset_lag,
                    topic,
                    partition,
                }
            })
            .collect()
    }
}
