//! The zoo.cfg parser: ZooKeeper's configuration file, so an existing file works unchanged.
//!
//! The format is Java properties: `key=value` lines, `#`/`!` comments. Known keys are
//! checked and converted (a bad value is an error naming the key and the line); keys this
//! server does not use are accepted with a warning, so a real ZooKeeper file still loads,
//! except in the families where an ignored setting would mislead (`ssl.*`,
//! `metricsProvider.*`, quorum SASL): there a key that would have no effect stops startup.
//! The server id comes from the `myid` file in `dataDir` when the file lists servers. With
//! no `server.N` lines (or a single one, like ZooKeeper's `standaloneEnabled=true`) the
//! server runs standalone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Why the configuration could not be loaded; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}: key `{key}`: {reason}")]
    Invalid {
        file: PathBuf,
        line: usize,
        key: String,
        reason: String,
    },
    #[error("{file}:{line}: not a `key=value` line")]
    Syntax { file: PathBuf, line: usize },
    #[error("{file}: {reason}")]
    Missing { file: PathBuf, reason: String },
}

/// Whether a quorum member votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    Participant,
    Observer,
}

/// One `server.N=host:peerPort:electionPort[:role][;[clientAddress:]clientPort]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddress {
    pub host: String,
    pub peer_port: u16,
    pub election_port: u16,
    pub role: PeerRole,
    /// The client address given after `;`, if any.
    pub client: Option<(Option<String>, u16)>,
}

/// The settings this server understands, with ZooKeeper's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZooConfig {
    pub source: PathBuf,
    /// `tickTime`, milliseconds. Default 3000.
    pub tick_ms: u32,
    /// `initLimit`, ticks a follower may take to connect and sync. Default 10.
    pub init_limit_ticks: u32,
    /// `syncLimit`, ticks a follower may lag. Default 5.
    pub sync_limit_ticks: u32,
    /// `dataDir`: snapshots and `myid`. Required.
    pub data_dir: PathBuf,
    /// `dataLogDir`: the transaction log. Default `dataDir`.
    pub data_log_dir: PathBuf,
    /// `clientPort`. Default 2181.
    pub client_port: u16,
    /// `clientPortAddress`. Default all interfaces.
    pub client_port_address: IpAddr,
    /// `maxClientCnxns`: connections per client IP; 0 = unlimited. Default 60.
    pub max_client_cnxns: u32,
    /// `minSessionTimeout`, ms. Default 2 * tickTime.
    pub min_session_timeout_ms: u32,
    /// `maxSessionTimeout`, ms. Default 20 * tickTime.
    pub max_session_timeout_ms: u32,
    /// `snapCount`: transactions between snapshots. Default 100000.
    pub snap_count: u64,
    /// `autopurge.snapRetainCount`: snapshots (and the logs they need) kept. Default 3.
    pub snap_retain_count: u32,
    /// `jute.maxbuffer`: largest request/response record, bytes. Default 0xfffff.
    pub jute_max_buffer_bytes: u32,
    /// `globalOutstandingLimit`: writes in flight before new ones wait. Default 1000.
    pub global_outstanding_limit: u32,
    /// `connectionQueueBytesMax` (ours, not ZooKeeper's): answers one connection may have
    /// waiting to be written before its reads wait and its socket is not read, bytes.
    /// Default [`DEFAULT_CONNECTION_QUEUE_BYTES_MAX`].
    pub connection_queue_bytes_max: u64,
    /// `4lw.commands.whitelist`: enabled four-letter words; `*` = all. Default `srvr`.
    pub four_letter_whitelist: BTreeSet<String>,
    /// `forceSync`: fdatasync the transaction log before acknowledging. Default yes.
    pub force_sync: bool,
    /// `DigestAuthenticationProvider.superDigest` (ZooKeeper reads it as the system property
    /// `zookeeper.DigestAuthenticationProvider.superDigest`; both spellings are accepted
    /// here): `USER:BASE64(SHA1(USER:PASSWORD))` of the super user, who passes every ACL
    /// check after `addauth digest USER:PASSWORD`. Default none.
    pub super_digest: Option<String>,
    /// `quorum.auth.secretFile` (ours): a file holding the secret every ensemble member must
    /// prove on each peer connection (at least 16 bytes). Default none: peers are not
    /// authenticated. ZooKeeper's quorum SASL keys are refused when set to true.
    pub quorum_secret_file: Option<PathBuf>,
    /// `secureClientPort`: the TLS client port, beside `clientPort` (0 binds any free port,
    /// as `clientPort=0` does here). Default none.
    pub secure_client_port: Option<u16>,
    /// `secureClientPortAddress`. Default all interfaces (as ZooKeeper: not `clientPortAddress`).
    pub secure_client_port_address: IpAddr,
    /// The secure port's TLS settings (`ssl.*`); present exactly when `secureClientPort` is.
    pub tls: Option<TlsSettings>,
    /// `X509AuthenticationProvider.superUser` (ZooKeeper's system property
    /// `zookeeper.X509AuthenticationProvider.superUser`; both spellings accepted): the
    /// client certificate subject (RFC 2253 form) that holds `super:` on the secure port.
    pub x509_super_user: Option<String>,
    /// The Prometheus endpoint (`metricsProvider.className` naming ZooKeeper's
    /// `PrometheusMetricsProvider`, with `metricsProvider.httpHost/httpPort/exportJvmInfo`).
    /// Default none: metrics only through the `mntr` four-letter word.
    pub metrics: Option<MetricsSettings>,
    /// The `server.N` lines.
    pub servers: BTreeMap<u64, PeerAddress>,
    /// From `dataDir/myid`, when servers are listed.
    pub my_id: Option<u64>,
}

/// Where and what the Prometheus endpoint serves (`metricsProvider.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// `metricsProvider.httpHost`: an address or host name to bind. Default `0.0.0.0`, as
    /// ZooKeeper.
    pub http_host: String,
    /// `metricsProvider.httpPort`. Default 7000, as ZooKeeper; 0 binds any free port.
    pub http_port: u16,
    /// `metricsProvider.exportJvmInfo`: ZooKeeper adds the JVM's and the process's standard
    /// metrics; there is no JVM here, so `true` (the default) adds the process's
    /// (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...) and `false` leaves
    /// them out.
    pub export_process_metrics: bool,
}

/// `metricsProvider.className` of ZooKeeper's Prometheus provider: serves `/metrics`.
pub const PROMETHEUS_PROVIDER: &str =
    "org.apache.zookeeper.metrics.prometheus.PrometheusMetricsProvider";
/// ZooKeeper's default provider: metrics only through `mntr` (what this server does without
/// the Prometheus provider).
pub const DEFAULT_PROVIDER: &str = "org.apache.zookeeper.metrics.impl.DefaultMetricsProvider";

/// `ssl.clientAuth`: whether the secure port asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No certificate asked for.
    None,
    /// Asked for; a client without one is served, one with a bad one is refused.
    Want,
    /// Required and verified against the trust store (ZooKeeper's default).
    Need,
}

/// A TLS protocol version the secure port may speak (`ssl.enabledProtocols`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// The secure client port's TLS files and policy, from zoo.cfg's `ssl.*` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// `ssl.keyStore.location`: one PEM file holding the private key (PKCS#8, PKCS#1 or SEC1,
    /// unencrypted) and the certificate chain, server certificate first, as ZooKeeper's PEM
    /// key store.
    pub key_store: PathBuf,
    /// `ssl.trustStore.location`: PEM certificates of the CAs that sign client certificates.
    pub trust_store: Option<PathBuf>,
    /// `ssl.clientAuth` (`none`, `want`, `need`). Default `need`.
    pub client_auth: ClientAuth,
    /// `ssl.enabledProtocols` (`TLSv1.2`, `TLSv1.3`), or from `ssl.protocol`. Default both.
    pub versions: Vec<TlsVersion>,
}

/// Default of `connectionQueueBytesMax`: 4 MiB, four of the largest answers `jute.maxbuffer`
/// allows by default. With the socket's own buffers that is enough to keep a reading client
/// busy, and small enough that a thousand stalled clients hold a few GiB at most.
pub const DEFAULT_CONNECTION_QUEUE_BYTES_MAX: u64 = 4 << 20;

/// Every four-letter word ZooKeeper knows (for `*` in the whitelist).
pub const FOUR_LETTER_WORDS: &[&str] = &[
    "conf", "cons", "crst", "dump", "envi", "gtmk", "ruok", "stmk", "srst", "srvr", "stat", "wchc",
    "wchp", "wchs", "mntr", "isro", "hash", "dirs",
];

/// Keys ZooKeeper accepts that this server reads but does not act on (no admin HTTP server,
/// no SASL, no dynamic reconfig), so they are accepted without complaint.
const ACCEPTED_UNUSED: &[&str] = &[
    "admin.enableServer",
    "admin.serverAddress",
    "admin.serverPort",
    "admin.idleTimeout",
    "admin.commandURL",
    "autopurge.purgeInterval",
    "standaloneEnabled",
    "reconfigEnabled",
    "preAllocSize",
    "quorumListenOnAllIPs",
    "electionAlg",
    "leaderServes",
    "cnxTimeout",
    "syncEnabled",
    "audit.enable",
    // ZooKeeper needs Netty for its secure port; this server serves TLS either way.
    "serverCnxnFactory",
];

impl ZooConfig {
    pub fn load(path: &Path) -> Result<ZooConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        let mut cfg = ZooConfig::parse(&text, path)?;
        cfg.load_my_id()?;
        Ok(cfg)
    }

    /// Parses the text of a zoo.cfg; `source` is only used in messages. Does not read
    /// `myid` (see [`ZooConfig::load`]).
    pub fn parse(text: &str, source: &Path) -> Result<ZooConfig, ConfigError> {
        let mut draft = Draft::new(source);
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
                continue;
            }
            let Some((key, value)) = trimmed.split_once('=') else {
                return Err(ConfigError::Syntax {
                    file: source.to_owned(),
                    line,
                });
            };
            let entry = Entry {
                file: source,
                line,
                key: key.trim(),
                value: value.trim(),
            };
            let taken = draft.server_line(&entry)?
                || draft.quorum_line(&entry)?
                || draft.security_line(&entry)?
                || draft.metrics_line(&entry)?;
            if !taken {
                entry.unused();
            }
        }
        draft.finish()
    }

    /// Reads `dataDir/myid` when the file lists more than one server.
    fn load_my_id(&mut self) -> Result<(), ConfigError> {
        if self.is_standalone() {
            return Ok(());
        }
        let path = self.data_dir.join("myid");
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            file: path.clone(),
            source,
        })?;
        let id = text
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|id| self.servers.contains_key(id));
        match id {
            Some(id) => {
                self.my_id = Some(id);
                Ok(())
            }
            None => Err(ConfigError::Missing {
                file: path,
                reason: format!(
                    "myid `{}` is not one of the server.N ids {:?}",
                    text.trim(),
                    self.servers.keys().collect::<Vec<_>>()
                ),
            }),
        }
    }

    /// No quorum to form: zero or one `server.N` line.
    pub fn is_standalone(&self) -> bool {
        self.servers.len() <= 1
    }

    /// The id stamped into session ids (the top byte): `myid`, or 0 standalone.
    pub fn server_id(&self) -> u8 {
        self.my_id.unwrap_or(0) as u8
    }

    /// The `conf` four-letter word's text.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("clientPort={}\n", self.client_port));
        out.push_str(&format!("clientPortAddress={}\n", self.client_port_address));
        if let Some(port) = self.secure_client_port {
            out.push_str(&format!("secureClientPort={port}\n"));
            out.push_str(&format!(
                "secureClientPortAddress={}\n",
                self.secure_client_port_address
            ));
        }
        out.push_str(&format!("dataDir={}\n", self.data_dir.display()));
        out.push_str(&format!("dataLogDir={}\n", self.data_log_dir.display()));
        out.push_str(&format!("tickTime={}\n", self.tick_ms));
        out.push_str(&format!("maxClientCnxns={}\n", self.max_client_cnxns));
        out.push_str(&format!(
            "connectionQueueBytesMax={}\n",
            self.connection_queue_bytes_max
        ));
        out.push_str(&format!(
            "minSessionTimeout={}\n",
            self.min_session_timeout_ms
        ));
        out.push_str(&format!(
            "maxSessionTimeout={}\n",
            self.max_session_timeout_ms
        ));
        if let Some(m) = &self.metrics {
            out.push_str(&format!(
                "metricsProvider.className={PROMETHEUS_PROVIDER}\n"
            ));
            out.push_str(&format!("metricsProvider.httpHost={}\n", m.http_host));
            out.push_str(&format!("metricsProvider.httpPort={}\n", m.http_port));
            out.push_str(&format!(
                "metricsProvider.exportJvmInfo={}\n",
                m.export_process_metrics
            ));
        }
        out.push_str(&format!("serverId={}\n", self.my_id.unwrap_or(0)));
        out.push_str(&format!("initLimit={}\n", self.init_limit_ticks));
        out.push_str(&format!("syncLimit={}\n", self.sync_limit_ticks));
        for (id, p) in &self.servers {
            out.push_str(&format!(
                "server.{id}={}:{}:{}:{}\n",
                p.host,
                p.peer_port,
                p.election_port,
                if p.role == PeerRole::Observer {
                    "observer"
                } else {
                    "participant"
                }
            ));
        }
        out
    }
}

/// One `key=value` line of a zoo.cfg.
struct Entry<'a> {
    file: &'a Path,
    line: usize,
    key: &'a str,
    value: &'a str,
}

impl Entry<'_> {
    /// The error that names this line and its key.
    fn bad(&self, reason: String) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            line: self.line,
            key: self.key.to_owned(),
            reason,
        }
    }

    /// The value as an integer in `min..=max`.
    fn num(&self, min: u64, max: u64) -> Result<u64, ConfigError> {
        let value = self.value;
        value
            .parse::<u64>()
            .ok()
            .filter(|v| (min..=max).contains(v))
            .ok_or_else(|| {
                self.bad(format!(
                    "expected an integer in {min}..={max}, got `{value}`"
                ))
            })
    }

    fn path(&self) -> Result<PathBuf, ConfigError> {
        non_empty_path(self.value).ok_or_else(|| self.bad("empty path".into()))
    }

    fn ip(&self) -> Result<IpAddr, ConfigError> {
        let value = self.value;
        value
            .parse()
            .map_err(|_| self.bad(format!("expected an IP address, got `{value}`")))
    }

    /// A switch of ZooKeeper's for something this server does not offer: `false` is what
    /// it does; `true` is refused (with `refusal`) rather than ignored.
    fn off_only(&self, refusal: &str) -> Result<(), ConfigError> {
        match self.value {
            "false" => Ok(()),
            "true" => Err(self.bad(refusal.to_owned())),
            value => Err(self.bad(format!("expected true or false, got `{value}`"))),
        }
    }

    /// A key no family took: accepted with a line in the log (quietly when ZooKeeper has
    /// it and it means nothing here).
    fn unused(&self) {
        let (file, line, key) = (self.file.display(), self.line, self.key);
        if ACCEPTED_UNUSED.contains(&key) {
            tracing::info!("{file}:{line}: `{key}` is accepted but has no effect here");
        } else {
            tracing::warn!("{file}:{line}: unknown key `{key}` ignored");
        }
    }
}

/// The keys of one family (`ssl.*`, `metricsProvider.*`) with their values and lines, checked
/// together once the file is read.
#[derive(Default)]
struct KeyFamily(BTreeMap<&'static str, (String, usize)>);

impl KeyFamily {
    /// Keeps `entry` as `known`, its name in the family's list; a key given twice is an error.
    fn insert(&mut self, known: &'static str, entry: &Entry<'_>) -> Result<(), ConfigError> {
        match self.0.insert(known, (entry.value.to_owned(), entry.line)) {
            Some(_) => Err(entry.bad("given twice".into())),
            None => Ok(()),
        }
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|(v, _)| v.as_str())
    }

    /// The error that names `key` and the line it was given on (0 when it was not).
    fn bad(&self, file: &Path, key: &str, reason: String) -> ConfigError {
        ConfigError::Invalid {
            file: file.to_owned(),
            line: self.0.get(key).map_or(0, |(_, l)| *l),
            key: key.to_owned(),
            reason,
        }
    }
}

/// A zoo.cfg while its lines are read: ZooKeeper's defaults until a line says otherwise,
/// and what is checked once the whole file is read (dataDir given, session timeouts in
/// order, the `ssl.*` and `metricsProvider.*` families).
struct Draft<'a> {
    file: &'a Path,
    tick_ms: u32,
    init_limit_ticks: u32,
    sync_limit_ticks: u32,
    data_dir: Option<PathBuf>,
    data_log_dir: Option<PathBuf>,
    client_port: u16,
    client_port_address: IpAddr,
    max_client_cnxns: u32,
    /// `minSessionTimeout` and its line.
    min_timeout: Option<(u32, usize)>,
    /// `maxSessionTimeout` and its line.
    max_timeout: Option<(u32, usize)>,
    snap_count: u64,
    snap_retain_count: u32,
    jute_max_buffer_bytes: u32,
    global_outstanding_limit: u32,
    connection_queue_bytes_max: u64,
    super_digest: Option<String>,
    quorum_secret_file: Option<PathBuf>,
    four_letter_whitelist: BTreeSet<String>,
    force_sync: bool,
    servers: BTreeMap<u64, PeerAddress>,
    secure_client_port: Option<u16>,
    secure_client_port_address: IpAddr,
    x509_super_user: Option<String>,
    metrics_keys: KeyFamily,
    ssl: KeyFamily,
}

impl<'a> Draft<'a> {
    fn new(file: &'a Path) -> Draft<'a> {
        Draft {
            file,
            tick_ms: 3000,
            init_limit_ticks: 10,
            sync_limit_ticks: 5,
            data_dir: None,
            data_log_dir: None,
            client_port: 2181,
            client_port_address: IpAddr::from([0, 0, 0, 0]),
            max_client_cnxns: 60,
            min_timeout: None,
            max_timeout: None,
            snap_count: 100_000,
            snap_retain_count: 3,
            jute_max_buffer_bytes: 0xfffff,
            global_outstanding_limit: 1000,
            connection_queue_bytes_max: DEFAULT_CONNECTION_QUEUE_BYTES_MAX,
            super_digest: None,
            quorum_secret_file: None,
            four_letter_whitelist: ["srvr".to_string()].into(),
            force_sync: true,
            servers: BTreeMap::new(),
            secure_client_port: None,
            secure_client_port_address: IpAddr::from([0, 0, 0, 0]),
            x509_super_user: None,
            metrics_keys: KeyFamily::default(),
            ssl: KeyFamily::default(),
        }
    }

    /// The keys of this server's own work: time, storage, the plain client port, limits,
    /// the four-letter words. False for any other key.
    fn server_line(&mut self, e: &Entry<'_>) -> Result<bool, ConfigError> {
        match e.key {
            "tickTime" => self.tick_ms = e.num(1, 3_600_000)? as u32,
            "dataDir" => self.data_dir = Some(e.path()?),
            "dataLogDir" => self.data_log_dir = Some(e.path()?),
            "clientPort" => self.client_port = e.num(0, 65535)? as u16,
            "clientPortAddress" => self.client_port_address = e.ip()?,
            "maxClientCnxns" => self.max_client_cnxns = e.num(0, 1_000_000)? as u32,
            "minSessionTimeout" => {
                self.min_timeout = Some((e.num(1, i32::MAX as u64)? as u32, e.line))
            }
            "maxSessionTimeout" => {
                self.max_timeout = Some((e.num(1, i32::MAX as u64)? as u32, e.line))
            }
            "snapCount" => self.snap_count = e.num(2, u32::MAX as u64)?,
            "autopurge.snapRetainCount" => self.snap_retain_count = e.num(1, 10_000)? as u32,
            "jute.maxbuffer" => self.jute_max_buffer_bytes = e.num(1024, 256 << 20)? as u32,
            "globalOutstandingLimit" => self.global_outstanding_limit = e.num(1, 1_000_000)? as u32,
            "connectionQueueBytesMax" => self.connection_queue_bytes_max = e.num(4096, 1 << 40)?,
            "forceSync" => {
                self.force_sync = match e.value {
                    "yes" | "true" => true,
                    "no" | "false" => false,
                    value => return Err(e.bad(format!("expected yes or no, got `{value}`"))),
                }
            }
            "4lw.commands.whitelist" => {
                let mut set = BTreeSet::new();
                for word in e.value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                    if word == "*" {
                        set.extend(FOUR_LETTER_WORDS.iter().map(|w| w.to_string()));
                    } else if FOUR_LETTER_WORDS.contains(&word) {
                        set.insert(word.to_owned());
                    } else {
                        return Err(e.bad(format!("unknown four-letter word `{word}`")));
                    }
                }
                self.four_letter_whitelist = set;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The keys of the ensemble: its members (`server.N`), their time limits, how they
    /// authenticate each other; quorum SASL and quorum TLS are refused when switched on.
    fn quorum_line(&mut self, e: &Entry<'_>) -> Result<bool, ConfigError> {
        match e.key {
            "initLimit" => self.init_limit_ticks = e.num(1, 1_000_000)? as u32,
            "syncLimit" => self.sync_limit_ticks = e.num(1, 1_000_000)? as u32,
            "quorum.auth.secretFile" => self.quorum_secret_file = Some(e.path()?),
            "quorum.auth.enableSasl"
            | "quorum.auth.learnerRequireSasl"
            | "quorum.auth.serverRequireSasl" => e.off_only(
                "quorum SASL is not offered by this server; authenticate peers with \
                 quorum.auth.secretFile (docs/coordinator.md)",
            )?,
            "sslQuorum" | "sslQuorumReloadCertFiles" => e.off_only(
                "TLS between ensemble members is not offered; peers authenticate \
                 with quorum.auth.secretFile (docs/coordinator.md)",
            )?,
            _ if e.key.starts_with("server.") => {
                let id = e.key["server.".len()..]
                    .parse::<u64>()
                    .ok()
                    .filter(|id| (1..=255).contains(id))
                    .ok_or_else(|| e.bad("server id must be an integer in 1..=255".into()))?;
                let peer = parse_peer(e.value).map_err(|reason| e.bad(reason))?;
                if self.servers.insert(id, peer).is_some() {
                    return Err(e.bad("server listed twice".into()));
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The keys of client security: the secure (TLS) port and its `ssl.*` files, the super
    /// users, the auth providers. An `ssl.*` key this server does not act on is refused.
    fn security_line(&mut self, e: &Entry<'_>) -> Result<bool, ConfigError> {
        match e.key {
            "DigestAuthenticationProvider.superDigest"
            | "zookeeper.DigestAuthenticationProvider.superDigest" => {
                match e.value.split_once(':') {
                    Some((user, hash))
                        if !user.is_empty() && !hash.is_empty() && !hash.contains(':') =>
                    {
                        self.super_digest = Some(e.value.to_owned())
                    }
                    _ => {
                        return Err(e.bad(
                            "expected USER:BASE64(SHA1(USER:PASSWORD)) (the value is not \
                             shown here)"
                                .into(),
                        ))
                    }
                }
            }
            "secureClientPort" => self.secure_client_port = Some(e.num(0, 65535)? as u16),
            "secureClientPortAddress" => self.secure_client_port_address = e.ip()?,
            "X509AuthenticationProvider.superUser"
            | "zookeeper.X509AuthenticationProvider.superUser" => {
                if e.value.is_empty() {
                    return Err(e.bad("expected a certificate subject such as CN=admin".into()));
                }
                self.x509_super_user = Some(e.value.to_owned())
            }
            "portUnification" => e.off_only(
                "one port for TLS and plain clients is not offered; serve TLS on \
                 secureClientPort",
            )?,
            _ if e.key.starts_with("ssl.") || e.key.starts_with("zookeeper.ssl.") => {
                let name = e.key.strip_prefix("zookeeper.").unwrap_or(e.key);
                let Some(known) = SSL_KEYS.iter().find(|k| **k == name) else {
                    return Err(e.bad(format!(
                        "not supported on the secure client port; supported: {}",
                        SSL_KEYS.join(", ")
                    )));
                };
                self.ssl.insert(known, e)?;
            }
            _ if e.key.starts_with("authProvider.") => {
                if !AUTH_PROVIDERS.contains(&e.value) {
                    return Err(e.bad(format!(
                        "only ZooKeeper's built-in providers exist here: {}",
                        AUTH_PROVIDERS.join(", ")
                    )));
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The `metricsProvider.*` keys, kept for [`metrics_settings`]; one this server does
    /// not act on is refused.
    fn metrics_line(&mut self, e: &Entry<'_>) -> Result<bool, ConfigError> {
        if !e.key.starts_with("metricsProvider.") {
            return Ok(false);
        }
        let Some(known) = METRICS_KEYS.iter().find(|k| **k == e.key) else {
            return Err(e.bad(format!(
                "not offered by this server's Prometheus endpoint (no HTTPS, no \
                 worker pool, histograms instead of rotating summaries); supported: {}",
                METRICS_KEYS.join(", ")
            )));
        };
        self.metrics_keys.insert(known, e)?;
        Ok(true)
    }

    /// The checks that need the whole file, then the configuration.
    fn finish(self) -> Result<ZooConfig, ConfigError> {
        let file = self.file.to_owned();
        let data_dir = self.data_dir.ok_or_else(|| ConfigError::Missing {
            file: file.clone(),
            reason: "dataDir is required".into(),
        })?;
        let (min_timeout, max_timeout) = (self.min_timeout, self.max_timeout);
        let min_session_timeout_ms = min_timeout.map_or(self.tick_ms.saturating_mul(2), |(v, _)| v);
        let max_session_timeout_ms =
            max_timeout.map_or(self.tick_ms.saturating_mul(20), |(v, _)| v);
        if min_session_timeout_ms > max_session_timeout_ms {
            let line = max_timeout.or(min_timeout).map_or(0, |(_, l)| l);
            return Err(ConfigError::Invalid {
                file,
                line,
                key: "maxSessionTimeout".into(),
                reason: format!(
                    "minSessionTimeout {min_session_timeout_ms} is above maxSessionTimeout {max_session_timeout_ms}"
                ),
            });
        }
        let tls = match self.secure_client_port {
            Some(_) => Some(tls_settings(&file, &self.ssl)?),
            None => {
                if let Some((key, (_, line))) = self.ssl.0.iter().next() {
                    return Err(ConfigError::Invalid {
                        file,
                        line: *line,
                        key: key.to_string(),
                        reason: "set without secureClientPort (quorum TLS is not offered; \
                                 peers authenticate with quorum.auth.secretFile)"
                            .into(),
                    });
                }
                None
            }
        };
        let metrics = metrics_settings(&file, &self.metrics_keys)?;
        Ok(ZooConfig {
            source: file,
            tick_ms: self.tick_ms,
            init_limit_ticks: self.init_limit_ticks,
            sync_limit_ticks: self.sync_limit_ticks,
            data_log_dir: self.data_log_dir.unwrap_or_else(|| data_dir.clone()),
            data_dir,
            client_port: self.client_port,
            client_port_address: self.client_port_address,
            max_client_cnxns: self.max_client_cnxns,
            min_session_timeout_ms,
            max_session_timeout_ms,
            snap_count: self.snap_count,
            snap_retain_count: self.snap_retain_count,
            jute_max_buffer_bytes: self.jute_max_buffer_bytes,
            global_outstanding_limit: self.global_outstanding_limit,
            connection_queue_bytes_max: self.connection_queue_bytes_max,
            four_letter_whitelist: self.four_letter_whitelist,
            force_sync: self.force_sync,
            super_digest: self.super_digest,
            quorum_secret_file: self.quorum_secret_file,
            secure_client_port: self.secure_client_port,
            secure_client_port_address: self.secure_client_port_address,
            tls,
            x509_super_user: self.x509_super_user,
            metrics,
            servers: self.servers,
            my_id: None,
        })
    }
}

/// The `ssl.*` keys the secure client port understands (also with ZooKeeper's system
/// property prefix `zookeeper.`). Any other `ssl.` key is refused rather than ignored: a
/// security setting that silently does nothing is worse than a server that does not start.
const SSL_KEYS: &[&str] = &[
    "ssl.keyStore.location",
    "ssl.keyStore.type",
    "ssl.keyStore.password",
    "ssl.trustStore.location",
    "ssl.trustStore.type",
    "ssl.trustStore.password",
    "ssl.clientAuth",
    "ssl.protocol",
    "ssl.enabledProtocols",
];

/// The `metricsProvider.*` keys understood; any other is refused rather than ignored.
const METRICS_KEYS: &[&str] = &[
    "metricsProvider.className",
    "metricsProvider.httpHost",
    "metricsProvider.httpPort",
    "metricsProvider.exportJvmInfo",
];

/// Checks the `metricsProvider.*` values: the Prometheus provider gives the endpoint's
/// settings; ZooKeeper's default provider (or no className) gives none, and then the other
/// keys, which would have no effect, are refused.
fn metrics_settings(file: &Path, keys: &KeyFamily) -> Result<Option<MetricsSettings>, ConfigError> {
    let bad = |key: &str, reason: String| keys.bad(file, key, reason);
    let value = |key: &str| keys.value(key);
    match value("metricsProvider.className") {
        Some(PROMETHEUS_PROVIDER) => {}
        class @ (None | Some(DEFAULT_PROVIDER)) => {
            if let Some(key) = keys.0.keys().find(|k| **k != "metricsProvider.className") {
                return Err(bad(
                    key,
                    format!(
                        "has no effect without metricsProvider.className={PROMETHEUS_PROVIDER}{}",
                        if class.is_some() {
                            " (the default provider serves no HTTP endpoint)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            return Ok(None);
        }
        Some(other) => {
            return Err(bad(
                "metricsProvider.className",
                format!(
                    "`{other}` is not offered; use {PROMETHEUS_PROVIDER} (a /metrics endpoint) or \
                     {DEFAULT_PROVIDER} (mntr only)"
                ),
            ))
        }
    }
    let http_host = match value("metricsProvider.httpHost") {
        None => "0.0.0.0".to_owned(),
        Some("") => return Err(bad("metricsProvider.httpHost", "empty host".into())),
        Some(h) => h.to_owned(),
    };
    let http_port = match value("metricsProvider.httpPort") {
        None => 7000,
        Some(p) => p.parse::<u16>().map_err(|_| {
            bad(
                "metricsProvider.httpPort",
                format!("expected a port in 0..=65535, got `{p}`"),
            )
        })?,
    };
    let export_process_metrics = match value("metricsProvider.exportJvmInfo") {
        None | Some("true") => true,
        Some("false") => false,
        Some(v) => {
            return Err(bad(
                "metricsProvider.exportJvmInfo",
                format!("expected true or false, got `{v}`"),
            ))
        }
    };
    Ok(Some(MetricsSettings {
        http_host,
        http_port,
        export_process_metrics,
    }))
}

/// `authProvider.N` values accepted: the providers this server has built in (digest and ip
/// always; x509 on the secure port).
const AUTH_PROVIDERS: &[&str] = &[
    "org.apache.zookeeper.server.auth.X509AuthenticationProvider",
    "org.apache.zookeeper.server.auth.DigestAuthenticationProvider",
    "org.apache.zookeeper.server.auth.IPAuthenticationProvider",
];

/// Checks the `ssl.*` values of a file with `secureClientPort` and builds the settings.
fn tls_settings(file: &Path, ssl: &KeyFamily) -> Result<TlsSettings, ConfigError> {
    let bad = |key: &str, reason: String| ssl.bad(file, key, reason);
    let value = |key: &str| ssl.value(key);
    // A store's type: `PEM` (any case), or inferred from the file name as ZooKeeper does;
    // the Java formats (JKS, PKCS12, BCFKS) cannot be read here.
    let pem_file = |location: &str, kind: &str| -> Result<Option<PathBuf>, ConfigError> {
        let loc_key = format!("ssl.{kind}.location");
        let type_key = format!("ssl.{kind}.type");
        let Some(path) = value(&loc_key).filter(|p| !p.is_empty()) else {
            if value(&type_key).is_some() {
                return Err(bad(&type_key, format!("set without {loc_key}")));
            }
            return Ok(None);
        };
        match value(&type_key) {
            Some(t) if t.eq_ignore_ascii_case("PEM") => {}
            Some(t) => {
                return Err(bad(
                    &type_key,
                    format!("`{t}` is not supported; only PEM files are read ({location})"),
                ))
            }
            None if path.to_ascii_lowercase().ends_with(".pem") => {}
            None => {
                return Err(bad(
                    &loc_key,
                    format!(
                        "cannot tell the store type of `{path}` (not *.pem); set {type_key}=PEM \
                         (JKS and PKCS12 stores are not supported)"
                    ),
                ))
            }
        }
        Ok(Some(PathBuf::from(path)))
    };
    let key_store = pem_file("the key store", "keyStore")?.ok_or_else(|| ConfigError::Missing {
        file: file.to_owned(),
        reason: "secureClientPort needs ssl.keyStore.location (a PEM file with the private key \
                 and the certificate chain)"
            .into(),
    })?;
    let trust_store = pem_file("the trust store", "trustStore")?;
    if value("ssl.keyStore.password").is_some_and(|p| !p.is_empty()) {
        return Err(bad(
            "ssl.keyStore.password",
            "encrypted PEM private keys are not supported; store the key unencrypted (readable \
             only by the server's user) and leave the password empty"
                .into(),
        ));
    }
    let client_auth = match value("ssl.clientAuth") {
        None => ClientAuth::Need,
        Some(v) if v.eq_ignore_ascii_case("none") => ClientAuth::None,
        Some(v) if v.eq_ignore_ascii_case("want") => ClientAuth::Want,
        Some(v) if v.eq_ignore_ascii_case("need") => ClientAuth::Need,
        Some(v) => {
            return Err(bad(
                "ssl.clientAuth",
                format!("expected none, want or need, got `{v}`"),
            ))
        }
    };
    if client_auth != ClientAuth::None && trust_store.is_none() {
        return Err(bad(
            "ssl.clientAuth",
            format!(
                "ssl.clientAuth={} (need is the default) verifies client certificates against \
                 ssl.trustStore.location, which is not set (there is no system trust store \
                 here); set it, or ssl.clientAuth=none",
                if client_auth == ClientAuth::Want {
                    "want"
                } else {
                    "need"
                }
            ),
        ));
    }
    let version = |key: &str, v: &str| match v {
        "TLSv1.2" => Ok(TlsVersion::Tls12),
        "TLSv1.3" => Ok(TlsVersion::Tls13),
        _ => Err(bad(key, format!("expected TLSv1.2 or TLSv1.3, got `{v}`"))),
    };
    let versions = match (value("ssl.enabledProtocols"), value("ssl.protocol")) {
        (Some(list), _) => {
            let mut out = Vec::new();
            for v in list.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                let v = version("ssl.enabledProtocols", v)?;
                if !out.contains(&v) {
                    out.push(v);
                }
            }
            if out.is_empty() {
                return Err(bad("ssl.enabledProtocols", "empty list".into()));
            }
            out.sort();
            out
        }
        // As ZooKeeper: `ssl.protocol` alone enables that version (TLSv1.3 also allows 1.2).
        (None, Some(p)) => match version("ssl.protocol", p)? {
            TlsVersion::Tls13 => vec![TlsVersion::Tls12, TlsVersion::Tls13],
            TlsVersion::Tls12 => vec![TlsVersion::Tls12],
        },
        (None, None) => vec![TlsVersion::Tls12, TlsVersion::Tls13],
    };
    Ok(TlsSettings {
        key_store,
        trust_store,
        client_auth,
        versions,
    })
}

fn non_empty_path(value: &str) -> Option<PathBuf> {
    (!value.is_empty()).then(|| PathBuf::from(value))
}

fn parse_port(text: &str, what: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{what} `{text}` is not a port in 1..=65535"))
}

fn parse_peer(value: &str) -> Result<PeerAddress, String> {
    let (quorum, client) = match value.split_once(';') {
        Some((q, c)) => (q, Some(c)),
        None => (value, None),
    };
    // host may be an IPv6 literal in brackets.
    let (host, rest) = if let Some(stripped) = quorum.strip_prefix('[') {
        let (h, r) = stripped
            .split_once(']')
            .ok_or_else(|| "unclosed [ in IPv6 address".to_string())?;
        (h.to_owned(), r.strip_prefix(':').unwrap_or(r))
    } else {
        let (h, r) = quorum
            .split_once(':')
            .ok_or_else(|| "expected host:peerPort:electionPort".to_string())?;
        (h.to_owned(), r)
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    let parts: Vec<&str> = rest.split(':').collect();
    if parts.len() < 2 || parts.len() > 3 {
        return Err("expected host:peerPort:electionPort[:participant|observer]".into());
    }
    let role = match parts.get(2) {
        None | Some(&"participant") => PeerRole::Participant,
        Some(&"observer") => PeerRole::Observer,
        Some(other) => return Err(format!("unknown role `{other}`")),
    };
    let client = match client {
        None => None,
        Some(c) => Some(match c.rsplit_once(':') {
            Some((addr, port)) => (Some(addr.to_owned()), parse_port(port, "client port")?),
            None => (None, parse_port(c, "client port")?),
        }),
    };
    Ok(PeerAddress {
        host,
        peer_port: parse_port(parts[0], "peer port")?,
        election_port: parse_port(parts[1], "election port")?,
        role,
        client,
    })
}

#[cfg(test)]
mod tests {
    //! Proves a real-world zoo.cfg parses with ZooKeeper's defaults, server lines in all
    //! their forms are understood, and bad values are rejected naming the key.
    use super::*;

    fn parse(text: &str) -> Result<ZooConfig, ConfigError> {
        ZooConfig::parse(text, Path::new("zoo.cfg"))
    }

    #[test]
    fn defaults_follow_zookeeper() {
        let c = parse("tickTime=2000\ndataDir=/tmp/zk\nclientPort=2181\n# comment\n").unwrap();
        assert_eq!(c.min_session_timeout_ms, 4000);
        assert_eq!(c.max_session_timeout_ms, 40000);
        assert_eq!(c.data_log_dir, PathBuf::from("/tmp/zk"));
        assert_eq!(c.max_client_cnxns, 60);
        assert!(c.is_standalone());
        assert!(c.four_letter_whitelist.contains("srvr"));
        assert!(!c.four_letter_whitelist.contains("ruok"));
        assert_eq!(
            c.connection_queue_bytes_max,
            DEFAULT_CONNECTION_QUEUE_BYTES_MAX
        );
        let c = parse("dataDir=/d\nconnectionQueueBytesMax=65536\n").unwrap();
        assert_eq!(c.connection_queue_bytes_max, 65536);
    }

    #[test]
    fn security_keys_parse_and_quorum_sasl_is_refused() {
        let c = parse(
            "dataDir=/d\nDigestAuthenticationProvider.superDigest=super:D/InIHSb7yEEbrWz8b9l71RjZJU=\n\
             quorum.auth.secretFile=/etc/q.secret\nquorum.auth.enableSasl=false\n",
        )
        .unwrap();
        assert_eq!(
            c.super_digest.as_deref(),
            Some("super:D/InIHSb7yEEbrWz8b9l71RjZJU=")
        );
        assert_eq!(c.quorum_secret_file, Some(PathBuf::from("/etc/q.secret")));
        assert!(parse("dataDir=/d\n").unwrap().super_digest.is_none());
        for text in [
            "dataDir=/d\nquorum.auth.enableSasl=true\n",
            "dataDir=/d\nquorum.auth.serverRequireSasl=true\n",
            "dataDir=/d\nDigestAuthenticationProvider.superDigest=nohash\n",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn secure_client_port_keys_parse_as_zookeeper_names_them() {
        let c = parse(
            "dataDir=/d\nsecureClientPort=2182\nsecureClientPortAddress=127.0.0.1\n\
             ssl.keyStore.location=/etc/zk/server.pem\nssl.keyStore.type=PEM\n\
             ssl.trustStore.location=/etc/zk/ca.crt\nssl.trustStore.type=pem\n\
             ssl.clientAuth=want\nssl.protocol=TLSv1.2\n\
             authProvider.x509=org.apache.zookeeper.server.auth.X509AuthenticationProvider\n\
             X509AuthenticationProvider.superUser=CN=admin,O=ops\n\
             sslQuorum=false\nportUnification=false\n",
        )
        .unwrap();
        assert_eq!(c.secure_client_port, Some(2182));
        assert_eq!(c.secure_client_port_address, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(c.x509_super_user.as_deref(), Some("CN=admin,O=ops"));
        let tls = c.tls.unwrap();
        assert_eq!(tls.key_store, PathBuf::from("/etc/zk/server.pem"));
        assert_eq!(tls.trust_store, Some(PathBuf::from("/etc/zk/ca.crt")));
        assert_eq!(tls.client_auth, ClientAuth::Want);
        assert_eq!(tls.versions, vec![TlsVersion::Tls12]);
        // Defaults: clientAuth need, both versions, the type inferred from `.pem`.
        let c = parse(
            "dataDir=/d\nsecureClientPort=2182\nssl.keyStore.location=/k.pem\n\
             zookeeper.ssl.trustStore.location=/ca.pem\n",
        )
        .unwrap();
        assert_eq!(c.secure_client_port_address, IpAddr::from([0, 0, 0, 0]));
        let tls = c.tls.unwrap();
        assert_eq!(tls.client_auth, ClientAuth::Need);
        assert_eq!(tls.versions, vec![TlsVersion::Tls12, TlsVersion::Tls13]);
        assert!(parse("dataDir=/d\n").unwrap().tls.is_none());
    }

    #[test]
    fn unsupported_tls_values_are_refused_naming_the_key() {
        let base = "dataDir=/d\nsecureClientPort=2182\nssl.keyStore.location=/k.pem\n\
                    ssl.trustStore.location=/ca.pem\n";
        let mut cases: Vec<(String, &str)> = [
            ("ssl.keyStore.type=JKS\n", "ssl.keyStore.type"),
            ("ssl.trustStore.type=PKCS12\n", "ssl.trustStore.type"),
            ("ssl.clientAuth=required\n", "ssl.clientAuth"),
            ("ssl.keyStore.password=secret\n", "ssl.keyStore.password"),
            ("ssl.protocol=TLSv1.1\n", "ssl.protocol"),
            (
                "ssl.enabledProtocols=TLSv1.3,SSLv3\n",
                "ssl.enabledProtocols",
            ),
            (
                "ssl.ciphersuites=TLS_AES_128_GCM_SHA256\n",
                "ssl.ciphersuites",
            ),
            (
                "ssl.hostnameVerification=true\n",
                "ssl.hostnameVerification",
            ),
            ("authProvider.1=com.example.Custom\n", "authProvider.1"),
            ("secureClientPortAddress=here\n", "secureClientPortAddress"),
            ("sslQuorum=true\n", "sslQuorum"),
            ("portUnification=true\n", "portUnification"),
        ]
        .into_iter()
        .map(|(extra, key)| (format!("{base}{extra}"), key))
        .collect();
        // A JKS file name, clientAuth need without a trust store, ssl without the port.
        cases.push((
            "dataDir=/d\nsecureClientPort=2182\nssl.keyStore.location=/k.jks\nssl.clientAuth=none\n"
                .into(),
            "ssl.keyStore.location",
        ));
        cases.push((
            "dataDir=/d\nsecureClientPort=2182\nssl.keyStore.location=/k.pem\n".into(),
            "ssl.clientAuth",
        ));
        cases.push((
            "dataDir=/d\nssl.keyStore.location=/k.pem\n".into(),
            "ssl.keyStore.location",
        ));
        for (text, key) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
        }
        let e = parse("dataDir=/d\nsecureClientPort=2182\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ssl.keyStore.location"), "{e}");
    }

    #[test]
    fn metrics_provider_keys_are_honoured_or_refused() {
        assert_eq!(parse("dataDir=/d\n").unwrap().metrics, None);
        let c = parse(&format!(
            "dataDir=/d\nmetricsProvider.className={PROMETHEUS_PROVIDER}\n"
        ))
        .unwrap();
        assert_eq!(
            c.metrics,
            Some(MetricsSettings {
                http_host: "0.0.0.0".into(),
                http_port: 7000,
                export_process_metrics: true
            })
        );
        let c = parse(&format!(
            "dataDir=/d\nmetricsProvider.className={PROMETHEUS_PROVIDER}\n\
             metricsProvider.httpHost=127.0.0.1\nmetricsProvider.httpPort=0\n\
             metricsProvider.exportJvmInfo=false\n"
        ))
        .unwrap();
        assert_eq!(
            c.metrics,
            Some(MetricsSettings {
                http_host: "127.0.0.1".into(),
                http_port: 0,
                export_process_metrics: false
            })
        );
        assert_eq!(
            parse(&format!(
                "dataDir=/d\nmetricsProvider.className={DEFAULT_PROVIDER}\n"
            ))
            .unwrap()
            .metrics,
            None
        );
        let prom = format!("dataDir=/d\nmetricsProvider.className={PROMETHEUS_PROVIDER}\n");
        for (text, key) in [
            ("dataDir=/d\nmetricsProvider.httpPort=7001\n".to_string(), "metricsProvider.httpPort"),
            (
                format!("dataDir=/d\nmetricsProvider.className={DEFAULT_PROVIDER}\nmetricsProvider.exportJvmInfo=false\n"),
                "metricsProvider.exportJvmInfo",
            ),
            (
                "dataDir=/d\nmetricsProvider.className=com.example.Provider\n".into(),
                "metricsProvider.className",
            ),
            (format!("{prom}metricsProvider.httpPort=70000\n"), "metricsProvider.httpPort"),
            (format!("{prom}metricsProvider.exportJvmInfo=yes\n"), "metricsProvider.exportJvmInfo"),
            (format!("{prom}metricsProvider.httpsPort=7443\n"), "metricsProvider.httpsPort"),
            (format!("{prom}metricsProvider.numWorkerThreads=1\n"), "metricsProvider.numWorkerThreads"),
            (format!("{prom}metricsProvider.httpHost=\n"), "metricsProvider.httpHost"),
        ] {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
        }
    }

    #[test]
    fn ensemble_lines_parse() {
        let c = parse(
            "dataDir=/d\nserver.1=127.0.0.1:2888:3888\nserver.2=[::1]:2889:3889:observer\n\
             server.3=h3:2890:3890;127.0.0.1:2183\n4lw.commands.whitelist=*\nadmin.enableServer=false\n",
        )
        .unwrap();
        assert_eq!(c.servers.len(), 3);
        assert_eq!(c.servers[&2].host, "::1");
        assert_eq!(c.servers[&2].role, PeerRole::Observer);
        assert_eq!(c.servers[&3].client, Some((Some("127.0.0.1".into()), 2183)));
        assert!(!c.is_standalone());
        assert!(c.four_letter_whitelist.contains("mntr"));
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            ("dataDir=/d\ntickTime=abc", "tickTime"),
            ("dataDir=/d\nclientPort=70000", "clientPort"),
            ("dataDir=/d\nserver.1=host:1", "server.1"),
            ("dataDir=/d\nclientPortAddress=nowhere", "clientPortAddress"),
            (
                "dataDir=/d\nconnectionQueueBytesMax=10",
                "connectionQueueBytesMax",
            ),
            (
                "dataDir=/d\nminSessionTimeout=9000\nmaxSessionTimeout=100",
                "maxSessionTimeout",
            ),
            (
                "dataDir=/d\n4lw.commands.whitelist=ruok,xyzw",
                "4lw.commands.whitelist",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{e}");
        }
        assert!(parse("tickTime=2000").is_err(), "dataDir is required");
        assert!(matches!(
            parse("dataDir=/d\njunk line"),
            Err(ConfigError::Syntax { line: 2, .. })
        ));
    }

    #[test]
    fn myid_is_required_and_checked_for_ensembles() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "dataDir={}\nserver.1=a:1:2\nserver.2=b:1:2\n",
                dir.path().display()
            ),
        )
        .unwrap();
        assert!(ZooConfig::load(&cfg).is_err(), "missing myid");
        std::fs::write(dir.path().join("myid"), "7\n").unwrap();
        assert!(ZooConfig::load(&cfg)
            .unwrap_err()
            .to_string()
            .contains("myid"));
        std::fs::write(dir.path().join("myid"), "2\n").unwrap();
        assert_eq!(ZooConfig::load(&cfg).unwrap().my_id, Some(2));
    }
}
