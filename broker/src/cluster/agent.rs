//! The cluster agent: the broker's one ZooKeeper session, on a thread of its own (a
//! current-thread tokio runtime for the `zookeeper-client` crate), off the shards' hot path.
//!
//! It registers the broker (`/brokers/ids/<id>`, ephemeral), keeps the [`ClusterView`] fresh
//! through one-shot watches (re-armed on every fire, one per path), runs for the controller
//! seat, and while it holds it drives the sans-IO [`Controller`] core: every core output is
//! one ZooKeeper write fenced by the controller epoch (`multi` with a `check` of
//! `/controller_epoch`'s version), its result fed back as an event. Shards talk to it through
//! two channels: [`Command`]s in (create or delete a topic) and view snapshots out (the
//! latest one wins; a slow shard never holds the agent up).
//!
//! It works the same against our coordinator and Apache ZooKeeper: plain ZooKeeper calls
//! only (create, delete, getData, exists, getChildren2, setData, multi with check).

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zookeeper_client as zk;

use super::acl_znodes;
use super::assignment::Candidate;
use super::controller::{
    self as core, ControllerConfig, ElectionType, Event, Output, Reassignment, TopicPartition,
};
use super::users::{self, ZnodeOptions};
use super::view::{BrokerInfo, ClusterView, Endpoint, PartitionView, TopicView};
use super::znodes::{self, BrokerRegistration, ControllerZnode, TopicAssignment, TopicZnode};
use super::Controller;
use crate::security::acl_store::SharedAcls;
use crate::security::authorizer::{AclBinding, AclFilter};
use crate::security::credentials::{
    AlterError, CredentialChange, CredentialSnapshot, LiveCredentials,
};
use crate::topics::TopicError;

/// How a broker joins a cluster (`broker serve --id --coordinator ...`).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub broker_id: i32,
    /// Kafka's `zookeeper.connect`: `host:port[,host:port...][/chroot]`.
    pub connect: String,
    pub session_timeout_ms: u64,
    pub rack: Option<String>,
    /// Kafka's `unclean.leader.election.enable` (topics may override it).
    pub unclean_leader_election: bool,
    /// Replicas of a topic created with replication_factor -1 (Kafka's
    /// `default.replication.factor`).
    pub default_replication_factor: i16,
    /// Kafka's `min.insync.replicas`: an acks=all produce needs an ISR this big (topics may
    /// override it).
    pub min_insync_replicas: usize,
    /// Kafka's `replica.lag.time.max.ms`: a follower not caught up for this long leaves the
    /// ISR.
    pub replica_lag_time_max_ms: u64,
    /// How long a clean stop waits for the controller to move this broker's leaderships
    /// (0: stop at once, as a kill would).
    pub controlled_shutdown_timeout_ms: u64,
    /// `user:password` for `addauth digest` on every coordinator session (Kafka's JAAS
    /// `Client` section); `None`: the sessions are anonymous.
    pub coordinator_digest: Option<CoordinatorDigest>,
    /// Kafka's `zookeeper.set.acl`: znodes this broker creates are writable only by the
    /// digest user (readable by all), credentials readable by it alone.
    pub coordinator_set_acl: bool,
}

/// `user:password` for the coordinator's digest scheme; its Debug form hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct CoordinatorDigest(pub String);

impl std::fmt::Debug for CoordinatorDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = self.0.split(':').next().unwrap_or("");
        write!(f, "CoordinatorDigest({user}:***)")
    }
}

impl ClusterConfig {
    pub fn znode_options(&self) -> ZnodeOptions {
        ZnodeOptions {
            secure: self.coordinator_set_acl,
        }
    }
}

/// What a shard asks of the agent.
pub enum Command {
    /// Write a new topic's config and assignment (Kafka's `AdminZkClient.createTopic`).
    CreateTopic {
        name: String,
        assignment: TopicAssignment,
        configs: BTreeMap<String, String>,
        reply: async_channel::Sender<Result<(), TopicError>>,
    },
    /// Mark a topic for deletion (`/admin/delete_topics/<t>`); the controller deletes it.
    DeleteTopic {
        name: String,
        reply: async_channel::Sender<Result<(), TopicError>>,
    },
    /// A leader changes its partition's ISR: a set of the state znode at `expected_version`
    /// (Kafka's ZooKeeper-mode leader writes it so). The answer is the new version, or
    /// `Err(true)` when the version moved (the leader's view is stale), `Err(false)` when the
    /// coordinator could not be asked.
    WriteIsr {
        tp: TopicPartition,
        state: super::LeaderAndIsr,
        expected_version: i32,
        reply: async_channel::Sender<Result<i32, bool>>,
    },
    /// Reserve the next block of producer ids for this broker: `start..end`.
    ProducerIdBlock {
        size: i64,
        reply: async_channel::Sender<Result<(i64, i64), String>>,
    },
    /// This broker's log of `tp` failed (a disk fault): list it in `/offline_replicas/<id>`
    /// so the controller moves the partition's leadership and ISR place away.
    ReplicaOffline { tp: TopicPartition },
    /// This broker stops cleanly: ask the controller to move its leaderships away and answer
    /// once it leads nothing another live ISR member could lead (true), or at the deadline
    /// (false).
    ShutdownSelf {
        deadline: Instant,
        reply: async_channel::Sender<bool>,
    },
    /// AlterUserScramCredentials: change a user's credentials in `/config/users/<user>` and
    /// announce it; answered once written and live on this broker.
    AlterUserScram {
        user: String,
        changes: Vec<CredentialChange>,
        reply: async_channel::Sender<Result<(), AlterError>>,
    },
    /// CreateAcls/DeleteAcls: add `create`, then remove what each of `delete` selects, in the
    /// `/kafka-acl*` znodes; answered once this broker's ACLs show the change, with the ACLs
    /// each filter removed.
    AlterAcls {
        create: Vec<AclBinding>,
        delete: Vec<AclFilter>,
        reply: async_channel::Sender<Result<Vec<Vec<AclBinding>>, String>>,
    },
    /// AlterConfigs/IncrementalAlterConfigs of a topic: change `/config/topics/<t>` and
    /// announce it; answered with the overrides as written, once in this broker's view.
    AlterTopicConfigs {
        alteration: crate::topics::ConfigAlteration,
        reply: async_channel::Sender<Result<BTreeMap<String, String>, TopicError>>,
    },
    /// CreatePartitions: append `added` replica lists to the assignment of topic `name`
    /// (id `id`), if it still has `current` partitions.
    AddPartitions {
        name: String,
        id: [u8; 16],
        current: usize,
        added: Vec<Vec<i32>>,
        reply: async_channel::Sender<Result<(), TopicError>>,
    },
    /// ElectLeaders: hand the elections to the controller (`/admin/elect_leaders/request_<seq>`);
    /// answered with the request's path once written.
    ElectLeaders {
        election: ElectionType,
        partitions: Vec<TopicPartition>,
        reply: async_channel::Sender<Result<String, String>>,
    },
    /// Remove an election request the controller has not taken (the asker gave up waiting).
    ForgetElection { path: String },
    /// AlterPartitionReassignments: start, replace or (target None) cancel reassignments in
    /// the topic znodes; one answer per request entry, in order (Err: a Kafka error code and
    /// message).
    AlterReassignments {
        requests: Vec<(TopicPartition, Option<Vec<i32>>)>,
        reply: async_channel::Sender<Vec<Result<(), (i16, String)>>>,
    },
}

/// The shards' end of a running agent.
pub struct AgentHandle {
    pub commands: async_channel::Sender<Command>,
    /// Snapshots of the view; holds only the newest.
    pub views: async_channel::Receiver<Arc<ClusterView>>,
    /// The view when the broker finished registering.
    pub initial: Arc<ClusterView>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AgentHandle {
    /// Controlled shutdown: asks the controller to move this broker's leaderships to other
    /// ISR members and waits (at most `timeout`) until they moved. Call before stopping the
    /// shards, so clients find the new leaders while this broker still answers.
    pub fn controlled_shutdown(&self, timeout: Duration) -> bool {
        let (tx, rx) = async_channel::bounded(1);
        let command = Command::ShutdownSelf {
            deadline: Instant::now() + timeout,
            reply: tx,
        };
        if self.commands.send_blocking(command).is_err() {
            return false;
        }
        rx.recv_blocking().unwrap_or(false)
    }

    /// Closes the session (the registration vanishes at once, not after the session timeout)
    /// and waits for the thread.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

const COMMAND_QUEUE: usize = 1024;
/// How long start-up keeps trying to reach the coordinator.
const CONNECT_DEADLINE: Duration = Duration::from_secs(30);
/// One attempt at a new session after the old one was lost.
const RECONNECT_ATTEMPT: Duration = Duration::from_secs(2);

/// Starts the agent; returns once the broker is registered and the view loaded.
/// `advertised`: this broker's endpoints, each with its listener's security protocol.
/// `credentials` is filled from the coordinator before this returns and kept current; with
/// `acls` (`--authorizer`), the agent loads the ACLs before it reports ready and keeps them
/// current.
pub fn start(
    config: ClusterConfig,
    advertised: Vec<(Endpoint, &'static str)>,
    credentials: Arc<LiveCredentials>,
    acls: Option<Arc<SharedAcls>>,
) -> Result<AgentHandle, String> {
    let (commands_tx, commands_rx) = async_channel::bounded(COMMAND_QUEUE);
    let (views_tx, views_rx) = async_channel::bounded(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("cluster-agent".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    let _ = ready_tx.send(Err(format!("cluster agent runtime: {err}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let agent =
                    match Agent::start(config, advertised, views_tx, credentials, acls).await {
                        Ok(agent) => agent,
                        Err(err) => {
                            let _ = ready_tx.send(Err(err));
                            return;
                        }
                    };
                let _ = ready_tx.send(Ok(agent.snapshot()));
                agent.run(commands_rx, stop_rx).await;
                // The session closes when its last client handle is gone (dropped with the
                // agent); give the session task a moment to send the close.
                tokio::time::sleep(Duration::from_millis(200)).await;
            });
        })
        .map_err(|err| format!("cluster agent thread: {err}"))?;
    match ready_rx.recv() {
        Ok(Ok(initial)) => Ok(AgentHandle {
            commands: commands_tx,
            views: views_rx,
            initial,
            stop: Some(stop_tx),
            thread: Some(thread),
        }),
        Ok(Err(err)) => {
            let _ = thread.join();
            Err(err)
        }
        Err(_) => {
            let _ = thread.join();
            Err("cluster agent stopped while starting".into())
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Splits Kafka's connect string into hosts and chroot.
pub fn split_connect(connect: &str) -> (&str, Option<&str>) {
    match connect.find('/') {
        Some(at) if at + 1 < connect.len() => (&connect[..at], Some(&connect[at..])),
        Some(at) => (&connect[..at], None),
        None => (connect, None),
    }
}

/// Which watch fired; one armed at a time per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum WatchKey {
    BrokerIds,
    Broker(i32),
    Topics,
    Topic(String),
    State(String, i32),
    Controller,
    DeleteTopics,
    ControlledShutdown,
    OfflineReplicas,
    OfflineReplica(i32),
    ConfigChanges,
    /// `/kafka-acl-changes` (false) or `/kafka-acl-extended-changes` (true).
    AclChanges(bool),
    /// `/admin/elect_leaders` (the controller only).
    ElectLeaders,
}

struct Fired {
    generation: u64,
    key: WatchKey,
}

/// The controller seat while this broker holds it.
struct Seat {
    core: Controller,
    /// `/controller_epoch`'s Stat.version after our election write: every write checks it.
    epoch_version: i32,
    /// Brokers whose controlled shutdown was handed to the core.
    shutting_down: BTreeSet<i32>,
}

struct Agent {
    config: ClusterConfig,
    advertised: Vec<(Endpoint, &'static str)>,
    client: zk::Client,
    /// Bumped with every new session: watches of older sessions are ignored.
    generation: u64,
    armed: HashSet<WatchKey>,
    fired_tx: tokio::sync::mpsc::UnboundedSender<Fired>,
    fired_rx: tokio::sync::mpsc::UnboundedReceiver<Fired>,
    view: ClusterView,
    views: async_channel::Sender<Arc<ClusterView>>,
    seat: Option<Seat>,
    /// Core outputs whose ZooKeeper call failed for a connection reason; retried on a timer.
    retry: Vec<Output>,
    /// This broker's own controlled shutdown, waiting for its leaderships to move.
    shutting_down: Option<(Instant, async_channel::Sender<bool>)>,
    /// This process's replicas whose log failed; listed in `/offline_replicas/<id>`.
    offline_here: BTreeSet<TopicPartition>,
    /// The last write of `offline_here` failed: retried on the timer.
    offline_unwritten: bool,
    /// The SCRAM credentials the shards check, loaded from `/config/users`.
    credentials: Arc<LiveCredentials>,
    /// The highest change notification handled (`/config/changes/config_change_<seq>`).
    last_change: Option<u64>,
    /// Creation times of the notifications seen, to delete them once expired.
    change_ctimes_ms: BTreeMap<u64, i64>,
    /// `--authorizer`: the ACLs this agent keeps current.
    acls: Option<Arc<SharedAcls>>,
}

fn zk_err(context: &str, err: zk::Error) -> String {
    format!("{context}: {err}")
}

impl Agent {
    async fn start(
        config: ClusterConfig,
        advertised: Vec<(Endpoint, &'static str)>,
        views: async_channel::Sender<Arc<ClusterView>>,
        credentials: Arc<LiveCredentials>,
        acls: Option<Arc<SharedAcls>>,
    ) -> Result<Agent, String> {
        let client = connect(&config).await?;
        let (fired_tx, fired_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut agent = Agent {
            config,
            advertised,
            client,
            generation: 0,
            armed: HashSet::new(),
            fired_tx,
            fired_rx,
            view: ClusterView::default(),
            views,
            seat: None,
            retry: Vec::new(),
            offline_here: BTreeSet::new(),
            offline_unwritten: false,
            shutting_down: None,
            credentials,
            last_change: None,
            change_ctimes_ms: BTreeMap::new(),
            acls,
        };
        agent.establish().await?;
        Ok(agent)
    }

    fn snapshot(&self) -> Arc<ClusterView> {
        Arc::new(self.view.clone())
    }

    fn publish(&self) {
        let _ = self.views.force_send(self.snapshot());
    }

    /// Everything a new session needs: top-level paths, the cluster id, the registration,
    /// the whole view with fresh watches, and a run for the controller seat.
    async fn establish(&mut self) -> Result<(), String> {
        self.generation += 1;
        self.armed.clear();
        self.seat = None;
        self.retry.clear();
        let options = self.config.znode_options();
        for path in znodes::PERSISTENT_PATHS {
            ensure_path(&self.client, path, &options).await?;
        }
        let cluster_id = ensure_cluster_id(&self.client, &options).await?;
        let epoch = register(&self.client, &self.config, &self.advertised).await?;
        tracing::info!(
            "broker {} registered (broker epoch {epoch}) in cluster {cluster_id}",
            self.config.broker_id
        );
        self.view = ClusterView {
            cluster_id,
            controller: -1,
            ..ClusterView::default()
        };
        self.load_credentials().await?;
        self.on_broker_ids().await?;
        // The failed replicas of this process are listed again under the new session.
        self.write_offline_replicas().await?;
        self.on_offline_replicas().await?;
        self.on_topics().await?;
        self.on_controller().await?;
        if self.acls.is_some() {
            let options = self.config.znode_options();
            for path in acl_znodes::PATHS {
                ensure_path(&self.client, path, &options).await?;
            }
            self.on_acl_changes(false).await?;
            self.on_acl_changes(true).await?;
        }
        self.publish();
        Ok(())
    }

    /// Writes this broker's failed replicas to its ephemeral `/offline_replicas/<id>`.
    async fn write_offline_replicas(&mut self) -> Result<(), String> {
        if self.offline_here.is_empty() {
            return Ok(());
        }
        let path = znodes::offline_replicas_path(self.config.broker_id);
        let data = znodes::encode_offline_replicas(&self.offline_here);
        let options = self.config.znode_options().ephemeral();
        let written = match self.client.create(&path, &data, &options).await {
            Ok(_) => Ok(()),
            Err(zk::Error::NodeExists) => self
                .client
                .set_data(&path, &data, None)
                .await
                .map(|_| ())
                .map_err(|err| zk_err(&path, err)),
            Err(err) => Err(zk_err(&path, err)),
        };
        self.offline_unwritten = written.is_err();
        written
    }

    /// Every broker's failed replicas: into the view (Metadata lists them as offline
    /// replicas), and to the core while this broker is the controller.
    async fn on_offline_replicas(&mut self) -> Result<(), String> {
        let children = self
            .children_watched(WatchKey::OfflineReplicas, znodes::OFFLINE_REPLICAS)
            .await?;
        let ids: BTreeSet<i32> = children.iter().filter_map(|c| c.parse().ok()).collect();
        let gone: Vec<i32> = self
            .view
            .offline_replicas
            .keys()
            .copied()
            .filter(|id| !ids.contains(id))
            .collect();
        let mut events = Vec::new();
        for broker in gone {
            self.view.offline_replicas.remove(&broker);
            events.push(Event::OfflineReplicas {
                broker,
                partitions: BTreeSet::new(),
            });
        }
        self.feed(events).await;
        for id in ids {
            self.read_offline_replicas(id).await?;
        }
        Ok(())
    }

    // ---- SCRAM credentials ----

    /// Every user's credentials, with the change notifications watched from before the read
    /// on, so no change is missed (a user read twice is the same user).
    async fn load_credentials(&mut self) -> Result<(), String> {
        let children = self
            .children_watched(WatchKey::ConfigChanges, users::CONFIG_CHANGES)
            .await?;
        self.last_change = children
            .iter()
            .filter_map(|c| users::change_sequence(c))
            .max();
        let loaded = users::load_users(&self.client).await?;
        tracing::info!(
            "broker {}: {} SCRAM users loaded from {}",
            self.config.broker_id,
            loaded.len(),
            users::CONFIG_USERS
        );
        self.credentials
            .replace(CredentialSnapshot::from_users(loaded));
        Ok(())
    }

    /// New change notifications: reloads each user they name, in order; deletes expired ones.
    async fn on_config_changes(&mut self) -> Result<(), String> {
        let children = self
            .children_watched(WatchKey::ConfigChanges, users::CONFIG_CHANGES)
            .await?;
        let mut sequences: Vec<(u64, String)> = children
            .into_iter()
            .filter_map(|c| users::change_sequence(&c).map(|seq| (seq, c)))
            .collect();
        sequences.sort();
        let present: BTreeSet<u64> = sequences.iter().map(|(seq, _)| *seq).collect();
        self.change_ctimes_ms.retain(|seq, _| present.contains(seq));
        for (seq, child) in sequences {
            let path = format!("{}/{child}", users::CONFIG_CHANGES);
            if self.last_change.is_some_and(|last| seq <= last) {
                self.expire_change(seq, &path).await;
                continue;
            }
            self.last_change = Some(seq);
            let (data, stat) = match self.client.get_data(&path).await {
                Ok(found) => found,
                Err(zk::Error::NoNode) => continue,
                Err(err) => return Err(zk_err(&path, err)),
            };
            self.change_ctimes_ms.insert(seq, stat.ctime);
            if let Some(topic) = super::topic_changes::changed_topic(&data) {
                // A topic's config overrides changed (AlterConfigs on some broker).
                if self.view.topics.contains_key(&topic) {
                    self.read_topic(&topic).await?;
                }
                continue;
            }
            match users::decode_change(&path, &data) {
                Ok(Some(user)) => self.reload_user(&user).await?,
                Ok(None) => {}
                Err(err) => tracing::warn!("{err}"),
            }
        }
        Ok(())
    }

    async fn read_offline_replicas(&mut self, id: i32) -> Result<(), String> {
        let path = znodes::offline_replicas_path(id);
        let partitions = match self
            .read_watched(WatchKey::OfflineReplica(id), &path)
            .await?
        {
            None => BTreeSet::new(),
            Some((data, _)) => match znodes::decode_offline_replicas(&path, &data) {
                Ok(partitions) => partitions,
                Err(err) => {
                    tracing::warn!("{err}");
                    return Ok(());
                }
            },
        };
        let changed = if partitions.is_empty() {
            self.view.offline_replicas.remove(&id).is_some()
        } else {
            self.view.offline_replicas.insert(id, partitions.clone()) != Some(partitions.clone())
        };
        if changed {
            if !partitions.is_empty() {
                tracing::warn!("broker {id}: replicas offline after a disk fault: {partitions:?}");
            }
            self.feed(vec![Event::OfflineReplicas {
                broker: id,
                partitions,
            }])
            .await;
        }
        Ok(())
    }

    /// An ACL change notification (or a new session): re-arms the watch and reloads every
    /// ACL (a handful of reads per resource pattern; changes are rare).
    async fn on_acl_changes(&mut self, extended: bool) -> Result<(), String> {
        let path = if extended {
            acl_znodes::EXTENDED_CHANGES
        } else {
            acl_znodes::LITERAL_CHANGES
        };
        self.children_watched(WatchKey::AclChanges(extended), path)
            .await?;
        self.reload_acls().await
    }

    async fn reload_acls(&mut self) -> Result<(), String> {
        if let Some(acls) = &self.acls {
            let loaded = acl_znodes::load_all(&self.client).await?;
            acls.install(loaded);
        }
        Ok(())
    }

    async fn reload_user(&mut self, user: &str) -> Result<(), String> {
        let creds = users::read_user(&self.client, user).await?;
        tracing::info!(
            "broker {}: SCRAM credentials of {user:?} reloaded ({} mechanisms)",
            self.config.broker_id,
            creds.len()
        );
        let next = self.credentials.load().with_user(user, creds);
        self.credentials.replace(next);
        Ok(())
    }

    /// Deletes a notification older than [`users::CONFIG_CHANGE_EXPIRY_MS`] (as Kafka's
    /// brokers do; whichever broker gets there first deletes it).
    async fn expire_change(&mut self, seq: u64, path: &str) {
        let ctime_ms = match self.change_ctimes_ms.get(&seq) {
            Some(&ctime) => ctime,
            None => match self.client.check_stat(path).await {
                Ok(Some(stat)) => {
                    self.change_ctimes_ms.insert(seq, stat.ctime);
                    stat.ctime
                }
                _ => return,
            },
        };
        if (now_ms() as i64).saturating_sub(ctime_ms) > users::CONFIG_CHANGE_EXPIRY_MS {
            match self.client.delete(path, None).await {
                Ok(()) | Err(zk::Error::NoNode) => {
                    self.change_ctimes_ms.remove(&seq);
                }
                Err(err) => tracing::debug!("{path}: {err}"),
            }
        }
    }

    async fn alter_user_scram(
        &mut self,
        user: &str,
        changes: &[CredentialChange],
    ) -> Result<(), AlterError> {
        let options = self.config.znode_options();
        // Bounded: with the coordinator unreachable the writes would wait for it, and the
        // agent serves nothing else meanwhile.
        let limit = Duration::from_millis(self.config.session_timeout_ms);
        let write = users::alter_in_coordinator(&self.client, user, changes, &options);
        let creds = tokio::time::timeout(limit, write).await.map_err(|_| {
            AlterError::Storage(format!("the coordinator did not answer within {limit:?}"))
        })??;
        // Live here at once; the other brokers follow the notification.
        let next = self.credentials.load().with_user(user, creds);
        self.credentials.replace(next);
        Ok(())
    }

    async fn alter_acls(
        &mut self,
        create: &[AclBinding],
        delete: &[AclFilter],
    ) -> Result<Vec<Vec<AclBinding>>, String> {
        let options = self.config.znode_options();
        acl_znodes::add(&self.client, &options, create).await?;
        let removed = acl_znodes::remove(&self.client, &options, delete).await?;
        self.reload_acls().await?;
        Ok(removed)
    }

    async fn run(
        mut self,
        commands: async_channel::Receiver<Command>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        let mut state = self.client.state_watcher();
        // The session expired or closed: registering again, one attempt per retry tick.
        let mut lost = false;
        let mut retry_tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Some(fired) = self.fired_rx.recv() => {
                    if fired.generation == self.generation {
                        self.armed.remove(&fired.key);
                        if let Err(err) = self.on_fired(fired.key).await {
                            tracing::warn!("cluster agent: {err}");
                        }
                        self.publish();
                        self.check_shutdown();
                    }
                }
                Ok(command) = commands.recv() => self.on_command(command).await,
                session = state.changed(), if !lost => {
                    if session.is_terminated() {
                        tracing::warn!(
                            "broker {}: coordinator session {session:?}; registering again",
                            self.config.broker_id
                        );
                        lost = true;
                    }
                }
                _ = retry_tick.tick() => {
                    if lost {
                        // One bounded attempt per tick, so a stop is never held up for long.
                        if self.reconnect_once().await {
                            lost = false;
                            state = self.client.state_watcher();
                        }
                        self.check_shutdown();
                        continue;
                    }
                    if self.offline_unwritten {
                        if let Err(err) = self.write_offline_replicas().await {
                            tracing::warn!("{err}; retrying");
                        }
                    }
                    if !self.retry.is_empty() {
                        let retry = std::mem::take(&mut self.retry);
                        self.drive(retry).await;
                        self.publish();
                    }
                    self.check_shutdown();
                }
            }
        }
        // Dropping the last client closes the session, which deletes the registration and,
        // if we held it, /controller at once instead of after the session timeout.
        drop(self);
    }

    /// A new session after the old one expired (or closed): Kafka's broker does the same.
    /// One attempt at a new session after the old one expired (or closed), bounded in time:
    /// connect, register again, reload the view. Kafka's broker does the same.
    async fn reconnect_once(&mut self) -> bool {
        let hosts = split_connect(&self.config.connect).0.to_string();
        let attempt = async {
            let client = connect_once(&self.config).await?;
            self.client = client;
            self.establish().await
        };
        match tokio::time::timeout(RECONNECT_ATTEMPT, attempt).await {
            Ok(Ok(())) => true,
            Ok(Err(err)) => {
                tracing::warn!("registering again at {hosts}: {err}");
                false
            }
            Err(_) => {
                tracing::warn!(
                    "registering again at {hosts}: no answer within {RECONNECT_ATTEMPT:?}"
                );
                false
            }
        }
    }

    fn arm(&mut self, key: WatchKey, watcher: zk::OneshotWatcher) {
        self.armed.insert(key.clone());
        let tx = self.fired_tx.clone();
        let generation = self.generation;
        tokio::spawn(async move {
            let _ = watcher.changed().await;
            let _ = tx.send(Fired { generation, key });
        });
    }

    /// Reads a znode, arming its watch unless one is armed (a missing znode is watched for
    /// creation, so a state the controller writes later is seen).
    async fn read_watched(
        &mut self,
        key: WatchKey,
        path: &str,
    ) -> Result<Option<(Vec<u8>, zk::Stat)>, String> {
        if self.armed.contains(&key) {
            return match self.client.get_data(path).await {
                Ok(found) => Ok(Some(found)),
                Err(zk::Error::NoNode) => Ok(None),
                Err(err) => Err(zk_err(path, err)),
            };
        }
        match self.client.get_and_watch_data(path).await {
            Ok((data, stat, watcher)) => {
                self.arm(key, watcher);
                Ok(Some((data, stat)))
            }
            Err(zk::Error::NoNode) => match self.client.check_and_watch_stat(path).await {
                Ok((None, watcher)) => {
                    self.arm(key, watcher);
                    Ok(None)
                }
                Ok((Some(_), watcher)) => {
                    // Created in between: the watch fires on its next change; read it now.
                    self.arm(key, watcher);
                    match self.client.get_data(path).await {
                        Ok(found) => Ok(Some(found)),
                        Err(zk::Error::NoNode) => Ok(None),
                        Err(err) => Err(zk_err(path, err)),
                    }
                }
                Err(err) => Err(zk_err(path, err)),
            },
            Err(err) => Err(zk_err(path, err)),
        }
    }

    async fn children_watched(&mut self, key: WatchKey, path: &str) -> Result<Vec<String>, String> {
        if self.armed.contains(&key) {
            return self
                .client
                .list_children(path)
                .await
                .map_err(|err| zk_err(path, err));
        }
        let (children, watcher) = self
            .client
            .list_and_watch_children(path)
            .await
            .map_err(|err| zk_err(path, err))?;
        self.arm(key, watcher);
        Ok(children)
    }

    async fn on_fired(&mut self, key: WatchKey) -> Result<(), String> {
        match key {
            WatchKey::BrokerIds => self.on_broker_ids().await,
            WatchKey::Broker(id) => self.read_broker(id).await,
            WatchKey::Topics => self.on_topics().await,
            WatchKey::Topic(topic) => self.read_topic(&topic).await,
            WatchKey::State(topic, partition) => {
                let read = self.read_state(&topic, partition).await?;
                self.feed(vec![Event::StateRead {
                    tp: TopicPartition { topic, partition },
                    state: read,
                }])
                .await;
                Ok(())
            }
            WatchKey::Controller => self.on_controller().await,
            WatchKey::DeleteTopics => self.on_delete_topics().await,
            WatchKey::ControlledShutdown => self.on_controlled_shutdown().await,
            WatchKey::OfflineReplicas => self.on_offline_replicas().await,
            WatchKey::OfflineReplica(id) => self.read_offline_replicas(id).await,
            WatchKey::ConfigChanges => self.on_config_changes().await,
            WatchKey::AclChanges(extended) => self.on_acl_changes(extended).await,
            WatchKey::ElectLeaders => self.on_elect_leaders().await,
        }
    }

    /// The controller hands each live broker that asked for a controlled shutdown to the
    /// core once per seat.
    async fn on_controlled_shutdown(&mut self) -> Result<(), String> {
        if self.seat.is_none() {
            return Ok(());
        }
        let asking = self
            .children_watched(WatchKey::ControlledShutdown, znodes::CONTROLLED_SHUTDOWN)
            .await?;
        let mut events = Vec::new();
        if let Some(seat) = self.seat.as_mut() {
            let asking: BTreeSet<i32> = asking.iter().filter_map(|c| c.parse().ok()).collect();
            seat.shutting_down.retain(|b| asking.contains(b));
            for broker in asking {
                if self.view.brokers.contains_key(&broker) && seat.shutting_down.insert(broker) {
                    tracing::info!("controller: broker {broker} asks for a controlled shutdown");
                    events.push(Event::ControlledShutdown { broker });
                }
            }
        }
        self.feed(events).await;
        Ok(())
    }

    /// Answers this broker's controlled shutdown once no partition it leads has another live
    /// ISR member to move to, or at its deadline.
    fn check_shutdown(&mut self) {
        let Some((deadline, _)) = &self.shutting_down else {
            return;
        };
        let me = self.config.broker_id;
        let movable = self
            .view
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter_map(|p| p.state.as_ref())
            .filter(|s| s.leader == me)
            .filter(|s| {
                s.isr
                    .iter()
                    .any(|&b| b != me && self.view.brokers.contains_key(&b))
            })
            .count();
        let done = movable == 0;
        if done || Instant::now() >= *deadline {
            if !done {
                tracing::warn!(
                    "broker {me}: controlled shutdown timed out with {movable} leaderships left"
                );
            }
            if let Some((_, reply)) = self.shutting_down.take() {
                let _ = reply.force_send(done);
            }
        }
    }

    // ---- the view ----

    async fn on_broker_ids(&mut self) -> Result<(), String> {
        let children = self
            .children_watched(WatchKey::BrokerIds, znodes::BROKER_IDS)
            .await?;
        let live: BTreeSet<i32> = children.iter().filter_map(|c| c.parse().ok()).collect();
        let now = std::time::Instant::now();
        let gone: Vec<i32> = self
            .view
            .brokers
            .keys()
            .copied()
            .filter(|id| !live.contains(id))
            .collect();
        for id in gone {
            self.view.broker_departed(id, now);
        }
        for &id in &live {
            if !self.view.brokers.contains_key(&id) {
                self.read_broker(id).await?;
            }
        }
        self.feed(vec![Event::LiveBrokers(live)]).await;
        Ok(())
    }

    /// (Re)reads one registration. A registration with a new czxid is a broker that
    /// restarted between two reads (KIP-380's bounced broker): the controller sees it leave
    /// and come back, so its leaderships move on to a new epoch as after any failure.
    async fn read_broker(&mut self, id: i32) -> Result<(), String> {
        let path = znodes::broker_path(id);
        let before = self.view.brokers.get(&id).map(|b| b.epoch);
        match self.read_watched(WatchKey::Broker(id), &path).await? {
            None => {
                if self.view.broker_departed(id, std::time::Instant::now()) {
                    let live = self.view.brokers.keys().copied().collect();
                    self.feed(vec![Event::LiveBrokers(live)]).await;
                }
            }
            Some((data, stat)) => match BrokerRegistration::decode(&path, &data) {
                Ok(registration) => {
                    let (host, port) = registration.plaintext_endpoint();
                    self.view.broker_registered(BrokerInfo {
                        id,
                        host,
                        port,
                        endpoints: registration.parsed_endpoints(),
                        rack: registration.rack,
                        epoch: stat.czxid,
                    });
                    if before.is_some_and(|epoch| epoch != stat.czxid) {
                        tracing::info!("broker {id} restarted (broker epoch {})", stat.czxid);
                        let live: BTreeSet<i32> = self.view.brokers.keys().copied().collect();
                        let mut without = live.clone();
                        without.remove(&id);
                        self.feed(vec![Event::LiveBrokers(without), Event::LiveBrokers(live)])
                            .await;
                    }
                }
                Err(err) => tracing::warn!("{err}"),
            },
        }
        Ok(())
    }

    async fn on_topics(&mut self) -> Result<(), String> {
        let children = self
            .children_watched(WatchKey::Topics, znodes::TOPICS)
            .await?;
        let names: BTreeSet<String> = children.into_iter().collect();
        let gone: Vec<String> = self
            .view
            .topics
            .keys()
            .filter(|name| !names.contains(*name))
            .cloned()
            .collect();
        let mut events = Vec::new();
        for topic in gone {
            self.view.topics.remove(&topic);
            events.push(Event::TopicRemoved { topic });
        }
        self.feed(events).await;
        for name in names {
            if !self.view.topics.contains_key(&name) {
                self.read_topic(&name).await?;
            }
        }
        Ok(())
    }

    /// Re-reads a topic after this broker changed it, and publishes the view.
    async fn reread_topic(&mut self, name: &str) {
        if let Err(err) = self.read_topic(name).await {
            tracing::warn!("cluster agent: {err}");
        }
        self.publish();
    }

    /// (Re)reads a topic's assignment, its config and the states of partitions not yet known.
    async fn read_topic(&mut self, name: &str) -> Result<(), String> {
        let path = znodes::topic_path(name);
        let Some((data, _)) = self
            .read_watched(WatchKey::Topic(name.to_string()), &path)
            .await?
        else {
            if self.view.topics.remove(name).is_some() {
                self.feed(vec![Event::TopicRemoved {
                    topic: name.to_string(),
                }])
                .await;
            }
            return Ok(());
        };
        let assignment = match TopicAssignment::decode(&path, &data) {
            Ok(assignment) => assignment,
            Err(err) => {
                tracing::warn!("{err}");
                return Ok(());
            }
        };
        let reassignments = TopicZnode::decode(&path, &data)
            .map(|znode| znode.reassignments())
            .unwrap_or_default();
        let config_path = znodes::config_path(name);
        let configs = match self.client.get_data(&config_path).await {
            Ok((data, _)) => znodes::decode_config(&config_path, &data).unwrap_or_else(|err| {
                tracing::warn!("{err}");
                BTreeMap::new()
            }),
            Err(zk::Error::NoNode) => BTreeMap::new(),
            Err(err) => return Err(zk_err(&config_path, err)),
        };
        let known = self
            .view
            .topics
            .get(name)
            .filter(|topic| topic.id == assignment.id)
            .map(|topic| topic.partitions.clone())
            .unwrap_or_default();
        let mut partitions = Vec::with_capacity(assignment.replicas.len());
        for (index, replicas) in assignment.replicas.iter().enumerate() {
            let mut partition = known.get(index).cloned().unwrap_or(PartitionView {
                replicas: replicas.clone(),
                state: None,
                state_version: -1,
                state_mzxid: -1,
                reassignment: Reassignment::default(),
            });
            partition.replicas = replicas.clone();
            partition.reassignment = reassignments
                .get(&(index as i32))
                .cloned()
                .unwrap_or_default();
            partitions.push(partition);
        }
        let unclean = configs
            .get("unclean.leader.election.enable")
            .map(|v| v.trim() == "true");
        self.view.topics.insert(
            name.to_string(),
            TopicView {
                id: assignment.id,
                partitions,
                configs,
            },
        );
        let mut events = vec![Event::TopicAssigned {
            topic: name.to_string(),
            replicas: assignment
                .replicas
                .iter()
                .enumerate()
                .map(|(p, r)| (p as i32, r.clone()))
                .collect(),
            unclean_leader_election: unclean,
            reassignments,
        }];
        for index in known.len()..assignment.replicas.len() {
            let partition = index as i32;
            let state = self.read_state(name, partition).await?;
            events.push(Event::StateRead {
                tp: TopicPartition {
                    topic: name.to_string(),
                    partition,
                },
                state,
            });
        }
        self.feed(events).await;
        Ok(())
    }

    /// Reads a state znode (watched) into the view.
    async fn read_state(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<(super::LeaderAndIsr, i32)>, String> {
        let path = znodes::state_path(topic, partition);
        let read = self
            .read_watched(WatchKey::State(topic.to_string(), partition), &path)
            .await?;
        let mut mzxid = -1;
        let state = match read {
            None => None,
            Some((data, stat)) => match znodes::decode_state(&path, &data) {
                Ok(state) => {
                    mzxid = stat.mzxid;
                    Some((state, stat.version))
                }
                Err(err) => {
                    tracing::warn!("{err}");
                    None
                }
            },
        };
        if let Some(view) = self
            .view
            .topics
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(partition as usize))
        {
            match &state {
                Some((leader_and_isr, version)) if *version >= view.state_version => {
                    view.state = Some(leader_and_isr.clone());
                    view.state_version = *version;
                    view.state_mzxid = mzxid;
                }
                Some(_) => {}
                None => {
                    view.state = None;
                    view.state_version = -1;
                    view.state_mzxid = -1;
                }
            }
        }
        Ok(state)
    }

    async fn on_controller(&mut self) -> Result<(), String> {
        match self
            .read_watched(WatchKey::Controller, znodes::CONTROLLER)
            .await?
        {
            Some((data, _)) => {
                self.view.controller = match ControllerZnode::decode(&data) {
                    Ok(znode) => znode.brokerid,
                    Err(err) => {
                        tracing::warn!("{err}");
                        -1
                    }
                };
                if self.view.controller != self.config.broker_id && self.seat.is_some() {
                    tracing::warn!(
                        "broker {}: /controller names broker {}; resigning",
                        self.config.broker_id,
                        self.view.controller
                    );
                    self.seat = None;
                }
            }
            None => {
                self.view.controller = -1;
                self.seat = None;
                self.elect().await?;
            }
        }
        Ok(())
    }

    // ---- the controller seat ----

    /// Kafka's election: one multi creates `/controller` and moves `/controller_epoch` on from
    /// the version just read, so two brokers can never both win one epoch.
    async fn elect(&mut self) -> Result<(), String> {
        let (epoch, version) = loop {
            match self.client.get_data(znodes::CONTROLLER_EPOCH).await {
                Ok((data, stat)) => match znodes::decode_controller_epoch(&data) {
                    Ok(epoch) => break (epoch, stat.version),
                    Err(err) => return Err(err.to_string()),
                },
                Err(zk::Error::NoNode) => {
                    match self
                        .client
                        .create(
                            znodes::CONTROLLER_EPOCH,
                            b"0",
                            &self.config.znode_options().persistent(),
                        )
                        .await
                    {
                        Ok(_) | Err(zk::Error::NodeExists) => continue,
                        Err(err) => return Err(zk_err(znodes::CONTROLLER_EPOCH, err)),
                    }
                }
                Err(err) => return Err(zk_err(znodes::CONTROLLER_EPOCH, err)),
            }
        };
        let next = epoch + 1;
        let me = self.config.broker_id;
        let mut writer = self.client.new_multi_writer();
        let controller = ControllerZnode::encode(me, now_ms());
        writer
            .add_create(
                znodes::CONTROLLER,
                &controller,
                &self.config.znode_options().ephemeral(),
            )
            .map_err(|err| zk_err("election", err))?;
        writer
            .add_set_data(
                znodes::CONTROLLER_EPOCH,
                next.to_string().as_bytes(),
                Some(version),
            )
            .map_err(|err| zk_err("election", err))?;
        match writer.commit().await {
            Ok(results) => {
                let epoch_version = match results.get(1) {
                    Some(zk::MultiWriteResult::SetData { stat }) => stat.version,
                    _ => version + 1,
                };
                tracing::info!("broker {me} is the controller (controller epoch {next})");
                self.view.controller = me;
                self.seat = Some(Seat {
                    core: Controller::new(
                        next,
                        ControllerConfig {
                            unclean_leader_election: self.config.unclean_leader_election,
                        },
                    ),
                    epoch_version,
                    shutting_down: BTreeSet::new(),
                });
                self.take_seat().await
            }
            Err(err) => {
                // Lost the race (NodeExists) or the epoch moved under us: whoever won is
                // in /controller; the armed watch tells us when it goes.
                tracing::debug!("broker {me} lost the controller election: {err}");
                if !self.armed.contains(&WatchKey::Controller) {
                    return Box::pin(self.on_controller()).await;
                }
                if let Ok((data, _)) = self.client.get_data(znodes::CONTROLLER).await {
                    if let Ok(znode) = ControllerZnode::decode(&data) {
                        self.view.controller = znode.brokerid;
                    }
                }
                Ok(())
            }
        }
    }

    /// A new controller learns the whole state: live brokers, every topic's assignment and
    /// state, and the topics waiting for deletion.
    async fn take_seat(&mut self) -> Result<(), String> {
        let mut events = vec![Event::LiveBrokers(
            self.view.brokers.keys().copied().collect(),
        )];
        // Failed replicas before any assignment, so none is elected in between.
        for (&broker, partitions) in &self.view.offline_replicas {
            events.push(Event::OfflineReplicas {
                broker,
                partitions: partitions.clone(),
            });
        }
        let topics: Vec<(String, TopicView)> = self
            .view
            .topics
            .iter()
            .map(|(name, topic)| (name.clone(), topic.clone()))
            .collect();
        for (name, topic) in topics {
            events.push(Event::TopicAssigned {
                topic: name.clone(),
                replicas: topic
                    .partitions
                    .iter()
                    .enumerate()
                    .map(|(p, view)| (p as i32, view.replicas.clone()))
                    .collect(),
                unclean_leader_election: topic
                    .configs
                    .get("unclean.leader.election.enable")
                    .map(|v| v.trim() == "true"),
                reassignments: topic
                    .partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, view)| view.reassignment.in_progress())
                    .map(|(p, view)| (p as i32, view.reassignment.clone()))
                    .collect(),
            });
        }
        self.feed(events).await;
        self.on_delete_topics().await?;
        self.on_controlled_shutdown().await?;
        self.on_elect_leaders().await
    }

    /// The controller takes every election request, hands it to the core and deletes it.
    async fn on_elect_leaders(&mut self) -> Result<(), String> {
        if self.seat.is_none() {
            return Ok(());
        }
        let requests = self
            .children_watched(WatchKey::ElectLeaders, znodes::ELECT_LEADERS)
            .await?;
        for child in requests {
            let path = format!("{}/{child}", znodes::ELECT_LEADERS);
            let data = match self.client.get_data(&path).await {
                Ok((data, _)) => data,
                Err(zk::Error::NoNode) => continue,
                Err(err) => return Err(zk_err(&path, err)),
            };
            match znodes::decode_elect_leaders(&path, &data) {
                Ok((election, partitions)) => {
                    tracing::info!(
                        "controller: {election:?} election of {} partitions asked",
                        partitions.len()
                    );
                    self.feed(vec![Event::ElectLeaders {
                        election,
                        partitions,
                    }])
                    .await;
                }
                Err(err) => tracing::warn!("{err}; dropped"),
            }
            match self.client.delete(&path, None).await {
                Ok(()) | Err(zk::Error::NoNode) => {}
                Err(err) => return Err(zk_err(&path, err)),
            }
        }
        Ok(())
    }

    /// Completes a reassignment: the topic znode's entry of `tp` becomes `target` without
    /// adding/removing replicas, if it still is `replicas` with that target and the state
    /// znode is still at `state_version` (the ISR the decision saw); fenced by the controller
    /// epoch.
    async fn complete_reassignment(
        &mut self,
        tp: &TopicPartition,
        state_version: i32,
        replicas: &[i32],
        target: &[i32],
        epoch_version: i32,
    ) -> Result<Event, String> {
        let path = znodes::topic_path(&tp.topic);
        let (data, stat) = match self.client.get_data(&path).await {
            Ok(found) => found,
            Err(zk::Error::NoNode) => {
                return Ok(Event::TopicRemoved {
                    topic: tp.topic.clone(),
                })
            }
            Err(err) => return Err(zk_err(&path, err)),
        };
        let mut znode = TopicZnode::decode(&path, &data).map_err(|err| err.to_string())?;
        let key = tp.partition.to_string();
        let ongoing = znode
            .reassignments()
            .remove(&tp.partition)
            .unwrap_or_default();
        let current = znode.partitions.get(&key).cloned().unwrap_or_default();
        if current != replicas || !ongoing.in_progress() || ongoing.target(&current) != target {
            return Ok(Event::ReassignmentCompleted {
                tp: tp.clone(),
                written: false,
            });
        }
        znode.set_partition(tp.partition, target.to_vec(), &Reassignment::default());
        let mut writer = self.client.new_multi_writer();
        writer
            .add_check_version(znodes::CONTROLLER_EPOCH, epoch_version)
            .map_err(|err| zk_err(&path, err))?;
        writer
            .add_check_version(&znodes::state_path(&tp.topic, tp.partition), state_version)
            .map_err(|err| zk_err(&path, err))?;
        writer
            .add_set_data(&path, &znode.encode(), Some(stat.version))
            .map_err(|err| zk_err(&path, err))?;
        match writer.commit().await {
            Ok(_) => {
                tracing::info!("controller: {tp} reassigned to {target:?}");
                // Into the view at once, as state writes are: the core's next write (the old
                // replicas out of the ISR) is published before the topic's watch is read, and
                // a leader starting that term must not take the old replica list.
                if let Some(view) = self
                    .view
                    .topics
                    .get_mut(&tp.topic)
                    .and_then(|t| t.partitions.get_mut(tp.partition as usize))
                {
                    view.replicas = target.to_vec();
                    view.reassignment = Reassignment::default();
                }
                Ok(Event::ReassignmentCompleted {
                    tp: tp.clone(),
                    written: true,
                })
            }
            Err(zk::MultiWriteError::OperationFailed { index: 0, .. }) => Ok(Event::Fenced),
            Err(zk::MultiWriteError::OperationFailed { index: 1, .. }) => {
                Ok(Event::WriteConflict { tp: tp.clone() })
            }
            Err(zk::MultiWriteError::OperationFailed { .. }) => Ok(Event::ReassignmentCompleted {
                tp: tp.clone(),
                written: false,
            }),
            Err(zk::MultiWriteError::RequestFailed { source }) => Err(zk_err(&path, source)),
        }
    }

    /// AlterPartitionReassignments: per topic, a conditional rewrite of its znode with the
    /// new entries ([`core::reassign`]), retried when another writer moved it first.
    async fn alter_reassignments(
        &mut self,
        requests: &[(TopicPartition, Option<Vec<i32>>)],
    ) -> Vec<Result<(), (i16, String)>> {
        use crate::kafka::codes;
        let mut results: Vec<Option<Result<(), (i16, String)>>> = vec![None; requests.len()];
        let topics: BTreeSet<&str> = requests.iter().map(|(tp, _)| tp.topic.as_str()).collect();
        for topic in topics {
            let path = znodes::topic_path(topic);
            let mut attempts = 0;
            loop {
                attempts += 1;
                let read = self.client.get_data(&path).await;
                let (data, stat) = match read {
                    Ok(found) => found,
                    Err(zk::Error::NoNode) => {
                        for (k, (tp, _)) in requests.iter().enumerate() {
                            if tp.topic == topic {
                                results[k] = Some(Err((
                                    codes::UNKNOWN_TOPIC_OR_PARTITION,
                                    format!("topic `{topic}` does not exist"),
                                )));
                            }
                        }
                        break;
                    }
                    Err(err) => {
                        let why = zk_err(&path, err);
                        for (k, (tp, _)) in requests.iter().enumerate() {
                            if tp.topic == topic {
                                results[k] = Some(Err((codes::UNKNOWN_SERVER_ERROR, why.clone())));
                            }
                        }
                        break;
                    }
                };
                let mut znode = match TopicZnode::decode(&path, &data) {
                    Ok(znode) => znode,
                    Err(err) => {
                        for (k, (tp, _)) in requests.iter().enumerate() {
                            if tp.topic == topic {
                                results[k] =
                                    Some(Err((codes::UNKNOWN_SERVER_ERROR, err.to_string())));
                            }
                        }
                        break;
                    }
                };
                let mut ongoing = znode.reassignments();
                let mut changed = false;
                for (k, (tp, target)) in requests.iter().enumerate() {
                    if tp.topic != topic {
                        continue;
                    }
                    let Some(current) = znode.partitions.get(&tp.partition.to_string()).cloned()
                    else {
                        results[k] = Some(Err((
                            codes::UNKNOWN_TOPIC_OR_PARTITION,
                            format!("{tp} does not exist"),
                        )));
                        continue;
                    };
                    let now = ongoing.remove(&tp.partition).unwrap_or_default();
                    results[k] = Some(match core::reassign(&current, &now, target.as_deref()) {
                        Ok((replicas, next)) => {
                            znode.set_partition(tp.partition, replicas, &next);
                            ongoing.insert(tp.partition, next);
                            changed = true;
                            Ok(())
                        }
                        Err(core::ReassignError::NoReassignmentInProgress) => {
                            ongoing.insert(tp.partition, now);
                            Err((
                                codes::NO_REASSIGNMENT_IN_PROGRESS,
                                format!("{tp} is not being reassigned"),
                            ))
                        }
                        Err(core::ReassignError::InvalidReplicas(why)) => {
                            ongoing.insert(tp.partition, now);
                            Err((codes::INVALID_REPLICA_ASSIGNMENT, why))
                        }
                    });
                }
                if !changed {
                    break;
                }
                match self
                    .client
                    .set_data(&path, &znode.encode(), Some(stat.version))
                    .await
                {
                    Ok(_) => {
                        // The view learns it before the answer goes out.
                        if let Err(err) = self.read_topic(topic).await {
                            tracing::warn!("cluster agent: {err}");
                        }
                        self.publish();
                        break;
                    }
                    Err(zk::Error::BadVersion) if attempts < 100 => continue,
                    Err(err) => {
                        let why = zk_err(&path, err);
                        for (k, (tp, _)) in requests.iter().enumerate() {
                            if tp.topic == topic && results[k].as_ref().is_some_and(|r| r.is_ok()) {
                                results[k] = Some(Err((codes::UNKNOWN_SERVER_ERROR, why.clone())));
                            }
                        }
                        break;
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err((codes::UNKNOWN_SERVER_ERROR, "not handled".into()))))
            .collect()
    }

    /// Steps the core with `events` (only while seated) and carries out what it asks.
    async fn feed(&mut self, events: Vec<Event>) {
        let mut outputs = Vec::new();
        let Some(seat) = self.seat.as_mut() else {
            return;
        };
        for event in events {
            outputs.extend(seat.core.step(event));
        }
        self.drive(outputs).await;
    }

    /// Carries out core outputs one by one, feeding each result back, until the core is
    /// quiet. Writes that fail for a connection reason wait for the retry timer.
    async fn drive(&mut self, outputs: Vec<Output>) {
        let mut queue: VecDeque<Output> = outputs.into();
        while let Some(output) = queue.pop_front() {
            let Some(epoch_version) = self.seat.as_ref().map(|s| s.epoch_version) else {
                return;
            };
            let event = match output {
                Output::CreateState { tp, state } => {
                    match self.write_state(&tp, &state, None, epoch_version).await {
                        Ok(event) => event,
                        Err(err) => {
                            tracing::warn!("controller: creating {tp:?}: {err}");
                            self.retry.push(Output::CreateState { tp, state });
                            continue;
                        }
                    }
                }
                Output::UpdateState {
                    tp,
                    state,
                    expected_version,
                } => {
                    match self
                        .write_state(&tp, &state, Some(expected_version), epoch_version)
                        .await
                    {
                        Ok(event) => event,
                        Err(err) => {
                            tracing::warn!("controller: updating {tp:?}: {err}");
                            self.retry.push(Output::UpdateState {
                                tp,
                                state,
                                expected_version,
                            });
                            continue;
                        }
                    }
                }
                Output::ReadState { tp } => match self.read_state(&tp.topic, tp.partition).await {
                    Ok(state) => Event::StateRead { tp, state },
                    Err(err) => {
                        tracing::warn!("controller: reading {tp:?}: {err}");
                        self.retry.push(Output::ReadState { tp });
                        continue;
                    }
                },
                Output::ShutdownProgress {
                    broker,
                    partitions_remaining,
                } => {
                    tracing::info!(
                        "controller: broker {broker} shutting down, {partitions_remaining} leaderships left"
                    );
                    continue;
                }
                Output::CompleteReassignment {
                    tp,
                    state_version,
                    replicas,
                    target,
                } => match self
                    .complete_reassignment(&tp, state_version, &replicas, &target, epoch_version)
                    .await
                {
                    Ok(event) => event,
                    Err(err) => {
                        tracing::warn!("controller: completing the reassignment of {tp}: {err}");
                        self.retry.push(Output::CompleteReassignment {
                            tp,
                            state_version,
                            replicas,
                            target,
                        });
                        continue;
                    }
                },
                Output::Resigned => {
                    tracing::warn!(
                        "broker {}: controller epoch moved on; resigning",
                        self.config.broker_id
                    );
                    self.seat = None;
                    return;
                }
            };
            let Some(seat) = self.seat.as_mut() else {
                return;
            };
            queue.extend(seat.core.step(event));
        }
    }

    fn apply_written(
        &mut self,
        tp: &TopicPartition,
        state: &super::LeaderAndIsr,
        version: i32,
        mzxid: i64,
    ) {
        if let Some(view) = self
            .view
            .topics
            .get_mut(&tp.topic)
            .and_then(|t| t.partitions.get_mut(tp.partition as usize))
        {
            if version >= view.state_version {
                view.state = Some(state.clone());
                view.state_version = version;
                view.state_mzxid = mzxid;
            }
        }
    }

    /// One fenced state write: `expected_version` None creates the znode (and its parents),
    /// Some sets it at that version. The result is the event the core gets back.
    async fn write_state(
        &mut self,
        tp: &TopicPartition,
        state: &super::LeaderAndIsr,
        expected_version: Option<i32>,
        epoch_version: i32,
    ) -> Result<Event, String> {
        if expected_version.is_none() {
            for path in [
                znodes::partitions_path(&tp.topic),
                znodes::partition_path(&tp.topic, tp.partition),
            ] {
                match self
                    .client
                    .create(&path, b"", &self.config.znode_options().persistent())
                    .await
                {
                    Ok(_) | Err(zk::Error::NodeExists) => {}
                    // The topic was deleted under us.
                    Err(zk::Error::NoNode) => {
                        return Ok(Event::TopicRemoved {
                            topic: tp.topic.clone(),
                        })
                    }
                    Err(err) => return Err(zk_err(&path, err)),
                }
            }
        }
        let path = znodes::state_path(&tp.topic, tp.partition);
        let data = znodes::encode_state(state);
        let mut writer = self.client.new_multi_writer();
        writer
            .add_check_version(znodes::CONTROLLER_EPOCH, epoch_version)
            .map_err(|err| zk_err(&path, err))?;
        match expected_version {
            None => writer.add_create(&path, &data, &self.config.znode_options().persistent()),
            Some(version) => writer.add_set_data(&path, &data, Some(version)),
        }
        .map_err(|err| zk_err(&path, err))?;
        match writer.commit().await {
            Ok(results) => {
                let (new_version, mzxid) = match results.get(1) {
                    Some(zk::MultiWriteResult::SetData { stat }) => (stat.version, stat.mzxid),
                    Some(zk::MultiWriteResult::Create { stat, .. }) => (stat.version, stat.mzxid),
                    _ => (expected_version.map_or(0, |v| v + 1), -1),
                };
                self.apply_written(tp, state, new_version, mzxid);
                Ok(Event::WriteDone {
                    tp: tp.clone(),
                    new_version,
                })
            }
            // The check of /controller_epoch failed: another controller was elected.
            Err(zk::MultiWriteError::OperationFailed { index: 0, .. }) => Ok(Event::Fenced),
            Err(zk::MultiWriteError::OperationFailed { .. }) => {
                Ok(Event::WriteConflict { tp: tp.clone() })
            }
            Err(zk::MultiWriteError::RequestFailed { source }) => Err(zk_err(&path, source)),
        }
    }

    /// The controller deletes every topic marked under `/admin/delete_topics` in one fenced
    /// multi per topic: states, partitions, the topic, its config, then the mark.
    async fn on_delete_topics(&mut self) -> Result<(), String> {
        let Some(epoch_version) = self.seat.as_ref().map(|s| s.epoch_version) else {
            return Ok(());
        };
        let marked = self
            .children_watched(WatchKey::DeleteTopics, znodes::DELETE_TOPICS)
            .await?;
        for topic in marked {
            let mut paths = Vec::new();
            let partitions = match self
                .client
                .list_children(&znodes::partitions_path(&topic))
                .await
            {
                Ok(children) => children,
                Err(zk::Error::NoNode) => Vec::new(),
                Err(err) => return Err(zk_err(&topic, err)),
            };
            for partition in &partitions {
                let dir = format!("{}/{partition}", znodes::partitions_path(&topic));
                if let Ok(children) = self.client.list_children(&dir).await {
                    for child in children {
                        paths.push(format!("{dir}/{child}"));
                    }
                }
                paths.push(dir);
            }
            for path in [
                znodes::partitions_path(&topic),
                znodes::topic_path(&topic),
                znodes::config_path(&topic),
            ] {
                if matches!(self.client.check_stat(&path).await, Ok(Some(_))) {
                    paths.push(path);
                }
            }
            paths.push(znodes::delete_path(&topic));
            let mut writer = self.client.new_multi_writer();
            writer
                .add_check_version(znodes::CONTROLLER_EPOCH, epoch_version)
                .map_err(|err| zk_err(&topic, err))?;
            for path in &paths {
                writer
                    .add_delete(path, None)
                    .map_err(|err| zk_err(path, err))?;
            }
            match writer.commit().await {
                Ok(_) => {
                    tracing::info!("controller: deleted topic {topic}");
                    self.view.topics.remove(&topic);
                    self.feed(vec![Event::TopicRemoved { topic }]).await;
                }
                Err(zk::MultiWriteError::OperationFailed { index: 0, .. }) => {
                    self.feed(vec![Event::Fenced]).await;
                    return Ok(());
                }
                // Something changed under us (a child appeared): the next fire retries.
                Err(err) => tracing::warn!("controller: deleting topic {topic}: {err}"),
            }
        }
        Ok(())
    }

    // ---- commands from the shards ----

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::CreateTopic {
                name,
                assignment,
                configs,
                reply,
            } => {
                let result = self.create_topic(&name, &assignment, &configs).await;
                let _ = reply.send(result).await;
            }
            Command::DeleteTopic { name, reply } => {
                let result = self.delete_topic(&name).await;
                let _ = reply.send(result).await;
            }
            Command::AlterUserScram {
                user,
                changes,
                reply,
            } => {
                let result = self.alter_user_scram(&user, &changes).await;
                let _ = reply.send(result).await;
            }
            Command::ProducerIdBlock { size, reply } => {
                let result = self.producer_id_block(size).await;
                let _ = reply.send(result).await;
            }
            Command::ReplicaOffline { tp } => {
                tracing::warn!(
                    "broker {}: reporting {tp:?} offline to the controller",
                    self.config.broker_id
                );
                if self.offline_here.insert(tp) {
                    if let Err(err) = self.write_offline_replicas().await {
                        tracing::warn!("{err}; retrying");
                    }
                }
            }
            Command::ShutdownSelf { deadline, reply } => {
                let path = znodes::controlled_shutdown_path(self.config.broker_id);
                // Bounded: with the coordinator unreachable the request would wait for it.
                let left = deadline.saturating_duration_since(Instant::now());
                let created = tokio::time::timeout(
                    left,
                    self.client
                        .create(&path, b"", &self.config.znode_options().ephemeral()),
                )
                .await
                .unwrap_or(Err(zk::Error::Timeout));
                match created {
                    Ok(_) | Err(zk::Error::NodeExists) => {
                        tracing::info!(
                            "broker {}: controlled shutdown: moving leaderships away",
                            self.config.broker_id
                        );
                        self.shutting_down = Some((deadline, reply));
                        self.check_shutdown();
                    }
                    Err(err) => {
                        tracing::warn!("{path}: {err}; stopping without moving leaderships");
                        let _ = reply.send(false).await;
                    }
                }
            }
            Command::AlterAcls {
                create,
                delete,
                reply,
            } => {
                let result = self.alter_acls(&create, &delete).await;
                let _ = reply.send(result).await;
            }
            Command::AlterTopicConfigs { alteration, reply } => {
                let options = self.config.znode_options();
                let result =
                    super::topic_changes::alter_topic_configs(&self.client, &options, &alteration)
                        .await;
                if result.is_ok() && !alteration.validate_only {
                    // Live in this broker's view at once; the others follow the notification.
                    self.reread_topic(&alteration.topic).await;
                }
                let _ = reply.send(result).await;
            }
            Command::AddPartitions {
                name,
                id,
                current,
                added,
                reply,
            } => {
                let result =
                    super::topic_changes::add_partitions(&self.client, &name, id, current, added)
                        .await;
                if result.is_ok() {
                    // The topic watch fires too; reading now answers sooner.
                    self.reread_topic(&name).await;
                }
                let _ = reply.send(result).await;
            }
            Command::ElectLeaders {
                election,
                partitions,
                reply,
            } => {
                let path = format!("{}/request_", znodes::ELECT_LEADERS);
                let data = znodes::encode_elect_leaders(election, &partitions);
                let options = zk::CreateMode::PersistentSequential
                    .with_acls(self.config.znode_options().acls());
                let result = match self.client.create(&path, &data, &options).await {
                    Ok((_, sequence)) => Ok(format!("{path}{sequence}")),
                    Err(err) => Err(zk_err(&path, err)),
                };
                let _ = reply.send(result).await;
            }
            Command::ForgetElection { path } => match self.client.delete(&path, None).await {
                Ok(()) | Err(zk::Error::NoNode) => {}
                Err(err) => tracing::warn!("{path}: {err}"),
            },
            Command::AlterReassignments { requests, reply } => {
                let results = self.alter_reassignments(&requests).await;
                let _ = reply.send(results).await;
            }
            Command::WriteIsr {
                tp,
                state,
                expected_version,
                reply,
            } => {
                let path = znodes::state_path(&tp.topic, tp.partition);
                let result = match self
                    .client
                    .set_data(&path, &znodes::encode_state(&state), Some(expected_version))
                    .await
                {
                    Ok(stat) => {
                        self.apply_written(&tp, &state, stat.version, stat.mzxid);
                        self.publish();
                        Ok(stat.version)
                    }
                    Err(zk::Error::BadVersion | zk::Error::NoNode) => Err(true),
                    Err(err) => {
                        tracing::warn!("{path}: ISR change: {err}");
                        Err(false)
                    }
                };
                let _ = reply.send(result).await;
            }
        }
    }

    async fn create_topic(
        &mut self,
        name: &str,
        assignment: &TopicAssignment,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), TopicError> {
        let storage = |err: zk::Error| TopicError::Storage(format!("coordinator: {err}"));
        if matches!(
            self.client.check_stat(&znodes::delete_path(name)).await,
            Ok(Some(_))
        ) {
            return Err(TopicError::AlreadyExists(format!(
                "{name}` is marked for deletion; try again once it is gone, `{name}"
            )));
        }
        if self
            .client
            .check_stat(&znodes::topic_path(name))
            .await
            .map_err(storage)?
            .is_some()
        {
            return Err(TopicError::AlreadyExists(name.to_string()));
        }
        // Config first, then the topic: the controller reads the config when the topic
        // appears. Both in one multi so neither exists without the other.
        let config_path = znodes::config_path(name);
        let config_data = znodes::encode_config(configs);
        let mut writer = self.client.new_multi_writer();
        let stale_config = matches!(self.client.check_stat(&config_path).await, Ok(Some(_)));
        let added = if stale_config {
            writer.add_set_data(&config_path, &config_data, None)
        } else {
            writer.add_create(
                &config_path,
                &config_data,
                &self.config.znode_options().persistent(),
            )
        };
        added.map_err(storage)?;
        writer
            .add_create(
                &znodes::topic_path(name),
                &assignment.encode(),
                &self.config.znode_options().persistent(),
            )
            .map_err(storage)?;
        match writer.commit().await {
            Ok(_) => Ok(()),
            Err(zk::MultiWriteError::OperationFailed {
                source: zk::Error::NodeExists,
                ..
            }) => Err(TopicError::AlreadyExists(name.to_string())),
            Err(err) => Err(TopicError::Storage(format!("coordinator: {err}"))),
        }
    }

    /// Moves `/latest_producer_id_block` on by `size` ids with a conditional write (retried
    /// when another broker moved it first) and returns the ids reserved, `start..end`.
    async fn producer_id_block(&mut self, size: i64) -> Result<(i64, i64), String> {
        let path = znodes::PRODUCER_ID_BLOCK;
        for _ in 0..100 {
            let (start, version) = match self.client.get_data(path).await {
                Ok((data, stat)) => {
                    let end = znodes::ProducerIdBlock::decode_end(&data)
                        .map_err(|err| err.to_string())?;
                    (end + 1, Some(stat.version))
                }
                Err(zk::Error::NoNode) => (0, None),
                Err(err) => return Err(zk_err(path, err)),
            };
            let data =
                znodes::ProducerIdBlock::encode(self.config.broker_id, start, start + size - 1);
            let written = match version {
                Some(version) => self
                    .client
                    .set_data(path, &data, Some(version))
                    .await
                    .map(drop),
                None => self
                    .client
                    .create(path, &data, &self.config.znode_options().persistent())
                    .await
                    .map(drop),
            };
            match written {
                Ok(()) => return Ok((start, start + size)),
                Err(zk::Error::BadVersion | zk::Error::NodeExists) => continue,
                Err(err) => return Err(zk_err(path, err)),
            }
        }
        Err(format!("{path}: moved by other brokers 100 times in a row"))
    }

    async fn delete_topic(&mut self, name: &str) -> Result<(), TopicError> {
        let storage = |err: zk::Error| TopicError::Storage(format!("coordinator: {err}"));
        if self
            .client
            .check_stat(&znodes::topic_path(name))
            .await
            .map_err(storage)?
            .is_none()
        {
            return Err(TopicError::UnknownTopic(name.to_string()));
        }
        match self
            .client
            .create(
                &znodes::delete_path(name),
                b"",
                &self.config.znode_options().persistent(),
            )
            .await
        {
            Ok(_) | Err(zk::Error::NodeExists) => Ok(()),
            Err(err) => Err(storage(err)),
        }
    }
}

/// Connects (creating the chroot if missing), retrying until [`CONNECT_DEADLINE`].
async fn connect(config: &ClusterConfig) -> Result<zk::Client, String> {
    let deadline = Instant::now() + CONNECT_DEADLINE;
    loop {
        match connect_once(config).await {
            Ok(client) => return Ok(client),
            Err(err) if Instant::now() < deadline => {
                tracing::info!("{err}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// One connection attempt, creating the chroot if missing.
async fn connect_once(config: &ClusterConfig) -> Result<zk::Client, String> {
    connect_to(
        &config.connect,
        config.session_timeout_ms,
        config.coordinator_digest.as_ref().map(|d| d.0.as_str()),
        &config.znode_options(),
    )
    .await
}

/// One session with the coordinator at Kafka's connect string (`hosts[/chroot]`, the chroot
/// created if missing), authenticated with `digest` (`user:password`) when given.
pub async fn connect_to(
    connect: &str,
    session_timeout_ms: u64,
    digest: Option<&str>,
    options: &ZnodeOptions,
) -> Result<zk::Client, String> {
    let (hosts, chroot) = split_connect(connect);
    let timeout = Duration::from_millis(session_timeout_ms);
    let mut connector = zk::Client::connector()
        .with_session_timeout(timeout)
        .with_connection_timeout(timeout.min(Duration::from_secs(5)));
    if let Some(digest) = digest {
        // Sent first on every session, also after a reconnect, before any other request.
        connector = connector.with_auth("digest", digest.as_bytes());
    }
    let client = connector
        .connect(hosts)
        .await
        .map_err(|err| format!("cannot reach the coordinator at {hosts}: {err}"))?;
    let Some(chroot) = chroot else {
        return Ok(client);
    };
    ensure_path(&client, chroot, options).await?;
    client
        .chroot(chroot.to_string())
        .map_err(|_| format!("invalid chroot `{chroot}` in `{connect}`"))
}

/// Creates a persistent path and its missing parents.
pub(crate) async fn ensure_path(
    client: &zk::Client,
    path: &str,
    options: &ZnodeOptions,
) -> Result<(), String> {
    let mut prefix = String::with_capacity(path.len());
    for part in path.split('/').filter(|part| !part.is_empty()) {
        prefix.push('/');
        prefix.push_str(part);
        match client
            .create(&prefix, b"", &options.persistent_at(&prefix))
            .await
        {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(err) => return Err(zk_err(&prefix, err)),
        }
    }
    Ok(())
}

/// Reads `/cluster/id`, creating it with a fresh id the first time (the first broker wins).
async fn ensure_cluster_id(client: &zk::Client, options: &ZnodeOptions) -> Result<String, String> {
    loop {
        match client.get_data(znodes::CLUSTER_ID).await {
            Ok((data, _)) => {
                return znodes::ClusterIdZnode::decode(&data).map_err(|err| err.to_string())
            }
            Err(zk::Error::NoNode) => {
                let id = znodes::uuid_text(&crate::topics::new_topic_id());
                match client
                    .create(
                        znodes::CLUSTER_ID,
                        &znodes::ClusterIdZnode::encode(&id),
                        &options.persistent(),
                    )
                    .await
                {
                    Ok(_) | Err(zk::Error::NodeExists) => continue,
                    Err(err) => return Err(zk_err(znodes::CLUSTER_ID, err)),
                }
            }
            Err(err) => return Err(zk_err(znodes::CLUSTER_ID, err)),
        }
    }
}

/// Registers the broker; returns its broker epoch (the registration's czxid). A registration
/// left by a dead process of the same id vanishes within its session timeout, so that long is
/// waited out; one still there afterwards belongs to a live broker and is refused.
async fn register(
    client: &zk::Client,
    config: &ClusterConfig,
    advertised: &[(Endpoint, &'static str)],
) -> Result<i64, String> {
    let id = config.broker_id;
    let options = config.znode_options();
    let path = znodes::broker_path(id);
    let data = BrokerRegistration::new(advertised, config.rack.as_deref(), now_ms()).encode();
    let deadline = Instant::now() + Duration::from_millis(config.session_timeout_ms + 3000);
    let mut waited = false;
    loop {
        match client.create(&path, &data, &options.ephemeral()).await {
            Ok((stat, _)) => return Ok(stat.czxid),
            Err(zk::Error::NodeExists) => {}
            Err(err) => return Err(zk_err(&path, err)),
        }
        let (owner, czxid) = match client.get_data(&path).await {
            Ok((_, stat)) => (stat.ephemeral_owner, stat.czxid),
            Err(zk::Error::NoNode) => continue,
            Err(err) => return Err(zk_err(&path, err)),
        };
        if owner == client.session_id().0 {
            return Ok(czxid);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "broker id {id} is already registered by a live broker (session 0x{owner:x} \
                 holds {path}); pick another --id or stop that broker"
            ));
        }
        if !waited {
            tracing::info!(
                "broker id {id} is still registered by session 0x{owner:x}; waiting up to the \
                 session timeout for it to expire"
            );
            waited = true;
        }
        match client.check_and_watch_stat(&path).await {
            Ok((None, _)) => continue,
            Ok((Some(_), watcher)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                let _ = tokio::time::timeout(left, watcher.changed()).await;
            }
            Err(err) => return Err(zk_err(&path, err)),
        }
    }
}

/// The live brokers as candidates for a new topic's replicas.
pub fn candidates(view: &ClusterView) -> Vec<Candidate> {
    view.brokers
        .values()
        .map(|b| Candidate {
            id: b.id,
            rack: b.rack.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! Proves the connect string splits as Kafka's `zookeeper.connect` does, and the
    //! coordinator password stays out of Debug output.
    use super::*;

    #[test]
    fn the_digest_password_is_not_in_debug_output() {
        let digest = CoordinatorDigest("kafka:zk-secret".into());
        let shown = format!("{digest:?}");
        assert_eq!(shown, "CoordinatorDigest(kafka:***)");
    }

    #[test]
    fn connect_string_and_chroot() {
        assert_eq!(split_connect("a:1,b:2"), ("a:1,b:2", None));
        assert_eq!(split_connect("a:1,b:2/kafka"), ("a:1,b:2", Some("/kafka")));
        assert_eq!(split_connect("a:1/x/y"), ("a:1", Some("/x/y")));
        assert_eq!(split_connect("a:1/"), ("a:1", None));
    }
}
