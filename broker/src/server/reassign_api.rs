//! ElectLeaders (API 43), AlterPartitionReassignments (API 45) and
//! ListPartitionReassignments (API 46), as Kafka's AdminClient calls them.
//!
//! In cluster mode the decisions are the controller's (`cluster::controller`): an election
//! request goes to it through `/admin/elect_leaders` and the answer waits (bounded by the
//! request's timeout) until this broker's view shows the new leader; a reassignment is written
//! into the topic znode (Kafka's adding/removing replicas) and answered once written, the
//! controller then carries it out. What can be told from the view is answered at once, with
//! Kafka's codes: ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE,
//! ELIGIBLE_LEADERS_NOT_AVAILABLE, INVALID_REPLICA_ASSIGNMENT, NO_REASSIGNMENT_IN_PROGRESS.
//!
//! A single node answers as a one-broker Kafka: every partition is led by its only (and
//! preferred) replica, so elections are not needed, a reassignment to this broker changes
//! nothing, one naming another broker is refused, and none is ever in progress.
//!
//! Authorization (ALTER on the cluster for the first two, DESCRIBE for the list) is decided by
//! the dispatcher and passed in as `allowed`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::controller::{ElectionType, TopicPartition, NO_LEADER};
use crate::cluster::{ClusterView, Command};
use crate::kafka::codes;

use super::shard::Shard;

/// The longest an ElectLeaders answer waits for the controller, whatever the request asks.
const ELECTION_WAIT_MAX: Duration = Duration::from_secs(30);
/// Partitions one request may name at most: a bound on the work and the answer.
pub const PARTITIONS_PER_REQUEST_MAX: usize = 10_000;
/// `INVALID_REPLICATION_FACTOR`, for AlterPartitionReassignments v1 that forbids a change.
const INVALID_REPLICATION_FACTOR: i16 = 38;

type Outcome = Result<(), (i16, String)>;
/// A partition and its target replicas (None: cancel), as a request names them.
type ReassignEntry = (TopicPartition, Option<Vec<i32>>);

fn text(message: String) -> Option<StrBytes> {
    Some(StrBytes::from_string(message))
}

/// The partitions an ElectLeaders request names, in order (None: every partition).
fn requested(body: &ElectLeadersRequest) -> Option<Vec<TopicPartition>> {
    body.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|&p| TopicPartition::new(t.topic.as_str(), p))
            })
            .collect()
    })
}

fn election_answer(
    results: Vec<(TopicPartition, Outcome)>,
    error_code: i16,
) -> ElectLeadersResponse {
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for (tp, outcome) in results {
        let (code, message) = match outcome {
            Ok(()) => (codes::NONE, None),
            Err((code, why)) => (code, text(why)),
        };
        by_topic.entry(tp.topic).or_default().push(
            PartitionResult::default()
                .with_partition_id(tp.partition)
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    ElectLeadersResponse::default()
        .with_error_code(error_code)
        .with_replica_election_results(
            by_topic
                .into_iter()
                .map(|(topic, partitions)| {
                    ReplicaElectionResult::default()
                        .with_topic(TopicName(StrBytes::from_string(topic)))
                        .with_partition_result(partitions)
                })
                .collect(),
        )
}

/// What the view tells of one election before the controller is asked: Some(outcome) when
/// it is decided already, None when the controller must run it.
fn precheck_election(
    view: &ClusterView,
    tp: &TopicPartition,
    election: ElectionType,
) -> Option<Outcome> {
    let Some(partition) = view.partition(&tp.topic, tp.partition) else {
        return Some(Err((
            codes::UNKNOWN_TOPIC_OR_PARTITION,
            format!("{tp} does not exist"),
        )));
    };
    let Some(state) = &partition.state else {
        return Some(Err((
            codes::LEADER_NOT_AVAILABLE,
            format!("{tp} has no state yet"),
        )));
    };
    let serving =
        |b: i32| view.brokers.contains_key(&b) && !view.replica_failed(b, &tp.topic, tp.partition);
    match election {
        ElectionType::Preferred => {
            let preferred = partition.replicas.first().copied().unwrap_or(NO_LEADER);
            if state.leader == preferred {
                Some(Err((
                    codes::ELECTION_NOT_NEEDED,
                    format!("{tp} is led by its preferred replica {preferred}"),
                )))
            } else if !serving(preferred) || !state.isr.contains(&preferred) {
                Some(Err((
                    codes::PREFERRED_LEADER_NOT_AVAILABLE,
                    format!("{tp}: the preferred replica {preferred} is not live and in sync"),
                )))
            } else {
                None
            }
        }
        ElectionType::Unclean => {
            if state.leader != NO_LEADER {
                Some(Err((
                    codes::ELECTION_NOT_NEEDED,
                    format!("{tp} is led by broker {}", state.leader),
                )))
            } else if !partition.replicas.iter().any(|&b| serving(b)) {
                Some(Err((
                    codes::ELIGIBLE_LEADERS_NOT_AVAILABLE,
                    format!("{tp}: no replica is live"),
                )))
            } else {
                None
            }
        }
    }
}

/// True once the view shows `election` done for `tp`.
fn elected(view: &ClusterView, tp: &TopicPartition, election: ElectionType) -> bool {
    let Some(partition) = view.partition(&tp.topic, tp.partition) else {
        return false;
    };
    match (election, view.leader(&tp.topic, tp.partition)) {
        (ElectionType::Preferred, Some((leader, _))) => partition.replicas.first() == Some(&leader),
        (ElectionType::Unclean, Some(_)) => true,
        (_, None) => false,
    }
}

/// Answers ElectLeaders. `allowed`: the principal may ALTER the cluster.
pub async fn elect_leaders(
    shard: &Shard,
    body: ElectLeadersRequest,
    allowed: bool,
) -> ElectLeadersResponse {
    let election = if body.election_type == 1 {
        ElectionType::Unclean
    } else {
        ElectionType::Preferred
    };
    let named = requested(&body);
    if !allowed {
        let results = named
            .unwrap_or_default()
            .into_iter()
            .map(|tp| {
                let why = "ALTER on the cluster is needed".to_string();
                (tp, Err((codes::CLUSTER_AUTHORIZATION_FAILED, why)))
            })
            .collect();
        return election_answer(results, codes::CLUSTER_AUTHORIZATION_FAILED);
    }
    if body.election_type != 0 && body.election_type != 1 {
        return election_answer(Vec::new(), codes::INVALID_REQUEST);
    }
    let every_partition = named.is_none();
    let partitions = match named {
        Some(list) => list,
        None => all_partitions(shard),
    };
    if partitions.len() > PARTITIONS_PER_REQUEST_MAX {
        return election_answer(Vec::new(), codes::INVALID_REQUEST);
    }
    let mut results: Vec<(TopicPartition, Option<Outcome>)> = match shard.cluster_view() {
        None => partitions
            .into_iter()
            .map(|tp| {
                let outcome = single_node_election(shard, &tp);
                (tp, Some(outcome))
            })
            .collect(),
        Some(view) => partitions
            .into_iter()
            .map(|tp| {
                let outcome = precheck_election(&view, &tp, election);
                (tp, outcome)
            })
            .collect(),
    };
    let pending: Vec<TopicPartition> = results
        .iter()
        .filter(|(_, outcome)| outcome.is_none())
        .map(|(tp, _)| tp.clone())
        .collect();
    if !pending.is_empty() {
        let wait = Duration::from_millis(body.timeout_ms.max(0) as u64).min(ELECTION_WAIT_MAX);
        let outcomes = run_elections(shard, election, pending, wait).await;
        for (tp, outcome) in results.iter_mut() {
            if outcome.is_none() {
                *outcome = outcomes.get(tp).cloned();
            }
        }
    }
    let results = results
        .into_iter()
        .map(|(tp, outcome)| {
            let outcome = outcome.unwrap_or(Err((
                codes::UNKNOWN_SERVER_ERROR,
                format!("{tp}: no outcome"),
            )));
            (tp, outcome)
        })
        // Kafka leaves out the partitions that needed nothing when all were asked for.
        .filter(|(_, outcome)| {
            !every_partition || !matches!(outcome, Err((codes::ELECTION_NOT_NEEDED, _)))
        })
        .collect();
    election_answer(results, codes::NONE)
}

fn all_partitions(shard: &Shard) -> Vec<TopicPartition> {
    match shard.cluster_view() {
        Some(view) => view
            .topics
            .iter()
            .flat_map(|(name, t)| {
                (0..t.partitions.len() as i32).map(move |p| TopicPartition::new(name.clone(), p))
            })
            .collect(),
        None => shard
            .topics
            .borrow()
            .values()
            .flat_map(|t| {
                let name = t.name.clone();
                (0..t.partition_count()).map(move |p| TopicPartition::new(name.clone(), p))
            })
            .collect(),
    }
}

/// A single node leads every partition it has with its only replica.
fn single_node_election(shard: &Shard, tp: &TopicPartition) -> Outcome {
    match shard.topic(&tp.topic) {
        Some(topic) if (0..topic.partition_count()).contains(&tp.partition) => Err((
            codes::ELECTION_NOT_NEEDED,
            format!("{tp} is led by its only replica"),
        )),
        _ => Err((
            codes::UNKNOWN_TOPIC_OR_PARTITION,
            format!("{tp} does not exist"),
        )),
    }
}

/// Hands the elections to the controller and waits (at most `wait`) until the view shows
/// each done; those not done by then are REQUEST_TIMED_OUT (or what the view says now).
async fn run_elections(
    shard: &Shard,
    election: ElectionType,
    pending: Vec<TopicPartition>,
    wait: Duration,
) -> BTreeMap<TopicPartition, Outcome> {
    let cluster = shard.cluster.as_ref().expect("cluster mode");
    let (tx, rx) = async_channel::bounded(1);
    let command = Command::ElectLeaders {
        election,
        partitions: pending.clone(),
        reply: tx,
    };
    let asked = match cluster.commands.send(command).await {
        Ok(()) => rx
            .recv()
            .await
            .unwrap_or_else(|_| Err("the cluster agent stopped".into())),
        Err(_) => Err("the cluster agent stopped".into()),
    };
    let path = match asked {
        Ok(path) => path,
        Err(why) => {
            return pending
                .into_iter()
                .map(|tp| (tp, Err((codes::UNKNOWN_SERVER_ERROR, why.clone()))))
                .collect()
        }
    };
    let deadline = Instant::now() + wait;
    let mut outcomes = BTreeMap::new();
    let mut left = pending;
    loop {
        if let Some(view) = shard.cluster_view() {
            left.retain(|tp| {
                let done = elected(&view, tp, election);
                if done {
                    outcomes.insert(tp.clone(), Ok(()));
                }
                !done
            });
        }
        if left.is_empty() || Instant::now() >= deadline {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    if !left.is_empty() {
        // The controller may not have taken it (none elected): do not leave it behind.
        let _ = cluster.commands.try_send(Command::ForgetElection { path });
    }
    // Not done in time: what the view says now (the preferred replica fell out of sync...),
    // else a timeout.
    let view = shard.cluster_view();
    for tp in left {
        let refused = view
            .as_ref()
            .and_then(|view| precheck_election(view, &tp, election))
            .and_then(Result::err);
        let outcome = refused.unwrap_or_else(|| {
            let why = format!("{tp}: the election did not show within {wait:?}");
            (codes::REQUEST_TIMED_OUT, why)
        });
        outcomes.insert(tp, Err(outcome));
    }
    outcomes
}

/// Answers AlterPartitionReassignments. `allowed`: the principal may ALTER the cluster.
pub async fn alter_reassignments(
    shard: &Shard,
    body: AlterPartitionReassignmentsRequest,
    allowed: bool,
) -> AlterPartitionReassignmentsResponse {
    let answer = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(body.allow_replication_factor_change);
    if !allowed {
        return answer
            .with_error_code(codes::CLUSTER_AUTHORIZATION_FAILED)
            .with_error_message(text("ALTER on the cluster is needed".into()));
    }
    let count: usize = body.topics.iter().map(|t| t.partitions.len()).sum();
    if count > PARTITIONS_PER_REQUEST_MAX {
        return answer
            .with_error_code(codes::INVALID_REQUEST)
            .with_error_message(text(format!(
                "{count} partitions in one request; at most {PARTITIONS_PER_REQUEST_MAX}"
            )));
    }
    let mut entries: Vec<ReassignEntry> = Vec::with_capacity(count);
    for topic in &body.topics {
        for p in &topic.partitions {
            let target = p
                .replicas
                .as_ref()
                .map(|r| r.iter().map(|b| b.0).collect::<Vec<i32>>());
            entries.push((
                TopicPartition::new(topic.name.as_str(), p.partition_index),
                target,
            ));
        }
    }
    let mut outcomes: Vec<Option<Outcome>> = entries
        .iter()
        .map(|(tp, target)| precheck_reassignment(shard, tp, target.as_deref(), &body))
        .collect();
    let to_write: Vec<(usize, ReassignEntry)> = entries
        .iter()
        .cloned()
        .enumerate()
        .filter(|(k, _)| outcomes[*k].is_none())
        .collect();
    if !to_write.is_empty() {
        let cluster = shard
            .cluster
            .as_ref()
            .expect("only a cluster leaves entries");
        let (tx, rx) = async_channel::bounded(1);
        let requests = to_write.iter().map(|(_, e)| e.clone()).collect();
        let command = Command::AlterReassignments {
            requests,
            reply: tx,
        };
        let written = match cluster.commands.send(command).await {
            Ok(()) => rx.recv().await.ok(),
            Err(_) => None,
        };
        for (n, (k, _)) in to_write.iter().enumerate() {
            outcomes[*k] = Some(match written.as_ref().and_then(|w| w.get(n)) {
                Some(result) => result.clone(),
                None => Err((
                    codes::UNKNOWN_SERVER_ERROR,
                    "the cluster agent stopped".into(),
                )),
            });
        }
    }
    let mut by_topic: BTreeMap<String, Vec<ReassignablePartitionResponse>> = BTreeMap::new();
    for ((tp, _), outcome) in entries.into_iter().zip(outcomes) {
        let (code, message) = match outcome.unwrap_or(Ok(())) {
            Ok(()) => (codes::NONE, None),
            Err((code, why)) => (code, text(why)),
        };
        by_topic.entry(tp.topic).or_default().push(
            ReassignablePartitionResponse::default()
                .with_partition_index(tp.partition)
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    answer.with_responses(
        by_topic
            .into_iter()
            .map(|(name, partitions)| {
                ReassignableTopicResponse::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(partitions)
            })
            .collect(),
    )
}

/// What can be answered without writing: Some(outcome) when decided (an error, or a single
/// node's no-op), None when the topic znode must be written.
fn precheck_reassignment(
    shard: &Shard,
    tp: &TopicPartition,
    target: Option<&[i32]>,
    body: &AlterPartitionReassignmentsRequest,
) -> Option<Outcome> {
    let unknown = || {
        Some(Err((
            codes::UNKNOWN_TOPIC_OR_PARTITION,
            format!("{tp} does not exist"),
        )))
    };
    let Some(view) = shard.cluster_view() else {
        // A single node: its only replica of an existing partition.
        let Some(topic) = shard.topic(&tp.topic) else {
            return unknown();
        };
        if !(0..topic.partition_count()).contains(&tp.partition) {
            return unknown();
        }
        let me = shard.config.node_id;
        return Some(match target {
            None => Err((
                codes::NO_REASSIGNMENT_IN_PROGRESS,
                format!("{tp} is not being reassigned"),
            )),
            Some([only]) if *only == me => Ok(()),
            Some(other) => Err((
                codes::INVALID_REPLICA_ASSIGNMENT,
                format!(
                    "replica assignment {other:?} names brokers that are not alive (only {me} is)"
                ),
            )),
        });
    };
    let Some(partition) = view.partition(&tp.topic, tp.partition) else {
        return unknown();
    };
    let Some(target) = target else {
        return (!partition.reassignment.in_progress()).then(|| {
            Err((
                codes::NO_REASSIGNMENT_IN_PROGRESS,
                format!("{tp} is not being reassigned"),
            ))
        });
    };
    if let Some(dead) = target.iter().find(|b| !view.brokers.contains_key(b)) {
        return Some(Err((
            codes::INVALID_REPLICA_ASSIGNMENT,
            format!("replica assignment {target:?} names broker {dead}, which is not alive"),
        )));
    }
    let origin = partition.reassignment.origin(&partition.replicas);
    if !body.allow_replication_factor_change && target.len() != origin.len() {
        return Some(Err((
            INVALID_REPLICATION_FACTOR,
            format!(
                "{tp}: {} replicas instead of {} and the request forbids a change of the \
                 replication factor",
                target.len(),
                origin.len()
            ),
        )));
    }
    None
}

/// Answers ListPartitionReassignments from the view. `allowed`: the principal may DESCRIBE
/// the cluster.
pub fn list_reassignments(
    shard: &Shard,
    body: &ListPartitionReassignmentsRequest,
    allowed: bool,
) -> ListPartitionReassignmentsResponse {
    let answer = ListPartitionReassignmentsResponse::default();
    if !allowed {
        return answer
            .with_error_code(codes::CLUSTER_AUTHORIZATION_FAILED)
            .with_error_message(text("DESCRIBE on the cluster is needed".into()));
    }
    // A single node never has one in progress.
    let Some(view) = shard.cluster_view() else {
        return answer;
    };
    let wanted: Option<BTreeMap<&str, &[i32]>> = body.topics.as_ref().map(|topics| {
        topics
            .iter()
            .map(|t| (t.name.as_str(), t.partition_indexes.as_slice()))
            .collect()
    });
    let mut topics = Vec::new();
    for (name, topic) in &view.topics {
        let partitions_wanted = match &wanted {
            Some(w) => match w.get(name.as_str()) {
                Some(p) => Some(*p),
                None => continue,
            },
            None => None,
        };
        let ongoing: Vec<OngoingPartitionReassignment> = topic
            .partitions
            .iter()
            .enumerate()
            .filter(|(p, view)| {
                view.reassignment.in_progress()
                    && partitions_wanted.is_none_or(|w| w.contains(&(*p as i32)))
            })
            .map(|(p, view)| {
                let ids = |list: &[i32]| list.iter().map(|&b| BrokerId(b)).collect();
                OngoingPartitionReassignment::default()
                    .with_partition_index(p as i32)
                    .with_replicas(ids(&view.replicas))
                    .with_adding_replicas(ids(&view.reassignment.adding))
                    .with_removing_replicas(ids(&view.reassignment.removing))
            })
            .collect();
        if !ongoing.is_empty() {
            topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(StrBytes::from_string(name.clone())))
                    .with_partitions(ongoing),
            );
        }
    }
    answer.with_topics(topics)
}
