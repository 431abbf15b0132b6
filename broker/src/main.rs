//! `broker`: the broker binary. Parses the command line and calls the library.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use broker::security::acl_store::AuthorizerConfig;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "broker",
    about = "Thread-per-core broker speaking the Kafka wire protocol"
)]
struct Cli {
    /// Log lines for people (`human`) or one JSON object per line (`json`), on stderr.
    #[arg(long, global = true, default_value = "human")]
    log_format: tuning::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of `Serve`'s flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the broker until SIGTERM/SIGINT.
    Serve {
        /// Tuning profile (TOML); the builtin `default` when absent.
        #[arg(long)]
        tuning: Option<PathBuf>,
        /// Directory holding topic metadata and partition logs.
        #[arg(long)]
        data_dir: PathBuf,
        /// Address to listen on (port 0 picks a free port, printed at start).
        #[arg(long, default_value = "127.0.0.1:9092")]
        listen: SocketAddr,
        /// host:port clients are told to connect to; the listen address when absent.
        #[arg(long)]
        advertise: Option<String>,
        /// Kafka's listeners instead of --listen, repeatable: `NAME://ip:port`, NAME a security
        /// protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) or a name of
        /// --listener-security-protocol-map. SASL authenticates the users of `broker users`.
        #[arg(long)]
        listener: Vec<String>,
        /// Kafka's advertised.listeners, repeatable: `NAME://host:port`, the endpoint clients
        /// of listener NAME are told to connect to (the bound address when absent).
        #[arg(long)]
        advertised_listener: Vec<String>,
        /// Kafka's listener.security.protocol.map: `NAME:PROTOCOL,...` for listener names that
        /// are not protocols.
        #[arg(long, default_value = "")]
        listener_security_protocol_map: String,
        /// Kafka's inter.broker.listener.name: the listener other brokers use to reach this
        /// one (replica fetchers); the first listener when absent.
        #[arg(long)]
        inter_broker_listener_name: Option<String>,
        /// The certificate chain (PEM) of SSL and SASL_SSL listeners; reloaded when it changes.
        #[arg(long)]
        tls_cert: Option<PathBuf>,
        /// The private key (PEM) of --tls-cert.
        #[arg(long)]
        tls_key: Option<PathBuf>,
        /// CA certificates (PEM): clients of SSL and SASL_SSL listeners must present a
        /// certificate they signed; on SSL the principal is `User:` + its subject (RFC 2253).
        #[arg(long)]
        tls_client_ca: Option<PathBuf>,
        /// CA certificates (PEM) the broker trusts when it connects to another broker's TLS
        /// listener (--tls-client-ca when absent).
        #[arg(long)]
        tls_ca: Option<PathBuf>,
        /// Kafka's sasl.enabled.mechanisms on a SASL listener: PLAIN, SCRAM-SHA-256,
        /// SCRAM-SHA-512 (comma list).
        #[arg(long, default_value = "SCRAM-SHA-256,SCRAM-SHA-512")]
        sasl_enabled_mechanisms: String,
        /// Kafka's sasl.mechanism.inter.broker.protocol: how this broker authenticates to
        /// the others' SASL listeners (SCRAM-SHA-256 or SCRAM-SHA-512; cluster mode).
        #[arg(long, requires_all = ["inter_broker_user", "inter_broker_password_file"])]
        sasl_inter_broker_mechanism: Option<String>,
        /// The SCRAM user this broker authenticates as to other brokers.
        #[arg(long)]
        inter_broker_user: Option<String>,
        /// A file whose first line is that user's password.
        #[arg(long)]
        inter_broker_password_file: Option<PathBuf>,
        /// Check ACLs on every request (Kafka's authorizer.class.name): without it everything
        /// is allowed. ACLs live in the data dir's acls.json, in cluster mode in the
        /// coordinator's /kafka-acl znodes.
        #[arg(long)]
        authorizer: bool,
        /// Kafka's super.users: principals that pass every check, `User:admin;User:ops`.
        #[arg(long, default_value = "")]
        super_users: String,
        /// Kafka's allow.everyone.if.no.acl.found: a resource no ACL applies to is open to all.
        #[arg(long)]
        allow_everyone_if_no_acl_found: bool,
        /// Broker (node) id.
        #[arg(long, default_value_t = 0)]
        id: i32,
        /// Create unknown topics when a client asks for their metadata (off, as Kafka advises).
        #[arg(long)]
        auto_create_topics: bool,
        /// Partitions of auto-created topics and of CreateTopics with num_partitions = -1.
        #[arg(long, default_value_t = 1)]
        default_partitions: i32,
        /// Copy fetched file bytes through user space instead of splicing them (benchmarks).
        #[arg(long)]
        no_splice: bool,
        /// Kafka's group.initial.rebalance.delay.ms: how long the first rebalance of an empty
        /// group waits for more members (each arrival extends it, up to the rebalance timeout).
        #[arg(long, default_value_t = 3000)]
        group_initial_rebalance_delay_ms: u64,
        /// Kafka's group.min.session.timeout.ms: JoinGroups asking for less are refused.
        #[arg(long, default_value_t = 6000)]
        group_min_session_timeout_ms: i32,
        /// Kafka's offsets.commit.timeout.ms: an OffsetCommit whose append is not done by then
        /// is answered REQUEST_TIMED_OUT (for a group member, at most half its session).
        #[arg(long, default_value_t = 5000)]
        offsets_commit_timeout_ms: u64,
        /// Join a cluster: Kafka's zookeeper.connect, `host:port[,host:port...][/chroot]`, of
        /// our coordinator ensemble or an Apache ZooKeeper (the chroot is created if missing).
        /// Without it the broker is a single node.
        #[arg(long)]
        coordinator: Option<String>,
        /// Coordinator session timeout (Kafka's zookeeper.session.timeout.ms): a broker that
        /// stops answering for this long loses its registration and its leaderships.
        #[arg(long, default_value_t = 6000)]
        session_timeout_ms: u64,
        /// The broker's rack (Kafka's broker.rack): new topics spread replicas over racks.
        #[arg(long)]
        rack: Option<String>,
        /// Kafka's unclean.leader.election.enable: elect a replica outside the ISR when no ISR
        /// member is alive (may lose acknowledged records). Topics may override it.
        #[arg(long)]
        unclean_leader_election: bool,
        /// Kafka's default.replication.factor: replicas of topics created without a factor
        /// (auto-created topics, `__consumer_offsets`).
        #[arg(long, default_value_t = 1)]
        default_replication_factor: i16,
        /// Kafka's min.insync.replicas: an acks=all produce is refused with
        /// NOT_ENOUGH_REPLICAS while the ISR is smaller (topics may override it).
        #[arg(long, default_value_t = 1)]
        min_insync_replicas: usize,
        /// Kafka's replica.lag.time.max.ms: a follower that has not caught up for this long
        /// leaves the ISR.
        #[arg(long, default_value_t = 30000)]
        replica_lag_time_max_ms: u64,
        /// On SIGTERM, how long to wait for the controller to move this broker's leaderships
        /// to other ISR members before stopping (0: stop at once).
        #[arg(long, default_value_t = 10000)]
        controlled_shutdown_timeout_ms: u64,
        /// A file whose first line is `user:password`: every coordinator session runs
        /// `addauth digest` with it (Kafka's JAAS `Client` section for ZooKeeper).
        #[arg(long)]
        coordinator_digest_file: Option<PathBuf>,
        /// Kafka's zookeeper.set.acl: znodes this broker creates get ALL for the digest user
        /// and READ for everyone; credentials (`/config/users/...`) the digest user only.
        #[arg(long, requires = "coordinator_digest_file")]
        coordinator_set_acl: bool,
        /// Serve Prometheus metrics at http://HOST:PORT/metrics (off when absent).
        #[arg(long, value_name = "HOST:PORT")]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Export per-partition series (overrides the profile's `[metrics] per_partition`).
        #[arg(long, value_name = "BOOL")]
        metrics_per_partition: Option<bool>,
    },
    /// The cluster: its id, the controller and the live brokers.
    Cluster {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
    },
    /// Create, list, describe or delete topics on a running broker.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Consumer groups: list them, or describe one (members, assignments, offsets, lag).
    Groups {
        #[command(subcommand)]
        action: GroupsAction,
    },
    /// SCRAM users of a single node, edited in its data directory while it is stopped.
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
    /// Tuning profiles: `probe` measures this host and writes one.
    Tuning {
        #[command(subcommand)]
        action: TuningAction,
    },
    /// ACLs (Kafka's kafka-acls.sh): a single node's in its data directory (--data-dir), a
    /// cluster's in the coordinator (--coordinator).
    Acls {
        #[command(subcommand)]
        action: AclsAction,
    },
    /// Records of a partition: `delete` moves its log start offset (DeleteRecords).
    Records {
        #[command(subcommand)]
        action: RecordsAction,
    },
    /// Idempotent producers: `describe` lists those each partition remembers.
    Producers {
        #[command(subcommand)]
        action: ProducersAction,
    },
    /// Leader elections (Kafka's kafka-leader-election.sh).
    Leaders {
        #[command(subcommand)]
        action: LeadersAction,
    },
    /// Partition reassignment (Kafka's kafka-reassign-partitions.sh).
    Partitions {
        #[command(subcommand)]
        action: PartitionsAction,
    },
    /// Produce stdin lines as records (`key<sep>value` with --key-separator).
    Produce {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        key_separator: Option<String>,
        /// Send every record to this partition.
        #[arg(long)]
        partition: Option<i32>,
    },
    /// Print records of a topic, one value per line.
    Consume {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        /// Start at the earliest offset (else only new records).
        #[arg(long)]
        from_beginning: bool,
        #[arg(long)]
        partition: Option<i32>,
        /// Exit after this many records.
        #[arg(long)]
        max_messages: Option<u64>,
        /// Exit after this long without a record, milliseconds.
        #[arg(long, default_value_t = 5000)]
        idle_timeout_ms: u64,
        /// Print `key<sep>value`.
        #[arg(long)]
        key_separator: Option<String>,
    },
    /// Log directories (Kafka's kafka-log-dirs.sh): partition sizes and offset lags per broker.
    LogDirs {
        #[command(subcommand)]
        action: LogDirsAction,
    },
}

#[derive(Subcommand)]
enum LogDirsAction {
    /// Every broker's log directory with the size and offset lag of each partition in it.
    Describe {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        /// Only this topic's partitions (repeatable; all when absent).
        #[arg(long = "topic")]
        topics: Vec<String>,
    },
}

#[derive(Subcommand)]
enum RecordsAction {
    /// Delete the records of a partition below an offset (-1: below the high watermark).
    Delete {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        #[arg(long, allow_negative_numbers = true)]
        before: i64,
    },
}

#[derive(Subcommand)]
enum ProducersAction {
    /// The producers of a topic's partitions (one with --partition).
    Describe {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: Option<i32>,
    },
}

#[derive(Subcommand)]
enum GroupsAction {
    List {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
    },
    Describe {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        group: String,
    },
    /// Delete the group's committed offsets of a topic (all its partitions, or those given).
    DeleteOffsets {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        group: String,
        #[arg(long)]
        topic: String,
        /// A partition (repeatable); none: every partition of the topic.
        #[arg(long = "partition")]
        partitions: Vec<i32>,
    },
}

#[derive(clap::Args)]
struct AclArgs {
    #[command(flatten)]
    store: broker::cli::store::StoreArgs,
    /// Principal allowed (`User:alice`, `User:*`); repeatable.
    #[arg(long)]
    allow_principal: Vec<String>,
    /// Principal denied; repeatable.
    #[arg(long)]
    deny_principal: Vec<String>,
    /// Host the allow entries apply to (`*` when absent); repeatable.
    #[arg(long)]
    allow_host: Vec<String>,
    /// Host the deny entries apply to (`*` when absent); repeatable.
    #[arg(long)]
    deny_host: Vec<String>,
    /// Read, Write, Create, Delete, Alter, Describe, ClusterAction, DescribeConfigs,
    /// AlterConfigs, IdempotentWrite, All (All when absent); repeatable.
    #[arg(long)]
    operation: Vec<String>,
    #[arg(long)]
    topic: Vec<String>,
    #[arg(long)]
    group: Vec<String>,
    #[arg(long)]
    transactional_id: Vec<String>,
    /// The cluster resource.
    #[arg(long)]
    cluster: bool,
    /// literal or prefixed (add/remove: literal when absent); any or match (list: any).
    #[arg(long)]
    resource_pattern_type: Option<String>,
}

impl AclArgs {
    fn split(self) -> Result<(broker::cli::store::StoreAt, broker::cli::acls::AclOptions), String> {
        use broker::cli::acls::AclOptions;
        let at = self.store.at()?;
        let options = AclOptions {
            allow_principals: self.allow_principal,
            deny_principals: self.deny_principal,
            allow_hosts: self.allow_host,
            deny_hosts: self.deny_host,
            operations: self.operation,
            topics: self.topic,
            groups: self.group,
            transactional_ids: self.transactional_id,
            cluster: self.cluster,
            pattern: self.resource_pattern_type,
        };
        Ok((at, options))
    }
}

#[derive(Subcommand)]
enum AclsAction {
    /// Adds ACLs: each principal x host x operation on each resource named.
    Add(AclArgs),
    /// Lists ACLs (all, or those of the resources/principals named).
    List(AclArgs),
    /// Removes the ACLs of the resources named (only the principals/operations named, if any).
    Remove(AclArgs),
}

#[derive(Subcommand)]
enum LeadersAction {
    /// Elects leaders: the preferred replica (the first of the assignment), or with
    /// `--election unclean` a live replica outside the ISR of a partition that has none.
    /// Without --topic, every partition of the cluster.
    Elect {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        /// preferred or unclean.
        #[arg(long, default_value = "preferred")]
        election: String,
        #[arg(long)]
        topic: Option<String>,
        /// Partitions of --topic (repeatable); all of them when not given.
        #[arg(long)]
        partition: Vec<i32>,
    },
}

#[derive(Subcommand)]
enum PartitionsAction {
    /// Starts moving a partition to --replicas (comma-separated broker ids, the first is the
    /// preferred leader), or cancels the move in progress with --cancel.
    Reassign {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        #[arg(long, value_delimiter = ',', required_unless_present = "cancel")]
        replicas: Vec<i32>,
        #[arg(long, conflicts_with = "replicas")]
        cancel: bool,
    },
    /// Lists the reassignments in progress: full replicas, adding, removing.
    ListReassignments {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[arg(long)]
        topic: Option<String>,
    },
}

#[derive(Subcommand)]
enum TuningAction {
    /// Measures cores, interrupts and the data directory's disk (O_DIRECT writes across block
    /// sizes and queue depths, fdatasync latency) and writes a profile for `serve --tuning`.
    Probe {
        /// Where the broker will keep its data: the disk measured (one scratch file at a time).
        #[arg(long)]
        data_dir: PathBuf,
        /// The profile to write.
        #[arg(long)]
        out: PathBuf,
        /// Time budget of the whole measurement, seconds.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Prints a systemd unit for the broker or the coordinator whose CPU affinity and limits
    /// follow the profile (install: docs/operations.md).
    ServiceUnit {
        #[command(subcommand)]
        service: broker::cli::service_unit::Service,
    },
}

#[derive(Subcommand)]
enum UsersAction {
    /// Adds a user's credential for a mechanism (or replaces it).
    Add {
        name: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        #[arg(long)]
        mechanism: String,
        /// A file whose first line is the password.
        #[arg(long)]
        password_file: PathBuf,
        /// PBKDF2 iterations (4096 ..= 16384).
        #[arg(long, default_value_t = 4096)]
        iterations: u32,
        #[command(flatten)]
        store: broker::cli::store::StoreArgs,
    },
    /// Deletes a user's credential for a mechanism, or all of them.
    Delete {
        name: String,
        #[arg(long)]
        mechanism: Option<String>,
        #[command(flatten)]
        store: broker::cli::store::StoreArgs,
    },
    /// Lists users, mechanisms and iteration counts (never keys).
    List {
        #[command(flatten)]
        store: broker::cli::store::StoreArgs,
    },
}

#[derive(Subcommand)]
enum TopicsAction {
    Create {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Replicas per partition (-1: the brokers' default.replication.factor).
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i16,
        /// Topic config override, `key=value` (repeatable).
        #[arg(long = "config")]
        configs: Vec<String>,
    },
    List {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
    },
    Describe {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        name: String,
    },
    Delete {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        name: String,
    },
    /// Change a topic's config overrides (IncrementalAlterConfigs).
    Alter {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        name: String,
        /// Set an override, `key=value` (repeatable).
        #[arg(long = "config")]
        configs: Vec<String>,
        /// Remove an override: the broker default applies again (repeatable).
        #[arg(long = "delete-config")]
        delete_configs: Vec<String>,
    },
    /// Grow a topic to this many partitions (CreatePartitions).
    AddPartitions {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        name: String,
        /// The new partition count.
        #[arg(long)]
        partitions: i32,
    },
}

/// `key=value` pairs of repeated `--config` flags; `None` (the error printed) if one is not.
fn config_pairs(configs: Vec<String>) -> Option<Vec<(String, String)>> {
    let pairs: Result<Vec<_>, String> = configs
        .into_iter()
        .map(|config| match config.split_once('=') {
            Some((key, value)) => Ok((key.to_string(), value.to_string())),
            None => Err(format!("--config takes key=value, got `{config}`")),
        })
        .collect();
    pairs.map_err(|err| eprintln!("error: {err}")).ok()
}

fn client_result<T>(result: Result<T, broker::cli::client::ClientError>) -> ExitCode {
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn string_result(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn parse_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    Some((
        host.trim_matches(['[', ']']).to_string(),
        port.parse().ok()?,
    ))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tuning::logging::init(cli.log_format);
    if matches!(cli.command, Command::Serve { .. }) {
        // Before any shard starts: no 2 MiB page clears inside a shard's page faults.
        if let Err(err) = tuning::process::disable_transparent_huge_pages() {
            tracing::warn!(%err, "transparent huge pages stay on for this process");
        }
    } else {
        // The operator commands print to stdout: one piped into `head` or `grep -q` ends
        // quietly when the reader leaves, as other command-line tools do, instead of
        // panicking on EPIPE. (The server keeps Rust's ignored SIGPIPE: a client that
        // leaves must not kill it.)
        // SAFETY: resetting a signal disposition before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cli.command {
        Command::Serve {
            tuning,
            data_dir,
            listen,
            advertise,
            listener,
            advertised_listener,
            listener_security_protocol_map,
            inter_broker_listener_name,
            tls_cert,
            tls_key,
            tls_client_ca,
            tls_ca,
            sasl_enabled_mechanisms,
            sasl_inter_broker_mechanism,
            inter_broker_user,
            inter_broker_password_file,
            authorizer,
            super_users,
            allow_everyone_if_no_acl_found,
            id,
            auto_create_topics,
            default_partitions,
            no_splice,
            group_initial_rebalance_delay_ms,
            group_min_session_timeout_ms,
            offsets_commit_timeout_ms,
            coordinator,
            session_timeout_ms,
            rack,
            unclean_leader_election,
            default_replication_factor,
            min_insync_replicas,
            replica_lag_time_max_ms,
            controlled_shutdown_timeout_ms,
            coordinator_digest_file,
            coordinator_set_acl,
            metrics_listen,
            metrics_per_partition,
        } => {
            let coordinator_digest = match coordinator_digest_file
                .as_deref()
                .map(broker::cli::users::read_digest_file)
                .transpose()
            {
                Ok(digest) => digest,
                Err(err) => {
                    eprintln!("error: {err}");
                    return ExitCode::from(2);
                }
            };
            let profile = match tuning::Profile::load_or_default(tuning.as_deref()) {
                Ok(mut profile) => {
                    if let Some(per_partition) = metrics_per_partition {
                        profile.metrics.per_partition = per_partition;
                    }
                    profile
                }
                Err(err) => {
                    eprintln!("error: {err}");
                    return ExitCode::from(2);
                }
            };
            log_profile(&profile, &data_dir);
            let advertise = match advertise.as_deref().map(parse_host_port) {
                None => None,
                Some(Some(pair)) => Some(pair),
                Some(None) => {
                    eprintln!("error: --advertise must be host:port");
                    return ExitCode::from(2);
                }
            };
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(broker::security::listener::TlsFiles {
                    cert,
                    key,
                    client_ca: tls_client_ca,
                    trust_ca: tls_ca,
                }),
                (None, None) => None,
                _ => {
                    eprintln!("error: --tls-cert and --tls-key go together");
                    return ExitCode::from(2);
                }
            };
            let flags = ListenerFlags {
                listeners: &listener,
                advertised: &advertised_listener,
                protocol_map: &listener_security_protocol_map,
                inter_broker: inter_broker_listener_name,
                mechanisms: &sasl_enabled_mechanisms,
                tls,
            };
            let (listen, security) = match listener_security(flags, listen) {
                Ok(pair) => pair,
                Err(err) => {
                    eprintln!("error: {err}");
                    return ExitCode::from(2);
                }
            };
            let inter_broker_sasl = match inter_broker_sasl(
                &security,
                coordinator.is_some(),
                sasl_inter_broker_mechanism.as_deref(),
                inter_broker_user,
                inter_broker_password_file.as_deref(),
            ) {
                Ok(sasl) => sasl,
                Err(err) => {
                    eprintln!("error: {err}");
                    return ExitCode::from(2);
                }
            };
            if !authorizer && (!super_users.is_empty() || allow_everyone_if_no_acl_found) {
                eprintln!(
                    "error: --super-users and --allow-everyone-if-no-acl-found need --authorizer"
                );
                return ExitCode::from(2);
            }
            let authorizer = match authorizer
                .then(|| AuthorizerConfig::parse_super_users(&super_users))
                .transpose()
            {
                Ok(found) => found.map(|super_users| AuthorizerConfig {
                    super_users,
                    allow_if_no_acl: allow_everyone_if_no_acl_found,
                }),
                Err(err) => {
                    eprintln!("error: --super-users: {err}");
                    return ExitCode::from(2);
                }
            };
            let config = broker::server::ServeConfig {
                profile,
                security,
                inter_broker_sasl,
                authorizer,
                data_dir,
                listen,
                advertise,
                node_id: id,
                auto_create_topics,
                default_partitions,
                fetch_by_splice: !no_splice,
                metrics_listen,
                group: broker::group::GroupConfig {
                    initial_rebalance_delay_ms: group_initial_rebalance_delay_ms,
                    min_session_timeout_ms: group_min_session_timeout_ms,
                    offsets_commit_timeout_ms,
                    ..Default::default()
                },
                offsets_topic_partitions: broker::group::DEFAULT_OFFSETS_TOPIC_PARTITIONS,
                cluster: coordinator.map(|connect| broker::cluster::ClusterConfig {
                    broker_id: id,
                    connect,
                    session_timeout_ms,
                    rack,
                    unclean_leader_election,
                    default_replication_factor,
                    min_insync_replicas,
                    replica_lag_time_max_ms,
                    controlled_shutdown_timeout_ms,
                    coordinator_digest: coordinator_digest
                        .map(broker::cluster::agent::CoordinatorDigest),
                    coordinator_set_acl,
                }),
            };
            match broker::server::serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Cluster { bootstrap } => client_result(broker::cli::cluster(&bootstrap)),
        Command::Records {
            action:
                RecordsAction::Delete {
                    bootstrap,
                    topic,
                    partition,
                    before,
                },
        } => client_result(broker::cli::records::records_delete(
            &bootstrap, &topic, partition, before,
        )),
        Command::Producers {
            action:
                ProducersAction::Describe {
                    bootstrap,
                    topic,
                    partition,
                },
        } => client_result(broker::cli::records::producers_describe(
            &bootstrap, &topic, partition,
        )),
        Command::Leaders {
            action:
                LeadersAction::Elect {
                    bootstrap,
                    election,
                    topic,
                    partition,
                },
        } => {
            let unclean = match election.as_str() {
                "preferred" => false,
                "unclean" => true,
                other => {
                    eprintln!("error: --election is preferred or unclean, got `{other}`");
                    return ExitCode::from(2);
                }
            };
            client_result(broker::cli::reassign::leaders_elect(
                &bootstrap,
                unclean,
                topic.as_deref(),
                &partition,
            ))
        }
        Command::Partitions { action } => match action {
            PartitionsAction::Reassign {
                bootstrap,
                topic,
                partition,
                replicas,
                cancel,
            } => client_result(broker::cli::reassign::partitions_reassign(
                &bootstrap,
                &topic,
                partition,
                (!cancel).then_some(replicas.as_slice()),
            )),
            PartitionsAction::ListReassignments { bootstrap, topic } => client_result(
                broker::cli::reassign::partitions_list_reassignments(&bootstrap, topic.as_deref()),
            ),
        },
        Command::Groups { action } => match action {
            GroupsAction::List { bootstrap } => {
                client_result(broker::cli::groups::groups_list(&bootstrap))
            }
            GroupsAction::Describe { bootstrap, group } => {
                client_result(broker::cli::groups::groups_describe(&bootstrap, &group))
            }
            GroupsAction::DeleteOffsets {
                bootstrap,
                group,
                topic,
                partitions,
            } => client_result(broker::cli::groups::groups_delete_offsets(
                &bootstrap,
                &group,
                &topic,
                &partitions,
            )),
        },
        Command::Tuning {
            action: TuningAction::ServiceUnit { service },
        } => match broker::cli::service_unit::render(&service) {
            Ok(unit) => {
                print!("{unit}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::from(2)
            }
        },
        Command::Tuning {
            action:
                TuningAction::Probe {
                    data_dir,
                    out,
                    seconds,
                },
        } => {
            let options = broker::cli::probe::ProbeOptions {
                data_dir,
                out: out.clone(),
                budget: std::time::Duration::from_secs(seconds.clamp(5, 600)),
            };
            match broker::cli::probe::probe(&options) {
                Ok(report) => {
                    print!("{}", report.profile);
                    eprintln!("wrote {}", out.display());
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Users { action } => {
            use broker::cli::users;
            let result = match action {
                UsersAction::Add {
                    name,
                    mechanism,
                    password_file,
                    iterations,
                    store,
                } => store.at().and_then(|store| {
                    users::users_add(&store, &name, &mechanism, &password_file, iterations)
                }),
                UsersAction::Delete {
                    name,
                    mechanism,
                    store,
                } => store
                    .at()
                    .and_then(|store| users::users_delete(&store, &name, mechanism.as_deref())),
                UsersAction::List { store } => {
                    store.at().and_then(|store| users::users_list(&store))
                }
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Acls { action } => {
            let result = match action {
                AclsAction::Add(args) => args
                    .split()
                    .and_then(|(at, options)| broker::cli::acls::acls_add(&at, &options)),
                AclsAction::List(args) => args
                    .split()
                    .and_then(|(at, options)| broker::cli::acls::acls_list(&at, &options)),
                AclsAction::Remove(args) => args
                    .split()
                    .and_then(|(at, options)| broker::cli::acls::acls_remove(&at, &options)),
            };
            string_result(result)
        }
        Command::Topics { action } => match action {
            TopicsAction::Create {
                bootstrap,
                name,
                partitions,
                replication_factor,
                configs,
            } => {
                let Some(pairs) = config_pairs(configs) else {
                    return ExitCode::from(2);
                };
                client_result(broker::cli::topics_create(
                    &bootstrap,
                    &name,
                    partitions,
                    replication_factor,
                    &pairs,
                ))
            }
            TopicsAction::List { bootstrap } => client_result(broker::cli::topics_list(&bootstrap)),
            TopicsAction::Describe { bootstrap, name } => {
                client_result(broker::cli::topics_describe(&bootstrap, &name))
            }
            TopicsAction::Delete { bootstrap, name } => {
                client_result(broker::cli::topics_delete(&bootstrap, &name))
            }
            TopicsAction::Alter {
                bootstrap,
                name,
                configs,
                delete_configs,
            } => {
                let Some(pairs) = config_pairs(configs) else {
                    return ExitCode::from(2);
                };
                client_result(broker::cli::topic_changes::topics_alter(
                    &bootstrap,
                    &name,
                    &pairs,
                    &delete_configs,
                ))
            }
            TopicsAction::AddPartitions {
                bootstrap,
                name,
                partitions,
            } => client_result(broker::cli::topic_changes::topics_add_partitions(
                &bootstrap, &name, partitions,
            )),
        },
        Command::LogDirs {
            action: LogDirsAction::Describe { bootstrap, topics },
        } => client_result(broker::cli::log_dirs::log_dirs_describe(
            &bootstrap, &topics,
        )),
        Command::Produce {
            bootstrap,
            topic,
            key_separator,
            partition,
        } => {
            let stdin = std::io::stdin().lock();
            let result = broker::cli::produce(
                &bootstrap,
                &topic,
                key_separator.as_deref(),
                partition,
                stdin,
            );
            if let Ok(count) = &result {
                eprintln!("produced {count} records");
            }
            client_result(result)
        }
        Command::Consume {
            bootstrap,
            topic,
            from_beginning,
            partition,
            max_messages,
            idle_timeout_ms,
            key_separator,
        } => {
            let options = broker::cli::ConsumeOptions {
                topic: &topic,
                from_beginning,
                partition,
                max_messages,
                idle_timeout: std::time::Duration::from_millis(idle_timeout_ms),
                key_separator: key_separator.as_deref(),
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            client_result(broker::cli::consume(&bootstrap, &options, &mut out))
        }
    }
}

/// The listener flags of `serve`.
struct ListenerFlags<'a> {
    listeners: &'a [String],
    advertised: &'a [String],
    protocol_map: &'a str,
    inter_broker: Option<String>,
    mechanisms: &'a str,
    tls: Option<broker::security::listener::TlsFiles>,
}

/// The listen address and the listeners of `serve`: `--listener`s when given, else `--listen`
/// as one PLAINTEXT listener.
fn listener_security(
    flags: ListenerFlags<'_>,
    listen: SocketAddr,
) -> Result<(SocketAddr, broker::security::listener::ListenerSecurity), String> {
    use broker::security::listener::{self, ListenerSecurity};
    let map = listener::parse_protocol_map(flags.protocol_map)?;
    let listeners = listener::parse_listeners(flags.listeners, flags.advertised, &map)?;
    if listeners.is_empty() && !flags.advertised.is_empty() {
        return Err("--advertised-listener names a --listener; none is given".into());
    }
    if let Some(name) = &flags.inter_broker {
        if !listeners.is_empty() && !listeners.iter().any(|l| &l.name == name) {
            return Err(format!(
                "--inter-broker-listener-name {name}: no --listener is named so"
            ));
        }
    }
    let listen = listeners.first().map_or(listen, |l| l.address);
    Ok((
        listen,
        ListenerSecurity {
            listeners,
            inter_broker_listener: flags.inter_broker,
            sasl_mechanisms: listener::parse_mechanisms(flags.mechanisms)?,
            tls: flags.tls,
        },
    ))
}

/// Logs the profile `serve` runs with, says when no shard runs where the data dir's disk
/// delivers its completion interrupts, and warns when the profile was probed on another host
/// or when the data dir is on a file system mounted with online discard, and notes ext4's 5 s
/// journal commits under flush `interval` and `never`.
fn log_profile(profile: &tuning::Profile, data_dir: &std::path::Path) {
    let shards: Vec<String> = profile
        .shard_cores()
        .iter()
        .map(|c| {
            format!(
                "cpu {} (io_uring_depth {}, memory_budget_bytes {}, busy_poll {})",
                c.cpu, c.io_uring_depth, c.memory_budget_bytes, c.busy_poll
            )
        })
        .collect();
    let storage = &profile.storage;
    tracing::info!(
        "tuning profile {}: shards on {}; flush {:?}, write_buffer_bytes {}, segment_bytes {}, \
         preallocate_bytes {} (zeros {}), batch_cache_bytes {}",
        profile.source.display(),
        shards.join(", "),
        storage.flush(),
        storage.write_buffer_bytes,
        storage.segment_bytes,
        storage.preallocate_bytes,
        storage.preallocate_zeroes,
        storage.batch_cache_bytes
    );
    let device = tuning::host::block_device(data_dir);
    if let Some(device) = &device {
        let irq_cpus = tuning::host::disk_irq_cpus(&device.name);
        let shards = profile.shard_cores();
        if !irq_cpus.is_empty() && !shards.iter().any(|c| irq_cpus.contains(&c.cpu)) {
            tracing::info!(
                "data dir {} is on {}, whose completion interrupts go to cpu {irq_cpus:?}, \
                 where no shard runs: every write and fdatasync a shard waits for completes \
                 there and wakes the shard by an inter-processor interrupt; a profile with a \
                 shard on cpu {irq_cpus:?} avoids that (docs/tuning.md, \"Disk interrupts\")",
                data_dir.display(),
                device.name
            );
        }
    }
    if let Some(probed) = &profile.probed_host {
        for difference in probed.differences(&tuning::host::topology(), device.as_ref()) {
            tracing::warn!(
                "tuning profile {}: {difference}; run `broker tuning probe` on this host",
                profile.source.display()
            );
        }
    }
    if let Some(mount) = tuning::host::mount_of(data_dir).filter(|m| m.online_discard()) {
        tracing::warn!(
            "data dir {} is on {} mounted with online discard (-o discard): the blocks \
             retention and deleted partitions free are discarded at once, and appends' writes \
             and fdatasyncs queue behind those discards at the device (5-15 ms per 16-58 MB \
             here); mount it without `discard` and trim with fstrim.timer (docs/operations.md)",
            data_dir.display(),
            mount.mount_point.display()
        );
    }
    let commit_s = tuning::host::mount_of(data_dir).and_then(|m| m.journal_commit_s());
    if storage.flush() != tuning::FlushPolicy::Always && commit_s.is_some_and(|s| s <= 5) {
        tracing::info!(
            "data dir {} is on ext4 with a journal commit every {} s: under flush {} \
             appends stalled for 50-140 ms at those commits here and not with commit=30 \
             (docs/operations.md, \"ext4's journal commit interval\")",
            data_dir.display(),
            commit_s.unwrap_or(5),
            match storage.flush() {
                tuning::FlushPolicy::Never => "never",
                _ => "interval",
            }
        );
    }
}

/// How this broker authenticates to the other brokers: needed in cluster mode when the
/// inter-broker listener requires SASL, refused otherwise.
fn inter_broker_sasl(
    security: &broker::security::listener::ListenerSecurity,
    cluster: bool,
    mechanism: Option<&str>,
    user: Option<String>,
    password_file: Option<&std::path::Path>,
) -> Result<Option<broker::security::inter_broker::InterBrokerSasl>, String> {
    use broker::security::scram::Mechanism;
    let (Some(mechanism), Some(user), Some(password_file)) = (mechanism, user, password_file)
    else {
        if cluster && security.inter_broker_requires_sasl() {
            return Err(
                "a SASL inter-broker listener needs --sasl-inter-broker-mechanism, \
                 --inter-broker-user and --inter-broker-password-file (brokers authenticate \
                 to each other)"
                    .into(),
            );
        }
        return Ok(None);
    };
    if !cluster || !security.inter_broker_requires_sasl() {
        return Err(
            "--sasl-inter-broker-mechanism needs cluster mode (--coordinator) and a SASL \
             inter-broker listener"
                .into(),
        );
    }
    let mechanism = Mechanism::from_name(mechanism).ok_or_else(|| {
        format!("--sasl-inter-broker-mechanism {mechanism}: SCRAM-SHA-256 or SCRAM-SHA-512")
    })?;
    if !security
        .sasl_mechanisms
        .iter()
        .any(|m| m.name() == mechanism.name())
    {
        return Err(format!(
            "--sasl-inter-broker-mechanism {mechanism} is not in --sasl-enabled-mechanisms"
        ));
    }
    broker::security::credentials::validate_user(&user)?;
    let password = broker::cli::users::read_password_file(password_file)?;
    Ok(Some(broker::security::inter_broker::InterBrokerSasl {
        mechanism,
        user,
        password,
    }))
}
