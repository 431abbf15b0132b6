//! One shard: the state a glommio executor owns (its topic view, its partitions, its end of the
//! mesh, its counters) and the control-plane operations on it.
//!
//! Shard 0 is the control shard: it alone writes the [`TopicStore`] and broadcasts topic
//! changes to every shard, which keep their own read-only copy of the topic map, so the data
//! path never takes a lock to look a topic up.
//!
//! An operation reaches the shard that owns what it works on (a partition, a group, the topic
//! store) through [`Shard::on_shard`]: in place when that is this shard, else over the mesh.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::Arc;

use crate::security::access::Access;
use crate::topics::{self, Topic, TopicError, TopicStore};

use super::group_state::ShardGroups;
use super::memory_budget::MemoryBudget;
use super::mesh::Mesh;
use super::metrics::ShardMetrics;
use super::owned_partitions::OwnedPartitions;
use super::partition_ops::{CreateSpec, ShardReply, ShardRequest, TopicResults};
use super::splice::Splicer;

/// How the server was asked to run.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub profile: tuning::Profile,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Host and port clients are told to connect to; the bound address when absent.
    pub advertise: Option<(String, u16)>,
    pub node_id: i32,
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic or a CreateTopics with num_partitions = -1.
    pub default_partitions: i32,
    /// Send segment file bytes by splice (true, the default) or copy them through user space
    /// with pread + write (false: only to measure what splice saves).
    pub fetch_by_splice: bool,
    /// Serve Prometheus metrics at `http://<this>/metrics` (`--metrics-listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// Settings of the group coordinators (initial rebalance delay, session bounds...).
    pub group: crate::group::GroupConfig,
    /// Partitions of `__consumer_offsets` when the broker creates it (Kafka's
    /// `offsets.topic.num.partitions`, default 16); an existing topic keeps its count.
    pub offsets_topic_partitions: i32,
    /// Cluster mode (`--coordinator`); a single node when absent.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// The listeners and what they demand of clients (`--listener SASL_SSL://...`).
    pub security: crate::security::listener::ListenerSecurity,
    /// Cluster mode with a SASL inter-broker listener: how this broker authenticates on its
    /// connections to other brokers (Kafka's `sasl.mechanism.inter.broker.protocol`).
    pub inter_broker_sasl: Option<crate::security::inter_broker::InterBrokerSasl>,
    /// `--authorizer`: ACLs checked on every request; everything is allowed when absent.
    pub authorizer: Option<crate::security::acl_store::AuthorizerConfig>,
}

/// Cluster mode's share of a shard.
pub struct ShardCluster {
    /// The newest view this shard was given.
    pub view: RefCell<Arc<crate::cluster::ClusterView>>,
    pub commands: async_channel::Sender<crate::cluster::Command>,
    pub default_replication_factor: i16,
    /// Leaders this shard runs a replica fetcher for.
    pub fetchers: RefCell<std::collections::BTreeSet<i32>>,
    /// A creation of `__consumer_offsets` asked for by FindCoordinator is running.
    pub creating_offsets_topic: std::cell::Cell<bool>,
    /// Notified when a replica here starts following a leader (fetchers re-ask at once).
    pub followers_changed: crate::storage::notify::Signal,
    /// Cleared when the broker starts a controlled shutdown: fetchers finish the fetch they
    /// have out and stop, so no leader adds this broker back to an ISR the controller just
    /// took it out of.
    pub fetching: Arc<std::sync::atomic::AtomicBool>,
    /// Replica fetchers running in the whole process.
    pub fetchers_running: Arc<std::sync::atomic::AtomicUsize>,
}

/// The state of one shard; lives on its executor only.
pub struct Shard {
    pub id: usize,
    pub shard_count: usize,
    pub config: Arc<ServeConfig>,
    /// The server's listeners (bound addresses, advertised endpoints), by index.
    pub listeners: Arc<Vec<crate::security::listener::Listener>>,
    /// The TLS server configuration of SSL and SASL_SSL listeners.
    pub tls: Option<crate::security::tls::TlsReloader>,
    /// This shard's copy of the topic map, updated by broadcasts from shard 0.
    pub topics: RefCell<BTreeMap<String, Rc<Topic>>>,
    /// The durable store; only on shard 0.
    pub store: Option<RefCell<Box<dyn TopicStore>>>,
    pub mesh: Mesh,
    pub metrics: Arc<ShardMetrics>,
    /// Per-partition traffic of the requests this shard served (sampled for the metrics).
    pub traffic: super::metrics::ShardTraffic,
    /// The memory budget of this shard's connections and requests.
    pub memory: Rc<MemoryBudget>,
    /// The partition logs this shard owns.
    pub partitions: OwnedPartitions,
    pub splicer: Rc<Splicer>,
    /// The group coordinators of the `__consumer_offsets` partitions this shard owns.
    pub groups: ShardGroups,
    /// Open connections of the whole process (bounded by the profile).
    pub connections: Arc<AtomicU32>,
    /// InitProducerId's ids, shared by every shard.
    pub producer_ids: Arc<super::producer_ids::ProducerIdAllocator>,
    /// Partitions a disk fault took offline, shared by every shard.
    pub offline: Arc<super::offline::OfflinePartitions>,
    /// SCRAM credentials, shared by every shard (and in cluster mode the cluster agent).
    pub credentials: crate::security::credentials::ShardCredentials,
    pub stop: Arc<AtomicBool>,
    /// Cluster mode: the view and the way to the cluster agent.
    pub cluster: Option<ShardCluster>,
    /// `--authorizer`: this shard's view of the process's ACLs.
    pub acls: Option<crate::security::acl_store::ShardAcls>,
}

impl Shard {
    /// The host and port listener `index` advertises (Metadata on a single node).
    pub fn advertised(&self, index: usize) -> (String, i32) {
        let listener = &self.listeners[index];
        let (host, port) = listener
            .advertised
            .clone()
            .unwrap_or_else(|| (listener.address.ip().to_string(), listener.address.port()));
        (host, i32::from(port))
    }

    /// The name of listener `index`.
    pub fn listener_name(&self, index: usize) -> &str {
        &self.listeners[index].name
    }

    /// What `client` may do, for one request.
    pub fn access(&self, client: &crate::security::client::ClientIdentity) -> Access {
        Access::new(self.acls.as_ref(), client)
    }

    /// Looks a topic up in this shard's view.
    pub fn topic(&self, name: &str) -> Option<Rc<Topic>> {
        self.topics.borrow().get(name).cloned()
    }

    pub fn topic_by_id(&self, id: &[u8; 16]) -> Option<Rc<Topic>> {
        self.topics
            .borrow()
            .values()
            .find(|topic| &topic.id == id)
            .cloned()
    }

    /// Creates topics via the control shard; per topic the result, in order.
    pub async fn create_topics(self: &Rc<Self>, specs: Vec<CreateSpec>) -> TopicResults {
        if self.cluster.is_some() {
            return self.create_topics_in_cluster(specs).await;
        }
        let names = specs.iter().map(|spec| spec.name.clone()).collect();
        self.on_control_shard(
            names,
            specs,
            |specs| self.create_topics_here(specs),
            ShardRequest::CreateTopics,
        )
        .await
    }

    /// Deletes topics via the control shard.
    pub async fn delete_topics(self: &Rc<Self>, names: Vec<String>) -> TopicResults {
        if self.cluster.is_some() {
            return self.delete_topics_in_cluster(names).await;
        }
        self.on_control_shard(
            names.clone(),
            names,
            |names| self.delete_topics_here(names),
            ShardRequest::DeleteTopics,
        )
        .await
    }

    /// Serves a request on shard `owner`: `here(input)` when that is this shard (no mesh
    /// hop), else the request `forward(input)` goes to it over the mesh and `answer` takes the
    /// result out of its reply (`None`: the owner is gone, or answered another kind). Every
    /// operation routed to a partition's owner, a group's coordinator or the control shard
    /// goes through here.
    pub async fn on_shard<I, T, F>(
        &self,
        owner: usize,
        input: I,
        here: impl FnOnce(I) -> F,
        forward: impl FnOnce(I) -> ShardRequest,
        answer: impl FnOnce(Option<ShardReply>) -> T,
    ) -> T
    where
        F: Future<Output = T>,
    {
        if owner == self.id {
            return here(input).await;
        }
        answer(self.mesh.call(owner, forward(input)).await)
    }

    /// [`Self::on_shard`] for the topic operations of the control shard (shard 0), which
    /// answer per topic: when shard 0 does not answer, each of `names` fails.
    pub(super) async fn on_control_shard<I, F>(
        &self,
        names: Vec<String>,
        input: I,
        here: impl FnOnce(I) -> F,
        forward: impl FnOnce(I) -> ShardRequest,
    ) -> TopicResults
    where
        F: Future<Output = TopicResults>,
    {
        self.on_shard(0, input, here, forward, |reply| match reply {
            Some(ShardReply::Topics(results)) => results,
            _ => names
                .into_iter()
                .map(|name| {
                    let err = TopicError::Storage("control shard unavailable".into());
                    (name, Err(err))
                })
                .collect(),
        })
        .await
    }

    /// Checks name, partition count and configs (and, on a single node, the replication
    /// factor; cluster mode checks it against the live brokers).
    pub(super) fn validate_spec(&self, spec: &CreateSpec) -> Result<Topic, TopicError> {
        topics::validate_name(&spec.name)?;
        let partitions = if spec.num_partitions == -1 {
            self.config.default_partitions
        } else {
            spec.num_partitions
        };
        if !(1..=topics::PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            return Err(TopicError::InvalidPartitions(partitions));
        }
        if self.cluster.is_none() {
            if spec.replication_factor != -1 && spec.replication_factor != 1 {
                return Err(TopicError::InvalidReplicationFactor(
                    spec.replication_factor,
                    "a single-node broker keeps one replica".into(),
                ));
            }
            if !spec.assignments.is_empty() {
                return Err(TopicError::InvalidReplicaAssignment(
                    "a single-node broker places partitions itself".into(),
                ));
            }
        }
        let mut configs = BTreeMap::new();
        for (key, value) in &spec.configs {
            topics::validate_config(key, value)?;
            configs.insert(key.clone(), value.clone());
        }
        Ok(Topic {
            name: spec.name.clone(),
            id: topics::new_topic_id(),
            shards: vec![0; partitions as usize],
            configs,
            replicas: Vec::new(),
        })
    }

    async fn create_topics_here(self: &Rc<Self>, specs: Vec<CreateSpec>) -> TopicResults {
        let mut results = Vec::with_capacity(specs.len());
        for spec in specs {
            let result = match self.validate_spec(&spec) {
                Err(err) => Err(err),
                Ok(mut topic) => {
                    let store = self.store.as_ref().expect("shard 0 holds the store");
                    if store.borrow().topics().contains_key(&topic.name) {
                        Err(TopicError::AlreadyExists(topic.name))
                    } else if let Err(why) = crate::storage::disk_budget::check_new_partitions(
                        &self.config.data_dir,
                        topic.shards.len() as u64,
                    ) {
                        // Refused before any partition directory exists: nothing to undo.
                        Err(TopicError::NoSpace(why))
                    } else if spec.validate_only {
                        Ok(topic)
                    } else {
                        let mut owned = vec![0usize; self.shard_count];
                        for existing in store.borrow().topics().values() {
                            for &shard in &existing.shards {
                                if let Some(count) = owned.get_mut(shard as usize) {
                                    *count += 1;
                                }
                            }
                        }
                        topic.shards = topics::place_partitions(&mut owned, topic.shards.len());
                        let created = store.borrow_mut().create(topic.clone());
                        match created {
                            Ok(()) => {
                                self.broadcast(|| ShardRequest::TopicAdded(topic.clone()))
                                    .await;
                                Ok(topic)
                            }
                            Err(err) => Err(err),
                        }
                    }
                }
            };
            results.push((spec.name, result));
        }
        results
    }

    async fn delete_topics_here(self: &Rc<Self>, names: Vec<String>) -> TopicResults {
        let mut results = Vec::with_capacity(names.len());
        for name in names {
            let store = self.store.as_ref().expect("shard 0 holds the store");
            let known = store.borrow().topics().get(&name).cloned();
            let result = match known {
                None => Err(TopicError::UnknownTopic(name.clone())),
                Some(topic) => {
                    // Every shard stops serving and closes its logs, then the directories
                    // are renamed away before the store forgets the topic.
                    self.broadcast(|| ShardRequest::TopicRemoved(name.clone()))
                        .await;
                    self.delete_topic_data(&topic).await
                }
            };
            results.push((name, result));
        }
        results
    }

    /// Applies a topic change on every shard (this one directly, the others over the mesh)
    /// and returns when all have applied it.
    pub(super) async fn broadcast(self: &Rc<Self>, request: impl Fn() -> ShardRequest) {
        for shard in 0..self.shard_count {
            if shard == self.id {
                self.apply_change(request()).await;
            } else if self.mesh.call(shard, request()).await.is_none() {
                tracing::error!("shard {shard} did not apply a topic change");
            }
        }
    }

    /// Serves a request from another shard (or from this one, for broadcasts).
    pub async fn handle_request(self: &Rc<Self>, request: ShardRequest) -> ShardReply {
        match request {
            ShardRequest::CreateTopics(specs) => {
                ShardReply::Topics(self.create_topics_here(specs).await)
            }
            ShardRequest::DeleteTopics(names) => {
                ShardReply::Topics(self.delete_topics_here(names).await)
            }
            change @ (ShardRequest::TopicAdded(_)
            | ShardRequest::TopicRemoved(_)
            | ShardRequest::TopicUpdated(_)
            | ShardRequest::ClusterView(_)) => self.apply_change(change).await,
            ShardRequest::Group(call) => ShardReply::Group(self.group_local(call).await),
            ShardRequest::AlterConfigs(alterations) => {
                ShardReply::Topics(self.alter_configs_here(alterations).await)
            }
            ShardRequest::CreatePartitions(specs) => {
                ShardReply::Topics(self.create_partitions_here(specs).await)
            }
            ShardRequest::LogDirs => ShardReply::LogDirs(self.log_dir_partitions()),
            ShardRequest::MoveConnection(moved) => {
                glommio::spawn_local(super::connection::serve_moved(self.clone(), moved)).detach();
                ShardReply::Done
            }
            data => self.handle_data_request(data).await,
        }
    }

    /// Applies a topic change broadcast by the control shard.
    async fn apply_change(self: &Rc<Self>, change: ShardRequest) -> ShardReply {
        match change {
            ShardRequest::TopicAdded(topic) => {
                self.topic_added(topic).await;
                ShardReply::Done
            }
            ShardRequest::TopicRemoved(name) => {
                self.topic_removed(&name).await;
                ShardReply::Done
            }
            ShardRequest::TopicUpdated(topic) => {
                // Replica lists (a reassignment) of the partitions the topic had: replicas that
                // became this broker's are opened, those moved away closed. Then configs and
                // added partitions (`topic_changes`): the open logs take the new settings,
                // added partitions this shard owns are opened.
                let old = self.topics.borrow().get(&topic.name).cloned();
                if let Some(old) = old {
                    self.replicas_moved(&old, &topic).await;
                }
                self.topic_updated(topic).await;
                ShardReply::Done
            }
            ShardRequest::ClusterView(view) => {
                self.set_view(view);
                ShardReply::Done
            }
            _ => ShardReply::Done,
        }
    }

    async fn topic_added(self: &Rc<Self>, topic: Topic) {
        if let Err(err) = self.open_topic(&topic).await {
            tracing::error!("shard {}: topic {}: {err}", self.id, topic.name);
        }
        self.topics
            .borrow_mut()
            .insert(topic.name.clone(), Rc::new(topic));
    }

    async fn topic_removed(self: &Rc<Self>, name: &str) {
        self.topics.borrow_mut().remove(name);
        self.traffic.forget(name);
        self.offline.forget_topic(name);
        self.close_topic_logs(name).await;
    }
}
