//! Replica assignment for new topics, with Kafka's rules: partition `p`'s first replica (its
//! preferred leader) walks the broker list from a random start, and the other replicas follow
//! at a shift that changes every time the walk wraps, so leaders and followers both spread
//! evenly and no two partitions on a broker share all their followers. With racks, the broker
//! list alternates racks and a partition takes a broker of a rack it already has only once
//! every rack has one of its replicas.
//!
//! Explicit assignments (CreateTopics `assignments`) are checked here too.

use std::collections::{BTreeMap, BTreeSet};

/// Why an assignment cannot be made; the Kafka error code is INVALID_REPLICATION_FACTOR (38)
/// or INVALID_REPLICA_ASSIGNMENT (39).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignmentError {
    ReplicationFactor(String),
    Assignment(String),
}

/// A live broker as the assignment sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: i32,
    pub rack: Option<String>,
}

/// Assigns `partitions` partitions with `replication_factor` replicas over `brokers`.
/// `start` and `shift` are the random choices (any values; taken modulo the broker count).
pub fn assign(
    brokers: &[Candidate],
    partitions: usize,
    replication_factor: usize,
    start: usize,
    shift: usize,
) -> Result<Vec<Vec<i32>>, AssignmentError> {
    if replication_factor == 0 {
        return Err(AssignmentError::ReplicationFactor(
            "replication factor must be at least 1".into(),
        ));
    }
    if replication_factor > brokers.len() {
        return Err(AssignmentError::ReplicationFactor(format!(
            "replication factor {replication_factor} is larger than the {} live brokers",
            brokers.len()
        )));
    }
    let racked = brokers.iter().filter(|b| b.rack.is_some()).count();
    if racked == brokers.len() && racked > 0 {
        return Ok(assign_rack_aware(
            brokers,
            partitions,
            replication_factor,
            start,
            shift,
        ));
    }
    let mut ids: Vec<i32> = brokers.iter().map(|b| b.id).collect();
    ids.sort_unstable();
    Ok(walk(
        &ids,
        partitions,
        replication_factor,
        start,
        shift,
        |_, _| true,
    ))
}

/// The walk shared by both modes: the first replica at `(p + start) % n`, the others at a
/// shift of `1 + (shift + j) % (n - 1)` from it, skipping candidates `accept` refuses.
fn walk(
    ids: &[i32],
    partitions: usize,
    replication_factor: usize,
    start: usize,
    shift: usize,
    accept: impl Fn(&[i32], i32) -> bool,
) -> Vec<Vec<i32>> {
    let n = ids.len();
    let start = start % n;
    let mut shift = shift % n;
    let mut result = Vec::with_capacity(partitions);
    for p in 0..partitions {
        if p > 0 && p % n == 0 {
            shift += 1;
        }
        let first = (p + start) % n;
        let mut replicas = vec![ids[first]];
        // The n - 1 offsets in walk order reach every other broker once. The first pass takes
        // only what `accept` likes; the second fills up in walk order, so the factor is met.
        let offsets = (0..n.saturating_sub(1)).map(|j| 1 + (shift + j) % (n - 1));
        for pass in 0..2 {
            for offset in offsets.clone() {
                if replicas.len() == replication_factor {
                    break;
                }
                let candidate = ids[(first + offset) % n];
                if replicas.contains(&candidate) || (pass == 0 && !accept(&replicas, candidate)) {
                    continue;
                }
                replicas.push(candidate);
            }
        }
        debug_assert_eq!(replicas.len(), replication_factor);
        result.push(replicas);
    }
    result
}

/// Brokers ordered so racks alternate (r1-b1, r2-b1, r3-b1, r1-b2, ...), and the walk prefers
/// a rack the partition does not have yet.
fn assign_rack_aware(
    brokers: &[Candidate],
    partitions: usize,
    replication_factor: usize,
    start: usize,
    shift: usize,
) -> Vec<Vec<i32>> {
    let mut by_rack: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for broker in brokers {
        by_rack
            .entry(broker.rack.as_deref().unwrap_or(""))
            .or_default()
            .push(broker.id);
    }
    for ids in by_rack.values_mut() {
        ids.sort_unstable();
    }
    let mut alternated = Vec::with_capacity(brokers.len());
    for round in 0.. {
        let before = alternated.len();
        for ids in by_rack.values() {
            if let Some(&id) = ids.get(round) {
                alternated.push(id);
            }
        }
        if alternated.len() == before {
            break;
        }
    }
    let rack_of: BTreeMap<i32, &str> = brokers
        .iter()
        .map(|b| (b.id, b.rack.as_deref().unwrap_or("")))
        .collect();
    let rack_count = by_rack.len();
    walk(
        &alternated,
        partitions,
        replication_factor,
        start,
        shift,
        |chosen, candidate| {
            let racks: BTreeSet<&str> = chosen.iter().map(|id| rack_of[id]).collect();
            racks.len() >= rack_count || !racks.contains(rack_of[&candidate])
        },
    )
}

/// Checks an explicit assignment: partitions numbered 0..n in order, every list the same
/// length, no broker twice in a list, every broker registered.
pub fn check_explicit(
    assignment: &[(i32, Vec<i32>)],
    registered: &BTreeSet<i32>,
) -> Result<Vec<Vec<i32>>, AssignmentError> {
    let bad = |why: String| Err(AssignmentError::Assignment(why));
    let mut sorted: Vec<&(i32, Vec<i32>)> = assignment.iter().collect();
    sorted.sort_by_key(|(p, _)| *p);
    let factor = sorted.first().map(|(_, r)| r.len()).unwrap_or(0);
    let mut result = Vec::with_capacity(sorted.len());
    for (i, (partition, replicas)) in sorted.into_iter().enumerate() {
        if *partition != i as i32 {
            return bad(format!(
                "partitions must be numbered 0..{}",
                assignment.len()
            ));
        }
        if replicas.is_empty() || replicas.len() != factor {
            return bad("every partition must have the same, non-zero, number of replicas".into());
        }
        let unique: BTreeSet<i32> = replicas.iter().copied().collect();
        if unique.len() != replicas.len() {
            return bad(format!("partition {partition} lists a broker twice"));
        }
        if let Some(unknown) = replicas.iter().find(|id| !registered.contains(id)) {
            return bad(format!("broker {unknown} is not registered"));
        }
        result.push(replicas.clone());
    }
    Ok(result)
}

/// Replicas for `added` partitions appended to a topic assigned `existing` (CreatePartitions),
/// as Kafka's `addPartitions` does: the same replication factor, and the walk continued from
/// where the topic's was, starting at partition 0's first replica, so the new partitions'
/// leaders keep spreading in the same order. `shift` is the random choice of the followers'
/// shift. Explicit `assignments` are checked instead (the topic's factor, registered brokers).
pub fn assign_added(
    brokers: &[Candidate],
    existing: &[Vec<i32>],
    added: usize,
    shift: usize,
    assignments: Option<&[Vec<i32>]>,
    registered: &BTreeSet<i32>,
) -> Result<Vec<Vec<i32>>, AssignmentError> {
    let factor = existing.first().map_or(0, Vec::len);
    debug_assert!(
        factor > 0,
        "a topic has at least one partition with replicas"
    );
    if let Some(assignments) = assignments {
        let numbered: Vec<(i32, Vec<i32>)> = assignments
            .iter()
            .enumerate()
            .map(|(p, r)| (p as i32, r.clone()))
            .collect();
        let checked = check_explicit(&numbered, registered)?;
        if checked.iter().any(|replicas| replicas.len() != factor) {
            return Err(AssignmentError::Assignment(format!(
                "the topic has {factor} replicas per partition; the new partitions must too"
            )));
        }
        return Ok(checked);
    }
    let mut ids: Vec<i32> = brokers.iter().map(|b| b.id).collect();
    ids.sort_unstable();
    let first_leader = existing.first().and_then(|r| r.first()).copied();
    let start = first_leader
        .and_then(|leader| ids.iter().position(|&id| id == leader))
        .unwrap_or(0);
    let all = assign(brokers, existing.len() + added, factor, start, shift)?;
    Ok(all[existing.len()..].to_vec())
}

#[cfg(test)]
mod tests {
    //! Proves the spread Kafka's assignment promises: leaders evenly over brokers, no broker
    //! twice in a partition, factor always met, racks all used before one repeats, and the
    //! explicit assignment checks.
    use super::*;

    #[test]
    fn added_partitions_continue_the_walk() {
        let live = brokers(&[1, 2, 3], None);
        let registered: BTreeSet<i32> = [1, 2, 3].into();
        let existing = assign(&live, 2, 2, 1, 0).unwrap();
        let added = assign_added(&live, &existing, 4, 0, None, &registered).unwrap();
        assert_eq!(added.len(), 4);
        // Leaders continue round-robin from where the topic's two partitions left off.
        let mut leaders: Vec<i32> = existing.iter().chain(&added).map(|r| r[0]).collect();
        leaders.truncate(3);
        leaders.sort_unstable();
        assert_eq!(leaders, vec![1, 2, 3]);
        assert!(added.iter().all(|r| r.len() == 2 && r[0] != r[1]));
        // Explicit: the topic's factor and registered brokers only.
        let ok = assign_added(&live, &existing, 1, 0, Some(&[vec![3, 1]]), &registered);
        assert_eq!(ok.unwrap(), vec![vec![3, 1]]);
        let wrong_factor = assign_added(&live, &existing, 1, 0, Some(&[vec![3]]), &registered);
        assert!(matches!(wrong_factor, Err(AssignmentError::Assignment(_))));
        let unknown = assign_added(&live, &existing, 1, 0, Some(&[vec![3, 9]]), &registered);
        assert!(matches!(unknown, Err(AssignmentError::Assignment(_))));
        // More replicas than live brokers: the factor cannot be met.
        let few = brokers(&[1], None);
        let refused = assign_added(&few, &existing, 1, 0, None, &registered);
        assert!(matches!(
            refused,
            Err(AssignmentError::ReplicationFactor(_))
        ));
    }

    fn brokers(ids: &[i32], racks: Option<&[&str]>) -> Vec<Candidate> {
        ids.iter()
            .enumerate()
            .map(|(i, &id)| Candidate {
                id,
                rack: racks.map(|r| r[i].to_string()),
            })
            .collect()
    }

    #[test]
    fn leaders_and_replicas_spread_evenly() {
        let live = brokers(&[3, 1, 2], None);
        for start in 0..3 {
            for shift in 0..3 {
                let a = assign(&live, 6, 3, start, shift).unwrap();
                let mut leaders = BTreeMap::new();
                for replicas in &a {
                    assert_eq!(replicas.len(), 3);
                    let unique: BTreeSet<_> = replicas.iter().collect();
                    assert_eq!(unique.len(), 3);
                    *leaders.entry(replicas[0]).or_insert(0) += 1;
                }
                assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
            }
        }
        assert_eq!(
            assign(&live, 3, 1, 0, 0).unwrap(),
            vec![vec![1], vec![2], vec![3]]
        );
        assert!(matches!(
            assign(&live, 1, 4, 0, 0),
            Err(AssignmentError::ReplicationFactor(_))
        ));
    }

    #[test]
    fn racks_are_all_used_before_one_repeats() {
        let live = brokers(&[1, 2, 3, 4, 5, 6], Some(&["a", "a", "b", "b", "c", "c"]));
        let rack = |id: i32| ["a", "a", "b", "b", "c", "c"][(id - 1) as usize];
        for start in 0..6 {
            for shift in 0..6 {
                for replicas in assign(&live, 12, 3, start, shift).unwrap() {
                    let racks: BTreeSet<_> = replicas.iter().map(|&id| rack(id)).collect();
                    assert_eq!(racks.len(), 3, "{replicas:?}");
                }
                for replicas in assign(&live, 12, 4, start, shift).unwrap() {
                    let unique: BTreeSet<_> = replicas.iter().collect();
                    assert_eq!(unique.len(), 4);
                }
            }
        }
    }

    #[test]
    fn explicit_assignments_are_checked() {
        let registered: BTreeSet<i32> = [1, 2, 3].into();
        assert_eq!(
            check_explicit(&[(1, vec![2, 3]), (0, vec![1, 2])], &registered).unwrap(),
            vec![vec![1, 2], vec![2, 3]]
        );
        assert!(check_explicit(&[(0, vec![1, 1])], &registered).is_err());
        assert!(check_explicit(&[(0, vec![1]), (2, vec![2])], &registered).is_err());
        assert!(check_explicit(&[(0, vec![1]), (1, vec![2, 3])], &registered).is_err());
        assert!(check_explicit(&[(0, vec![9])], &registered).is_err());
    }
}
