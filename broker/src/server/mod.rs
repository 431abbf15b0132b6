//! The shard-per-core Kafka server: one glommio executor per shard core of the tuning profile,
//! pinned to it, each with its own SO_REUSEPORT listener, its partitions, its splice ring and
//! its end of the channel mesh. [`start`] runs it in the background and returns a handle;
//! [`serve`] runs it until SIGTERM/SIGINT, for the `broker serve` command.
//!
//! The modules form layers; each uses only the layers below it (no import circles):
//!
//! 1. Requests and types: `partition_ops` (what one shard asks another and the answers,
//!    [`partition_ops::PartitionError`], the group calls), `metrics`, `offline`,
//!    `producer_ids`.
//! 2. A shard's state, each piece knowing nothing of the shard: `mesh` (its end of the channel
//!    mesh), `owned_partitions` (its logs and replicas), `replica` (one partition's replica),
//!    `group_state` (its group coordinators), `memory_budget` (and the `recv_buffer`s charged
//!    to it), `splice`.
//! 3. `shard`: the [`Shard`] holding that state, its topic view, and [`Shard::on_shard`], the
//!    one "serve here or forward over the mesh" step of every routed operation.
//! 4. Operations on a shard (`impl Shard` blocks): `partitions` (data), `groups`,
//!    `replication`, `replica_fetcher`, `cluster`, `topic_changes`, `records_admin` ...
//! 5. The Kafka APIs (`dispatch` and the `*_api`, `fetch`, `produce`, `metadata` ...
//!    handlers), the connections that call them, and this module, which starts the shards.

pub mod acl_api;
pub mod cluster;
pub mod config_api;
pub mod connection;
pub mod dispatch;
pub mod executor;
pub mod fetch;
pub mod group_api;
pub mod group_state;
pub mod groups;
pub mod list_offsets;
pub mod log_dirs_api;
pub mod memory_budget;
pub mod mesh;
pub mod metadata;
pub mod metrics;
pub mod metrics_http;
pub mod metrics_sample;
pub mod offline;
pub mod offset_for_leader_epoch;
pub mod owned_partitions;
pub mod partition_ops;
pub mod partitions;
pub mod partitions_api;
pub mod produce;
pub mod producer_ids;
pub mod reassign_api;
pub mod records_admin;
pub mod recv_buffer;
pub mod replica;
pub mod replica_fetcher;
pub mod replication;
pub mod sasl_api;
pub mod scram_api;
pub mod shard;
pub mod socket_send;
pub mod splice;
pub mod tls_session;
pub mod topic_admin;
pub mod topic_changes;

use std::cell::RefCell;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use socket2::{Domain, Socket, Type};

use crate::cluster::ClusterView;
use crate::security::acl_store::{AclBackend, AclFile, ShardAcls, SharedAcls};
use crate::security::credentials::{CredentialStore, LiveCredentials, ShardCredentials};
use crate::security::listener::Listener;
use crate::topics::{self, FileTopicStore, Topic, TopicStore};

use mesh::{Envelope, Mesh};
use metrics::ShardMetrics;
pub use shard::{ServeConfig, Shard};
use splice::Splicer;

/// A running server.
pub struct ServerHandle {
    /// The address the first listener is bound to.
    pub addr: SocketAddr,
    /// Every listener, with the address it is bound to and the endpoint it advertises.
    pub listeners: Vec<Listener>,
    /// Each shard's counters, by shard index.
    pub metrics: Vec<Arc<ShardMetrics>>,
    /// The `/metrics` endpoint, stopped after the shards (boxed: the handle stays small).
    metrics_server: Option<Box<metrics_http::MetricsServer>>,
    stop: Arc<AtomicBool>,
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
    /// Cluster mode: the coordinator session, closed after the shards stop.
    agent: Option<crate::cluster::AgentHandle>,
    controlled_shutdown_timeout_ms: u64,
    fetching: Arc<AtomicBool>,
    fetchers_running: Arc<std::sync::atomic::AtomicUsize>,
}

impl ServerHandle {
    /// Where `/metrics` is served (`ServeConfig::metrics_listen`, its port resolved).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(|server| server.addr)
    }

    /// In cluster mode first a controlled shutdown (the controller moves this broker's
    /// leaderships to other ISR members while it still answers); then stops accepting, lets
    /// each shard flush and close its partitions, waits for them, and closes the coordinator
    /// session (the registration goes at once). Dropping the handle skips the first step.
    pub fn shutdown(mut self) {
        if let Some(agent) = &self.agent {
            let timeout_ms = self.controlled_shutdown_timeout_ms;
            if timeout_ms > 0 {
                // Stop fetching first (each fetcher ends after the fetch it has out), so no
                // leader re-adds this broker to an ISR once the controller has removed it.
                self.fetching.store(false, Ordering::SeqCst);
                let deadline = std::time::Instant::now() + Duration::from_secs(2);
                while self.fetchers_running.load(Ordering::SeqCst) > 0
                    && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                agent.controlled_shutdown(Duration::from_millis(timeout_ms));
            }
        }
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        if let Some(mut agent) = self.agent.take() {
            agent.shutdown();
        }
        self.metrics_server.take();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Topics(#[from] crate::topics::TopicError),
    #[error("data dir {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("shard {0}: {1}")]
    Shard(usize, String),
    #[error("{0}")]
    ProducerIds(String),
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Credentials(String),
    #[error("ACLs: {0}")]
    Acls(String),
    #[error("{0}")]
    Metrics(String),
    #[error("signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Binds a probe socket to learn the port when `port` is 0, so every shard can bind the same
/// one with SO_REUSEPORT. The probe is closed once the shards are listening.
fn resolve_listen(addr: SocketAddr) -> Result<(SocketAddr, Option<StdListener>), StartError> {
    if addr.port() != 0 {
        return Ok((addr, None));
    }
    let listen_error = |err| StartError::Listen(addr, err);
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(listen_error)?;
    probe.set_reuse_port(true).map_err(listen_error)?;
    probe.bind(&addr.into()).map_err(listen_error)?;
    let probe = StdListener::from(probe);
    let bound = probe.local_addr().map_err(listen_error)?;
    Ok((bound, Some(probe)))
}

struct ShardStart {
    id: usize,
    config: Arc<ServeConfig>,
    listeners: Arc<Vec<Listener>>,
    topics: Vec<Topic>,
    store: Option<Box<dyn TopicStore + Send>>,
    mesh: Option<MeshBuilder<Envelope, glommio::channels::channel_mesh::Full>>,
    metrics: Arc<ShardMetrics>,
    connections: Arc<AtomicU32>,
    producer_ids: Arc<producer_ids::ProducerIdAllocator>,
    offline: Arc<offline::OfflinePartitions>,
    credentials: Arc<LiveCredentials>,
    stop: Arc<AtomicBool>,
    fetching: Arc<AtomicBool>,
    fetchers_running: Arc<std::sync::atomic::AtomicUsize>,
    ready: mpsc::Sender<Result<(), String>>,
    /// Cluster mode: the first view and the agent's command queue.
    cluster: Option<(
        Arc<ClusterView>,
        async_channel::Sender<crate::cluster::Command>,
    )>,
    /// Cluster mode, shard 0 only: the agent's view snapshots.
    views: Option<async_channel::Receiver<Arc<ClusterView>>>,
    /// `--authorizer`: the process's ACLs.
    acls: Option<Arc<SharedAcls>>,
}

/// Starts the server in the background; returns once every shard listens.
pub fn start(config: ServeConfig) -> Result<ServerHandle, StartError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|err| StartError::DataDir(config.data_dir.display().to_string(), err))?;
    let mut store = FileTopicStore::open(&config.data_dir)?;
    let producer_ids = Arc::new(if config.cluster.is_some() {
        producer_ids::ProducerIdAllocator::from_coordinator()
    } else {
        producer_ids::ProducerIdAllocator::open(&config.data_dir)
            .map_err(StartError::ProducerIds)?
    });
    let shard_cores: Vec<tuning::CoreConfig> =
        config.profile.shard_cores().into_iter().cloned().collect();
    let shard_count = shard_cores.len();
    let mut probes = Vec::new();
    let mut listeners = Vec::new();
    for listener in config
        .security
        .effective_listeners(config.listen, config.advertise.as_ref())
    {
        let (bound, probe) = resolve_listen(listener.address)?;
        probes.push(probe);
        let advertised = match listener.advertised {
            Some(endpoint) => endpoint,
            None if bound.ip().is_unspecified() && config.cluster.is_some() => {
                return Err(StartError::Cluster(format!(
                    "listener {} on {bound}: give its advertised endpoint (--advertise host:port \
                     or --advertised-listener {}://host:port), the address other brokers and \
                     clients reach this one at",
                    listener.name, listener.name
                )))
            }
            None => (bound.ip().to_string(), bound.port()),
        };
        listeners.push(Listener {
            address: bound,
            advertised: Some(advertised),
            ..listener
        });
    }
    // The TLS files are checked here, so a bad file stops the start with its name.
    match &config.security.tls {
        Some(files) => {
            crate::security::tls::server_config(files).map_err(StartError::Tls)?;
        }
        None if listeners.iter().any(|l| l.protocol.uses_tls()) => {
            return Err(StartError::Tls(
                "an SSL or SASL_SSL listener needs --tls-cert and --tls-key".into(),
            ))
        }
        None => {}
    }
    let listen = listeners[0].address;
    // A single node's users are in its data directory; a cluster's in the coordinator, which
    // the agent loads them from before it returns.
    let credentials = Arc::new(match &config.cluster {
        None => LiveCredentials::from_file(
            CredentialStore::open(&config.data_dir).map_err(StartError::Credentials)?,
        ),
        Some(_) => LiveCredentials::external(),
    });
    let acls = match &config.authorizer {
        None => None,
        Some(settings) => {
            let (acls, backend) = match config.cluster {
                // The agent loads them from the coordinator before it reports ready.
                Some(_) => (Vec::new(), AclBackend::Coordinator),
                None => (
                    AclFile::load(&config.data_dir).map_err(StartError::Acls)?,
                    AclBackend::File(config.data_dir.clone()),
                ),
            };
            let authorizer = crate::security::authorizer::Authorizer::new(
                settings.super_users.clone(),
                settings.allow_if_no_acl,
                acls,
            );
            Some(SharedAcls::new(authorizer, backend))
        }
    };
    let listeners = Arc::new(listeners);
    let agent = match &config.cluster {
        None => None,
        Some(cluster) => {
            let inter_broker = config.security.inter_broker_listener_name();
            if !listeners.iter().any(|l| l.name == inter_broker) {
                return Err(StartError::Cluster(format!(
                    "the inter-broker listener {inter_broker} is not among the listeners"
                )));
            }
            let endpoints = listeners
                .iter()
                .map(|l| {
                    let (host, port) = l.advertised.clone().expect("resolved above");
                    let endpoint = crate::cluster::view::Endpoint {
                        listener: l.name.clone(),
                        host,
                        port: i32::from(port),
                    };
                    (endpoint, l.protocol.name())
                })
                .collect();
            let agent = crate::cluster::agent::start(
                cluster.clone(),
                endpoints,
                credentials.clone(),
                acls.clone(),
            )
            .map_err(StartError::Cluster)?;
            cluster::reconcile(&mut store, &agent.initial, shard_count, &config.data_dir)?;
            Some(agent)
        }
    };
    // What interrupted topic deletions left, before any log opens (in cluster mode after the
    // store follows the coordinator, which decides what exists).
    topics::sweep_data_dir(&config.data_dir, &mut store, config.cluster.is_none())?;
    let topics: Vec<Topic> = store.topics().values().cloned().collect();
    for topic in &topics {
        if let Some(&shard) = topic.shards.iter().find(|&&s| s as usize >= shard_count) {
            return Err(StartError::Shard(
                shard as usize,
                format!(
                    "topic `{}` has a partition on shard {shard} but the profile has {shard_count} shards",
                    topic.name
                ),
            ));
        }
    }
    let config = Arc::new(config);
    let stop = Arc::new(AtomicBool::new(false));
    let fetching = Arc::new(AtomicBool::new(true));
    let fetchers_running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let connections = Arc::new(AtomicU32::new(0));
    let offline = Arc::new(offline::OfflinePartitions::default());
    let mesh = (shard_count > 1).then(|| MeshBuilder::full(shard_count, mesh::LINK_CAPACITY));
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut store: Option<Box<dyn TopicStore + Send>> = Some(Box::new(store));
    let mut threads = Vec::with_capacity(shard_count);
    let mut all_metrics = Vec::with_capacity(shard_count);
    for (id, core) in shard_cores.iter().enumerate() {
        let metrics = Arc::new(ShardMetrics::default());
        all_metrics.push(metrics.clone());
        let start = ShardStart {
            id,
            config: config.clone(),
            listeners: listeners.clone(),
            topics: topics.clone(),
            store: if id == 0 { store.take() } else { None },
            mesh: mesh.clone(),
            metrics,
            connections: connections.clone(),
            producer_ids: producer_ids.clone(),
            offline: offline.clone(),
            credentials: credentials.clone(),
            stop: stop.clone(),
            fetching: fetching.clone(),
            fetchers_running: fetchers_running.clone(),
            ready: ready_tx.clone(),
            cluster: agent
                .as_ref()
                .map(|agent| (agent.initial.clone(), agent.commands.clone())),
            views: if id == 0 {
                agent.as_ref().map(|agent| agent.views.clone())
            } else {
                None
            },
            acls: acls.clone(),
        };
        let thread =
            executor::shard_executor(id, core, config.profile.storage.registered_io_bytes())
                .spawn(move || async move {
                    // Every event on this thread carries the shard (a field of JSON logs, the same
                    // name as the metrics' `shard` label).
                    let _shard_span = tracing::info_span!("shard", shard = id).entered();
                    shard_main(start).await
                })
                .map_err(|err| StartError::Shard(id, err.to_string()))?;
        threads.push(thread);
    }
    drop(ready_tx);
    let metrics_server = match config.metrics_listen {
        None => None,
        Some(listen) => {
            let sources = metrics_http::MetricsSources {
                shards: all_metrics.clone(),
                connections: connections.clone(),
                connections_max: config.profile.network.max_connections,
                per_partition: config.profile.metrics.per_partition,
                node_id: config.node_id,
            };
            match metrics_http::MetricsServer::start(listen, sources) {
                Ok(server) => Some(Box::new(server)),
                Err(err) => {
                    stop.store(true, Ordering::SeqCst);
                    return Err(StartError::Metrics(err));
                }
            }
        }
    };
    let handle = ServerHandle {
        addr: listen,
        listeners: listeners.to_vec(),
        metrics_server,
        metrics: all_metrics,
        stop,
        threads,
        agent,
        controlled_shutdown_timeout_ms: config
            .cluster
            .as_ref()
            .map_or(0, |c| c.controlled_shutdown_timeout_ms),
        fetching,
        fetchers_running,
    };
    for _ in 0..shard_count {
        match ready_rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                handle.stop.store(true, Ordering::SeqCst);
                return Err(StartError::Shard(0, err));
            }
            Err(_) => {
                handle.stop.store(true, Ordering::SeqCst);
                return Err(StartError::Shard(0, "a shard did not start".into()));
            }
        }
    }
    drop(probes);
    Ok(handle)
}

/// One shard's executor from start to stop: reports to `start` whether it came up, serves
/// until the server stops, then stops its tasks and closes its partitions.
async fn shard_main(start: ShardStart) {
    let id = start.id;
    let ready = start.ready.clone();
    let (shard, tasks, sockets) = match start_shard(start).await {
        Ok(started) => started,
        Err(err) => {
            let _ = ready.send(Err(format!("shard {id}: {err}")));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    // Every shard accepts on every listener (SO_REUSEPORT spreads the connections).
    let accepting: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(index, socket)| glommio::spawn_local(accept(shard.clone(), index, socket)).detach())
        .collect();
    for task in accepting {
        let _ = task.await;
    }
    tasks.stop(&shard).await;
}

/// Brings a shard up: its end of the mesh, its splice ring, TLS and memory budget, its
/// partitions, its background tasks, and its listening sockets (bound last: a shard that
/// listens serves everything). An error says which step failed.
async fn start_shard(
    start: ShardStart,
) -> Result<(Rc<Shard>, ShardTasks, Vec<TcpListener>), String> {
    let ShardStart {
        id,
        config,
        listeners,
        topics,
        store,
        mesh,
        metrics,
        connections,
        producer_ids,
        offline,
        credentials,
        stop,
        fetching,
        fetchers_running,
        ready: _,
        cluster,
        views,
        acls,
    } = start;
    let shard_count = config.profile.shard_cores().len();
    let depth = config.profile.shard_cores()[id].io_uring_depth;
    let (senders, receivers) = match mesh {
        Some(builder) => {
            let (senders, receivers) =
                builder.join().await.map_err(|err| format!("mesh: {err}"))?;
            (Some(senders), Some(receivers))
        }
        None => (None, None),
    };
    let (splicer, doorbell) = Splicer::new(depth).map_err(|err| format!("io_uring: {err}"))?;
    let tls = match &config.security.tls {
        Some(files) => Some(
            crate::security::tls::TlsReloader::load(files).map_err(|err| format!("TLS: {err}"))?,
        ),
        None => None,
    };
    crate::storage::io_latency::install(metrics.disk.clone());
    crate::storage::batch_cache::install(
        config.profile.storage.batch_cache_bytes,
        metrics.batch_cache.clone(),
    );
    let memory = shard_memory_budget(&config, id, &metrics);
    let shard = Rc::new(Shard {
        id,
        shard_count,
        config: config.clone(),
        listeners: listeners.clone(),
        tls,
        memory,
        topics: RefCell::new(
            topics
                .into_iter()
                .map(|topic| (topic.name.clone(), Rc::new(topic)))
                .collect(),
        ),
        store: store.map(|store| RefCell::new(store as Box<dyn TopicStore>)),
        mesh: Mesh::new(id, shard_count, senders),
        metrics,
        traffic: Default::default(),
        partitions: Default::default(),
        splicer: splicer.clone(),
        groups: group_state::ShardGroups::new(config.group.clone(), id),
        connections,
        producer_ids,
        offline,
        credentials: ShardCredentials::new(credentials),
        stop,
        cluster: cluster.map(|(view, commands)| shard::ShardCluster {
            view: RefCell::new(view),
            commands,
            default_replication_factor: config
                .cluster
                .as_ref()
                .map_or(1, |c| c.default_replication_factor),
            fetchers: Default::default(),
            creating_offsets_topic: Default::default(),
            followers_changed: Default::default(),
            fetching,
            fetchers_running,
        }),
        acls: acls.map(ShardAcls::new),
    });
    shard.open_partitions().await?;
    let tasks = ShardTasks::start(&shard, splicer, doorbell, receivers, views).await;
    // The first view's roles (later views come through `set_view`).
    if let Some(view) = shard.cluster_view() {
        shard.apply_roles(&view);
    }
    let mut sockets = Vec::with_capacity(listeners.len());
    for listener in listeners.iter() {
        let socket = TcpListener::bind(listener.address)
            .map_err(|err| format!("bind {} ({}): {err}", listener.address, listener.name))?;
        sockets.push(socket);
    }
    Ok((shard, tasks, sockets))
}

/// The memory budget of shard `id`'s connections and requests (its core's
/// `memory_budget_bytes`), warning when it refuses requests the profile allows.
fn shard_memory_budget(
    config: &ServeConfig,
    id: usize,
    metrics: &Arc<ShardMetrics>,
) -> Rc<memory_budget::MemoryBudget> {
    let budget_bytes = config.profile.shard_cores()[id].memory_budget_bytes;
    let memory = memory_budget::MemoryBudget::new(budget_bytes, metrics.clone());
    let max_frame_bytes = config.profile.network.max_request_bytes as u64 + 4;
    if max_frame_bytes > memory.receiving_limit_bytes() {
        tracing::warn!(
            "shard {id}: requests larger than {} bytes (half of memory_budget_bytes {budget_bytes}) \
             are refused, below network.max_request_bytes {}",
            memory.receiving_limit_bytes(),
            config.profile.network.max_request_bytes
        );
    }
    memory
}

/// A shard's background tasks: the splice ring's reaper, retention, the mesh's receivers,
/// the cluster view's applier, the group timers, the metrics sampler and the ISR checks.
struct ShardTasks {
    splicer: Rc<Splicer>,
    drainer: glommio::task::JoinHandle<()>,
    retention: glommio::task::JoinHandle<()>,
    views: Option<glommio::task::JoinHandle<()>>,
    group_timers: glommio::task::JoinHandle<()>,
    metrics_sampler: Option<glommio::task::JoinHandle<()>>,
    isr_checks: Option<glommio::task::JoinHandle<()>>,
}

impl ShardTasks {
    /// Starts them; returns once every other shard said hello over the mesh (and, on a single
    /// node's control shard, `__consumer_offsets` exists).
    async fn start(
        shard: &Rc<Shard>,
        splicer: Rc<Splicer>,
        doorbell: glommio::net::UnixStream,
        receivers: Option<glommio::channels::channel_mesh::Receivers<Envelope>>,
        views: Option<async_channel::Receiver<Arc<ClusterView>>>,
    ) -> ShardTasks {
        let drainer = glommio::spawn_local(splicer.clone().drain(doorbell)).detach();
        let retention_interval =
            Duration::from_millis(shard.config.profile.storage.retention_check_interval_ms);
        let retention_shard = shard.clone();
        let retention = glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(retention_interval).await;
                retention_shard.apply_retention().await;
            }
        })
        .detach();
        if let Some(mut receivers) = receivers {
            serve_mesh(shard, &mut receivers).await;
        }
        let views = views.map(|views| {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                while let Ok(view) = views.recv().await {
                    shard.apply_view(view).await;
                }
            })
            .detach()
        });
        // In a cluster the first FindCoordinator creates it, once brokers have joined (its
        // replicas are spread over those alive then), as Kafka does.
        if shard.id == 0 && shard.cluster.is_none() {
            shard.ensure_offsets_topic().await;
        }
        let group_timers = glommio::spawn_local(shard.clone().run_group_timers()).detach();
        let metrics_sampler = shard
            .config
            .metrics_listen
            .is_some()
            .then(|| glommio::spawn_local(shard.clone().run_metrics_sampler()).detach());
        let isr_checks = shard
            .cluster
            .is_some()
            .then(|| glommio::spawn_local(shard.clone().run_isr_checks()).detach());
        ShardTasks {
            splicer,
            drainer,
            retention,
            views,
            group_timers,
            metrics_sampler,
            isr_checks,
        }
    }

    /// Cancels them, closes the shard's partitions, then stops the splice ring.
    async fn stop(self, shard: &Rc<Shard>) {
        self.retention.cancel();
        self.group_timers.cancel();
        if let Some(task) = self.metrics_sampler {
            task.cancel();
        }
        if let Some(task) = self.views {
            task.cancel();
        }
        if let Some(task) = self.isr_checks {
            task.cancel();
        }
        if let Err(err) = shard.close_partitions().await {
            tracing::error!("shard {}: closing partitions: {err}", shard.id);
        }
        self.splicer.stop();
        let _ = self.drainer.await;
        // Let the other shards finish their shutdown before the mesh goes away.
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
}

/// Serves what other shards send over the mesh (hellos, requests, replies), and waits until
/// every other shard said hello.
async fn serve_mesh(
    shard: &Rc<Shard>,
    receivers: &mut glommio::channels::channel_mesh::Receivers<Envelope>,
) {
    for (peer, receiver) in receivers.streams() {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(envelope) = receiver.recv().await {
                match envelope {
                    Envelope::Hello { shard: from } => shard.mesh.hello(peer, from),
                    Envelope::Reply { id, body } => shard.mesh.deliver(id, body),
                    Envelope::Request {
                        from_shard,
                        id,
                        body,
                    } => {
                        let shard = shard.clone();
                        ShardMetrics::add(&shard.metrics.requests_forwarded_in, 1);
                        glommio::spawn_local(async move {
                            let reply = shard.handle_request(body).await;
                            shard.mesh.reply(from_shard, id, reply).await;
                        })
                        .detach();
                    }
                }
            }
        })
        .detach();
    }
    shard.mesh.introduce().await;
    while !shard.mesh.all_introduced() {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

/// Accepts connections on listener `index` until the server stops.
async fn accept(shard: Rc<Shard>, index: usize, socket: TcpListener) {
    let id = shard.id;
    let max_connections = shard.config.profile.network.max_connections;
    loop {
        let accepted = futures_lite::future::or(async { Some(socket.accept().await) }, async {
            while !shard.stop.load(Ordering::Relaxed) {
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(err)) => {
                tracing::warn!("shard {id}: accept: {err}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        ShardMetrics::add(&shard.metrics.connections_accepted, 1);
        if shard.connections.fetch_add(1, Ordering::Relaxed) >= max_connections {
            shard.connections.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!("shard {id}: connection limit {max_connections} reached; closing");
            drop(stream);
            continue;
        }
        glommio::spawn_local(connection::serve(shard.clone(), stream, index)).detach();
    }
}

/// Runs the server until SIGTERM or SIGINT, then shuts it down cleanly.
pub fn serve(config: ServeConfig) -> Result<(), StartError> {
    let mut signals = Signals::new([SIGTERM, SIGINT]).map_err(StartError::Signals)?;
    // The threads `start` spawns (shards, agent, metrics) inherit a mask that blocks both
    // signals, so they are delivered to this thread only and never interrupt a shard.
    block_shutdown_signals(libc::SIG_BLOCK);
    let started = start(config);
    block_shutdown_signals(libc::SIG_UNBLOCK);
    let handle = started?;
    // Each listener first: the `listening on` line (the first listener) ends the start.
    for listener in &handle.listeners {
        println!("listener {} on {}", listener.name, listener.address);
    }
    if let Some(addr) = handle.metrics_addr() {
        println!("metrics on http://{addr}/metrics");
    }
    println!("listening on {}", handle.addr);
    // `forever` ends only when the handle is closed, which nothing here does.
    let signal = signals.forever().next().unwrap_or(SIGTERM);
    tracing::info!("signal {signal}: shutting down");
    let metrics = handle.metrics.clone();
    handle.shutdown();
    for (shard, m) in metrics.iter().enumerate() {
        tracing::info!(
            "shard {shard}: received {} B, sent {} B ({} B by splice), {} requests; memory \
             peak {} B of a {} B budget, {} reads waited for it",
            ShardMetrics::get(&m.bytes_received),
            ShardMetrics::get(&m.bytes_sent),
            ShardMetrics::get(&m.bytes_spliced),
            ShardMetrics::get(&m.requests),
            ShardMetrics::get(&m.memory_peak_bytes),
            ShardMetrics::get(&m.memory_budget_bytes),
            ShardMetrics::get(&m.memory_waits),
        );
    }
    println!("stopped");
    Ok(())
}

/// Blocks (`how` SIG_BLOCK) or unblocks (SIG_UNBLOCK) SIGTERM and SIGINT in the calling thread.
fn block_shutdown_signals(how: libc::c_int) {
    // SAFETY: sigset manipulation on a local set; pthread_sigmask on the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, SIGTERM);
        libc::sigaddset(&mut set, SIGINT);
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}
