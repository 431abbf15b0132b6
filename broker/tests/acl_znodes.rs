//! ACLs in a coordinator as Kafka's ZooKeeper mode keeps them (`broker::cluster::acl_znodes`),
//! against our coordinator in-process: the znode paths and JSON Kafka writes, change
//! notifications in both change paths (bounded in number), concurrent writers to one
//! resource losing nothing (compare-and-set), and removal deleting an emptied znode.

mod cluster_support;
mod kafka_support;

use broker::cli::acls::{bindings, AclOptions};
use broker::cluster::acl_znodes::{self, EXTENDED_CHANGES, LITERAL_CHANGES};
use broker::cluster::agent::connect_to;
use broker::cluster::users::ZnodeOptions;

/// Znodes open to everyone (the brokers run without --coordinator-set-acl).
const OPEN: ZnodeOptions = ZnodeOptions { secure: false };
use broker::security::acl_store::{operation_name, pattern_name};
use broker::security::authorizer::{
    operation, pattern_type, permission, resource_type, AclBinding, AclFilter,
};
use cluster_support::Coordinator;

/// One ALLOW ACL, built as `broker acls add` builds it.
fn acl(kind: i8, name: &str, pattern: i8, principal: &str, op: i8) -> AclBinding {
    let mut options = AclOptions {
        allow_principals: vec![principal.into()],
        operations: vec![operation_name(op).into()],
        pattern: Some(pattern_name(pattern).into()),
        ..Default::default()
    };
    match kind {
        resource_type::TOPIC => options.topics.push(name.into()),
        _ => options.groups.push(name.into()),
    }
    let mut made = bindings(&options).unwrap();
    assert_eq!(made.len(), 1);
    made.remove(0)
}

#[test]
fn acls_land_in_kafkas_znodes_and_concurrent_writers_lose_nothing() {
    let coordinator = Coordinator::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let connect = coordinator.addr();
        let one = connect_to(&connect, 5000, None, &OPEN).await.unwrap();
        let two = connect_to(&connect, 5000, None, &OPEN).await.unwrap();
        // Two writers on the same resource at once: both ACLs survive.
        let alice = acl(resource_type::TOPIC, "t", pattern_type::LITERAL, "User:alice", operation::READ);
        let bob = acl(resource_type::TOPIC, "t", pattern_type::LITERAL, "User:bob", operation::WRITE);
        let (a, b) = tokio::join!(
            acl_znodes::add(&one, &OPEN, std::slice::from_ref(&alice)),
            acl_znodes::add(&two, &OPEN, std::slice::from_ref(&bob))
        );
        a.unwrap();
        b.unwrap();
        let (data, _) = one.get_data("/kafka-acl/Topic/t").await.unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(doc["version"], 1);
        let mut entries: Vec<String> = doc["acls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{} {} {} {}",
                    e["principal"].as_str().unwrap(),
                    e["operation"].as_str().unwrap(),
                    e["permissionType"].as_str().unwrap(),
                    e["host"].as_str().unwrap()
                )
            })
            .collect();
        entries.sort();
        assert_eq!(entries, ["User:alice Read Allow *", "User:bob Write Allow *"]);

        let prefixed = acl(resource_type::GROUP, "g-", pattern_type::PREFIXED, "User:alice", operation::READ);
        acl_znodes::add(&one, &OPEN, std::slice::from_ref(&prefixed)).await.unwrap();
        assert!(one
            .get_data("/kafka-acl-extended/prefixed/Group/g-")
            .await
            .is_ok());
        let literal_changes = one.list_children(LITERAL_CHANGES).await.unwrap();
        assert!(literal_changes.iter().all(|c| c.starts_with("acl_changes_")));
        assert_eq!(literal_changes.len(), 2);
        let extended = one.list_children(EXTENDED_CHANGES).await.unwrap();
        assert_eq!(extended.len(), 1);
        let (event, _) = one
            .get_data(&format!("{EXTENDED_CHANGES}/{}", extended[0]))
            .await
            .unwrap();
        let event: serde_json::Value = serde_json::from_slice(&event).unwrap();
        assert_eq!(
            event,
            serde_json::json!({"version": 1, "resourceType": "Group", "name": "g-", "patternType": "PREFIXED"})
        );

        let mut all = acl_znodes::load_all(&two).await.unwrap();
        all.sort();
        let mut want = vec![alice.clone(), bob.clone(), prefixed.clone()];
        want.sort();
        assert_eq!(all, want);

        // Removing bob's ACL keeps alice's; removing hers too deletes the znode.
        let by = |principal: &str| AclFilter {
            resource_type: resource_type::TOPIC,
            resource_name: Some("t".into()),
            pattern_type: pattern_type::LITERAL,
            principal: Some(principal.into()),
            host: None,
            operation: operation::ANY,
            permission: permission::ANY,
        };
        let removed = acl_znodes::remove(&one, &OPEN, &[by("User:bob")]).await.unwrap();
        assert_eq!(removed, vec![vec![bob]]);
        assert!(one.get_data("/kafka-acl/Topic/t").await.is_ok());
        acl_znodes::remove(&one, &OPEN, &[by("User:alice")]).await.unwrap();
        assert!(one.get_data("/kafka-acl/Topic/t").await.is_err());
        assert_eq!(acl_znodes::load_all(&one).await.unwrap(), vec![prefixed]);

        // Notifications stay bounded however many changes there were.
        for i in 0..80 {
            let topic = format!("t{i}");
            acl_znodes::add(&one, &OPEN, &[acl(resource_type::TOPIC, &topic, pattern_type::LITERAL, "User:a", operation::READ)])
                .await
                .unwrap();
        }
        let kept = one.list_children(LITERAL_CHANGES).await.unwrap();
        assert!(kept.len() <= 64, "{} notifications kept", kept.len());
    });
}
