//! Proves replication end to end in one process: a coordinator and three brokers (one shard
//! each, and again with every core a shard, so fetches cross shards), a topic with replication
//! factor 3 and min.insync.replicas=2 whose second partition is the one followed. acks=all produces are acknowledged
//! once the ISR has them; when the leader stops, a follower from the ISR leads at a new epoch
//! and serves every acknowledged record at the offset it was acknowledged with; with one
//! broker of three left, acks=all is refused with NOT_ENOUGH_REPLICAS; stopped brokers come
//! back, catch up and rejoin the ISR by themselves, and their logs equal the leader's.
//! Then a disk fault: the leader's data directory (a loop-mounted ext4 image) fills up, its
//! write fails, the broker reports the replica in `/offline_replicas/<id>`, and the controller
//! moves leadership and the ISR to the other replicas, which serve every acknowledged record.
//! Read back through the Kafka protocol (the CLI's client) and the state znodes
//! (`zookeeper-client`); every server is stopped when the test ends, also on failure.

mod cluster_support;
mod kafka_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use broker::cli::client::Client;
use broker::cluster::ClusterConfig;
use broker::server::ServeConfig;
use cluster_support::{Members, Zk};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{BrokerId, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

const CHROOT: &str = "/replication-test";
const TOPIC: &str = "replicated";
/// The partition followed: the topic's second, on the second shard of a two-shard broker.
const PARTITION: i32 = 1;
const WAIT: Duration = Duration::from_secs(30);

fn config(id: i32, coordinator: &str, data_dir: &Path, all_cores: bool) -> ServeConfig {
    let cluster = ClusterConfig {
        default_replication_factor: 3,
        min_insync_replicas: 2,
        replica_lag_time_max_ms: 1500,
        ..cluster_support::cluster_config(id, format!("{coordinator}{CHROOT}"))
    };
    let mut config = cluster_support::member_config(data_dir, cluster);
    if all_cores {
        config.profile = kafka_support::all_cores_profile();
    }
    config
}

/// The three brokers (not started), with data directories `dirs` (under `root`).
fn brokers(
    coordinator: &str,
    all_cores: bool,
    root: tempfile::TempDir,
    dirs: [PathBuf; 3],
) -> Members {
    let coordinator = coordinator.to_string();
    Members::new((1..=3).zip(dirs).collect(), root, move |id, dir| {
        config(id, &coordinator, dir, all_cores)
    })
}

fn zk_client(coordinator: &str) -> Zk {
    Zk::connect(&format!("{coordinator}{CHROOT}"))
}

fn eventually<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    cluster_support::eventually(what, WAIT, check)
}

/// `(leader, leader_epoch, isr)` from the state znode.
fn state(zk: &Zk, partition: i32) -> Option<(i32, i32, Vec<i32>)> {
    zk.state(TOPIC, partition)
}

/// Produces one record (acks=all) and returns (error code, base offset).
fn produce(addr: &str, value: &[u8]) -> (i16, i64) {
    let mut client = Client::connect(addr).unwrap();
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(PARTITION)
                .with_records(Some(kafka_support::batch(&[value])))])]);
    let response = client.call(&request, 9).unwrap();
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

/// Every record a consumer can read from `addr`: offset -> value.
fn consume(addr: &str) -> BTreeMap<i64, Vec<u8>> {
    cluster_support::consume(addr, TOPIC, PARTITION)
}

#[test]
fn acknowledged_records_survive_leader_loss_and_replicas_rejoin() {
    run(false);
}

#[test]
fn the_same_with_every_core_a_shard() {
    run(true);
}

fn run(all_cores: bool) {
    let coordinator_server = cluster_support::Coordinator::start();
    let coordinator = coordinator_server.addr();
    let root = tempfile::tempdir().unwrap();
    let dirs = [1, 2, 3].map(|id| root.path().join(format!("b{id}")));
    let mut brokers = brokers(&coordinator, all_cores, root, dirs);
    for id in 1..=3 {
        brokers.start(id);
    }
    let zk = zk_client(&coordinator);

    broker::cli::topics_create(&brokers.addr(1), TOPIC, 2, 3, &[]).unwrap();
    let (leader, epoch, isr) = state(&zk, PARTITION).unwrap();
    assert_eq!(isr.len(), 3, "all replicas start in the ISR");

    // acks=all: each acknowledged record is at its offset. (The leader may learn of the new
    // topic a moment after the broker that created it.)
    eventually("the leader knows the topic", || {
        let (code, offset) = produce(&brokers.addr(leader), b"first");
        (code == 0).then_some(offset)
    });
    let mut acked = BTreeMap::new();
    acked.insert(0, b"first".to_vec());
    for i in 0..50u32 {
        let value = format!("before-{i}").into_bytes();
        let (code, offset) = produce(&brokers.addr(leader), &value);
        assert_eq!(code, 0, "produce {i}");
        acked.insert(offset, value);
    }
    assert_eq!(consume(&brokers.addr(leader)), acked);

    // The leader stops: an ISR member leads at a new epoch with every acknowledged record.
    brokers.stop(leader);
    let (next, next_epoch, _) = eventually("a new leader", || {
        state(&zk, PARTITION).filter(|s| s.0 >= 0 && s.0 != leader)
    });
    assert!(next_epoch > epoch);
    eventually("the new leader serves", || {
        (consume(&brokers.addr(next)) == acked).then_some(())
    });
    for i in 0..20u32 {
        let value = format!("after-{i}").into_bytes();
        let (code, offset) = eventually("acks=all with two brokers", || {
            let (code, offset) = produce(&brokers.addr(next), &value);
            (code == 0).then_some((code, offset))
        });
        assert_eq!(code, 0);
        acked.insert(offset, value);
    }

    // One broker of three: the ISR shrinks to it and acks=all is refused.
    let other = (1..=3).find(|&id| id != leader && id != next).unwrap();
    brokers.stop(other);
    eventually("the ISR shrinks to the leader", || {
        state(&zk, PARTITION).filter(|s| s.0 == next && s.2 == vec![next])
    });
    let (code, _) = produce(&brokers.addr(next), b"refused");
    assert_eq!(code, 19, "NOT_ENOUGH_REPLICAS");

    // Both come back, catch up, rejoin the ISR; every replica then serves the same log.
    brokers.start(other);
    brokers.start(leader);
    eventually("the ISR is whole again", || {
        state(&zk, PARTITION).filter(|s| s.2.len() == 3)
    });
    let (final_leader, _, _) = state(&zk, PARTITION).unwrap();
    assert_eq!(consume(&brokers.addr(final_leader)), acked);
    // Move leadership once more: the third replica serves the same records.
    brokers.stop(final_leader);
    let (last, _, _) = eventually("another leader", || {
        state(&zk, PARTITION).filter(|s| s.0 >= 0 && s.0 != final_leader)
    });
    eventually("the last leader serves", || {
        (consume(&brokers.addr(last)) == acked).then_some(())
    });
}

#[test]
fn a_leader_whose_disk_fills_hands_over_and_nothing_acknowledged_is_lost() {
    let coordinator_server = cluster_support::Coordinator::start();
    let coordinator = coordinator_server.addr();
    // Each broker on its own small file system; the leader's is then filled.
    let disks: Vec<kafka_support::SmallFs> =
        (0..3).map(|_| kafka_support::SmallFs::new(160)).collect();
    let dirs = [0, 1, 2].map(|i| disks[i].mount.join("data"));
    let mut brokers = brokers(&coordinator, false, tempfile::tempdir().unwrap(), dirs);
    for id in 1..=3 {
        brokers.start(id);
    }
    let zk = zk_client(&coordinator);
    broker::cli::topics_create(&brokers.addr(1), TOPIC, 2, 3, &[]).unwrap();
    let (leader, epoch, isr) = state(&zk, PARTITION).unwrap();
    assert_eq!(isr.len(), 3);
    eventually("the leader knows the topic", || {
        (produce(&brokers.addr(leader), b"first").0 == 0).then_some(())
    });
    let mut acked = BTreeMap::new();
    acked.insert(0, b"first".to_vec());

    // Leave the leader's disk a few MiB, then produce 64 KiB records until a write fails.
    let leader_disk = &disks[(leader - 1) as usize];
    let free = broker::storage::disk_budget::fs_space(&leader_disk.mount)
        .unwrap()
        .free_bytes;
    let ballast = vec![0u8; (free - (6 << 20)) as usize];
    std::fs::write(leader_disk.mount.join("ballast"), ballast).unwrap();
    let mut refused = 0;
    for i in 0..1000u32 {
        let mut value = vec![b'x'; 64 << 10];
        value[..10].copy_from_slice(format!("{i:010}").as_bytes());
        let (code, offset) = produce(&brokers.addr(leader), &value);
        if code != 0 {
            refused = code;
            break;
        }
        acked.insert(offset, value);
    }
    assert_eq!(
        refused, 56,
        "KAFKA_STORAGE_ERROR from the leader whose disk is full"
    );
    assert!(acked.len() > 10, "{} acknowledged", acked.len());

    // The controller hears of the failed replica: another ISR member leads, at a new epoch,
    // and the failed one is out of the ISR.
    let (next, next_epoch, next_isr) =
        eventually("leadership moves off the failed replica", || {
            state(&zk, PARTITION).filter(|s| s.0 >= 0 && s.0 != leader && !s.2.contains(&leader))
        });
    assert!(next_epoch > epoch);
    assert_eq!(next_isr.len(), 2, "{next_isr:?}");
    let reported =
        zk.0.block_on(zk.1.get_data(&format!("/offline_replicas/{leader}")))
            .unwrap()
            .0;
    let reported: serde_json::Value = serde_json::from_slice(&reported).unwrap();
    assert_eq!(reported["partitions"][0]["topic"], TOPIC);
    assert_eq!(reported["partitions"][0]["partition"], PARTITION);
    // Every acknowledged record at its offset on the new leader, which takes more. (The
    // refused record may be there too: the followers had it, only the leader's write failed.)
    let holds_every_acked = |got: &BTreeMap<i64, Vec<u8>>, acked: &BTreeMap<i64, Vec<u8>>| {
        acked
            .iter()
            .all(|(offset, value)| got.get(offset) == Some(value))
    };
    eventually("the new leader serves", || {
        holds_every_acked(&consume(&brokers.addr(next)), &acked).then_some(())
    });
    let (code, offset) = eventually("acks=all on the new leader", || {
        let (code, offset) = produce(&brokers.addr(next), b"after the fault");
        (code == 0).then_some((code, offset))
    });
    assert_eq!(code, 0);
    acked.insert(offset, b"after the fault".to_vec());
    let got = consume(&brokers.addr(next));
    assert!(holds_every_acked(&got, &acked));
    assert!(
        got.len() <= acked.len() + 1,
        "{} records, {} acked",
        got.len(),
        acked.len()
    );
    // The failed broker still serves its other partition, and tells clients the new leader.
    let mut client = Client::connect(&brokers.addr(leader)).unwrap();
    let metadata = client
        .call(
            &kafka_protocol::messages::MetadataRequest::default().with_topics(None),
            9,
        )
        .unwrap();
    let topic = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == TOPIC))
        .unwrap();
    let partition = &topic.partitions[PARTITION as usize];
    assert_eq!(partition.leader_id.0, next);
    assert_eq!(partition.offline_replicas, vec![BrokerId(leader)]);
    drop(brokers);
    drop(disks);
}
