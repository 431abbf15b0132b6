//! `broker groups list|describe <group>`: the consumer groups a broker coordinates, and for one
//! group its members, their assigned partitions, the committed offsets and the lag (log end
//! minus committed offset), read through ListGroups, DescribeGroups, OffsetFetch and
//! ListOffsets like any Kafka admin tool. `groups delete-offsets` removes a group's committed
//! offsets of a topic (OffsetDelete, at the group's coordinator).

use std::collections::BTreeMap;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, ListGroupsRequest,
    ListOffsetsRequest, OffsetDeleteRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::client::{Client, ClientError};

fn error(what: &str, code: i16) -> ClientError {
    ClientError::Kafka(format!("{what}: error code {code}"))
}

/// `groups list`.
pub fn groups_list(bootstrap: &str) -> Result<(), ClientError> {
    let mut client = Client::connect(bootstrap)?;
    let response = client.call(&ListGroupsRequest::default(), 4)?;
    if response.error_code != 0 {
        return Err(error("list groups", response.error_code));
    }
    println!("{:<40} {:<20} PROTOCOL TYPE", "GROUP", "STATE");
    for g in response.groups {
        println!(
            "{:<40} {:<20} {}",
            g.group_id.0.as_str(),
            g.group_state.as_str(),
            g.protocol_type.as_str()
        );
    }
    Ok(())
}

/// The topic-partitions of a consumer-protocol assignment (version, [topic, [partition]],
/// user data); `None` when the bytes are not one.
pub fn decode_assignment(mut bytes: Bytes) -> Option<Vec<(String, i32)>> {
    let mut out = Vec::new();
    if bytes.remaining() < 6 {
        return None;
    }
    let _version = bytes.get_i16();
    let topics = bytes.get_i32();
    for _ in 0..topics.max(0) {
        if bytes.remaining() < 2 {
            return None;
        }
        let len = usize::try_from(bytes.get_i16()).ok()?;
        if bytes.remaining() < len + 4 {
            return None;
        }
        let topic = String::from_utf8_lossy(&bytes.split_to(len)).into_owned();
        let count = bytes.get_i32();
        for _ in 0..count.max(0) {
            if bytes.remaining() < 4 {
                return None;
            }
            out.push((topic.clone(), bytes.get_i32()));
        }
    }
    Some(out)
}

/// `groups describe <group>`.
pub fn groups_describe(bootstrap: &str, group: &str) -> Result<(), ClientError> {
    let mut client = Client::connect(bootstrap)?;
    let id = GroupId(StrBytes::from_string(group.to_owned()));
    let described = client.call(
        &DescribeGroupsRequest::default().with_groups(vec![id.clone()]),
        5,
    )?;
    let Some(g) = described.groups.into_iter().next() else {
        return Err(ClientError::Protocol("empty DescribeGroups answer".into()));
    };
    if g.error_code != 0 {
        return Err(error("describe group", g.error_code));
    }
    println!(
        "group {group}: state {}, protocol {} {}, {} members",
        g.group_state.as_str(),
        g.protocol_type.as_str(),
        g.protocol_data.as_str(),
        g.members.len()
    );
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    for m in &g.members {
        let assigned = decode_assignment(m.member_assignment.clone()).unwrap_or_default();
        println!(
            "  member {} client {} host {} partitions {}",
            m.member_id.as_str(),
            m.client_id.as_str(),
            m.client_host.as_str(),
            assigned
                .iter()
                .map(|(t, p)| format!("{t}-{p}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        for tp in assigned {
            owner.insert(tp, m.member_id.as_str().to_owned());
        }
    }
    let fetched = client.call(
        &OffsetFetchRequest::default()
            .with_group_id(id)
            .with_topics(None),
        7,
    )?;
    if fetched.error_code != 0 {
        return Err(error("offset fetch", fetched.error_code));
    }
    let mut committed: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for t in &fetched.topics {
        for p in &t.partitions {
            committed.insert(
                (t.name.0.as_str().to_owned(), p.partition_index),
                p.committed_offset,
            );
        }
    }
    for tp in owner.keys() {
        committed.entry(tp.clone()).or_insert(-1);
    }
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p) in committed.keys() {
        by_topic.entry(t.clone()).or_default().push(*p);
    }
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(
            by_topic
                .iter()
                .map(|(t, ps)| {
                    ListOffsetsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.clone())))
                        .with_partitions(
                            ps.iter()
                                .map(|&p| {
                                    ListOffsetsPartition::default()
                                        .with_partition_index(p)
                                        .with_timestamp(-1)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let ends = client.call(&request, 7)?;
    let mut end: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for t in ends.topics {
        for p in t.partitions {
            if p.error_code == 0 {
                end.insert((t.name.0.as_str().to_owned(), p.partition_index), p.offset);
            }
        }
    }
    println!(
        "{:<30} {:>9} {:>12} {:>12} {:>8}  MEMBER",
        "TOPIC", "PARTITION", "COMMITTED", "END", "LAG"
    );
    for ((t, p), offset) in &committed {
        let log_end = end.get(&(t.clone(), *p)).copied();
        let lag = match (log_end, *offset) {
            (Some(e), o) if o >= 0 => (e - o).to_string(),
            (Some(e), _) => e.to_string(),
            _ => "-".into(),
        };
        println!(
            "{:<30} {:>9} {:>12} {:>12} {:>8}  {}",
            t,
            p,
            offset,
            log_end.map_or("-".into(), |e| e.to_string()),
            lag,
            owner.get(&(t.clone(), *p)).map_or("-", String::as_str)
        );
    }
    Ok(())
}

/// The connection to `group`'s coordinator (FindCoordinator through `bootstrap`).
fn coordinator_of(bootstrap: &str, group: &str) -> Result<Client, ClientError> {
    let mut client = Client::connect(bootstrap)?;
    let found = client.call(
        &FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_owned()))
            .with_key_type(0),
        2,
    )?;
    if found.error_code != 0 {
        return Err(error("find coordinator", found.error_code));
    }
    Client::connect(&format!("{}:{}", found.host.as_str(), found.port))
}

/// `groups delete-offsets`: OffsetDelete of `group`'s committed offsets of `topic` (the
/// given partitions, or all of the topic's). Prints one line per partition.
pub fn groups_delete_offsets(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<(), ClientError> {
    let partitions: Vec<i32> = if partitions.is_empty() {
        (0..super::leaders::Leaders::discover(bootstrap, topic)?.partition_count()).collect()
    } else {
        partitions.to_vec()
    };
    let mut client = coordinator_of(bootstrap, group)?;
    let request = OffsetDeleteRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&p| OffsetDeleteRequestPartition::default().with_partition_index(p))
                    .collect(),
            )]);
    let response = client.call(&request, 0)?;
    if response.error_code != 0 {
        return Err(error(
            &format!("delete offsets of group {group}"),
            response.error_code,
        ));
    }
    let mut failed = 0;
    for t in &response.topics {
        for p in &t.partitions {
            let outcome = match p.error_code {
                0 => "deleted".to_owned(),
                86 => "refused: the group subscribes to the topic (error code 86)".to_owned(),
                code => format!("error code {code}"),
            };
            failed += usize::from(p.error_code != 0);
            println!("{}-{}: {outcome}", t.name.0.as_str(), p.partition_index);
        }
    }
    if failed > 0 {
        return Err(ClientError::Kafka(format!(
            "{failed} partitions of {topic} kept their offsets"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Proves assignment bytes decode to topic-partitions and that truncated bytes are refused
    //! instead of read past, by feeding a hand-built assignment and its prefixes.
    use super::*;

    #[test]
    fn assignment_decodes_and_truncation_is_refused() {
        let mut raw = vec![0, 1, 0, 0, 0, 1, 0, 2, b't', b'6', 0, 0, 0, 2];
        raw.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 0]);
        let got = decode_assignment(Bytes::from(raw.clone())).unwrap();
        assert_eq!(got, vec![("t6".to_string(), 4), ("t6".to_string(), 5)]);
        for cut in [3, 9, 13, 17] {
            assert_eq!(decode_assignment(Bytes::from(raw[..cut].to_vec())), None);
        }
    }
}
