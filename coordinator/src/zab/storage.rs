//! A server's durable state as one object: the transaction log (`dataLogDir/zab/log.*`),
//! snapshots and the epoch file (`dataDir/zab/`). It carries out the storage effects of the
//! core's [`Outputs`](super::peer::Outputs) in the order the core requires.

use std::path::{Path, PathBuf};

use super::epoch_file::write_epochs;
use super::message::Txn;
use super::peer::HardState;
use super::snapshot_file::{
    oldest_snapshot, read_snapshot_at, remove_snapshots_after, write_snapshot, SNAPSHOTS_KEPT,
};
use super::txn_log::{StorageError, TxnLog};
use super::zxid::Zxid;

/// Where a server keeps its files.
#[derive(Debug, Clone)]
pub struct StoragePaths {
    /// Snapshots and the epoch file (`dataDir/zab`).
    pub snapshot_dir: PathBuf,
    /// Transaction log segments (`dataLogDir/zab`).
    pub log_dir: PathBuf,
}

impl StoragePaths {
    /// The `zab` subdirectories of ZooKeeper's `dataDir` and `dataLogDir`.
    pub fn new(data_dir: &Path, data_log_dir: &Path) -> StoragePaths {
        StoragePaths {
            snapshot_dir: data_dir.join("zab"),
            log_dir: data_log_dir.join("zab"),
        }
    }
}

/// Open log plus the snapshot and epoch locations.
#[derive(Debug)]
pub struct Storage {
    pub(crate) paths: StoragePaths,
    pub(crate) log: TxnLog,
    pub(crate) snapshot_zxid: Zxid,
    /// fdatasync in [`Storage::sync`] (false: write only, not durable).
    sync_log: bool,
    /// Snapshots kept; the log is kept from the oldest of them on, so recovery can fall
    /// back to an older snapshot when the newest is damaged.
    snapshots_kept: usize,
}

impl Storage {
    pub(crate) fn new(paths: StoragePaths, log: TxnLog, snapshot_zxid: Zxid) -> Storage {
        Storage {
            paths,
            log,
            snapshot_zxid,
            sync_log: true,
            snapshots_kept: SNAPSHOTS_KEPT,
        }
    }

    /// Whether [`Storage::sync`] fdatasyncs (zoo.cfg `forceSync` on a standalone server).
    pub fn set_sync_log(&mut self, sync_log: bool) {
        self.sync_log = sync_log;
    }

    /// True when [`Storage::sync`] fdatasyncs.
    pub fn syncs_log(&self) -> bool {
        self.sync_log
    }

    /// Snapshots kept on disk (at least one).
    pub fn set_snapshots_kept(&mut self, kept: usize) {
        self.snapshots_kept = kept.max(1);
    }

    /// Replaces everything with a snapshot from the leader: the log goes first, so a crash
    /// in between leaves an older consistent state rather than a log that does not continue
    /// the snapshot.
    pub fn install_snapshot(&mut self, zxid: Zxid, data: &[u8]) -> Result<(), StorageError> {
        self.log.clear()?;
        remove_snapshots_after(&self.paths.snapshot_dir, zxid)?;
        write_snapshot(&self.paths.snapshot_dir, zxid, data, self.snapshots_kept)?;
        self.snapshot_zxid = zxid;
        Ok(())
    }

    /// TRUNC: drops entries above `zxid`; the rest is durable afterwards.
    pub fn truncate_after(&mut self, zxid: Zxid) -> Result<(), StorageError> {
        self.log.truncate_after(zxid)
    }

    /// Buffers an entry for the next [`Storage::sync`].
    pub fn append(&mut self, txn: &Txn) -> Result<(), StorageError> {
        self.log.append(txn)
    }

    /// Bytes of the log segment files (what is written to them so far).
    pub fn log_bytes(&self) -> u64 {
        self.log.bytes()
    }

    /// One write + fdatasync (unless turned off) for everything appended since the last call.
    pub fn sync(&mut self) -> Result<Zxid, StorageError> {
        self.log.flush(self.sync_log)
    }

    /// True when appended entries wait for [`Storage::sync`].
    pub fn has_unsynced(&self) -> bool {
        self.log.last_zxid() > self.log.synced_zxid()
    }

    /// Persists the epochs (before any message that depends on them is sent).
    pub fn write_hard_state(&mut self, h: &HardState) -> Result<(), StorageError> {
        write_epochs(&self.paths.snapshot_dir, h)
    }

    /// Persists an application snapshot taken at `zxid` and drops log segments it covers.
    pub fn save_snapshot(&mut self, zxid: Zxid, data: &[u8]) -> Result<(), StorageError> {
        write_snapshot(&self.paths.snapshot_dir, zxid, data, self.snapshots_kept)?;
        self.snapshot_written(zxid)
    }

    /// Snapshots kept on disk.
    pub fn snapshots_kept(&self) -> usize {
        self.snapshots_kept
    }

    /// A snapshot at `zxid` was written (possibly by another thread): drop the log segments
    /// that every kept snapshot covers.
    pub fn snapshot_written(&mut self, zxid: Zxid) -> Result<(), StorageError> {
        if zxid > self.snapshot_zxid {
            self.snapshot_zxid = zxid;
            let oldest_kept =
                oldest_snapshot(&self.paths.snapshot_dir)?.map_or(zxid, |z| z.min(zxid));
            self.log.purge_through(oldest_kept)?;
        }
        Ok(())
    }

    /// The bytes of the snapshot taken at `zxid`, read from its file for a SNAP (nothing keeps
    /// them in memory); `None` when that file is gone. Zxid 0 is the initial empty state.
    pub fn read_snapshot(&self, zxid: Zxid) -> Result<Option<Vec<u8>>, StorageError> {
        read_snapshot_at(&self.paths.snapshot_dir, zxid)
    }

    /// Where snapshots and the epoch file live.
    pub fn snapshot_dir(&self) -> &Path {
        &self.paths.snapshot_dir
    }

    /// The newest snapshot's zxid.
    pub fn snapshot_zxid(&self) -> Zxid {
        self.snapshot_zxid
    }
}
