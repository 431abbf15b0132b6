//! The group state a shard holds: its group coordinators (those of the `__consumer_offsets`
//! partitions it owns) and the requests parked on them until they answer. What is done with
//! it (routing, parking, writing the coordinators' records) is in `server::groups`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use tokio::sync::oneshot;

use crate::group::{CoordinatorSet, GroupConfig, RequestToken, Response};

use super::memory_budget::Reservation;

/// One shard's group coordinators and the requests parked on them.
pub struct ShardGroups {
    pub(super) config: GroupConfig,
    pub(super) set: RefCell<Option<CoordinatorSet>>,
    pub(super) parked: RefCell<HashMap<RequestToken, oneshot::Sender<Response>>>,
    pub(super) next_token: Cell<RequestToken>,
    /// The group state's charge to the shard's memory budget, set by the timer task.
    pub(super) state_charge: RefCell<Option<Reservation>>,
    /// Seeds member ids; different on every start so an id handed out before a restart is
    /// never handed to another member after it.
    pub(super) seed: u64,
}

impl ShardGroups {
    pub fn new(config: GroupConfig, shard: usize) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = nanos ^ (u64::from(std::process::id()) << 32) ^ ((shard as u64) << 56);
        ShardGroups {
            seed,
            config,
            set: RefCell::new(None),
            parked: RefCell::new(HashMap::new()),
            next_token: Cell::new(1),
            state_charge: RefCell::new(None),
        }
    }

    /// Every committed offset of the groups this shard coordinates, as (group, topic,
    /// partition, offset).
    pub fn committed_offsets(&self) -> Vec<(String, String, i32, i64)> {
        self.set
            .borrow()
            .as_ref()
            .map(CoordinatorSet::all_committed_offsets)
            .unwrap_or_default()
    }
}
