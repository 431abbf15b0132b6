//! Changes to existing topics written to the coordinator, as Kafka's ZooKeeper-mode
//! `AdminZkClient` writes them:
//! - config overrides: `/config/topics/<t>` set at the version read (retried when another
//!   writer got there first), then a `/config/changes/config_change_<seq>` notification
//!   `{"version":2,"entity_path":"topics/<t>"}` that makes every broker re-read the topic;
//! - added partitions: the replica lists appended to `/brokers/topics/<t>`, set at the
//!   version read; the controller, watching the topic, then elects their leaders.
//!
//! The agent calls these on its own thread; what they decide (the new overrides, which
//! replicas) comes from `topics::alter_configs` and `assignment`.

use std::collections::BTreeMap;

use zookeeper_client as zk;

use super::users::{ZnodeOptions, CONFIG_CHANGE_PREFIX};
use super::znodes::{self, TopicAssignment};
use crate::topics::{self, ConfigAlteration, TopicError};

/// Attempts at a conditional write before giving up on a busy znode.
const WRITE_ATTEMPTS: usize = 5;

fn storage(path: &str, err: zk::Error) -> TopicError {
    TopicError::Storage(format!("coordinator: {path}: {err}"))
}

/// The change notification that makes brokers re-read `topic`'s config.
pub fn encode_topic_change(topic: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "version": 2,
        "entity_path": format!("topics/{topic}"),
    }))
    .expect("plain JSON")
}

/// The topic a change notification names (Kafka's version 2 `entity_path` or version 1
/// `entity_type` + `entity_name`); `None` for other entities and unreadable data.
pub fn changed_topic(data: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(data).ok()?;
    let name = match json.get("version")?.as_i64()? {
        2 => json
            .get("entity_path")?
            .as_str()?
            .strip_prefix("topics/")?
            .to_string(),
        1 if json.get("entity_type")?.as_str()? == "topics" => {
            json.get("entity_name")?.as_str()?.to_string()
        }
        _ => return None,
    };
    topics::validate_name(&name).ok()?;
    Some(name)
}

/// Applies `alteration` to the topic's overrides in the coordinator and announces it.
/// Returns the overrides as written (or as they would be, validate only).
pub async fn alter_topic_configs(
    client: &zk::Client,
    options: &ZnodeOptions,
    alteration: &ConfigAlteration,
) -> Result<BTreeMap<String, String>, TopicError> {
    let name = &alteration.topic;
    let topic_path = znodes::topic_path(name);
    let config_path = znodes::config_path(name);
    for _ in 0..WRITE_ATTEMPTS {
        let exists = client
            .check_stat(&topic_path)
            .await
            .map_err(|err| storage(&topic_path, err))?;
        if exists.is_none() {
            return Err(TopicError::UnknownTopic(name.clone()));
        }
        let (current, version) = match client.get_data(&config_path).await {
            Ok((data, stat)) => (
                znodes::decode_config(&config_path, &data)
                    .map_err(|err| TopicError::Storage(err.to_string()))?,
                Some(stat.version),
            ),
            Err(zk::Error::NoNode) => (BTreeMap::new(), None),
            Err(err) => return Err(storage(&config_path, err)),
        };
        let next = topics::alter_configs(&current, alteration.replace_all, &alteration.ops)?;
        if alteration.validate_only || next == current {
            return Ok(next);
        }
        let data = znodes::encode_config(&next);
        let written = match version {
            Some(version) => client
                .set_data(&config_path, &data, Some(version))
                .await
                .map(drop),
            None => client
                .create(&config_path, &data, &options.persistent())
                .await
                .map(drop),
        };
        match written {
            Ok(()) => {}
            Err(zk::Error::BadVersion | zk::Error::NodeExists | zk::Error::NoNode) => continue,
            Err(err) => return Err(storage(&config_path, err)),
        }
        let sequential = zk::CreateMode::PersistentSequential.with_acls(options.acls());
        client
            .create(
                CONFIG_CHANGE_PREFIX,
                &encode_topic_change(name),
                &sequential,
            )
            .await
            .map_err(|err| storage(CONFIG_CHANGE_PREFIX, err))?;
        return Ok(next);
    }
    Err(TopicError::Storage(format!(
        "{config_path}: changed by other writers {WRITE_ATTEMPTS} times in a row"
    )))
}

/// Appends `added` replica lists to the topic's assignment, if the topic is still the one
/// with id `id` and `current` partitions (else another change came first: the client gets
/// INVALID_PARTITIONS and may try again with what it sees then).
pub async fn add_partitions(
    client: &zk::Client,
    name: &str,
    id: [u8; 16],
    current: usize,
    added: Vec<Vec<i32>>,
) -> Result<(), TopicError> {
    let path = znodes::topic_path(name);
    let marked = client
        .check_stat(&znodes::delete_path(name))
        .await
        .map_err(|err| storage(&path, err))?;
    if marked.is_some() {
        return Err(TopicError::UnknownTopic(name.to_string()));
    }
    let (data, stat) = match client.get_data(&path).await {
        Ok(found) => found,
        Err(zk::Error::NoNode) => return Err(TopicError::UnknownTopic(name.to_string())),
        Err(err) => return Err(storage(&path, err)),
    };
    // Kafka refuses CreatePartitions while a partition of the topic moves; the rewrite below
    // would also drop the move's adding/removing replicas.
    let moving = znodes::TopicZnode::decode(&path, &data)
        .map_err(|err| TopicError::Storage(err.to_string()))?
        .reassignments();
    if !moving.is_empty() {
        let partitions: Vec<i32> = moving.keys().copied().collect();
        return Err(TopicError::ReassignmentInProgress(format!(
            "topic `{name}` has partitions being reassigned ({partitions:?}); add partitions \
             once that is done"
        )));
    }
    let mut assignment = TopicAssignment::decode(&path, &data)
        .map_err(|err| TopicError::Storage(err.to_string()))?;
    let changed = || {
        TopicError::PartitionCount(format!(
            "topic `{name}` changed while partitions were being added; try again"
        ))
    };
    if assignment.id != id || assignment.replicas.len() != current {
        return Err(changed());
    }
    assignment.replicas.extend(added);
    match client
        .set_data(&path, &assignment.encode(), Some(stat.version))
        .await
    {
        Ok(_) => Ok(()),
        Err(zk::Error::BadVersion) => Err(changed()),
        Err(zk::Error::NoNode) => Err(TopicError::UnknownTopic(name.to_string())),
        Err(err) => Err(storage(&path, err)),
    }
}

#[cfg(test)]
mod tests {
    //! Proves topic change notifications round-trip and other entities are told apart.
    use super::*;

    #[test]
    fn topic_change_notifications_round_trip() {
        assert_eq!(
            changed_topic(&encode_topic_change("orders.v1")).as_deref(),
            Some("orders.v1")
        );
        let v1 = br#"{"version":1,"entity_type":"topics","entity_name":"t"}"#;
        assert_eq!(changed_topic(v1).as_deref(), Some("t"));
        assert_eq!(
            changed_topic(br#"{"version":2,"entity_path":"users/alice"}"#),
            None
        );
        assert_eq!(
            changed_topic(br#"{"version":2,"entity_path":"topics/a/b"}"#),
            None
        );
        assert_eq!(changed_topic(b"not json"), None);
    }
}
