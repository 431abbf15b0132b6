//! ACLs in the coordinator as Kafka's ZooKeeper mode keeps them: literal patterns at
//! `/kafka-acl/<ResourceType>/<name>`, prefixed ones at
//! `/kafka-acl-extended/prefixed/<ResourceType>/<name>`, each znode holding that resource's
//! ACLs in Kafka's JSON ([`crate::security::acl_store::encode_resource`]). Every change
//! also creates a sequential `acl_changes_` znode under `/kafka-acl-changes` (data
//! `Topic:name`) or `/kafka-acl-extended-changes` (Kafka's JSON change event), which every
//! broker watches to reload.
//!
//! Writes are compare-and-set on the resource znode's version (retried when another writer
//! got there first), so concurrent CreateAcls through different brokers lose nothing. Used
//! by the cluster agent and by `broker acls --coordinator`.

use zookeeper_client as zk;

use super::agent::ensure_path;
use super::users::ZnodeOptions;

use crate::security::acl_store::{
    by_resource, decode_resource, encode_resource, parse_resource_type, resource_type_name,
    ResourceKey,
};
use crate::security::authorizer::{pattern_type, AclBinding, AclFilter};

pub const LITERAL_ROOT: &str = "/kafka-acl";
pub const PREFIXED_ROOT: &str = "/kafka-acl-extended/prefixed";
pub const LITERAL_CHANGES: &str = "/kafka-acl-changes";
pub const EXTENDED_CHANGES: &str = "/kafka-acl-extended-changes";
const CHANGE_PREFIX: &str = "acl_changes_";
/// Change notifications kept under each change path; older ones are deleted (every broker
/// reloads all ACLs on any change, so an old notification carries nothing more).
const CHANGES_KEPT: usize = 64;
/// Attempts of one compare-and-set before giving up.
const CAS_ATTEMPTS: usize = 32;

/// The parents the authorizer needs (Kafka creates them when its authorizer starts).
pub const PATHS: &[&str] = &[
    LITERAL_ROOT,
    PREFIXED_ROOT,
    LITERAL_CHANGES,
    EXTENDED_CHANGES,
];

fn root(pattern: i8) -> &'static str {
    if pattern == pattern_type::PREFIXED {
        PREFIXED_ROOT
    } else {
        LITERAL_ROOT
    }
}

/// The znode of a resource pattern.
pub fn resource_path(kind: i8, pattern: i8, name: &str) -> String {
    format!("{}/{}/{name}", root(pattern), resource_type_name(kind))
}

fn err(path: &str, e: zk::Error) -> String {
    format!("{path}: {e}")
}

async fn children(client: &zk::Client, path: &str) -> Result<Vec<String>, String> {
    match client.list_children(path).await {
        Ok(children) => Ok(children),
        Err(zk::Error::NoNode) => Ok(Vec::new()),
        Err(e) => Err(err(path, e)),
    }
}

/// Every ACL in the coordinator.
pub async fn load_all(client: &zk::Client) -> Result<Vec<AclBinding>, String> {
    let mut acls = Vec::new();
    for pattern in [pattern_type::LITERAL, pattern_type::PREFIXED] {
        let base = root(pattern);
        for type_name in children(client, base).await? {
            let Some(kind) = parse_resource_type(&type_name) else {
                tracing::warn!("{base}/{type_name}: unknown resource type, ignored");
                continue;
            };
            let dir = format!("{base}/{type_name}");
            for name in children(client, &dir).await? {
                let path = format!("{dir}/{name}");
                match client.get_data(&path).await {
                    Ok((data, _)) => {
                        acls.extend(decode_resource(kind, pattern, &name, &data, &path)?)
                    }
                    Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(err(&path, e)),
                }
            }
        }
    }
    Ok(acls)
}

/// Rewrites one resource's znode with `change` applied to its ACLs (compare-and-set on the
/// version; an empty result deletes the znode); true when something changed.
async fn update_resource(
    client: &zk::Client,
    options: &ZnodeOptions,
    key: &ResourceKey,
    change: &dyn Fn(&mut Vec<AclBinding>),
) -> Result<bool, String> {
    let (kind, pattern, name) = key;
    let path = resource_path(*kind, *pattern, name);
    for _ in 0..CAS_ATTEMPTS {
        let found = match client.get_data(&path).await {
            Ok((data, stat)) => Some((
                decode_resource(*kind, *pattern, name, &data, &path)?,
                stat.version,
            )),
            Err(zk::Error::NoNode) => None,
            Err(e) => return Err(err(&path, e)),
        };
        let before = found
            .as_ref()
            .map(|(acls, _)| acls.clone())
            .unwrap_or_default();
        let mut after = before.clone();
        change(&mut after);
        if after == before {
            return Ok(false);
        }
        let data = encode_resource(&after);
        let written = match (&found, after.is_empty()) {
            (None, _) => {
                ensure_path(
                    client,
                    &format!("{}/{}", root(*pattern), resource_type_name(*kind)),
                    options,
                )
                .await?;
                client
                    .create(&path, &data, &options.persistent())
                    .await
                    .map(|_| ())
            }
            (Some((_, version)), true) => client.delete(&path, Some(*version)).await,
            (Some((_, version)), false) => client
                .set_data(&path, &data, Some(*version))
                .await
                .map(|_| ()),
        };
        match written {
            Ok(()) => {
                notify(client, options, key).await?;
                return Ok(true);
            }
            Err(zk::Error::NodeExists | zk::Error::BadVersion | zk::Error::NoNode) => continue,
            Err(e) => return Err(err(&path, e)),
        }
    }
    Err(format!(
        "{path}: still changing after {CAS_ATTEMPTS} attempts"
    ))
}

/// The change notification of a resource pattern, as Kafka writes it.
async fn notify(
    client: &zk::Client,
    options: &ZnodeOptions,
    (kind, pattern, name): &ResourceKey,
) -> Result<(), String> {
    let (dir, data) = if *pattern == pattern_type::LITERAL {
        (
            LITERAL_CHANGES,
            format!("{}:{name}", resource_type_name(*kind)).into_bytes(),
        )
    } else {
        let event = serde_json::json!({
            "version": 1,
            "resourceType": resource_type_name(*kind),
            "name": name,
            "patternType": crate::security::acl_store::pattern_name(*pattern),
        });
        (EXTENDED_CHANGES, event.to_string().into_bytes())
    };
    ensure_path(client, dir, options).await?;
    let path = format!("{dir}/{CHANGE_PREFIX}");
    let sequential = zk::CreateMode::PersistentSequential.with_acls(options.acls());
    client
        .create(&path, &data, &sequential)
        .await
        .map_err(|e| err(&path, e))?;
    // Bound the notifications kept: the oldest beyond CHANGES_KEPT go.
    let mut seen = children(client, dir).await?;
    seen.sort();
    let excess = seen.len().saturating_sub(CHANGES_KEPT);
    for old in &seen[..excess] {
        let _ = client.delete(&format!("{dir}/{old}"), None).await;
    }
    Ok(())
}

/// Adds `acls` (already validated); the ones that were not there yet.
pub async fn add(
    client: &zk::Client,
    options: &ZnodeOptions,
    acls: &[AclBinding],
) -> Result<(), String> {
    for (key, wanted) in by_resource(acls) {
        let wanted: Vec<AclBinding> = wanted.into_iter().cloned().collect();
        update_resource(client, options, &key, &|current: &mut Vec<AclBinding>| {
            for acl in &wanted {
                if !current.contains(acl) {
                    current.push(acl.clone());
                }
            }
        })
        .await?;
    }
    Ok(())
}

/// Removes what each filter selects; per filter, the ACLs it matched when read.
pub async fn remove(
    client: &zk::Client,
    options: &ZnodeOptions,
    filters: &[AclFilter],
) -> Result<Vec<Vec<AclBinding>>, String> {
    let all = load_all(client).await?;
    let matched: Vec<Vec<AclBinding>> = filters
        .iter()
        .map(|f| all.iter().filter(|a| f.matches(a)).cloned().collect())
        .collect();
    let doomed: Vec<AclBinding> = matched.iter().flatten().cloned().collect();
    for key in by_resource(&doomed).into_keys() {
        update_resource(client, options, &key, &|current: &mut Vec<AclBinding>| {
            current.retain(|a| !filters.iter().any(|f| f.matches(a)));
        })
        .await?;
    }
    Ok(matched)
}
