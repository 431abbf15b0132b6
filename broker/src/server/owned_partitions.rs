//! The partition logs a shard owns, by topic and partition, and in cluster mode their
//! replicas. Opening, closing and serving them is in `server::partitions`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::storage::PartitionLog;

use super::memory_budget::{MemoryBudget, Reservation};
use super::replica::Replica;

/// The logs this shard owns, by topic name then partition index, and in cluster mode their
/// replicas.
#[derive(Default)]
pub struct OwnedPartitions {
    pub(super) logs: RefCell<HashMap<String, Vec<Option<Rc<PartitionLog>>>>>,
    pub(super) replicas: RefCell<HashMap<(String, i32), Rc<Replica>>>,
    /// The idempotent-producer tables' charge to the shard's memory budget.
    producer_state_charge: RefCell<Option<Reservation>>,
}

impl OwnedPartitions {
    pub fn replica(&self, topic: &str, partition: i32) -> Option<Rc<Replica>> {
        self.replicas
            .borrow()
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    pub fn replicas(&self) -> Vec<Rc<Replica>> {
        self.replicas.borrow().values().cloned().collect()
    }

    /// Puts a reopened log (after a truncation) in place of the old one.
    pub fn replace(&self, topic: &str, partition: i32, log: Rc<PartitionLog>) {
        if let Some(slot) = self
            .logs
            .borrow_mut()
            .get_mut(topic)
            .and_then(|list| list.get_mut(partition as usize))
        {
            *slot = Some(log);
        }
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Rc<PartitionLog>> {
        let logs = self.logs.borrow();
        let list = logs.get(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|p| list.get(p))
            .and_then(|log| log.clone())
    }

    /// Every owned log with its topic and partition.
    pub fn named(&self) -> Vec<(String, i32, Rc<PartitionLog>)> {
        let logs = self.logs.borrow();
        let mut named = Vec::new();
        for (topic, list) in logs.iter() {
            for (partition, log) in list.iter().enumerate() {
                if let Some(log) = log {
                    named.push((topic.clone(), partition as i32, log.clone()));
                }
            }
        }
        named
    }

    pub fn all(&self) -> Vec<Rc<PartitionLog>> {
        self.logs
            .borrow()
            .values()
            .flat_map(|list| list.iter().flatten().cloned())
            .collect()
    }

    /// Charges the approximate size of every owned log's idempotent-producer table to
    /// `memory` (an admitted charge, re-measured by the caller's timer, as group state is).
    pub fn charge_producer_state(&self, memory: &Rc<MemoryBudget>) {
        let bytes: usize = self
            .logs
            .borrow()
            .values()
            .flat_map(|list| list.iter().flatten())
            .map(|log| log.producer_state_bytes())
            .sum();
        let mut charge = self.producer_state_charge.borrow_mut();
        match charge.as_mut() {
            Some(charge) => charge.set_admitted(bytes as u64),
            None => *charge = Some(memory.charge(bytes as u64)),
        }
    }
}
