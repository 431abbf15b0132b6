//! The shard side of cluster mode: topic creation and deletion through the cluster agent,
//! the view snapshots the agent publishes (applied on the control shard, then broadcast), and
//! the leadership check in front of every partition operation.
//!
//! The local topic store stays: it keeps which shard holds each partition this broker
//! replicates, so a restart reopens every log on the same shard. The coordinator is the truth
//! for which topics exist and who holds them; [`reconcile`] brings the store in line with it
//! at start and [`Shard::apply_view`] as it changes.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::agent::{self, Command};
use crate::cluster::assignment::{self, AssignmentError};
use crate::cluster::view::TopicView;
use crate::cluster::znodes::TopicAssignment;
use crate::cluster::ClusterView;
use crate::kafka::codes;
use crate::topics::{self, Topic, TopicError, TopicStore};

use super::metrics::ShardMetrics;
use super::partition_ops::{CreateSpec, PartitionError, ShardRequest};
use super::shard::Shard;

/// How long CreateTopics/DeleteTopics wait for the controller's work to reach this broker.
pub(super) const ADMIN_WAIT: Duration = Duration::from_secs(30);

/// The local [`Topic`] for a topic of the view: an existing one keeps its shard placement
/// (same id; partitions added since are placed on the least loaded shards), a new one is
/// placed on the least loaded shards.
pub fn local_topic(
    name: &str,
    view: &TopicView,
    existing: Option<&Topic>,
    owned: &mut [usize],
) -> Topic {
    let shards = match existing {
        // Partitions added (CreatePartitions): only the new ones are placed.
        Some(topic) if topic.id == view.id && topic.shards.len() <= view.partitions.len() => {
            let mut shards = topic.shards.clone();
            let added = view.partitions.len() - topic.shards.len();
            shards.extend(topics::place_partitions(owned, added));
            shards
        }
        _ => topics::place_partitions(owned, view.partitions.len()),
    };
    Topic {
        name: name.to_string(),
        id: view.id,
        shards,
        configs: view.configs.clone(),
        replicas: view.partitions.iter().map(|p| p.replicas.clone()).collect(),
    }
}

/// How many partitions of the stored topics each shard owns.
pub(super) fn shard_loads(store: &dyn TopicStore, shard_count: usize) -> Vec<usize> {
    let mut owned = vec![0usize; shard_count];
    for topic in store.topics().values() {
        for &shard in &topic.shards {
            if let Some(count) = owned.get_mut(shard as usize) {
                *count += 1;
            }
        }
    }
    owned
}

/// What differs between the store and the view: topics to drop locally (gone, or recreated
/// under another id) and topics to add or refresh.
fn diff(store: &dyn TopicStore, view: &ClusterView) -> (Vec<String>, Vec<String>) {
    let removed = store
        .topics()
        .iter()
        .filter(|(name, topic)| view.topics.get(*name).is_none_or(|t| t.id != topic.id))
        .map(|(name, _)| name.clone())
        .collect();
    let added = view
        .topics
        .iter()
        .filter(|(name, t)| {
            store.topics().get(*name).is_none_or(|topic| {
                topic.id != t.id
                    || topic.replicas.len() != t.partitions.len()
                    || topic
                        .replicas
                        .iter()
                        .zip(&t.partitions)
                        .any(|(r, p)| *r != p.replicas)
                    || topic.configs != t.configs
            })
        })
        .map(|(name, _)| name.clone())
        .collect();
    (removed, added)
}

/// At start, before any shard opens a log: drops topics deleted while the broker was down
/// (with their directories) and records the ones created meanwhile.
pub fn reconcile(
    store: &mut dyn TopicStore,
    view: &ClusterView,
    shard_count: usize,
    data_dir: &std::path::Path,
) -> Result<(), TopicError> {
    let (removed, added) = diff(store, view);
    for name in removed {
        let Some(topic) = store.topics().get(&name).cloned() else {
            continue;
        };
        tracing::info!("{name} was deleted while this broker was down: removing its data");
        // Renamed away before the store forgets it (see `topics::rename_for_deletion`).
        let renamed = topics::rename_for_deletion(data_dir, &topic)?;
        store.delete(&name)?;
        topics::remove_deleted_dirs(&renamed);
    }
    for name in added {
        let mut owned = shard_loads(store, shard_count);
        let existing = store.topics().get(&name).cloned();
        let topic = local_topic(&name, &view.topics[&name], existing.as_ref(), &mut owned);
        store.put(topic)?;
    }
    Ok(())
}

pub(super) fn random_usize() -> usize {
    let bytes = topics::new_topic_id();
    usize::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
}

impl Shard {
    /// This shard's newest cluster view (cluster mode only).
    pub fn cluster_view(&self) -> Option<Arc<ClusterView>> {
        self.cluster.as_ref().map(|c| c.view.borrow().clone())
    }

    /// In cluster mode only the partition's leader serves produce, fetch and offsets.
    pub fn check_leader(&self, topic: &str, partition: i32) -> Result<(), PartitionError> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let node = self.config.node_id;
        match cluster.view.borrow().leader(topic, partition) {
            Some((leader, _)) if leader == node => Ok(()),
            Some((leader, _)) => Err((
                codes::NOT_LEADER_OR_FOLLOWER,
                format!("{topic}-{partition} is led by broker {leader}"),
            )),
            None => Err((
                codes::NOT_LEADER_OR_FOLLOWER,
                format!("{topic}-{partition} has no leader"),
            )),
        }
    }

    /// The broker coordinating `group`: the leader of its `__consumer_offsets` partition
    /// (this broker on a single node). COORDINATOR_NOT_AVAILABLE while there is none.
    /// Its endpoint is that of listener `listener` (the one the request came in on).
    pub fn group_coordinator_node(
        self: &Rc<Self>,
        group: &str,
        listener: usize,
    ) -> Result<(kafka_protocol::messages::BrokerId, String, i32), i16> {
        use crate::group::{partition_for_group, OFFSETS_TOPIC};
        use kafka_protocol::messages::BrokerId;
        let Some(view) = self.cluster_view() else {
            let (host, port) = self.advertised(listener);
            return Ok((BrokerId(self.config.node_id), host, port));
        };
        let Some(topic) = view.topics.get(OFFSETS_TOPIC) else {
            // The first group: create the topic (once) and let the client ask again.
            let cluster = self.cluster.as_ref().expect("cluster mode");
            if !cluster.creating_offsets_topic.replace(true) {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    shard.ensure_offsets_topic().await;
                    if let Some(cluster) = &shard.cluster {
                        cluster.creating_offsets_topic.set(false);
                    }
                })
                .detach();
            }
            return Err(codes::COORDINATOR_NOT_AVAILABLE);
        };
        let partition = partition_for_group(group, topic.partitions.len() as i32);
        let (leader, _) = view
            .leader(OFFSETS_TOPIC, partition)
            .ok_or(codes::COORDINATOR_NOT_AVAILABLE)?;
        let broker = view
            .brokers
            .get(&leader)
            .ok_or(codes::COORDINATOR_NOT_AVAILABLE)?;
        let (host, port) = broker
            .endpoint(self.listener_name(listener))
            .ok_or(codes::COORDINATOR_NOT_AVAILABLE)?;
        Ok((BrokerId(leader), host.to_string(), port))
    }

    /// Waits (bounded) until this shard's view and topic map satisfy `done`.
    pub(super) async fn wait_for_view(&self, done: impl Fn(&Shard, &ClusterView) -> bool) -> bool {
        let deadline = Instant::now() + ADMIN_WAIT;
        loop {
            if let Some(view) = self.cluster_view() {
                if done(self, &view) {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(super) async fn ask_agent<T>(
        &self,
        make: impl FnOnce(async_channel::Sender<Result<T, TopicError>>) -> Command,
    ) -> Result<T, TopicError> {
        let cluster = self.cluster.as_ref().expect("cluster mode");
        let (tx, rx) = async_channel::bounded(1);
        if cluster.commands.send(make(tx)).await.is_err() {
            return Err(TopicError::Storage("the cluster agent stopped".into()));
        }
        rx.recv()
            .await
            .unwrap_or_else(|_| Err(TopicError::Storage("the cluster agent stopped".into())))
    }

    /// The replica assignment of a new topic: the explicit one, or Kafka's spread over the
    /// live brokers.
    fn assign(
        &self,
        spec: &CreateSpec,
        partitions: i32,
        view: &ClusterView,
    ) -> Result<Vec<Vec<i32>>, TopicError> {
        let cluster = self.cluster.as_ref().expect("cluster mode");
        let result = if spec.assignments.is_empty() {
            let factor = if spec.replication_factor == -1 {
                cluster.default_replication_factor
            } else {
                spec.replication_factor
            };
            if factor < 1 {
                return Err(TopicError::InvalidReplicationFactor(
                    factor,
                    "must be at least 1".into(),
                ));
            }
            assignment::assign(
                &agent::candidates(view),
                partitions as usize,
                factor as usize,
                random_usize(),
                random_usize(),
            )
        } else {
            assignment::check_explicit(&spec.assignments, &view.brokers.keys().copied().collect())
        };
        let replicas = result.map_err(|err| match err {
            AssignmentError::ReplicationFactor(why) => {
                TopicError::InvalidReplicationFactor(spec.replication_factor, why)
            }
            AssignmentError::Assignment(why) => TopicError::InvalidReplicaAssignment(why),
        })?;
        Ok(replicas)
    }

    /// CreateTopics in cluster mode: the topic's znodes are written through the agent, then
    /// the answer waits until the controller gave every partition a leader and this shard
    /// knows the topic (so a client's next Produce finds it).
    pub(super) async fn create_topics_in_cluster(
        self: &Rc<Self>,
        specs: Vec<CreateSpec>,
    ) -> Vec<(String, Result<Topic, TopicError>)> {
        let mut results = Vec::with_capacity(specs.len());
        for spec in specs {
            let name = spec.name.clone();
            results.push((name, self.create_one_in_cluster(spec).await));
        }
        results
    }

    async fn create_one_in_cluster(self: &Rc<Self>, spec: CreateSpec) -> Result<Topic, TopicError> {
        let mut topic = self.validate_spec(&spec)?;
        let view = self.cluster_view().expect("cluster mode");
        if view.topics.contains_key(&topic.name) {
            return Err(TopicError::AlreadyExists(topic.name));
        }
        let partitions = if spec.assignments.is_empty() {
            topic.partition_count()
        } else {
            spec.assignments.len() as i32
        };
        topic.replicas = self.assign(&spec, partitions, &view)?;
        topic.shards = vec![0; topic.replicas.len()];
        // This broker checks its own share against its disk before the controller hears of
        // the topic (the others open theirs when the controller's assignment reaches them).
        let here = topic
            .replicas
            .iter()
            .filter(|replicas| replicas.contains(&self.config.node_id))
            .count() as u64;
        crate::storage::disk_budget::check_new_partitions(&self.config.data_dir, here)
            .map_err(TopicError::NoSpace)?;
        if spec.validate_only {
            return Ok(topic);
        }
        let assignment = TopicAssignment {
            id: topic.id,
            replicas: topic.replicas.clone(),
        };
        let configs: BTreeMap<String, String> = topic.configs.clone();
        let name = topic.name.clone();
        self.ask_agent(|reply| Command::CreateTopic {
            name: name.clone(),
            assignment,
            configs,
            reply,
        })
        .await?;
        let online = self
            .wait_for_view(|shard, view| view.topic_online(&name) && shard.topic(&name).is_some())
            .await;
        match self.topic(&name) {
            Some(local) if online => Ok((*local).clone()),
            _ => Err(TopicError::TimedOut(format!(
                "topic `{name}` was created but not every partition had a leader within {} s",
                ADMIN_WAIT.as_secs()
            ))),
        }
    }

    /// DeleteTopics in cluster mode: marks the topic for the controller and waits until it
    /// is gone from this shard.
    pub(super) async fn delete_topics_in_cluster(
        self: &Rc<Self>,
        names: Vec<String>,
    ) -> Vec<(String, Result<Topic, TopicError>)> {
        let mut results = Vec::with_capacity(names.len());
        for name in names {
            let before = self.topic(&name).map(|t| (*t).clone());
            let asked = self
                .ask_agent(|reply| Command::DeleteTopic {
                    name: name.clone(),
                    reply,
                })
                .await;
            let result = match (asked, before) {
                (Err(err), _) => Err(err),
                (Ok(()), None) => Err(TopicError::UnknownTopic(name.clone())),
                (Ok(()), Some(topic)) => {
                    let gone = self
                        .wait_for_view(|shard, view| {
                            !view.topics.contains_key(&name) && shard.topic(&name).is_none()
                        })
                        .await;
                    if gone {
                        Ok(topic)
                    } else {
                        Err(TopicError::TimedOut(format!(
                            "topic `{name}` is marked for deletion but still exists after {} s",
                            ADMIN_WAIT.as_secs()
                        )))
                    }
                }
            };
            results.push((name, result));
        }
        results
    }

    /// On the control shard: a new view from the agent. Topics gone are closed and removed,
    /// new ones placed and opened, on every shard; then every shard gets the view.
    pub async fn apply_view(self: &Rc<Self>, view: Arc<ClusterView>) {
        let store = self.store.as_ref().expect("shard 0 holds the store");
        let (removed, added) = diff(&**store.borrow(), &view);
        for name in removed {
            let Some(topic) = store.borrow().topics().get(&name).cloned() else {
                continue;
            };
            // Closed everywhere and renamed away before the store forgets it, so a topic
            // recreated under the same name (added below) opens fresh directories.
            self.broadcast(|| ShardRequest::TopicRemoved(name.clone()))
                .await;
            if let Err(err) = self.delete_topic_data(&topic).await {
                tracing::error!("removing topic {name}: {err}");
            }
        }
        for name in added {
            let topic = {
                let store = store.borrow();
                let mut owned = shard_loads(&**store, self.shard_count);
                local_topic(
                    &name,
                    &view.topics[&name],
                    store.topics().get(&name),
                    &mut owned,
                )
            };
            let known = store.borrow().topics().contains_key(&name);
            let put = store.borrow_mut().put(topic.clone());
            match put {
                Ok(()) if known => {
                    self.broadcast(|| ShardRequest::TopicUpdated(topic.clone()))
                        .await
                }
                Ok(()) => {
                    self.broadcast(|| ShardRequest::TopicAdded(topic.clone()))
                        .await
                }
                Err(err) => tracing::error!("recording topic {name}: {err}"),
            }
        }
        self.broadcast(|| ShardRequest::ClusterView(view.clone()))
            .await;
    }

    /// Counts the ISR shrinks and expansions of partitions this broker led in both views
    /// (Kafka's leader-side IsrShrinksPerSec and IsrExpandsPerSec).
    fn count_isr_changes(&self, old: &ClusterView, new: &ClusterView) {
        let me = self.config.node_id;
        for (name, topic) in &new.topics {
            let Some(before) = old.topics.get(name) else {
                continue;
            };
            for (partition, now) in before.partitions.iter().zip(&topic.partitions) {
                let (Some(was), Some(is)) = (&partition.state, &now.state) else {
                    continue;
                };
                if was.leader != me || is.leader != me {
                    continue;
                }
                if is.isr.len() < was.isr.len() {
                    ShardMetrics::add(&self.metrics.isr_shrinks, 1);
                } else if is.isr.len() > was.isr.len() {
                    ShardMetrics::add(&self.metrics.isr_expands, 1);
                }
            }
        }
    }

    /// Any shard: take the view the control shard broadcast, and the roles it gives the
    /// replicas here.
    pub fn set_view(self: &Rc<Self>, view: Arc<ClusterView>) {
        if let Some(cluster) = &self.cluster {
            if self.id == 0 {
                self.count_isr_changes(&cluster.view.borrow(), &view);
            }
            *cluster.view.borrow_mut() = view.clone();
            self.apply_roles(&view);
        }
    }
}
