//! Snapshots and recovery: the data tree written whole to `dataDir/version-2/snapshot.<zxid>`
//! with a CRC-32C, and the startup path that loads the newest valid snapshot and replays the
//! transaction log after it.
//!
//! File = magic `ZNSNAP01` | tree bytes ([`DataTree::serialize`]) | crc32c(tree bytes) u32.
//! A snapshot is written to a `.tmp` file, fsynced and renamed, so a crash never leaves a
//! half snapshot under a final name; an invalid one is skipped in favour of an older one.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::data_tree::DataTree;
use crate::txn::Txn;
use crate::txn_log::{list_logs, list_numbered, read_log_file, sync_dir};

const MAGIC: &[u8; 8] = b"ZNSNAP01";

/// Why recovery failed; each names the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0} (an older log file is damaged; refusing to skip transactions)")]
    DamagedLog(String),
    #[error("{path}: transaction {zxid:#x} does not decode: {reason}")]
    BadTxn {
        path: PathBuf,
        zxid: i64,
        reason: String,
    },
}

/// The snapshot directory inside `dataDir`.
pub fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("version-2")
}

/// Writes a snapshot of the tree serialized at `zxid` durably.
pub fn write_snapshot(dir: &Path, zxid: i64, tree_bytes: &[u8]) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name = format!("snapshot.{:016x}", zxid as u64);
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(MAGIC)?;
    f.write_all(tree_bytes)?;
    f.write_all(&crc32c::crc32c(tree_bytes).to_be_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok(path)
}

/// Loads a snapshot file, checking magic, CRC and structure.
pub fn read_snapshot(path: &Path) -> Result<DataTree, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() < MAGIC.len() + 4 || &bytes[..8] != MAGIC {
        return Err(format!(
            "{}: not a snapshot (bad magic or too short)",
            path.display()
        ));
    }
    let body = &bytes[8..bytes.len() - 4];
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[bytes.len() - 4..]);
    if crc32c::crc32c(body) != u32::from_be_bytes(crc) {
        return Err(format!("{}: CRC mismatch", path.display()));
    }
    DataTree::deserialize(body).map_err(|e| format!("{}: {e}", path.display()))
}

/// Deletes all but the newest `keep` snapshots and the log files only they needed.
pub fn purge(snap_dir: &Path, log_dir: &Path, keep: usize) -> io::Result<()> {
    let snaps = list_numbered(snap_dir, "snapshot.")?;
    if snaps.len() <= keep {
        return Ok(());
    }
    let oldest_kept = snaps[snaps.len() - keep].0;
    for (_, path) in &snaps[..snaps.len() - keep] {
        std::fs::remove_file(path)?;
    }
    // A log file is obsolete when the next file starts at or below the oldest kept snapshot:
    // every zxid in it is then inside that snapshot.
    let logs = list_logs(log_dir)?;
    for pair in logs.windows(2) {
        if pair[1].0 <= oldest_kept + 1 {
            std::fs::remove_file(&pair[0].1)?;
        }
    }
    Ok(())
}

/// What recovery rebuilt.
pub struct Recovered {
    pub tree: DataTree,
    pub snapshot_zxid: i64,
    pub replayed: usize,
}

/// Loads the newest valid snapshot (or an empty tree) and replays every logged transaction
/// after it. A torn or corrupt tail of the newest log file is cut off (it was never
/// acknowledged: acknowledgement follows fdatasync of whole records); damage in an older file
/// is an error.
pub fn recover(data_dir: &Path, data_log_dir: &Path) -> Result<Recovered, RecoveryError> {
    let snap_dir = snapshot_dir(data_dir);
    let log_dir = crate::txn_log::log_dir(data_log_dir);
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| RecoveryError::Io { path, source }
    };
    let mut tree = None;
    for (_, path) in list_numbered(&snap_dir, "snapshot.")
        .map_err(io_err(&snap_dir))?
        .iter()
        .rev()
    {
        if path.extension().is_some_and(|e| e == "tmp") {
            continue;
        }
        match read_snapshot(path) {
            Ok(t) => {
                tree = Some(t);
                break;
            }
            Err(e) => tracing::warn!("skipping invalid snapshot: {e}"),
        }
    }
    let mut tree = tree.unwrap_or_default();
    let snapshot_zxid = tree.last_zxid();
    let logs = list_logs(&log_dir).map_err(io_err(&log_dir))?;
    let mut replayed = 0;
    let mut triggers = Vec::new();
    for (i, (_, path)) in logs.iter().enumerate() {
        let contents = read_log_file(path).map_err(io_err(path))?;
        if let Some(damage) = &contents.damage {
            if i + 1 < logs.len() && !later_files_empty(&logs[i + 1..]) {
                return Err(RecoveryError::DamagedLog(damage.clone()));
            }
            tracing::warn!("{damage}: truncating the unacknowledged tail");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_err(path))?;
            f.set_len(contents.valid_bytes).map_err(io_err(path))?;
            f.sync_all().map_err(io_err(path))?;
        }
        for (zxid, payload) in contents.records {
            if zxid <= tree.last_zxid() {
                continue;
            }
            let txn = Txn::decode(&payload).map_err(|e| RecoveryError::BadTxn {
                path: path.clone(),
                zxid,
                reason: e.to_string(),
            })?;
            triggers.clear();
            tree.apply(zxid, &txn, &mut triggers);
            replayed += 1;
        }
    }
    Ok(Recovered {
        tree,
        snapshot_zxid,
        replayed,
    })
}

fn later_files_empty(logs: &[(i64, PathBuf)]) -> bool {
    logs.iter()
        .all(|(_, p)| read_log_file(p).is_ok_and(|c| c.records.is_empty()))
}

#[cfg(test)]
mod tests {
    //! Proves recovery = newest valid snapshot + log replay, that a corrupt snapshot falls
    //! back to an older one plus more log, and that purge keeps what recovery needs, by
    //! writing real files in a temp dir.
    use super::*;
    use crate::jute::codes::{op, perms};
    use crate::jute::records::Acl;
    use crate::txn::{CreateTxn, TxnBody, TxnHeader};
    use crate::txn_log::TxnLogWriter;

    fn create(i: i64) -> Vec<u8> {
        Txn {
            header: TxnHeader {
                session_id: 0,
                cxid: i as i32,
                time_ms: 1000 + i,
            },
            body: TxnBody::Create(CreateTxn {
                path: format!("/n{i}"),
                data: Some(vec![i as u8; 10]),
                acl: vec![Acl::world_anyone(perms::ALL)],
                ephemeral_owner: 0,
                parent_cversion: i as i32,
                op: op::CREATE,
            }),
        }
        .encode()
    }

    #[test]
    fn snapshot_plus_log_replay_rebuilds_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let (snap_dir, log_dir) = (
            snapshot_dir(dir.path()),
            crate::txn_log::log_dir(dir.path()),
        );
        let mut expected = DataTree::new();
        let mut w = TxnLogWriter::open(&log_dir, 1, 1 << 20).unwrap();
        let mut t = Vec::new();
        for z in 1..=30 {
            let payload = create(z);
            w.append(z, &payload);
            expected.apply(z, &Txn::decode(&payload).unwrap(), &mut t);
            if z == 10 || z == 20 {
                w.flush(true).unwrap();
                write_snapshot(&snap_dir, z, &expected.serialize()).unwrap();
                w.roll().unwrap();
            }
        }
        w.flush(true).unwrap();
        let r = recover(dir.path(), dir.path()).unwrap();
        assert_eq!((r.snapshot_zxid, r.replayed), (20, 10));
        assert_eq!(r.tree.digest(), expected.digest());
        // Corrupt the newest snapshot: recovery uses the older one and replays more.
        let newest = snap_dir.join(format!("snapshot.{:016x}", 20));
        let good = std::fs::read(&newest).unwrap();
        let mut bytes = good.clone();
        bytes[20] ^= 0xff;
        std::fs::write(&newest, bytes).unwrap();
        let r = recover(dir.path(), dir.path()).unwrap();
        assert_eq!((r.snapshot_zxid, r.replayed), (10, 20));
        assert_eq!(r.tree.digest(), expected.digest());
        // Purging to one (valid) snapshot drops the older files and keeps what it needs.
        std::fs::write(&newest, good).unwrap();
        purge(&snap_dir, &log_dir, 1).unwrap();
        assert_eq!(crate::txn_log::list_logs(&log_dir).unwrap().len(), 1);
        let r = recover(dir.path(), dir.path()).unwrap();
        assert_eq!((r.snapshot_zxid, r.replayed), (20, 10));
        assert_eq!(r.tree.digest(), expected.digest());
    }
}
