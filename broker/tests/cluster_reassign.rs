//! Proves leader elections and partition reassignment through the controller, in one
//! process: a coordinator and three brokers. A partition on brokers [1, 2] holding
//! acknowledged records is moved to [3, 2]: the answer comes once the topic znode holds the
//! reassignment, broker 3 catches up and joins the ISR, leadership moves to it, broker 1 leaves
//! the ISR and its log is removed, and every acknowledged record is read back from the new
//! leader at its offset. A reassignment whose new replica stops cannot finish and is listed;
//! cancelling it reverts the partition to its replicas. ElectLeaders moves leadership back to
//! the preferred replica after a failover, answers ELECTION_NOT_NEEDED when it leads, and an
//! unclean election brings an offline partition back on a live replica outside the ISR.
//! Refusals carry Kafka's codes. A single node answers as a one-broker Kafka.
//! Every server is stopped when the test ends, also on failure.

mod cluster_support;
mod kafka_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use broker::cli::client::Client;
use broker::cluster::ClusterConfig;
use cluster_support::{consume as consume_partition, ints, Members, Zk};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, CreatePartitionsRequest, CreateTopicsRequest,
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const CHROOT: &str = "/reassign-test";
const WAIT: Duration = Duration::from_secs(30);

const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
const ELECTION_NOT_NEEDED: i16 = 84;
const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
const REASSIGNMENT_IN_PROGRESS: i16 = 60;

/// The three members: replication factor 2 by default, ISR lag 1.5 s.
fn members(coordinator: &str) -> Members {
    let root = tempfile::tempdir().unwrap();
    let dirs: BTreeMap<i32, PathBuf> = (1..=3)
        .map(|id| {
            let dir = root.path().join(format!("broker-{id}"));
            std::fs::create_dir_all(&dir).unwrap();
            (id, dir)
        })
        .collect();
    let connect = format!("{coordinator}{CHROOT}");
    Members::new(dirs, root, move |id, dir| {
        let cluster = ClusterConfig {
            default_replication_factor: 2,
            replica_lag_time_max_ms: 1500,
            ..cluster_support::cluster_config(id, connect.clone())
        };
        cluster_support::member_config(dir, cluster)
    })
}

/// `(replicas, adding, removing)` of a partition in the topic znode.
fn assignment(zk: &Zk, topic: &str, partition: i32) -> (Vec<i32>, Vec<i32>, Vec<i32>) {
    let json = zk.json(&format!("/brokers/topics/{topic}")).unwrap();
    let key = partition.to_string();
    (
        ints(&json["partitions"][&key]),
        ints(&json["adding_replicas"][&key]),
        ints(&json["removing_replicas"][&key]),
    )
}

/// Broker `id` is registered (`/brokers/ids/<id>`).
fn registered(zk: &Zk, id: i32) -> bool {
    zk.0.block_on(zk.1.list_children("/brokers/ids"))
        .is_ok_and(|live| live.contains(&id.to_string()))
}

fn eventually<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    cluster_support::eventually(what, WAIT, check)
}

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

fn create(addr: &str, topic: &str, replicas: &[i32]) {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(vec![CreatableReplicaAssignment::default()
                .with_partition_index(0)
                .with_broker_ids(
                    replicas.iter().map(|&b| BrokerId(b)).collect(),
                )])]);
    let response = Client::connect(addr).unwrap().call(&request, 5).unwrap();
    assert_eq!(response.topics[0].error_code, NONE, "{response:?}");
}

/// Reassigns partition 0 of `topic` (None: cancels); the partition's error code.
fn reassign(addr: &str, topic: &str, target: Option<&[i32]>) -> i16 {
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![ReassignableTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ReassignablePartition::default()
                .with_partition_index(0)
                .with_replicas(
                    target.map(|t| t.iter().map(|&b| BrokerId(b)).collect()),
                )])]);
    let response = Client::connect(addr).unwrap().call(&request, 0).unwrap();
    assert_eq!(response.error_code, NONE, "{response:?}");
    response.responses[0].partitions[0].error_code
}

/// A partition being reassigned: (topic-partition, replicas, adding, removing).
type Listed = (String, Vec<i32>, Vec<i32>, Vec<i32>);

fn list(addr: &str) -> Vec<Listed> {
    let response = Client::connect(addr)
        .unwrap()
        .call(
            &ListPartitionReassignmentsRequest::default().with_timeout_ms(1000),
            0,
        )
        .unwrap();
    assert_eq!(response.error_code, NONE);
    let ids = |l: &[BrokerId]| l.iter().map(|b| b.0).collect::<Vec<_>>();
    response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    format!("{}-{}", t.name.as_str(), p.partition_index),
                    ids(&p.replicas),
                    ids(&p.adding_replicas),
                    ids(&p.removing_replicas),
                )
            })
        })
        .collect()
}

fn elect(addr: &str, unclean: bool, topic: Option<&str>) -> ElectLeadersResponse {
    let request = ElectLeadersRequest::default()
        .with_election_type(i8::from(unclean))
        .with_timeout_ms(20_000)
        .with_topic_partitions(topic.map(|t| {
            vec![TopicPartitions::default()
                .with_topic(name(t))
                .with_partitions(vec![0])]
        }));
    Client::connect(addr).unwrap().call(&request, 2).unwrap()
}

fn elect_one(addr: &str, unclean: bool, topic: &str) -> i16 {
    let response = elect(addr, unclean, Some(topic));
    assert_eq!(response.error_code, NONE, "{response:?}");
    response.replica_election_results[0].partition_result[0].error_code
}

fn produce(addr: &str, topic: &str, value: &[u8]) -> (i16, i64) {
    let mut client = Client::connect(addr).unwrap();
    kafka_support::produce(&mut client, topic, 0, kafka_support::batch(&[value]))
}

fn consume(addr: &str, topic: &str) -> BTreeMap<i64, Vec<u8>> {
    consume_partition(addr, topic, 0)
}

/// Produces `count` records to the leader named by the state znode; the acknowledged ones.
fn produce_many(
    brokers: &Members,
    zk: &Zk,
    topic: &str,
    tag: &str,
    count: usize,
) -> BTreeMap<i64, Vec<u8>> {
    let mut acked = BTreeMap::new();
    for k in 0..count {
        let value = format!("{tag}-{k}").into_bytes();
        let (offset, _) = eventually("an acknowledged produce", || {
            let (leader, _, _) = zk.state(topic, 0)?;
            let (code, offset) = produce(&brokers.addr(leader), topic, &value);
            (code == NONE).then_some((offset, ()))
        });
        acked.insert(offset, value);
    }
    acked
}

#[test]
fn reassignment_moves_a_partition_and_elections_restore_leaders() {
    let coordinator = cluster_support::Coordinator::start();
    let mut brokers = members(&coordinator.addr());
    for id in 1..=3 {
        brokers.start(id);
    }
    let zk = Zk::connect(&format!("{}{CHROOT}", coordinator.addr()));
    let any = brokers.addr(2);

    // -- reassignment [1, 2] -> [3, 2] with acknowledged records on the way --
    create(&any, "moved", &[1, 2]);
    eventually("moved led by 1 with ISR [1, 2]", || {
        zk.state("moved", 0)
            .filter(|(l, _, isr)| *l == 1 && isr.len() == 2)
    });
    let mut acked = produce_many(&brokers, &zk, "moved", "before", 50);
    let broker1_log = brokers.dirs[&1].join("moved-0");
    assert!(broker1_log.exists());

    assert_eq!(reassign(&any, "moved", Some(&[3, 2])), NONE);
    let (leader, _, isr) = eventually("the reassignment to [3, 2] to finish", || {
        let (replicas, adding, removing) = assignment(&zk, "moved", 0);
        let state = zk.state("moved", 0)?;
        (replicas == [3, 2] && adding.is_empty() && removing.is_empty() && !state.2.contains(&1))
            .then_some(state)
    });
    assert_eq!(leader, 3, "the preferred replica of the target leads");
    assert!(
        isr.contains(&3) && isr.iter().all(|b| [2, 3].contains(b)),
        "{isr:?}"
    );
    eventually("broker 1's log of the moved replica removed", || {
        (!broker1_log.exists()).then_some(())
    });
    // The broker answering reads its view, which follows the znode a moment later.
    eventually("nothing left in progress", || {
        list(&any).is_empty().then_some(())
    });
    acked.extend(produce_many(&brokers, &zk, "moved", "after", 20));
    let read = consume(&brokers.addr(3), "moved");
    assert_eq!(
        read, acked,
        "every acknowledged record at its offset on the new leader"
    );

    // -- refusals --
    assert_eq!(reassign(&any, "moved", None), NO_REASSIGNMENT_IN_PROGRESS);
    assert_eq!(
        reassign(&any, "moved", Some(&[3, 9])),
        INVALID_REPLICA_ASSIGNMENT
    );
    assert_eq!(
        reassign(&any, "moved", Some(&[3, 3])),
        INVALID_REPLICA_ASSIGNMENT
    );
    assert_eq!(
        reassign(&any, "absent", Some(&[1])),
        UNKNOWN_TOPIC_OR_PARTITION
    );

    // -- preferred election after a failover --
    assert_eq!(elect_one(&any, false, "moved"), ELECTION_NOT_NEEDED);
    brokers.stop(3);
    eventually("2 leads moved", || {
        zk.state("moved", 0).filter(|(l, _, _)| *l == 2)
    });
    let any = brokers.addr(2);
    assert_eq!(
        elect_one(&any, false, "moved"),
        PREFERRED_LEADER_NOT_AVAILABLE,
        "3 is down"
    );
    brokers.start(3);
    eventually("3 back in the ISR", || {
        zk.state("moved", 0).filter(|(_, _, isr)| isr.contains(&3))
    });
    assert_eq!(elect_one(&any, false, "moved"), NONE);
    assert_eq!(
        zk.state("moved", 0).unwrap().0,
        3,
        "the preferred replica leads"
    );
    let all = elect(&any, false, None);
    assert!(
        all.replica_election_results.iter().all(|t| t
            .partition_result
            .iter()
            .all(|p| p.error_code != ELECTION_NOT_NEEDED)),
        "all partitions asked: those that needed nothing are left out: {all:?}"
    );
    acked.extend(produce_many(&brokers, &zk, "moved", "elected", 10));
    assert_eq!(consume(&brokers.addr(3), "moved"), acked);

    // -- a reassignment that cannot finish, listed, then cancelled --
    create(&any, "stuck", &[1, 2]);
    eventually("stuck online", || {
        zk.state("stuck", 0)
            .filter(|(l, _, isr)| *l == 1 && isr.len() == 2)
    });
    brokers.stop(3);
    eventually("3 gone from the registrations", || {
        (!registered(&zk, 3)).then_some(())
    });
    // Broker 3 is down: a target naming it is refused.
    assert_eq!(
        reassign(&any, "stuck", Some(&[3, 1])),
        INVALID_REPLICA_ASSIGNMENT
    );
    // A move taken while it was up (what the broker writes for [3, 1]), as an operator's tool
    // would write it: it cannot finish while 3 is down.
    let path = "/brokers/topics/stuck";
    let (data, stat) = zk.0.block_on(zk.1.get_data(path)).unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&data).unwrap();
    json["partitions"]["0"] = serde_json::json!([3, 1, 2]);
    json["adding_replicas"] = serde_json::json!({"0": [3]});
    json["removing_replicas"] = serde_json::json!({"0": [2]});
    let data = serde_json::to_vec(&json).unwrap();
    zk.0.block_on(zk.1.set_data(path, &data, Some(stat.version)))
        .unwrap();
    let listed = eventually("the move listed", || {
        let listed = list(&any);
        (!listed.is_empty()).then_some(listed)
    });
    assert_eq!(
        listed,
        vec![("stuck-0".to_string(), vec![3, 1, 2], vec![3], vec![2])]
    );
    eventually("the move waits for broker 3", || {
        let (replicas, adding, removing) = assignment(&zk, "stuck", 0);
        let (_, _, isr) = zk.state("stuck", 0)?;
        (replicas == [3, 1, 2] && adding == [3] && removing == [2] && !isr.contains(&3))
            .then_some(())
    });
    // Kafka refuses to add partitions to a topic while one of its partitions moves (the
    // rewrite would also lose the move).
    let grow = CreatePartitionsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(name("stuck"))
            .with_count(2)
            .with_assignments(None)]);
    let grown = Client::connect(&any).unwrap().call(&grow, 3).unwrap();
    assert_eq!(
        grown.results[0].error_code, REASSIGNMENT_IN_PROGRESS,
        "{grown:?}"
    );
    assert_eq!(
        assignment(&zk, "stuck", 0),
        (vec![3, 1, 2], vec![3], vec![2])
    );
    assert_eq!(reassign(&any, "stuck", None), NONE, "cancelled");
    eventually("the cancelled move reverted", || {
        let (replicas, adding, removing) = assignment(&zk, "stuck", 0);
        let (leader, _, isr) = zk.state("stuck", 0)?;
        (replicas == [1, 2]
            && adding.is_empty()
            && removing.is_empty()
            && leader == 1
            && isr.iter().all(|b| [1, 2].contains(b)))
        .then_some(())
    });
    eventually("no move listed after the cancel", || {
        list(&any).is_empty().then_some(())
    });

    // -- unclean election of an offline partition (broker 3, not a replica, stays up) --
    brokers.start(3);
    eventually("3 registered again", || registered(&zk, 3).then_some(()));
    create(&any, "lossy", &[2, 1]);
    eventually("lossy online", || {
        zk.state("lossy", 0)
            .filter(|(l, _, isr)| *l == 2 && isr.len() == 2)
    });
    brokers.stop(1);
    eventually("1 out of lossy's ISR", || {
        zk.state("lossy", 0).filter(|(_, _, isr)| *isr == [2])
    });
    brokers.stop(2);
    eventually("lossy offline", || {
        zk.state("lossy", 0).filter(|(l, _, _)| *l == -1)
    });
    brokers.start(1);
    let any = brokers.addr(1);
    eventually("1 registered", || registered(&zk, 1).then_some(()));
    assert_eq!(
        elect_one(&any, false, "lossy"),
        PREFERRED_LEADER_NOT_AVAILABLE,
        "the preferred replica 2 is down"
    );
    assert_eq!(
        zk.state("lossy", 0).unwrap().0,
        -1,
        "no clean election without an ISR member"
    );
    assert_eq!(elect_one(&any, true, "lossy"), NONE);
    let (leader, _, isr) = zk.state("lossy", 0).unwrap();
    assert_eq!(
        (leader, isr),
        (1, vec![1]),
        "the live replica outside the ISR leads"
    );
    assert_eq!(elect_one(&any, true, "lossy"), ELECTION_NOT_NEEDED);
}

#[test]
fn a_single_node_answers_as_a_one_broker_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let handle = kafka_support::start(kafka_support::dev_profile(), dir.path());
    let addr = handle.addr.to_string();
    broker::cli::topics_create(&addr, "solo", 2, 1, &[]).unwrap();
    assert_eq!(elect_one(&addr, false, "solo"), ELECTION_NOT_NEEDED);
    assert_eq!(elect_one(&addr, true, "solo"), ELECTION_NOT_NEEDED);
    assert_eq!(elect_one(&addr, false, "nope"), UNKNOWN_TOPIC_OR_PARTITION);
    let all = elect(&addr, false, None);
    assert!(all.replica_election_results.is_empty(), "{all:?}");
    assert_eq!(reassign(&addr, "solo", Some(&[0])), NONE);
    assert_eq!(
        reassign(&addr, "solo", Some(&[0, 1])),
        INVALID_REPLICA_ASSIGNMENT
    );
    assert_eq!(reassign(&addr, "solo", None), NO_REASSIGNMENT_IN_PROGRESS);
    assert!(list(&addr).is_empty());
    handle.shutdown();
}
