//! The in-memory replicated history of one server: the newest snapshot point plus every
//! logged transaction after it, and the sync planning that compares two histories.
//!
//! The core keeps the log tail in memory because a leader must be able to send any part of
//! it to a follower (DIFF) and because elections compare its end. Entries at or below the
//! snapshot point are dropped when the application takes a snapshot; a follower that is
//! further behind than that gets the snapshot (SNAP). The snapshot's bytes are not kept
//! here: the plan names its zxid and the shell reads them from its storage when it sends.

use std::collections::VecDeque;

use super::message::{EpochRange, Txn};
use super::zxid::{epoch_of, follows, make_zxid, Zxid};

/// A contiguous log after a snapshot point.
#[derive(Debug, Clone)]
pub struct History {
    snapshot_zxid: Zxid,
    entries: VecDeque<Txn>,
}

/// Why a log cannot be built from the given pieces.
#[derive(Debug, thiserror::Error)]
#[error("log entry {next:#x} cannot follow {prev:#x} (gap or disorder)")]
pub struct GapError {
    /// The entry before.
    pub prev: Zxid,
    /// The entry that does not follow it.
    pub next: Zxid,
}

/// How a follower's log is repaired before the entries after [`SyncPlan::from`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// The follower's log is a prefix of ours.
    Diff,
    /// The follower drops its entries after `zxid`.
    Trunc {
        /// The last zxid both logs share.
        zxid: Zxid,
    },
    /// The follower replaces its state with our snapshot at `zxid` (0: the initial state).
    Snap {
        /// Our newest snapshot point.
        zxid: Zxid,
    },
}

/// What the leader sends a follower: how to repair its log, then entries after `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPlan {
    /// DIFF, TRUNC or SNAP.
    pub kind: Repair,
    /// Entries with a zxid above this follow the header.
    pub from: Zxid,
}

impl History {
    /// A history that starts at `snapshot_zxid` (0 with empty data: the initial state).
    pub fn new(snapshot_zxid: Zxid) -> History {
        History {
            snapshot_zxid,
            entries: VecDeque::new(),
        }
    }

    /// The newest snapshot point.
    pub fn snapshot_zxid(&self) -> Zxid {
        self.snapshot_zxid
    }

    /// The last zxid held (the snapshot point when the log is empty).
    pub fn last_zxid(&self) -> Zxid {
        self.entries.back().map_or(self.snapshot_zxid, |t| t.zxid)
    }

    /// Number of logged entries after the snapshot point.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry follows the snapshot point.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends one entry; it must directly follow the current end.
    pub fn append(&mut self, txn: Txn) -> Result<(), GapError> {
        let prev = self.last_zxid();
        if !follows(prev, txn.zxid) {
            return Err(GapError {
                prev,
                next: txn.zxid,
            });
        }
        self.entries.push_back(txn);
        Ok(())
    }

    fn index_of(&self, zxid: Zxid) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&zxid, |t| t.zxid)
    }

    /// The entry with this zxid, if logged.
    pub fn get(&self, zxid: Zxid) -> Option<&Txn> {
        self.index_of(zxid).ok().map(|i| &self.entries[i])
    }

    /// Entries with a zxid above `zxid`, in order.
    pub fn entries_after(&self, zxid: Zxid) -> impl Iterator<Item = &Txn> {
        let start = match self.index_of(zxid) {
            Ok(i) => i + 1,
            Err(i) => i,
        };
        self.entries.range(start..)
    }

    /// All logged entries.
    pub fn entries(&self) -> impl Iterator<Item = &Txn> {
        self.entries.iter()
    }

    /// Drops every entry above `zxid`.
    pub fn truncate_after(&mut self, zxid: Zxid) {
        let keep = match self.index_of(zxid) {
            Ok(i) => i + 1,
            Err(i) => i,
        };
        self.entries.truncate(keep);
    }

    /// Replaces everything with a snapshot received from the leader.
    pub fn install_snapshot(&mut self, zxid: Zxid) {
        self.entries.clear();
        self.snapshot_zxid = zxid;
    }

    /// The application took a snapshot at `zxid`: entries up to it are no longer needed.
    pub fn compact(&mut self, zxid: Zxid) {
        debug_assert!(zxid >= self.snapshot_zxid && zxid <= self.last_zxid());
        let drop = match self.index_of(zxid) {
            Ok(i) => i + 1,
            Err(i) => i,
        };
        self.entries.drain(..drop);
        self.snapshot_zxid = zxid;
    }

    /// The greatest zxid of `epoch` this history knows (entry or snapshot point).
    fn last_in_epoch(&self, epoch: u32) -> Option<Zxid> {
        let end = self
            .entries
            .partition_point(|t| t.zxid < make_zxid(epoch.saturating_add(1), 0));
        if end > 0 && epoch_of(self.entries[end - 1].zxid) == epoch {
            return Some(self.entries[end - 1].zxid);
        }
        if epoch_of(self.snapshot_zxid) == epoch {
            return Some(self.snapshot_zxid);
        }
        None
    }

    /// A bounded summary of this history for the leader: the last zxid of each of the newest
    /// epochs, newest first, always ending with the snapshot point's epoch.
    pub fn epoch_ranges(&self, max_ranges: usize) -> Vec<EpochRange> {
        let mut ranges: Vec<EpochRange> = Vec::new();
        let room = max_ranges.max(2) - 1;
        for t in self.entries.iter().rev() {
            let e = epoch_of(t.zxid);
            if ranges.last().map(|r| r.epoch) != Some(e) {
                if ranges.len() == room {
                    break;
                }
                ranges.push(EpochRange {
                    epoch: e,
                    last_zxid: t.zxid,
                });
            }
        }
        let snap_epoch = epoch_of(self.snapshot_zxid);
        if ranges.last().map(|r| r.epoch) != Some(snap_epoch) {
            ranges.push(EpochRange {
                epoch: snap_epoch,
                last_zxid: self.snapshot_zxid,
            });
        }
        ranges
    }

    /// Plans how to bring a follower (last zxid `follower_last`, history summary `ranges`)
    /// in line with this history.
    ///
    /// Why this is sound: every epoch's transactions come from its single leader with
    /// consecutive counters, and every log holds an epoch's transactions from counter 1 up
    /// to its last one (a log is always a prefix of some leader's log). So if both histories
    /// hold entries of epoch `e`, they share every zxid of `e` up to the smaller of their two
    /// maxima, and by the history property the whole prefix up to that point. The newest such
    /// epoch gives the longest common prefix; the follower truncates to it and receives the
    /// rest. When the common point is below our snapshot, only SNAP can help.
    pub fn plan_sync(&self, follower_last: Zxid, ranges: &[EpochRange]) -> SyncPlan {
        for r in ranges {
            let mine = if r.epoch == 0 {
                Some(0)
            } else {
                self.last_in_epoch(r.epoch)
            };
            let Some(mine) = mine else { continue };
            let common = mine.min(r.last_zxid);
            if common < self.snapshot_zxid {
                break;
            }
            let kind = if common == follower_last {
                Repair::Diff
            } else {
                Repair::Trunc { zxid: common }
            };
            return SyncPlan { kind, from: common };
        }
        SyncPlan {
            kind: Repair::Snap {
                zxid: self.snapshot_zxid,
            },
            from: self.snapshot_zxid,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Proves sync planning picks DIFF / TRUNC / SNAP correctly on hand-built diverged logs.
    use super::*;

    fn hist(snap: Zxid, zxids: &[(u32, u32)]) -> History {
        let mut h = History::new(snap);
        for &(e, c) in zxids {
            h.append(Txn {
                zxid: make_zxid(e, c),
                payload: vec![],
            })
            .expect("contiguous");
        }
        h
    }

    #[test]
    fn plans_diff_trunc_and_snap() {
        let leader = hist(0, &[(1, 1), (1, 2), (3, 1), (3, 2)]);
        // Behind in the same history: DIFF.
        let f = hist(0, &[(1, 1)]);
        let p = leader.plan_sync(f.last_zxid(), &f.epoch_ranges(8));
        assert_eq!(
            p,
            SyncPlan {
                kind: Repair::Diff,
                from: make_zxid(1, 1)
            }
        );
        // Diverged in epoch 2 after (1,1): truncate to (1,1) even though the leader has (1,2).
        let f = hist(0, &[(1, 1), (2, 1), (2, 2)]);
        let p = leader.plan_sync(f.last_zxid(), &f.epoch_ranges(8));
        assert_eq!(
            p.kind,
            Repair::Trunc {
                zxid: make_zxid(1, 1)
            }
        );
        // Ahead in the leader's own last epoch: truncate to the leader's end of it.
        let f = hist(0, &[(1, 1), (1, 2), (3, 1), (3, 2), (3, 3)]);
        let p = leader.plan_sync(f.last_zxid(), &f.epoch_ranges(8));
        assert_eq!(
            p.kind,
            Repair::Trunc {
                zxid: make_zxid(3, 2)
            }
        );
        // Empty follower and a leader with its full log: TRUNC to 0 is a DIFF from scratch.
        let f = hist(0, &[]);
        let p = leader.plan_sync(0, &f.epoch_ranges(8));
        assert_eq!(
            p,
            SyncPlan {
                kind: Repair::Diff,
                from: 0
            }
        );
        // A leader that compacted its log past the common point: SNAP.
        let mut compacted = leader.clone();
        compacted.compact(make_zxid(3, 1));
        let f = hist(0, &[(1, 1), (2, 1)]);
        let p = compacted.plan_sync(f.last_zxid(), &f.epoch_ranges(8));
        assert!(matches!(p.kind, Repair::Snap { zxid } if zxid == make_zxid(3, 1)));
        // A follower whose snapshot point is inside the leader's log: DIFF after it.
        let f = hist(make_zxid(3, 1), &[]);
        let p = leader.plan_sync(f.last_zxid(), &f.epoch_ranges(8));
        assert_eq!(
            p,
            SyncPlan {
                kind: Repair::Diff,
                from: make_zxid(3, 1)
            }
        );
    }

    #[test]
    fn rejects_gaps() {
        let mut h = hist(0, &[(1, 1)]);
        assert!(h
            .append(Txn {
                zxid: make_zxid(1, 3),
                payload: vec![]
            })
            .is_err());
        assert!(h
            .append(Txn {
                zxid: make_zxid(2, 2),
                payload: vec![]
            })
            .is_err());
        assert!(h
            .append(Txn {
                zxid: make_zxid(2, 1),
                payload: vec![]
            })
            .is_ok());
    }
}
