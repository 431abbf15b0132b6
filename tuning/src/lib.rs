//! Host tuning profiles for the broker, the coordinator and the bench.
//!
//! A profile is a TOML file (see `tuning/profiles/`) that describes one host: which CPU cores
//! run broker shards (and which are left for the bench), per-core settings (io_uring queue
//! depth, memory budget, busy-poll) and the global limits every queue, buffer and file size is
//! bounded by. Every field has a documented default and unit, so an empty file is a valid
//! profile; unknown keys are rejected (core roles that were removed say why), and every error
//! names the file, the key and the reason.
//!
//! This crate describes and validates; it starts nothing and touches no device. [`host`]
//! reads what the kernel says about this host (cores, NUMA nodes, IRQs, the data directory's
//! device), which `broker tuning probe` records in the profile it writes ([`ProbedHost`]) and
//! `broker serve` compares with the host it starts on. The broker's storage reads
//! [`StorageLimits`], its server reads [`NetworkLimits`] and [`Profile::shard_cores`], and
//! so on. Pieces both servers share live here too: [`logging`] (human or JSON logs),
//! [`progress`] (once-a-second progress lines of long operations), [`x509_name`] (a
//! certificate subject in RFC 2253 form, the identity TLS clients get), [`systemd`] (the
//! service units whose CPU affinity and limits follow a profile) and [`process`] (transparent
//! huge pages off); and one storage helper both use, [`fs::sync_dir`].

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod fs;
pub mod host;
pub mod logging;
pub mod process;
pub mod progress;
pub mod systemd;
pub mod x509_name;

/// The profiles shipped in `tuning/profiles/`, embedded so a binary works from any directory.
pub mod builtin {
    /// `default.toml`: every online core runs a broker shard.
    pub const DEFAULT: &str = include_str!("../profiles/default.toml");
    /// `dev-2core.toml`: this 2-core development machine, one shard, one core left for the bench.
    pub const DEV_2CORE: &str = include_str!("../profiles/dev-2core.toml");
}

/// Why a profile could not be loaded. Every variant names the file (or `<builtin:NAME>`).
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    /// A TOML syntax error, an unknown key or a value of the wrong type; the parser's message
    /// names the key and the line.
    #[error("{file}: {message}")]
    Parse { file: PathBuf, message: String },
    /// A well-formed value that is out of range or inconsistent with another.
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        file: PathBuf,
        key: String,
        reason: String,
    },
}

/// What a CPU core is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoreRole {
    /// Runs one broker shard (a glommio executor pinned to the core).
    Shard,
    /// Left for the load generator (`bench`) when it runs on the same host: the bench pins its
    /// threads to these cores.
    Bench,
}

/// Core roles that profiles once had and that no process reads.
const REMOVED_ROLES: &[&str] = &["coordinator", "idle"];

/// Settings for one CPU core.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreConfig {
    /// CPU id as the kernel numbers it (`/sys/devices/system/cpu/cpuN`). Required.
    pub cpu: usize,
    /// What runs on this core. Default `shard`.
    #[serde(default = "CoreConfig::default_role")]
    pub role: CoreRole,
    /// io_uring submission queue depth of each ring of the shard on this core (glommio's main,
    /// latency and poll rings, and the splice ring), entries. Default 256.
    #[serde(default = "CoreConfig::default_io_uring_depth")]
    pub io_uring_depth: u32,
    /// Memory the shard on this core may hold for connection buffers, requests being served,
    /// answers not yet sent and consumer-group state, bytes; past it the shard stops reading
    /// sockets (docs/kafka.md, "Memory budget"). Default 1 GiB.
    #[serde(default = "CoreConfig::default_memory_budget_bytes")]
    pub memory_budget_bytes: u64,
    /// When the shard runs out of work, keep polling its rings and timers for
    /// [`CoreConfig::BUSY_POLL_SPIN`] before sleeping in the kernel: work that arrives within
    /// that window is picked up without a wake-up, at the cost of CPU time. Default false.
    #[serde(default)]
    pub busy_poll: bool,
}

impl CoreConfig {
    /// How long a shard with `busy_poll` polls before it sleeps (glommio's spin-before-park).
    /// Longer than a loopback round trip and a typical gap between requests of a busy client,
    /// short enough that an idle shard sleeps almost at once.
    pub const BUSY_POLL_SPIN: std::time::Duration = std::time::Duration::from_micros(200);

    /// glommio's spin-before-park for this core: [`Self::BUSY_POLL_SPIN`] with `busy_poll`.
    pub fn spin_before_park(&self) -> Option<std::time::Duration> {
        self.busy_poll.then_some(Self::BUSY_POLL_SPIN)
    }

    fn default_role() -> CoreRole {
        CoreRole::Shard
    }
    fn default_io_uring_depth() -> u32 {
        256
    }
    fn default_memory_budget_bytes() -> u64 {
        1 << 30
    }
    /// A core with every default, for `cpu`.
    pub fn with_defaults(cpu: usize) -> Self {
        CoreConfig {
            cpu,
            role: Self::default_role(),
            io_uring_depth: Self::default_io_uring_depth(),
            memory_budget_bytes: Self::default_memory_budget_bytes(),
            busy_poll: false,
        }
    }
}

/// Per-core defaults applied to every online core when the profile says `cores = "all"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreDefaults {
    /// See [`CoreConfig::io_uring_depth`]. Default 256.
    #[serde(default = "CoreConfig::default_io_uring_depth")]
    pub io_uring_depth: u32,
    /// See [`CoreConfig::memory_budget_bytes`]. Default 1 GiB.
    #[serde(default = "CoreConfig::default_memory_budget_bytes")]
    pub memory_budget_bytes: u64,
    /// See [`CoreConfig::busy_poll`]. Default false.
    #[serde(default)]
    pub busy_poll: bool,
}

impl Default for CoreDefaults {
    fn default() -> Self {
        CoreDefaults {
            io_uring_depth: CoreConfig::default_io_uring_depth(),
            memory_budget_bytes: CoreConfig::default_memory_budget_bytes(),
            busy_poll: false,
        }
    }
}

/// When appended data is made durable with fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlushPolicyName {
    /// One fdatasync per group of appends (group commit): acknowledged means on disk.
    Always,
    /// fdatasync at most every `flush_interval_ms`.
    Interval,
    /// Never fdatasync on the append path; durability is left to replication (and to the
    /// segment roll and clean shutdown, which do sync).
    Never,
}

/// The flush policy with its parameter, as the storage engine uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    Always,
    IntervalMs(u64),
    Never,
}

impl fmt::Display for FlushPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlushPolicy::Always => f.write_str("always"),
            FlushPolicy::IntervalMs(ms) => write!(f, "interval_ms={ms}"),
            FlushPolicy::Never => f.write_str("never"),
        }
    }
}

impl FlushPolicy {
    /// Parses `always`, `never`, `interval_ms=N` (also the bare number of milliseconds), as a
    /// topic config or a command line gives it.
    pub fn parse(text: &str) -> Option<FlushPolicy> {
        let text = text.trim();
        match text {
            "always" => Some(FlushPolicy::Always),
            "never" => Some(FlushPolicy::Never),
            _ => {
                let ms = text.strip_prefix("interval_ms=").unwrap_or(text);
                ms.parse::<u64>()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .map(FlushPolicy::IntervalMs)
            }
        }
    }
}

/// Limits and defaults of the storage engine (one partition log and its segments).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageLimits {
    /// A segment rolls when its `.log` would grow past this, bytes. Default 1 GiB (Kafka's
    /// `segment.bytes`). Range 64 KiB ..= 2 GiB - 1 (positions in the index are u32).
    #[serde(default = "StorageLimits::default_segment_bytes")]
    pub segment_bytes: u64,
    /// A segment rolls when its first batch is older than this, milliseconds. Default 7 days
    /// (Kafka's `segment.ms`).
    #[serde(default = "StorageLimits::default_segment_ms")]
    pub segment_ms: u64,
    /// Segments whose newest record is older than this are deleted, milliseconds; -1 keeps
    /// them forever. Default 7 days (Kafka's `retention.ms`).
    #[serde(default = "StorageLimits::default_retention_ms")]
    pub retention_ms: i64,
    /// Oldest segments are deleted while the log is larger than this, bytes; -1 means no
    /// limit. Default -1 (Kafka's `retention.bytes`).
    #[serde(default = "StorageLimits::default_retention_bytes")]
    pub retention_bytes: i64,
    /// How often the retention check runs, milliseconds. Default 30 s.
    #[serde(default = "StorageLimits::default_retention_check_interval_ms")]
    pub retention_check_interval_ms: u64,
    /// `always`, `interval` or `never`; see [`FlushPolicyName`]. Default `always`.
    #[serde(default = "StorageLimits::default_flush_policy")]
    pub flush_policy: FlushPolicyName,
    /// With `flush_policy = "interval"`: the longest time between fdatasyncs, milliseconds.
    /// Default 100.
    #[serde(default = "StorageLimits::default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// A sparse index entry is written every this many bytes of log, bytes. Default 4096
    /// (Kafka's `index.interval.bytes`).
    #[serde(default = "StorageLimits::default_index_interval_bytes")]
    pub index_interval_bytes: u32,
    /// Largest record batch accepted, bytes (Kafka's `message.max.bytes`). Default 1 MiB + 12.
    #[serde(default = "StorageLimits::default_max_batch_bytes")]
    pub max_batch_bytes: u32,
    /// Size of one aligned write buffer of the segment appender, bytes; appends pending when a
    /// write is issued are packed into it. Default 4 MiB: a round carries up to three batches of
    /// the largest size. Multiple of 4096.
    #[serde(default = "StorageLimits::default_write_buffer_bytes")]
    pub write_buffer_bytes: u32,
    /// Largest preallocation step ahead of the write position of the active segment, bytes
    /// (a segment starts at 256 KiB and doubles the step as appends use it up). Default
    /// 64 MiB; 0 disables preallocation.
    #[serde(default = "StorageLimits::default_preallocate_bytes")]
    pub preallocate_bytes: u64,
    /// The blocks preallocation reserves are also written with zeros, between write rounds,
    /// so the fdatasync of an append overwrites written blocks of an unchanged file size and
    /// has no size or extent change to write. Costs about one byte of zeros per byte of data
    /// under a moderate load. A log that appends faster than its idle moments let the zeros
    /// be written falls back to reserved blocks for the rest of the segment. Default true.
    #[serde(default = "StorageLimits::default_preallocate_zeroes")]
    pub preallocate_zeroes: bool,
    /// Each shard's batch cache: the buffers of its most recent write rounds, kept after
    /// they were written so tailing readers are served from memory, bytes (counted as the
    /// buffers' allocation sizes). Default 64 MiB; 0 turns the cache off.
    #[serde(default = "StorageLimits::default_batch_cache_bytes")]
    pub batch_cache_bytes: u64,
}

impl StorageLimits {
    fn default_segment_bytes() -> u64 {
        1 << 30
    }
    fn default_segment_ms() -> u64 {
        7 * 24 * 3600 * 1000
    }
    fn default_retention_ms() -> i64 {
        7 * 24 * 3600 * 1000
    }
    fn default_retention_bytes() -> i64 {
        -1
    }
    fn default_retention_check_interval_ms() -> u64 {
        30_000
    }
    fn default_flush_policy() -> FlushPolicyName {
        FlushPolicyName::Always
    }
    fn default_flush_interval_ms() -> u64 {
        100
    }
    fn default_index_interval_bytes() -> u32 {
        4096
    }
    fn default_max_batch_bytes() -> u32 {
        (1 << 20) + 12
    }
    fn default_write_buffer_bytes() -> u32 {
        4 << 20
    }
    fn default_preallocate_bytes() -> u64 {
        64 << 20
    }
    fn default_preallocate_zeroes() -> bool {
        true
    }
    fn default_batch_cache_bytes() -> u64 {
        64 << 20
    }

    /// Memory each shard registers with io_uring for its write buffers, bytes: the batch
    /// cache plus 16 full write buffers (a fill and an in-flight buffer for each of 8
    /// partitions writing at full size). Writes from registered memory skip pinning their
    /// pages on every write (`IORING_OP_WRITE_FIXED`); buffers beyond it come from the heap and
    /// pay that per write. Allocated and pinned when the shard starts.
    pub fn registered_io_bytes(&self) -> u64 {
        self.batch_cache_bytes + 16 * self.write_buffer_bytes as u64
    }

    /// The flush policy with its interval folded in.
    pub fn flush(&self) -> FlushPolicy {
        match self.flush_policy {
            FlushPolicyName::Always => FlushPolicy::Always,
            FlushPolicyName::Never => FlushPolicy::Never,
            FlushPolicyName::Interval => FlushPolicy::IntervalMs(self.flush_interval_ms),
        }
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, reason: String| Err((format!("storage.{key}"), reason));
        if !(64 * 1024..=(u32::MAX as u64 >> 1)).contains(&self.segment_bytes) {
            return bad(
                "segment_bytes",
                format!("{} is outside 65536 ..= 2147483647", self.segment_bytes),
            );
        }
        if self.segment_ms == 0 {
            return bad("segment_ms", "must be > 0".into());
        }
        if self.retention_ms < -1 || self.retention_ms == 0 {
            return bad("retention_ms", "must be -1 (forever) or > 0".into());
        }
        if self.retention_bytes < -1 || self.retention_bytes == 0 {
            return bad("retention_bytes", "must be -1 (no limit) or > 0".into());
        }
        if self.retention_check_interval_ms == 0 {
            return bad("retention_check_interval_ms", "must be > 0".into());
        }
        if self.flush_policy == FlushPolicyName::Interval && self.flush_interval_ms == 0 {
            return bad(
                "flush_interval_ms",
                "must be > 0 with flush_policy = \"interval\"".into(),
            );
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes", "must be > 0".into());
        }
        if self.max_batch_bytes < 61 {
            return bad(
                "max_batch_bytes",
                "must hold at least a RecordBatch header (61 bytes)".into(),
            );
        }
        if self.write_buffer_bytes == 0 || self.write_buffer_bytes % 4096 != 0 {
            return bad(
                "write_buffer_bytes",
                "must be a non-zero multiple of 4096".into(),
            );
        }
        if (self.write_buffer_bytes as u64) < self.max_batch_bytes as u64 + 4096 {
            return bad(
                "write_buffer_bytes",
                format!(
                    "must be at least max_batch_bytes + 4096 ({}) so one batch and the tail page fit",
                    self.max_batch_bytes as u64 + 4096
                ),
            );
        }
        if self.segment_bytes < self.max_batch_bytes as u64 {
            return bad("segment_bytes", "must be >= max_batch_bytes".into());
        }
        Ok(())
    }
}

impl Default for StorageLimits {
    fn default() -> Self {
        toml::from_str("").expect("empty storage table takes every default")
    }
}

/// Limits of the network front ends (Kafka listener, ZooKeeper client port).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkLimits {
    /// Largest request frame accepted, bytes (Kafka's `socket.request.max.bytes`). Default
    /// 100 MiB. A larger frame closes the connection.
    #[serde(default = "NetworkLimits::default_max_request_bytes")]
    pub max_request_bytes: u32,
    /// Open client connections per process; more are accepted and closed at once. Default
    /// 10,000.
    #[serde(default = "NetworkLimits::default_max_connections")]
    pub max_connections: u32,
    /// Requests read ahead of their answers on one connection. Default 16; a client that
    /// pipelines more waits (back-pressure through TCP).
    #[serde(default = "NetworkLimits::default_max_in_flight_requests")]
    pub max_in_flight_requests: u32,
    /// Receive buffer of one connection, bytes: the size of its reads and what a connection
    /// may hold without a reservation from the memory budget (an idle one holds none). A
    /// larger frame is read under a reservation of its length, its buffer written only as the
    /// frame's bytes arrive (not by the size it declares), and it shrinks back after. Default
    /// 64 KiB.
    #[serde(default = "NetworkLimits::default_connection_buffer_bytes")]
    pub connection_buffer_bytes: u32,
    /// A connection with no complete request for this long is closed, milliseconds. Default
    /// 10 minutes (Kafka's `connections.max.idle.ms`).
    #[serde(default = "NetworkLimits::default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

impl NetworkLimits {
    fn default_max_request_bytes() -> u32 {
        100 << 20
    }
    fn default_max_connections() -> u32 {
        10_000
    }
    fn default_max_in_flight_requests() -> u32 {
        16
    }
    fn default_connection_buffer_bytes() -> u32 {
        64 << 10
    }
    fn default_idle_timeout_ms() -> u64 {
        600_000
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, reason: &str| Err((format!("network.{key}"), reason.to_string()));
        if self.max_request_bytes < 1024 {
            return bad("max_request_bytes", "must be >= 1024");
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be > 0");
        }
        if self.max_in_flight_requests == 0 {
            return bad("max_in_flight_requests", "must be > 0");
        }
        if self.connection_buffer_bytes < 4096 {
            return bad("connection_buffer_bytes", "must be >= 4096");
        }
        if self.idle_timeout_ms == 0 {
            return bad("idle_timeout_ms", "must be > 0");
        }
        Ok(())
    }
}

impl Default for NetworkLimits {
    fn default() -> Self {
        toml::from_str("").expect("empty network table takes every default")
    }
}

/// `[metrics]`: what the broker's Prometheus endpoint (`--metrics-listen`) exports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Series per topic partition (log size, offsets, traffic, group lag by partition).
    /// Default true; false on hosts with many partitions keeps only the per-shard, per-topic
    /// and per-broker series. `broker serve --metrics-per-partition` overrides it.
    #[serde(default = "MetricsSettings::default_per_partition")]
    pub per_partition: bool,
}

impl MetricsSettings {
    fn default_per_partition() -> bool {
        true
    }
}

impl Default for MetricsSettings {
    fn default() -> Self {
        toml::from_str("").expect("empty metrics table takes every default")
    }
}

/// `cores = "all"` or an explicit list in `[[core]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CoresKeyword {
    All,
}

/// The file as written: what serde reads before cores are resolved.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    cores: Option<CoresKeyword>,
    #[serde(default)]
    core_defaults: CoreDefaults,
    #[serde(default)]
    core: Vec<CoreConfig>,
    #[serde(default)]
    storage: StorageLimits,
    #[serde(default)]
    network: NetworkLimits,
    #[serde(default)]
    probed_host: Option<ProbedHost>,
    #[serde(default)]
    metrics: MetricsSettings,
}

/// `[probed_host]`: the host `broker tuning probe` measured when it wrote the profile.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbedHost {
    pub online_cpus: usize,
    pub numa_nodes: usize,
    /// The block device under the data directory, when it was one.
    #[serde(default)]
    pub data_device: Option<String>,
}

impl ProbedHost {
    /// How `topology` and `device` (this host, its data directory's device) differ from the
    /// probed host, one sentence each; empty when they match.
    pub fn differences(
        &self,
        topology: &host::Topology,
        device: Option<&host::BlockDevice>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        if topology.online_cpus != self.online_cpus {
            out.push(format!(
                "probed with {} online cpus, this host has {}",
                self.online_cpus, topology.online_cpus
            ));
        }
        if topology.numa_nodes.len() != self.numa_nodes {
            out.push(format!(
                "probed with {} NUMA nodes, this host has {}",
                self.numa_nodes,
                topology.numa_nodes.len()
            ));
        }
        let here = device.map(|d| d.name.as_str());
        if self.data_device.as_deref() != here {
            out.push(format!(
                "probed with the data directory on {}, now it is on {}",
                self.data_device.as_deref().unwrap_or("no block device"),
                here.unwrap_or("no block device")
            ));
        }
        out
    }
}

/// A loaded, validated profile with its cores resolved against this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Where it came from (a path, or `<builtin:NAME>`), for messages.
    pub source: PathBuf,
    /// Free text: which host this profile was written for.
    pub description: String,
    /// Every configured core, ascending by cpu id.
    pub cores: Vec<CoreConfig>,
    pub storage: StorageLimits,
    pub network: NetworkLimits,
    /// The host the profile was probed on (`[probed_host]`), when `tuning probe` wrote it.
    pub probed_host: Option<ProbedHost>,
    pub metrics: MetricsSettings,
}

impl Profile {
    /// Reads and validates the profile in `path`.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path, online_cpus())
    }

    /// A builtin profile by name (`default`, `dev-2core`).
    pub fn builtin(name: &str) -> Option<Profile> {
        let text = match name {
            "default" => builtin::DEFAULT,
            "dev-2core" => builtin::DEV_2CORE,
            _ => return None,
        };
        let source = PathBuf::from(format!("<builtin:{name}>"));
        Some(Self::parse(text, &source, online_cpus()).expect("builtin profiles are valid"))
    }

    /// `--tuning <file>` when given, else the builtin `default`.
    pub fn load_or_default(path: Option<&Path>) -> Result<Profile, ProfileError> {
        match path {
            Some(path) => Self::load(path),
            None => Ok(Self::builtin("default").expect("default profile exists")),
        }
    }

    /// Parses `text` as if read from `source`, resolving `cores = "all"` to `online_cpus`.
    pub fn parse(text: &str, source: &Path, online_cpus: usize) -> Result<Profile, ProfileError> {
        if let Some((key, reason)) = removed_role(text) {
            return Err(ProfileError::Invalid {
                file: source.to_path_buf(),
                key,
                reason,
            });
        }
        let file: ProfileFile = toml::from_str(text).map_err(|err| ProfileError::Parse {
            file: source.to_path_buf(),
            message: err.to_string(),
        })?;
        let invalid = |key: String, reason: String| ProfileError::Invalid {
            file: source.to_path_buf(),
            key,
            reason,
        };
        let mut cores = match (&file.cores, file.core.is_empty()) {
            (Some(CoresKeyword::All), false) => {
                return Err(invalid(
                    "cores".into(),
                    "give either cores = \"all\" or [[core]] sections, not both".into(),
                ))
            }
            (Some(CoresKeyword::All), true) | (None, true) => (0..online_cpus.max(1))
                .map(|cpu| CoreConfig {
                    cpu,
                    role: CoreRole::Shard,
                    io_uring_depth: file.core_defaults.io_uring_depth,
                    memory_budget_bytes: file.core_defaults.memory_budget_bytes,
                    busy_poll: file.core_defaults.busy_poll,
                })
                .collect::<Vec<_>>(),
            (None, false) => file.core.clone(),
        };
        cores.sort_by_key(|core| core.cpu);
        for (index, core) in cores.iter().enumerate() {
            let key = |field: &str| format!("core[cpu={}].{field}", core.cpu);
            if index > 0 && cores[index - 1].cpu == core.cpu {
                return Err(invalid(key("cpu"), "listed twice".into()));
            }
            if core.cpu >= online_cpus.max(1) {
                return Err(invalid(
                    key("cpu"),
                    format!(
                        "this host has {online_cpus} online cpus (0..={})",
                        online_cpus.saturating_sub(1)
                    ),
                ));
            }
            if !(8..=32768).contains(&core.io_uring_depth) || !core.io_uring_depth.is_power_of_two()
            {
                return Err(invalid(
                    key("io_uring_depth"),
                    format!(
                        "{} is not a power of two in 8 ..= 32768",
                        core.io_uring_depth
                    ),
                ));
            }
            if core.memory_budget_bytes < 16 << 20 {
                return Err(invalid(
                    key("memory_budget_bytes"),
                    "must be at least 16 MiB".into(),
                ));
            }
        }
        if !cores.iter().any(|core| core.role == CoreRole::Shard) {
            return Err(invalid(
                "core".into(),
                "no core has role = \"shard\"; the broker needs at least one".into(),
            ));
        }
        file.storage
            .validate()
            .and_then(|()| file.network.validate())
            .map_err(|(key, reason)| invalid(key, reason))?;
        Ok(Profile {
            source: source.to_path_buf(),
            description: file.description.unwrap_or_default(),
            cores,
            storage: file.storage,
            network: file.network,
            probed_host: file.probed_host,
            metrics: file.metrics,
        })
    }

    /// The cores that run broker shards, ascending; shard i runs on `shard_cores()[i]`.
    pub fn shard_cores(&self) -> Vec<&CoreConfig> {
        self.cores
            .iter()
            .filter(|core| core.role == CoreRole::Shard)
            .collect()
    }

    /// The cores left for the bench, if any.
    pub fn bench_cores(&self) -> Vec<usize> {
        self.cores
            .iter()
            .filter(|core| core.role == CoreRole::Bench)
            .map(|core| core.cpu)
            .collect()
    }

    /// Sum of the shards' memory budgets, bytes: the broker's whole budget.
    pub fn memory_budget_bytes(&self) -> u64 {
        self.shard_cores()
            .iter()
            .map(|core| core.memory_budget_bytes)
            .sum()
    }
}

/// The first core role of `text` that was removed, with why (`None` also when `text` is
/// not TOML: the full parse reports that).
fn removed_role(text: &str) -> Option<(String, String)> {
    let value: toml::Table = toml::from_str(text).ok()?;
    let cores = value.get("core").and_then(toml::Value::as_array)?;
    for core in cores {
        let role = core.get("role").and_then(toml::Value::as_str);
        if let Some(role) = role.filter(|role| REMOVED_ROLES.contains(role)) {
            let cpu = core
                .get("cpu")
                .map_or_else(|| "?".to_string(), |cpu| cpu.to_string());
            return Some((
                format!("core[cpu={cpu}].role"),
                format!(
                    "role \"{role}\" was removed: no process reads it; a core that runs no \
                     broker shard is left out of the [[core]] list (or given role = \"bench\" \
                     for the bench to pin its threads to)"
                ),
            ));
        }
    }
    None
}

/// CPUs online on this host.
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let count = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if count < 1 {
        1
    } else {
        count as usize
    }
}

#[cfg(test)]
mod tests;
