//! `broker acls add|list|remove`: Kafka's `kafka-acls.sh` for this broker, working on the
//! stored ACLs directly: a single node's `acls.json` in its data directory (`--data-dir`,
//! while the broker is stopped, so the first ACLs exist before it starts) or a cluster's
//! `/kafka-acl*` znodes in the coordinator (`--coordinator`, like kafka-acls.sh's
//! `--authorizer-properties zookeeper.connect=...`; running brokers reload at once).

use super::store::{CoordinatorAccess, StoreAt};
use crate::cluster::acl_znodes;
use crate::cluster::users::ZnodeOptions;
use crate::security::acl_store::{
    by_resource, operation_name, parse_operation, permission_name, resource_type_name, AclFile,
};
use crate::security::authorizer::{
    operation, pattern_type, permission, resource_type, validate, AclBinding, AclFilter,
    CLUSTER_NAME, WILDCARD,
};

/// The resource and principal options of one command, as kafka-acls.sh takes them.
#[derive(Default)]
pub struct AclOptions {
    pub allow_principals: Vec<String>,
    pub deny_principals: Vec<String>,
    pub allow_hosts: Vec<String>,
    pub deny_hosts: Vec<String>,
    pub operations: Vec<String>,
    pub topics: Vec<String>,
    pub groups: Vec<String>,
    pub transactional_ids: Vec<String>,
    pub cluster: bool,
    /// literal, prefixed (add, remove); also any, match (list, remove).
    pub pattern: Option<String>,
}

fn resources(options: &AclOptions) -> Vec<(i8, String)> {
    let mut out: Vec<(i8, String)> = Vec::new();
    out.extend(
        options
            .topics
            .iter()
            .map(|t| (resource_type::TOPIC, t.clone())),
    );
    out.extend(
        options
            .groups
            .iter()
            .map(|g| (resource_type::GROUP, g.clone())),
    );
    out.extend(
        options
            .transactional_ids
            .iter()
            .map(|t| (resource_type::TRANSACTIONAL_ID, t.clone())),
    );
    if options.cluster {
        out.push((resource_type::CLUSTER, CLUSTER_NAME.to_owned()));
    }
    out
}

fn pattern(options: &AclOptions, default: i8, filter: bool) -> Result<i8, String> {
    let Some(name) = &options.pattern else {
        return Ok(default);
    };
    match name.to_ascii_lowercase().as_str() {
        "literal" => Ok(pattern_type::LITERAL),
        "prefixed" => Ok(pattern_type::PREFIXED),
        "any" if filter => Ok(pattern_type::ANY),
        "match" if filter => Ok(pattern_type::MATCH),
        _ => Err(format!(
            "--resource-pattern-type {name}: literal or prefixed{}",
            if filter { ", any or match" } else { "" }
        )),
    }
}

/// The (principal, host, permission) entries the options name.
fn entries(options: &AclOptions) -> Vec<(String, String, i8)> {
    let hosts = |list: &Vec<String>| {
        if list.is_empty() {
            vec![WILDCARD.to_owned()]
        } else {
            list.clone()
        }
    };
    let mut out = Vec::new();
    for p in &options.allow_principals {
        for h in hosts(&options.allow_hosts) {
            out.push((p.clone(), h, permission::ALLOW));
        }
    }
    for p in &options.deny_principals {
        for h in hosts(&options.deny_hosts) {
            out.push((p.clone(), h, permission::DENY));
        }
    }
    out
}

fn operations(options: &AclOptions) -> Result<Vec<i8>, String> {
    if options.operations.is_empty() {
        return Ok(vec![operation::ALL]);
    }
    options
        .operations
        .iter()
        .map(|o| parse_operation(o).ok_or_else(|| format!("unknown --operation {o}")))
        .collect()
}

/// The ACLs `add` creates (every resource x entry x operation), validated.
pub fn bindings(options: &AclOptions) -> Result<Vec<AclBinding>, String> {
    let pattern = pattern(options, pattern_type::LITERAL, false)?;
    let resources = resources(options);
    if resources.is_empty() {
        return Err("name a resource: --topic, --group, --transactional-id or --cluster".into());
    }
    let entries = entries(options);
    if entries.is_empty() {
        return Err("name a principal: --allow-principal or --deny-principal".into());
    }
    let mut out = Vec::new();
    for (kind, name) in &resources {
        for (principal, host, perm) in &entries {
            for op in operations(options)? {
                let acl = AclBinding {
                    resource_type: *kind,
                    resource_name: name.clone(),
                    pattern_type: pattern,
                    principal: principal.clone(),
                    host: host.clone(),
                    operation: op,
                    permission: *perm,
                };
                validate(&acl)?;
                out.push(acl);
            }
        }
    }
    Ok(out)
}

/// The filters `list` and `remove` use: per resource named (every resource when none), the
/// principals, hosts and operations named (any when none).
pub fn filters(options: &AclOptions, default_pattern: i8) -> Result<Vec<AclFilter>, String> {
    let pattern = pattern(options, default_pattern, true)?;
    let resources: Vec<(i8, Option<String>)> = match resources(options) {
        named if named.is_empty() => vec![(resource_type::ANY, None)],
        named => named.into_iter().map(|(k, n)| (k, Some(n))).collect(),
    };
    let entries: Vec<(Option<String>, Option<String>, i8)> = match entries(options) {
        named if named.is_empty() => vec![(None, None, permission::ANY)],
        named => named
            .into_iter()
            .map(|(p, h, perm)| (Some(p), (h != WILDCARD).then_some(h), perm))
            .collect(),
    };
    let ops = if options.operations.is_empty() {
        vec![operation::ANY]
    } else {
        operations(options)?
    };
    let mut out = Vec::new();
    for (kind, name) in &resources {
        for (principal, host, perm) in &entries {
            for op in &ops {
                out.push(AclFilter {
                    resource_type: *kind,
                    resource_name: name.clone(),
                    pattern_type: pattern,
                    principal: principal.clone(),
                    host: host.clone(),
                    operation: *op,
                    permission: *perm,
                });
            }
        }
    }
    Ok(out)
}

/// Runs `work` against the coordinator, the ACL znodes' parents created first.
fn with_coordinator<T, F, Fut>(access: &CoordinatorAccess, work: F) -> Result<T, String>
where
    F: FnOnce(zookeeper_client::Client, ZnodeOptions) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    access.run(|client, options| async move {
        for path in acl_znodes::PATHS {
            crate::cluster::agent::ensure_path(&client, path, &options).await?;
        }
        work(client, options).await
    })
}

fn load(at: &StoreAt) -> Result<Vec<AclBinding>, String> {
    match at {
        StoreAt::DataDir(dir) => AclFile::load(dir),
        StoreAt::Coordinator(access) => {
            with_coordinator(access, |c, _| async move { acl_znodes::load_all(&c).await })
        }
    }
}

fn describe(acl: &AclBinding) -> String {
    format!(
        "(principal={}, host={}, operation={}, permissionType={})",
        acl.principal,
        acl.host,
        operation_name(acl.operation),
        permission_name(acl.permission)
    )
}

fn print_by_resource<'a>(acls: impl IntoIterator<Item = &'a AclBinding>) {
    for ((kind, pattern, name), acls) in by_resource(acls) {
        println!(
            "Current ACLs for resource `ResourcePattern(resourceType={}, name={name}, patternType={})`:",
            resource_type_name(kind),
            crate::security::acl_store::pattern_name(pattern)
        );
        for acl in acls {
            println!(" \t{}", describe(acl));
        }
        println!();
    }
}

pub fn acls_add(at: &StoreAt, options: &AclOptions) -> Result<(), String> {
    let new = bindings(options)?;
    match at {
        StoreAt::DataDir(dir) => {
            let mut acls = AclFile::load(dir)?;
            for acl in &new {
                if !acls.contains(acl) {
                    acls.push(acl.clone());
                }
            }
            AclFile::save(dir, &acls)?;
        }
        StoreAt::Coordinator(access) => {
            let to_add = new.clone();
            with_coordinator(access, move |c, options| async move {
                acl_znodes::add(&c, &options, &to_add).await
            })?;
        }
    }
    println!("Adding ACLs:");
    print_by_resource(&new);
    Ok(())
}

pub fn acls_list(at: &StoreAt, options: &AclOptions) -> Result<(), String> {
    let filters = filters(options, pattern_type::ANY)?;
    let acls = load(at)?;
    print_by_resource(acls.iter().filter(|a| filters.iter().any(|f| f.matches(a))));
    Ok(())
}

pub fn acls_remove(at: &StoreAt, options: &AclOptions) -> Result<(), String> {
    if resources(options).is_empty() {
        return Err("name a resource: --topic, --group, --transactional-id or --cluster".into());
    }
    let filters = filters(options, pattern_type::LITERAL)?;
    let removed: Vec<AclBinding> = match at {
        StoreAt::DataDir(dir) => {
            let acls = AclFile::load(dir)?;
            let (gone, kept): (Vec<_>, Vec<_>) = acls
                .into_iter()
                .partition(|a| filters.iter().any(|f| f.matches(a)));
            AclFile::save(dir, &kept)?;
            gone
        }
        StoreAt::Coordinator(access) => {
            let filters = filters.clone();
            let per_filter = with_coordinator(access, move |c, options| async move {
                acl_znodes::remove(&c, &options, &filters).await
            })?;
            let mut all: Vec<AclBinding> = per_filter.into_iter().flatten().collect();
            all.sort();
            all.dedup();
            all
        }
    };
    if removed.is_empty() {
        return Err("no ACL matched".into());
    }
    println!("Removing ACLs:");
    print_by_resource(&removed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_kafka_acls_and_filters() {
        let options = AclOptions {
            allow_principals: vec!["User:alice".into()],
            deny_principals: vec!["User:bob".into()],
            operations: vec!["Read".into(), "DESCRIBE".into()],
            topics: vec!["orders-".into()],
            pattern: Some("prefixed".into()),
            ..Default::default()
        };
        let acls = bindings(&options).unwrap();
        assert_eq!(acls.len(), 4);
        assert!(acls.iter().all(|a| a.pattern_type == pattern_type::PREFIXED
            && a.resource_type == resource_type::TOPIC
            && a.host == "*"));
        assert_eq!(
            acls.iter()
                .filter(|a| a.permission == permission::DENY && a.principal == "User:bob")
                .count(),
            2
        );
        let dir = tempfile::tempdir().unwrap();
        let at = StoreAt::DataDir(dir.path().to_owned());
        acls_add(&at, &options).unwrap();
        assert_eq!(AclFile::load(dir.path()).unwrap().len(), 4);
        // Removing only bob's entries leaves alice's.
        let bob = AclOptions {
            deny_principals: vec!["User:bob".into()],
            topics: vec!["orders-".into()],
            pattern: Some("prefixed".into()),
            ..Default::default()
        };
        acls_remove(&at, &bob).unwrap();
        let left = AclFile::load(dir.path()).unwrap();
        assert_eq!(left.len(), 2);
        assert!(left.iter().all(|a| a.principal == "User:alice"));
        assert!(acls_remove(&at, &bob).is_err(), "nothing left to remove");
        let no_resource = AclOptions {
            allow_principals: vec!["User:alice".into()],
            ..Default::default()
        };
        assert!(bindings(&no_resource).is_err());
        let bad_op = AclOptions {
            operations: vec!["Fly".into()],
            ..options
        };
        assert!(bindings(&bad_op).unwrap_err().contains("Fly"));
    }
}
