//! The shard-per-core Kafka server: one glommio executor per shard core of the tuning profile,
//! pinned to it, each with its own SO_REUSEPORT listener, its partitions, its splice ring and
//! its end of the channel mesh. [`start`] runs it in the background and returns a handle;
//! [`serve`] runs it until SIGTERM/SIGINT, for the `broker serve` command.

pub mod acl_api;
pub mod cluster;
pub mod config_api;
pub mod connection;
pub mod dispatch;
pub mod executor;
pub mod fetch;
pub mod group_api;
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
pub mod oneshot;
pub mod partition_ops;
pub mod partitions;
pub mod partitions_api;
pub mod produce;
pub mod producer_ids;
pub mod reassign_api;
pub mod records_admin;
pub mod recv_buffer;
pub mod replica_fetcher;
pub mod replication;
pub mod sasl_api;
pub mod scram_api;
pub mod shard;
pub mod splice;
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
}

/// Binds a probe socket to learn the port when `port` is 0, so every shard can bind the same
/// one with SO_REUSEPORT. The probe is closed once the shards are listening.
fn resolve_listen(addr: SocketAddr) -> Result<(SocketAddr, Option<StdListener>), StartError> {
    if addr.port() != 0 {
        return Ok((addr, None));
    }
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket syscalls on an fd we own; the std listener takes ownership.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(StartError::Listen(addr, std::io::Error::last_os_error()));
        }
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
        let probe: StdListener = std::os::fd::FromRawFd::from_raw_fd(fd);
        let sock = socket_addr_bytes(addr);
        if libc::bind(fd, sock.0.as_ptr().cast(), sock.1) != 0 {
            return Err(StartError::Listen(addr, std::io::Error::last_os_error()));
        }
        let bound = probe
            .local_addr()
            .map_err(|err| StartError::Listen(addr, err))?;
        Ok((bound, Some(probe)))
    }
}

fn socket_addr_bytes(addr: SocketAddr) -> (Vec<u8>, libc::socklen_t) {
    match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            let size = std::mem::size_of::<libc::sockaddr_in>();
            // SAFETY: sockaddr_in is plain old data of `size` bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts((&sin as *const libc::sockaddr_in).cast::<u8>(), size)
            };
            (bytes.to_vec(), size as libc::socklen_t)
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            let size = std::mem::size_of::<libc::sockaddr_in6>();
            // SAFETY: sockaddr_in6 is plain old data of `size` bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts((&sin6 as *const libc::sockaddr_in6).cast::<u8>(), size)
            };
            (bytes.to_vec(), size as libc::socklen_t)
        }
    }
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
        let thread = executor::shard_executor(id, core)
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

async fn shard_main(start: ShardStart) {
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
        ready,
        cluster,
        views,
        acls,
    } = start;
    let shard_count = config.profile.shard_cores().len();
    let depth = config.profile.shard_cores()[id].io_uring_depth;
    let (senders, mut receivers) = match mesh {
        Some(builder) => match builder.join().await {
            Ok((senders, receivers)) => (Some(senders), Some(receivers)),
            Err(err) => {
                let _ = ready.send(Err(format!("shard {id}: mesh: {err}")));
                return;
            }
        },
        None => (None, None),
    };
    let (splicer, doorbell) = match Splicer::new(depth) {
        Ok(pair) => pair,
        Err(err) => {
            let _ = ready.send(Err(format!("shard {id}: io_uring: {err}")));
            return;
        }
    };
    let tls = match &config.security.tls {
        Some(files) => match crate::security::tls::TlsReloader::load(files) {
            Ok(reloader) => Some(reloader),
            Err(err) => {
                let _ = ready.send(Err(format!("shard {id}: TLS: {err}")));
                return;
            }
        },
        None => None,
    };
    crate::storage::io_latency::install(metrics.disk.clone());
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
        groups: groups::ShardGroups::new(config.group.clone(), id),
        connections,
        producer_ids,
        offline,
        credentials: ShardCredentials::new(credentials),
        stop: stop.clone(),
        cluster: cluster.map(|(view, commands)| cluster::ShardCluster {
            view: RefCell::new(view),
            commands,
            default_replication_factor: config
                .cluster
                .as_ref()
                .map_or(1, |c| c.default_replication_factor),
            fetchers: Default::default(),
            creating_offsets_topic: Default::default(),
            followers_changed: Default::default(),
            fetching: fetching.clone(),
            fetchers_running: fetchers_running.clone(),
        }),
        acls: acls.map(ShardAcls::new),
    });
    if let Err(err) = shard.open_partitions().await {
        let _ = ready.send(Err(format!("shard {id}: {err}")));
        return;
    }
    let drainer = glommio::spawn_local(splicer.clone().drain(doorbell)).detach();
    let retention_interval =
        Duration::from_millis(config.profile.storage.retention_check_interval_ms);
    let retention_shard = shard.clone();
    let retention = glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(retention_interval).await;
            retention_shard.apply_retention().await;
        }
    })
    .detach();
    if let Some(receivers) = receivers.as_mut() {
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
    let views_task = views.map(|views| {
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
    if id == 0 && shard.cluster.is_none() {
        shard.ensure_offsets_topic().await;
    }
    let group_timers = glommio::spawn_local(shard.clone().run_group_timers()).detach();
    let metrics_sampler = config
        .metrics_listen
        .is_some()
        .then(|| glommio::spawn_local(shard.clone().run_metrics_sampler()).detach());
    let isr_checks = shard
        .cluster
        .is_some()
        .then(|| glommio::spawn_local(shard.clone().run_isr_checks()).detach());
    // The first view's roles (later views come through `set_view`).
    if let Some(view) = shard.cluster_view() {
        shard.apply_roles(&view);
    }
    let mut bound = Vec::with_capacity(listeners.len());
    for listener in listeners.iter() {
        match TcpListener::bind(listener.address) {
            Ok(socket) => bound.push(socket),
            Err(err) => {
                let _ = ready.send(Err(format!(
                    "shard {id}: bind {} ({}): {err}",
                    listener.address, listener.name
                )));
                return;
            }
        }
    }
    let _ = ready.send(Ok(()));
    // Every shard accepts on every listener (SO_REUSEPORT spreads the connections).
    let accepting: Vec<_> = bound
        .into_iter()
        .enumerate()
        .map(|(index, socket)| glommio::spawn_local(accept(shard.clone(), index, socket)).detach())
        .collect();
    for task in accepting {
        let _ = task.await;
    }
    retention.cancel();
    group_timers.cancel();
    if let Some(task) = metrics_sampler {
        task.cancel();
    }
    if let Some(task) = views_task {
        task.cancel();
    }
    if let Some(task) = isr_checks {
        task.cancel();
    }
    if let Err(err) = shard.close_partitions().await {
        tracing::error!("shard {id}: closing partitions: {err}");
    }
    splicer.stop();
    let _ = drainer.await;
    // Let the other shards finish their shutdown before the mesh goes away.
    glommio::timer::sleep(Duration::from_millis(50)).await;
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
    // Block the signals in every thread (shards inherit the mask) and wait for them here.
    // SAFETY: sigset manipulation on a local set; pthread_sigmask on the calling thread.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let handle = start(config)?;
    // Each listener first: the `listening on` line (the first listener) ends the start.
    for listener in &handle.listeners {
        println!("listener {} on {}", listener.name, listener.address);
    }
    if let Some(addr) = handle.metrics_addr() {
        println!("metrics on http://{addr}/metrics");
    }
    println!("listening on {}", handle.addr);
    let mut signal: libc::c_int = 0;
    // SAFETY: sigwait on the set built above.
    unsafe { libc::sigwait(&set, &mut signal) };
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
