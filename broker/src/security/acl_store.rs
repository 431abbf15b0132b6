//! Where the ACLs live and how every shard reads them.
//!
//! * Kafka's JSON of one resource's ACLs (`{"version":1,"acls":[{"principal":"User:alice",
//!   "permissionType":"Allow","operation":"Read","host":"*"}]}`), the data of a
//!   `/kafka-acl/<ResourceType>/<name>` znode in cluster mode ([`encode_resource`],
//!   [`decode_resource`]), and the names Kafka uses in it and in its paths.
//! * A single node's `acls.json` in the data directory ([`AclFile`]): one entry per resource
//!   pattern with that same JSON, replaced whole with [`crate::data_file::replace`].
//! * [`SharedAcls`]: the current [`Authorizer`] of the process, an `Arc` swapped whole on
//!   every change with a generation counter; each shard keeps its own clone
//!   ([`ShardAcls`]) and only compares the generation (one atomic load) per request, so the
//!   request path takes no lock.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::authorizer::{
    operation, pattern_type, permission, resource_type, AclBinding, Authorizer,
};

/// The file's name in a single node's data directory.
pub const ACLS_FILE: &str = "acls.json";

const RESOURCE_TYPE_NAMES: &[(i8, &str)] = &[
    (resource_type::TOPIC, "Topic"),
    (resource_type::GROUP, "Group"),
    (resource_type::CLUSTER, "Cluster"),
    (resource_type::TRANSACTIONAL_ID, "TransactionalId"),
    (resource_type::DELEGATION_TOKEN, "DelegationToken"),
    (resource_type::USER, "User"),
];

const OPERATION_NAMES: &[(i8, &str)] = &[
    (operation::ALL, "All"),
    (operation::READ, "Read"),
    (operation::WRITE, "Write"),
    (operation::CREATE, "Create"),
    (operation::DELETE, "Delete"),
    (operation::ALTER, "Alter"),
    (operation::DESCRIBE, "Describe"),
    (operation::CLUSTER_ACTION, "ClusterAction"),
    (operation::DESCRIBE_CONFIGS, "DescribeConfigs"),
    (operation::ALTER_CONFIGS, "AlterConfigs"),
    (operation::IDEMPOTENT_WRITE, "IdempotentWrite"),
    (operation::CREATE_TOKENS, "CreateTokens"),
    (operation::DESCRIBE_TOKENS, "DescribeTokens"),
];

fn name_of(table: &[(i8, &'static str)], code: i8) -> &'static str {
    table
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("Unknown", |(_, n)| n)
}

/// Kafka accepts its names in any case, with or without `_` (`CLUSTER_ACTION`, `ClusterAction`).
fn code_of(table: &[(i8, &str)], name: &str) -> Option<i8> {
    let wanted: String = name.chars().filter(|c| *c != '_').collect();
    table
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(&wanted))
        .map(|(c, _)| *c)
}

/// `Topic`, `Group`, `Cluster`... as in Kafka's znode paths.
pub fn resource_type_name(kind: i8) -> &'static str {
    name_of(RESOURCE_TYPE_NAMES, kind)
}

pub fn parse_resource_type(name: &str) -> Option<i8> {
    code_of(RESOURCE_TYPE_NAMES, name)
}

/// `Read`, `Write`, `ClusterAction`... as in Kafka's ACL JSON.
pub fn operation_name(op: i8) -> &'static str {
    name_of(OPERATION_NAMES, op)
}

pub fn parse_operation(name: &str) -> Option<i8> {
    code_of(OPERATION_NAMES, name)
}

const PERMISSION_NAMES: &[(i8, &str)] = &[(permission::ALLOW, "Allow"), (permission::DENY, "Deny")];

const PATTERN_NAMES: &[(i8, &str)] = &[
    (pattern_type::LITERAL, "LITERAL"),
    (pattern_type::PREFIXED, "PREFIXED"),
];

/// `Allow` or `Deny`.
pub fn permission_name(perm: i8) -> &'static str {
    name_of(PERMISSION_NAMES, perm)
}

pub fn parse_permission(name: &str) -> Option<i8> {
    code_of(PERMISSION_NAMES, name)
}

/// `LITERAL` or `PREFIXED`.
pub fn pattern_name(pattern: i8) -> &'static str {
    name_of(PATTERN_NAMES, pattern)
}

pub fn parse_pattern(name: &str) -> Option<i8> {
    code_of(PATTERN_NAMES, name)
}

/// One ACL of a resource in Kafka's JSON.
#[derive(Debug, Serialize, Deserialize)]
struct AclEntry {
    principal: String,
    #[serde(rename = "permissionType")]
    permission_type: String,
    operation: String,
    host: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ResourceAcls {
    version: u32,
    acls: Vec<AclEntry>,
}

/// The ACLs of one resource pattern as Kafka writes them (all of `acls` are of it).
pub fn encode_resource<'a>(acls: impl IntoIterator<Item = &'a AclBinding>) -> Vec<u8> {
    let doc = ResourceAcls {
        version: 1,
        acls: acls
            .into_iter()
            .map(|acl| AclEntry {
                principal: acl.principal.clone(),
                permission_type: permission_name(acl.permission).into(),
                operation: operation_name(acl.operation).into(),
                host: acl.host.clone(),
            })
            .collect(),
    };
    serde_json::to_vec(&doc).expect("ACL JSON always encodes")
}

/// The ACLs in Kafka's JSON of the resource (`kind`, `pattern`, `name`); `place` (a path)
/// names it in errors.
pub fn decode_resource(
    kind: i8,
    pattern: i8,
    name: &str,
    bytes: &[u8],
    place: &str,
) -> Result<Vec<AclBinding>, String> {
    let doc: ResourceAcls =
        serde_json::from_slice(bytes).map_err(|e| format!("{place}: not Kafka's ACL JSON: {e}"))?;
    if doc.version != 1 {
        return Err(format!("{place}: unknown version {}", doc.version));
    }
    doc.acls
        .into_iter()
        .map(|entry| {
            let acl = AclBinding {
                resource_type: kind,
                resource_name: name.to_owned(),
                pattern_type: pattern,
                operation: parse_operation(&entry.operation)
                    .ok_or_else(|| format!("{place}: unknown operation {:?}", entry.operation))?,
                permission: parse_permission(&entry.permission_type).ok_or_else(|| {
                    format!("{place}: unknown permission {:?}", entry.permission_type)
                })?,
                principal: entry.principal,
                host: entry.host,
            };
            super::authorizer::validate(&acl).map_err(|e| format!("{place}: {e}"))?;
            Ok(acl)
        })
        .collect()
}

/// A resource pattern: (resource type, pattern type, name).
pub type ResourceKey = (i8, i8, String);

/// `acls` grouped by resource pattern.
pub fn by_resource<'a>(
    acls: impl IntoIterator<Item = &'a AclBinding>,
) -> BTreeMap<ResourceKey, Vec<&'a AclBinding>> {
    let mut out: BTreeMap<ResourceKey, Vec<&AclBinding>> = BTreeMap::new();
    for acl in acls {
        out.entry((
            acl.resource_type,
            acl.pattern_type,
            acl.resource_name.clone(),
        ))
        .or_default()
        .push(acl);
    }
    out
}

/// A single node's ACLs: `acls.json` in the data directory.
pub struct AclFile;

#[derive(Serialize, Deserialize)]
struct AclFileDoc {
    version: u32,
    resources: Vec<AclFileResource>,
}

#[derive(Serialize, Deserialize)]
struct AclFileResource {
    #[serde(rename = "resourceType")]
    resource_type: String,
    #[serde(rename = "patternType")]
    pattern_type: String,
    name: String,
    acls: serde_json::Value,
}

impl AclFile {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(ACLS_FILE)
    }

    /// The ACLs of `data_dir` (none when the file does not exist yet).
    pub fn load(data_dir: &Path) -> Result<Vec<AclBinding>, String> {
        let path = Self::path(data_dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let doc: AclFileDoc =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        if doc.version != 1 {
            return Err(format!(
                "{}: unknown version {}",
                path.display(),
                doc.version
            ));
        }
        let mut acls = Vec::new();
        for (at, resource) in doc.resources.into_iter().enumerate() {
            let place = format!("{} resource #{at}", path.display());
            let kind = parse_resource_type(&resource.resource_type).ok_or_else(|| {
                format!(
                    "{place}: unknown resource type {:?}",
                    resource.resource_type
                )
            })?;
            let pattern = parse_pattern(&resource.pattern_type).ok_or_else(|| {
                format!("{place}: unknown pattern type {:?}", resource.pattern_type)
            })?;
            let inner = serde_json::json!({"version": 1, "acls": resource.acls});
            let inner = serde_json::to_vec(&inner).map_err(|e| format!("{place}: {e}"))?;
            acls.extend(decode_resource(
                kind,
                pattern,
                &resource.name,
                &inner,
                &place,
            )?);
        }
        Ok(acls)
    }

    /// Replaces the file with `acls`.
    pub fn save(data_dir: &Path, acls: &[AclBinding]) -> Result<(), String> {
        let path = Self::path(data_dir);
        let mut resources = Vec::new();
        for ((kind, pattern, name), acls) in by_resource(acls) {
            let doc: ResourceAcls =
                serde_json::from_slice(&encode_resource(acls)).map_err(|e| e.to_string())?;
            resources.push(AclFileResource {
                resource_type: resource_type_name(kind).into(),
                pattern_type: pattern_name(pattern).into(),
                name,
                acls: serde_json::to_value(doc.acls).map_err(|e| e.to_string())?,
            });
        }
        let bytes = serde_json::to_vec_pretty(&AclFileDoc {
            version: 1,
            resources,
        })
        .map_err(|e| e.to_string())?;
        crate::data_file::replace(&path, &bytes, 0o600)
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// `--authorizer`: Kafka's `super.users` and `allow.everyone.if.no.acl.found`.
#[derive(Debug, Clone, Default)]
pub struct AuthorizerConfig {
    /// Principals (`User:name`) that pass every check.
    pub super_users: Vec<String>,
    pub allow_if_no_acl: bool,
}

impl AuthorizerConfig {
    /// Kafka's `super.users` text: `User:admin;User:ops`.
    pub fn parse_super_users(text: &str) -> Result<Vec<String>, String> {
        text.split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once(':') {
                Some((kind, name)) if !kind.is_empty() && !name.is_empty() => Ok(p.to_owned()),
                _ => Err(format!("super user {p:?} is not a principal (User:name)")),
            })
            .collect()
    }
}

/// What changes a single node's ACLs or where a cluster keeps them.
#[derive(Debug, Clone)]
pub enum AclBackend {
    /// A single node: `acls.json` in this data directory.
    File(PathBuf),
    /// Cluster mode: the coordinator's `/kafka-acl*` znodes, written by the cluster agent.
    Coordinator,
}

/// The process's current ACLs and settings, shared by every shard.
#[derive(Debug)]
pub struct SharedAcls {
    generation: AtomicU64,
    current: Mutex<Arc<Authorizer>>,
    pub backend: AclBackend,
}

impl SharedAcls {
    pub fn new(authorizer: Authorizer, backend: AclBackend) -> Arc<SharedAcls> {
        Arc::new(SharedAcls {
            generation: AtomicU64::new(1),
            current: Mutex::new(Arc::new(authorizer)),
            backend,
        })
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> Arc<Authorizer> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the ACLs (keeping `super.users` and `allow.everyone.if.no.acl.found`).
    pub fn install(&self, acls: Vec<AclBinding>) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(Authorizer::new(
            current.super_users.clone(),
            current.allow_if_no_acl,
            acls,
        ));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// A single node: applies `change` to a copy of the ACLs, writes the file, then makes the
    /// copy current. Writers are serialized; readers keep the old snapshot meanwhile.
    pub fn alter_file<R>(&self, change: impl FnOnce(&mut Authorizer) -> R) -> Result<R, String> {
        let AclBackend::File(data_dir) = &self.backend else {
            return Err("ACLs of a cluster are changed through the coordinator".into());
        };
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = Authorizer::clone(&current);
        let result = change(&mut next);
        if next.acls() != current.acls() {
            AclFile::save(data_dir, next.acls())?;
            *current = Arc::new(next);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        Ok(result)
    }
}

/// One shard's view of [`SharedAcls`]: a clone of the current snapshot, refreshed when the
/// generation moved.
pub struct ShardAcls {
    pub shared: Arc<SharedAcls>,
    cached: RefCell<(u64, Arc<Authorizer>)>,
}

impl ShardAcls {
    pub fn new(shared: Arc<SharedAcls>) -> ShardAcls {
        let cached = RefCell::new((shared.generation(), shared.snapshot()));
        ShardAcls { shared, cached }
    }

    /// The current ACLs: one atomic load, and a lock only right after a change.
    pub fn current(&self) -> Arc<Authorizer> {
        let generation = self.shared.generation();
        let mut cached = self.cached.borrow_mut();
        if cached.0 != generation {
            *cached = (generation, self.shared.snapshot());
        }
        cached.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(kind: i8, name: &str, pattern: i8, op: i8, perm: i8) -> AclBinding {
        AclBinding {
            resource_type: kind,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    #[test]
    fn kafka_json_round_trips_and_reads_kafka_text() {
        let read = acl(
            resource_type::TOPIC,
            "t",
            pattern_type::LITERAL,
            operation::READ,
            permission::ALLOW,
        );
        let bytes = encode_resource([&read]);
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"version":1,"acls":[{"principal":"User:alice","permissionType":"Allow","operation":"Read","host":"*"}]}"#
        );
        let back = decode_resource(
            resource_type::TOPIC,
            pattern_type::LITERAL,
            "t",
            &bytes,
            "/kafka-acl/Topic/t",
        )
        .unwrap();
        assert_eq!(back, vec![read]);
        // As Kafka writes it: keys in another order, ClusterAction.
        let kafka = br#"{"version":1,"acls":[{"host":"10.0.0.1","permissionType":"Deny","operation":"ClusterAction","principal":"User:b"}]}"#;
        let got = decode_resource(
            resource_type::CLUSTER,
            pattern_type::LITERAL,
            "kafka-cluster",
            kafka,
            "p",
        )
        .unwrap();
        assert_eq!(got[0].operation, operation::CLUSTER_ACTION);
        assert_eq!(got[0].permission, permission::DENY);
        let bad = decode_resource(
            resource_type::TOPIC,
            pattern_type::LITERAL,
            "t",
            br#"{"version":1,"acls":[{"host":"*","permissionType":"Allow","operation":"Fly","principal":"User:b"}]}"#,
            "/kafka-acl/Topic/t",
        )
        .unwrap_err();
        assert!(
            bad.contains("/kafka-acl/Topic/t") && bad.contains("Fly"),
            "{bad}"
        );
        assert_eq!(
            parse_operation("CLUSTER_ACTION"),
            Some(operation::CLUSTER_ACTION)
        );
        assert_eq!(parse_resource_type("topic"), Some(resource_type::TOPIC));
    }

    #[test]
    fn the_file_keeps_acls_and_shards_see_changes() {
        let dir = tempfile::tempdir().unwrap();
        assert!(AclFile::load(dir.path()).unwrap().is_empty());
        let shared = SharedAcls::new(
            Authorizer::new(vec![], false, AclFile::load(dir.path()).unwrap()),
            AclBackend::File(dir.path().to_owned()),
        );
        let shard = ShardAcls::new(shared.clone());
        assert!(!shard.current().authorize(
            "User:alice",
            "h",
            operation::READ,
            resource_type::TOPIC,
            "orders-1"
        ));
        let prefixed = acl(
            resource_type::TOPIC,
            "orders-",
            pattern_type::PREFIXED,
            operation::READ,
            permission::ALLOW,
        );
        let group = acl(
            resource_type::GROUP,
            "g",
            pattern_type::LITERAL,
            operation::ALL,
            permission::DENY,
        );
        let added = shared
            .alter_file(|a| (a.add(prefixed.clone()), a.add(group.clone())))
            .unwrap();
        assert_eq!(added, (true, true));
        assert!(shard.current().authorize(
            "User:alice",
            "h",
            operation::READ,
            resource_type::TOPIC,
            "orders-1"
        ));
        let mut loaded = AclFile::load(dir.path()).unwrap();
        loaded.sort();
        let mut want = vec![prefixed, group];
        want.sort();
        assert_eq!(loaded, want);
        std::fs::write(
            AclFile::path(dir.path()),
            b"{\"version\":1,\"resources\":[{",
        )
        .unwrap();
        let err = AclFile::load(dir.path()).unwrap_err();
        assert!(err.contains(ACLS_FILE), "{err}");
    }
}
