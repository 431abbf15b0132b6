//! CreateAcls, DescribeAcls and DeleteAcls (v1-3): Kafka's ACL administration. Changing
//! ACLs needs ALTER on the cluster and describing them DESCRIBE on the cluster
//! (CLUSTER_AUTHORIZATION_FAILED otherwise); without `--authorizer` all three answer
//! SECURITY_DISABLED, as Kafka does. A single node writes its `acls.json`; in cluster mode
//! the agent writes the `/kafka-acl*` znodes and every broker reloads them.

use std::rc::Rc;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::codes;
use crate::security::access::Access;
use crate::security::acl_store::{by_resource, AclBackend};
use crate::security::authorizer::{self, operation, AclBinding, AclFilter};

use super::shard::Shard;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn message(code: i16) -> Option<StrBytes> {
    match code {
        codes::SECURITY_DISABLED => Some(text("no authorizer is configured (--authorizer)")),
        codes::CLUSTER_AUTHORIZATION_FAILED => Some(text("cluster authorization failed")),
        _ => None,
    }
}

/// Why the request as a whole is refused, if it is.
fn refusal(shard: &Shard, access: &Access, op: i8) -> Option<i16> {
    if shard.acls.is_none() {
        Some(codes::SECURITY_DISABLED)
    } else if !access.cluster(op) {
        Some(codes::CLUSTER_AUTHORIZATION_FAILED)
    } else {
        None
    }
}

/// Applies a change: a single node's file, or the coordinator through the agent. Returns, per
/// filter of `delete`, the ACLs it removed.
async fn alter(
    shard: &Shard,
    create: Vec<AclBinding>,
    delete: Vec<AclFilter>,
) -> Result<Vec<Vec<AclBinding>>, String> {
    let acls = shard.acls.as_ref().ok_or("no authorizer")?;
    match &acls.shared.backend {
        AclBackend::File(_) => acls.shared.alter_file(|a| {
            for acl in create {
                a.add(acl);
            }
            delete
                .iter()
                .map(|filter| a.remove_matching(filter))
                .collect::<Vec<_>>()
        }),
        AclBackend::Coordinator => {
            let cluster = shard.cluster.as_ref().ok_or("not in a cluster")?;
            let (tx, rx) = async_channel::bounded(1);
            cluster
                .commands
                .send(crate::cluster::Command::AlterAcls {
                    create,
                    delete,
                    reply: tx,
                })
                .await
                .map_err(|_| "the cluster agent stopped".to_string())?;
            rx.recv()
                .await
                .map_err(|_| "the cluster agent stopped".to_string())?
        }
    }
}

pub async fn create_acls(
    shard: &Rc<Shard>,
    access: &Access,
    request: CreateAclsRequest,
) -> CreateAclsResponse {
    if let Some(code) = refusal(shard, access, operation::ALTER) {
        let results = request
            .creations
            .iter()
            .map(|_| {
                AclCreationResult::default()
                    .with_error_code(code)
                    .with_error_message(message(code))
            })
            .collect();
        return CreateAclsResponse::default().with_results(results);
    }
    let mut results = Vec::with_capacity(request.creations.len());
    let mut valid = Vec::new();
    for c in request.creations {
        let acl = AclBinding {
            resource_type: c.resource_type,
            resource_name: c.resource_name.to_string(),
            pattern_type: c.resource_pattern_type,
            principal: c.principal.to_string(),
            host: c.host.to_string(),
            operation: c.operation,
            permission: c.permission_type,
        };
        match authorizer::validate(&acl) {
            Ok(()) => {
                results.push(None);
                valid.push(acl);
            }
            Err(why) => results.push(Some(why)),
        }
    }
    let outcome = if valid.is_empty() {
        Ok(Vec::new())
    } else {
        alter(shard, valid, Vec::new()).await
    };
    let results = results
        .into_iter()
        .map(|invalid| match (invalid, &outcome) {
            (Some(why), _) => AclCreationResult::default()
                .with_error_code(codes::INVALID_REQUEST)
                .with_error_message(Some(text(&why))),
            (None, Ok(_)) => AclCreationResult::default(),
            (None, Err(err)) => AclCreationResult::default()
                .with_error_code(codes::UNKNOWN_SERVER_ERROR)
                .with_error_message(Some(text(err))),
        })
        .collect();
    if let Err(err) = &outcome {
        tracing::warn!("shard {}: CreateAcls: {err}", shard.id);
    }
    CreateAclsResponse::default().with_results(results)
}

fn filter_of(
    resource_type: i8,
    name: Option<StrBytes>,
    pattern_type: i8,
    principal: Option<StrBytes>,
    host: Option<StrBytes>,
    operation: i8,
    permission: i8,
) -> AclFilter {
    AclFilter {
        resource_type,
        resource_name: name.map(|n| n.to_string()),
        pattern_type,
        principal: principal.map(|p| p.to_string()),
        host: host.map(|h| h.to_string()),
        operation,
        permission,
    }
}

pub fn describe_acls(
    shard: &Shard,
    access: &Access,
    request: DescribeAclsRequest,
) -> DescribeAclsResponse {
    if let Some(code) = refusal(shard, access, operation::DESCRIBE) {
        return DescribeAclsResponse::default()
            .with_error_code(code)
            .with_error_message(message(code));
    }
    let filter = filter_of(
        request.resource_type_filter,
        request.resource_name_filter,
        request.pattern_type_filter,
        request.principal_filter,
        request.host_filter,
        request.operation,
        request.permission_type,
    );
    let current = shard.acls.as_ref().map(|a| a.current()).unwrap_or_default();
    let selected = current.acls().iter().filter(|a| filter.matches(a));
    let resources = by_resource(selected)
        .into_iter()
        .map(|((kind, pattern, name), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(kind)
                .with_resource_name(text(&name))
                .with_pattern_type(pattern)
                .with_acls(
                    acls.into_iter()
                        .map(|a| {
                            AclDescription::default()
                                .with_principal(text(&a.principal))
                                .with_host(text(&a.host))
                                .with_operation(a.operation)
                                .with_permission_type(a.permission)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeAclsResponse::default().with_resources(resources)
}

pub async fn delete_acls(
    shard: &Rc<Shard>,
    access: &Access,
    request: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let refused = refusal(shard, access, operation::ALTER);
    let filters: Vec<AclFilter> = request
        .filters
        .into_iter()
        .map(|f| {
            filter_of(
                f.resource_type_filter,
                f.resource_name_filter,
                f.pattern_type_filter,
                f.principal_filter,
                f.host_filter,
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    let outcome = match refused {
        Some(code) => Err((code, message(code))),
        None => alter(shard, Vec::new(), filters.clone())
            .await
            .map_err(|err| {
                tracing::warn!("shard {}: DeleteAcls: {err}", shard.id);
                (codes::UNKNOWN_SERVER_ERROR, Some(text(&err)))
            }),
    };
    let results = match outcome {
        Err((code, why)) => filters
            .iter()
            .map(|_| {
                DeleteAclsFilterResult::default()
                    .with_error_code(code)
                    .with_error_message(why.clone())
            })
            .collect(),
        Ok(removed) => removed
            .into_iter()
            .map(|acls| {
                DeleteAclsFilterResult::default().with_matching_acls(
                    acls.into_iter()
                        .map(|a| {
                            DeleteAclsMatchingAcl::default()
                                .with_resource_type(a.resource_type)
                                .with_resource_name(text(&a.resource_name))
                                .with_pattern_type(a.pattern_type)
                                .with_principal(text(&a.principal))
                                .with_host(text(&a.host))
                                .with_operation(a.operation)
                                .with_permission_type(a.permission)
                        })
                        .collect(),
                )
            })
            .collect(),
    };
    DeleteAclsResponse::default().with_filter_results(results)
}
