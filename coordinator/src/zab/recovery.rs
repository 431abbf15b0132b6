//! Startup recovery: rebuilds a server's durable state from its files.
//!
//! Loads the newest valid snapshot (damaged newer ones are skipped with a warning), opens the
//! transaction log (cutting a torn tail, see `txn_log.rs`), keeps the entries after the
//! snapshot and reads the epoch file. The result feeds [`Peer::new`](super::peer::Peer::new);
//! the application is restored from the snapshot alone, because log entries are applied
//! only once the leader says they are committed.

use super::epoch_file::read_epochs;
use super::peer::Restored;
use super::snapshot_file::newest_valid_snapshot;
use super::storage::{Storage, StoragePaths};
use super::txn_log::{StorageError, TxnLog};
use super::zxid::{fmt_zxid, follows};

/// Opens a server's storage and returns it with the state to start the core from and the
/// newest snapshot's bytes (empty when there is none), to restore the application from.
pub fn recover(
    paths: &StoragePaths,
    segment_bytes_max: u64,
) -> Result<(Storage, Restored, Vec<u8>), StorageError> {
    std::fs::create_dir_all(&paths.snapshot_dir)
        .map_err(super::txn_log::io_err(&paths.snapshot_dir))?;
    let hard_state = read_epochs(&paths.snapshot_dir)?;
    let (snapshot_zxid, snapshot) = newest_valid_snapshot(&paths.snapshot_dir)?.unwrap_or_default();
    let (log, entries) = TxnLog::open(&paths.log_dir, segment_bytes_max)?;
    let log_entries: Vec<_> = entries
        .into_iter()
        .filter(|t| t.zxid > snapshot_zxid)
        .collect();
    if let Some(first) = log_entries.first() {
        if !follows(snapshot_zxid, first.zxid) {
            return Err(StorageError::Corrupt {
                path: paths.log_dir.clone(),
                offset: 0,
                reason: format!(
                    "the log does not continue snapshot {} (next entry {}); \
                     empty this server's data directories to resynchronize it from the leader",
                    fmt_zxid(snapshot_zxid),
                    fmt_zxid(first.zxid)
                ),
            });
        }
    }
    tracing::info!(
        snapshot = %fmt_zxid(snapshot_zxid),
        log_entries = log_entries.len(),
        accepted_epoch = hard_state.accepted_epoch,
        current_epoch = hard_state.current_epoch,
        "recovered durable state"
    );
    let storage = Storage::new(paths.clone(), log, snapshot_zxid);
    let restored = Restored {
        hard_state,
        snapshot_zxid,
        log: log_entries,
    };
    Ok((storage, restored, snapshot))
}

#[cfg(test)]
mod tests {
    //! Proves a restart sees the epochs, the newest snapshot and only the log after it, and
    //! that a damaged newest snapshot falls back to an older one with the log after it (the
    //! log is kept from the oldest kept snapshot on).
    use super::*;
    use crate::zab::message::Txn;
    use crate::zab::peer::HardState;
    use crate::zab::zxid::make_zxid;

    #[test]
    fn restart_sees_snapshot_log_and_epochs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = StoragePaths::new(&dir.path().join("data"), &dir.path().join("log"));
        let (mut st, r, snapshot) = recover(&paths, 1 << 20).expect("fresh");
        assert!(snapshot.is_empty());
        assert_eq!((r.snapshot_zxid, r.log.len()), (0, 0));
        for c in 1..=20 {
            st.append(&Txn {
                zxid: make_zxid(1, c),
                payload: vec![c as u8],
            })
            .expect("append");
        }
        st.sync().expect("sync");
        st.save_snapshot(make_zxid(1, 12), b"app@12")
            .expect("snapshot");
        let h = HardState {
            accepted_epoch: 2,
            accepted_leader: 1,
            current_epoch: 1,
        };
        st.write_hard_state(&h).expect("epochs");
        drop(st);
        let (_st, r, snapshot) = recover(&paths, 1 << 20).expect("restart");
        assert_eq!(r.hard_state, h);
        assert_eq!(r.snapshot_zxid, make_zxid(1, 12));
        assert_eq!(snapshot.as_slice(), b"app@12");
        let zxids: Vec<_> = r.log.iter().map(|t| t.zxid).collect();
        assert_eq!(
            zxids,
            (13..=20).map(|c| make_zxid(1, c)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_damaged_newest_snapshot_falls_back_to_an_older_one_and_its_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = StoragePaths::new(&dir.path().join("data"), &dir.path().join("log"));
        // 4 KiB segments of 36-byte records: about 113 entries each.
        let (mut st, _, _) = recover(&paths, 4096).expect("fresh");
        for c in 1..=300 {
            st.append(&Txn {
                zxid: make_zxid(1, c),
                payload: vec![c as u8; 20],
            })
            .expect("append");
        }
        st.sync().expect("sync");
        st.save_snapshot(make_zxid(1, 100), b"app@100")
            .expect("snapshot");
        st.save_snapshot(make_zxid(1, 250), b"app@250")
            .expect("snapshot");
        drop(st);
        let newest = paths
            .snapshot_dir
            .join(format!("snapshot.{:016x}", make_zxid(1, 250)));
        let mut bytes = std::fs::read(&newest).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&newest, bytes).expect("damage");
        let (_st, r, snapshot) = recover(&paths, 4096).expect("fall back");
        assert_eq!(r.snapshot_zxid, make_zxid(1, 100));
        assert_eq!(snapshot.as_slice(), b"app@100");
        let zxids: Vec<_> = r.log.iter().map(|t| t.zxid).collect();
        assert_eq!(
            zxids,
            (101..=300).map(|c| make_zxid(1, c)).collect::<Vec<_>>()
        );
    }
}
