//! Proves cluster mode end to end in one process: a coordinator and three brokers on loopback.
//! Brokers register Kafka's znodes, one is elected controller, a topic created through one
//! broker gets leaders on all three (as every broker's Metadata and the state znodes agree),
//! only a partition's leader takes produce, a stopped broker's partitions go offline and come
//! back at a new leader epoch with their data, the controller seat moves when its holder stops,
//! deletion removes every znode and log, and a second broker with a live id is refused.
//! Everything is read back through the ZooKeeper protocol (`zookeeper-client`) and the Kafka
//! protocol (the CLI's client); every server is stopped when the test ends, also on failure.

mod cluster_support;
mod kafka_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use broker::cli::client::Client;
use broker::cluster::ClusterConfig;
use broker::server::{self, ServeConfig, ServerHandle};
use cluster_support::eventually;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use zookeeper_client as zk;

const CHROOT: &str = "/cluster-test";
const SESSION_TIMEOUT_MS: u64 = 2000;

fn config(id: i32, coordinator: &str, data_dir: &Path) -> ServeConfig {
    cluster_support::member_config(
        data_dir,
        ClusterConfig {
            session_timeout_ms: SESSION_TIMEOUT_MS,
            rack: (id == 1).then(|| "r1".to_string()),
            ..cluster_support::cluster_config(id, format!("{coordinator}{CHROOT}"))
        },
    )
}

struct Brokers {
    handles: Vec<Option<ServerHandle>>,
    dirs: Vec<PathBuf>,
    _root: tempfile::TempDir,
}

impl Brokers {
    fn start(coordinator: &str, count: usize) -> Brokers {
        let root = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (1..=count)
            .map(|i| root.path().join(format!("b{i}")))
            .collect();
        let handles = dirs
            .iter()
            .enumerate()
            .map(|(i, dir)| {
                Some(server::start(config(i as i32 + 1, coordinator, dir)).expect("broker starts"))
            })
            .collect();
        Brokers {
            handles,
            dirs,
            _root: root,
        }
    }

    fn addr(&self, id: i32) -> String {
        self.handles[id as usize - 1]
            .as_ref()
            .expect("broker running")
            .addr
            .to_string()
    }

    fn stop(&mut self, id: i32) {
        if let Some(handle) = self.handles[id as usize - 1].take() {
            handle.shutdown();
        }
    }

    fn restart(&mut self, id: i32, coordinator: &str) {
        let dir = &self.dirs[id as usize - 1];
        self.handles[id as usize - 1] =
            Some(server::start(config(id, coordinator, dir)).expect("broker restarts"));
    }
}

impl Drop for Brokers {
    fn drop(&mut self) {
        for handle in self.handles.iter_mut() {
            if let Some(handle) = handle.take() {
                handle.shutdown();
            }
        }
    }
}

/// A ZooKeeper client on its own runtime, for reading what the brokers wrote.
struct Zk {
    runtime: tokio::runtime::Runtime,
    client: zk::Client,
}

impl Zk {
    fn connect(addr: &str) -> Zk {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = runtime
            .block_on(
                zk::Client::connector()
                    .with_session_timeout(Duration::from_secs(4))
                    .connect(&format!("{addr}{CHROOT}")),
            )
            .expect("zk connects");
        Zk { runtime, client }
    }

    fn get(&self, path: &str) -> Option<(serde_json::Value, zk::Stat)> {
        match self.runtime.block_on(self.client.get_data(path)) {
            Ok((data, stat)) => Some((
                serde_json::from_slice(&data).unwrap_or(serde_json::Value::Null),
                stat,
            )),
            Err(zk::Error::NoNode) => None,
            Err(err) => panic!("{path}: {err}"),
        }
    }

    fn raw(&self, path: &str) -> Option<Vec<u8>> {
        match self.runtime.block_on(self.client.get_data(path)) {
            Ok((data, _)) => Some(data),
            Err(zk::Error::NoNode) => None,
            Err(err) => panic!("{path}: {err}"),
        }
    }

    fn children(&self, path: &str) -> Vec<String> {
        let mut children = self
            .runtime
            .block_on(self.client.list_children(path))
            .unwrap_or_default();
        children.sort();
        children
    }
}

fn metadata(addr: &str, topic: &str) -> MetadataResponse {
    let mut client = Client::connect(addr).unwrap();
    let request =
        MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))))]));
    client.call(&request, 12).unwrap()
}

/// `(leader, leader_epoch, error_code)` per partition, from one broker's Metadata.
fn leaders(addr: &str, topic: &str) -> Vec<(i32, i32, i16)> {
    let response = metadata(addr, topic);
    let mut partitions: Vec<_> = response.topics[0].partitions.iter().collect();
    partitions.sort_by_key(|p| p.partition_index);
    partitions
        .iter()
        .map(|p| (p.leader_id.0, p.leader_epoch, p.error_code))
        .collect()
}

fn produce(addr: &str, topic: &str, partition: i32, value: &[u8]) -> i16 {
    let mut client = Client::connect(addr).unwrap();
    let request = kafka_support::produce_request(topic, partition, kafka_support::batch(&[value]));
    let response = client.call(&request, 9).unwrap();
    response.responses[0].partition_responses[0].error_code
}

fn state(zk: &Zk, topic: &str, partition: i32) -> Option<(i32, i32, Vec<i64>)> {
    let (json, _) = zk.get(&format!(
        "/brokers/topics/{topic}/partitions/{partition}/state"
    ))?;
    Some((
        json["leader"].as_i64()? as i32,
        json["leader_epoch"].as_i64()? as i32,
        json["isr"]
            .as_array()?
            .iter()
            .filter_map(|v| v.as_i64())
            .collect(),
    ))
}

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn three_brokers_register_elect_assign_fail_over_and_delete() {
    let coordinator = cluster_support::Coordinator::start();
    let mut brokers = Brokers::start(&coordinator.addr(), 3);
    let zk = Zk::connect(&coordinator.addr());

    // Registration, in Kafka's v5 JSON; the cluster id and the controller.
    assert_eq!(zk.children("/brokers/ids"), vec!["1", "2", "3"]);
    for id in 1..=3 {
        let (json, stat) = zk.get(&format!("/brokers/ids/{id}")).unwrap();
        let port: i64 = brokers
            .addr(id)
            .rsplit_once(':')
            .unwrap()
            .1
            .parse()
            .unwrap();
        assert_eq!(json["version"], 5);
        assert_eq!(json["port"], port);
        assert_eq!(
            json["endpoints"][0],
            format!("PLAINTEXT://{}", brokers.addr(id))
        );
        assert!(json["timestamp"].is_string());
        assert_eq!(json.get("rack").is_some(), id == 1);
        assert_ne!(stat.ephemeral_owner, 0, "registration is ephemeral");
    }
    let (cluster, _) = zk.get("/cluster/id").unwrap();
    assert_eq!(cluster["version"], "1");
    let cluster_id = cluster["id"].as_str().unwrap().to_string();
    assert_eq!(cluster_id.len(), 22);
    let controller = eventually("a controller", WAIT, || {
        zk.get("/controller")
            .and_then(|(json, _)| json["brokerid"].as_i64())
    }) as i32;
    assert!((1..=3).contains(&controller));
    let epoch_before: i32 = String::from_utf8(zk.raw("/controller_epoch").unwrap())
        .unwrap()
        .parse()
        .unwrap();

    // A topic created through broker 2 gets a leader on each broker; all agree.
    broker::cli::topics_create(
        &brokers.addr(2),
        "orders",
        6,
        -1,
        &[("retention.ms".into(), "3600000".into())],
    )
    .unwrap();
    let (topic, _) = zk.get("/brokers/topics/orders").unwrap();
    assert_eq!(topic["version"], 3);
    assert_eq!(topic["topic_id"].as_str().unwrap().len(), 22);
    let (topic_config, _) = zk.get("/config/topics/orders").unwrap();
    assert_eq!(topic_config["config"]["retention.ms"], "3600000");
    let from_zk: Vec<i32> = (0..6)
        .map(|p| state(&zk, "orders", p).expect("state written").0)
        .collect();
    let mut spread = from_zk.clone();
    spread.sort();
    spread.dedup();
    assert_eq!(spread, vec![1, 2, 3], "leaders spread over the brokers");
    for id in 1..=3 {
        let response = eventually("every broker's view", WAIT, || {
            let seen = leaders(&brokers.addr(id), "orders");
            (seen.iter().map(|l| l.0).collect::<Vec<_>>() == from_zk).then_some(seen)
        });
        assert!(response
            .iter()
            .all(|&(_, epoch, code)| epoch == 0 && code == 0));
        let meta = metadata(&brokers.addr(id), "orders");
        assert_eq!(meta.cluster_id.as_ref().unwrap().as_str(), cluster_id);
        assert_eq!(meta.controller_id.0, controller);
        assert_eq!(meta.brokers.len(), 3);
    }
    // More replicas than live brokers: refused.
    let refused = broker::cli::topics_create(&brokers.addr(1), "wide", 1, 4, &[]);
    assert!(format!("{:?}", refused.unwrap_err()).contains("38"));

    // Producer ids come from blocks reserved in the coordinator: unique over the brokers.
    let mut ids = Vec::new();
    for id in 1..=3 {
        let mut client = Client::connect(&brokers.addr(id)).unwrap();
        for _ in 0..2 {
            let response = client
                .call(
                    &kafka_protocol::messages::InitProducerIdRequest::default(),
                    4,
                )
                .unwrap();
            assert_eq!(response.error_code, 0);
            ids.push(response.producer_id.0);
        }
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "producer ids given twice: {ids:?}");
    let (block, _) = zk.get("/latest_producer_id_block").unwrap();
    assert_eq!(block["version"], 1);
    assert!(block["block_end"].is_string());

    // Only a partition's leader takes produce.
    for (partition, &leader) in from_zk.iter().enumerate() {
        let other = leader % 3 + 1;
        let p = partition as i32;
        assert_eq!(produce(&brokers.addr(other), "orders", p, b"no"), 6);
        assert_eq!(produce(&brokers.addr(leader), "orders", p, b"kept"), 0);
    }

    // A broker that is not the controller stops: its partitions go offline (the ISR keeps
    // it), the rest keep serving; back, it leads them again at a new epoch with its data.
    let victim = (1..=3).find(|&id| id != controller).unwrap();
    let led: Vec<i32> = (0..6).filter(|&p| from_zk[p as usize] == victim).collect();
    assert!(!led.is_empty());
    brokers.stop(victim);
    let survivor = (1..=3).find(|&id| id != victim).unwrap();
    for &p in &led {
        let (leader, epoch, isr) = eventually("partition offline", WAIT, || {
            state(&zk, "orders", p).filter(|s| s.0 == -1)
        });
        assert_eq!((leader, epoch, isr), (-1, 1, vec![victim as i64]));
    }
    eventually("offline in Metadata", WAIT, || {
        let seen = leaders(&brokers.addr(survivor), "orders");
        led.iter()
            .all(|&p| seen[p as usize] == (-1, 1, 5))
            .then_some(())
    });
    for p in (0..6).filter(|p| !led.contains(p)) {
        let leader = from_zk[p as usize];
        assert_eq!(produce(&brokers.addr(leader), "orders", p, b"more"), 0);
    }
    brokers.restart(victim, &coordinator.addr());
    for &p in &led {
        let (leader, epoch, _) = eventually("leader back", WAIT, || {
            state(&zk, "orders", p).filter(|s| s.0 == victim)
        });
        assert_eq!((leader, epoch), (victim, 2));
        let consumed = broker::cli::consume(
            &brokers.addr(victim),
            &broker::cli::ConsumeOptions {
                topic: "orders",
                from_beginning: true,
                partition: Some(p),
                max_messages: Some(1),
                idle_timeout: Duration::from_secs(5),
                key_separator: None,
            },
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(
            consumed, 1,
            "the record acknowledged before the stop is back"
        );
    }

    // The controller stops: another broker takes the seat at a higher epoch.
    brokers.stop(controller);
    let next = eventually("a new controller", WAIT, || {
        zk.get("/controller")
            .and_then(|(json, _)| json["brokerid"].as_i64())
            .filter(|&id| id as i32 != controller)
    }) as i32;
    let epoch_after: i32 = String::from_utf8(zk.raw("/controller_epoch").unwrap())
        .unwrap()
        .parse()
        .unwrap();
    assert!(epoch_after > epoch_before);
    assert!(!zk
        .children("/brokers/ids")
        .contains(&controller.to_string()));
    brokers.restart(controller, &coordinator.addr());

    // Deletion through a broker removes the znodes and every broker's logs.
    eventually("all partitions led", WAIT, || {
        leaders(&brokers.addr(next), "orders")
            .iter()
            .all(|l| l.2 == 0)
            .then_some(())
    });
    broker::cli::topics_delete(&brokers.addr(next), "orders").unwrap();
    assert!(zk.get("/brokers/topics/orders").is_none());
    assert!(zk.get("/config/topics/orders").is_none());
    eventually("delete mark cleaned", WAIT, || {
        zk.children("/admin/delete_topics").is_empty().then_some(())
    });
    for dir in &brokers.dirs {
        eventually("logs removed", WAIT, || {
            (0..6)
                .all(|p| !dir.join(format!("orders-{p}")).exists())
                .then_some(())
        });
    }

    // A second broker with a live id is refused after the session timeout passes.
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let err = match server::start(config(next, &coordinator.addr(), dir.path())) {
        Ok(_) => panic!("a second broker {next} was let in"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("already registered"), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(SESSION_TIMEOUT_MS));
}
