//! One-time conversion of a standalone data dir of the earlier format.
//!
//! Before standalone servers ran as an ensemble of one on ZAB's storage, they wrote their
//! own files: snapshots `dataDir/version-2/snapshot.<zxid>` (magic `ZNSNAP01`, the
//! serialized tree, CRC-32C of it, big-endian) and a transaction log
//! `dataLogDir/version-2/log.<zxid>` (magic `ZNTXLOG1`, then records `payload length u32 |
//! crc32c u32 | zxid i64 | payload`, big-endian, the CRC covering zxid and payload). This
//! module only reads them, at the start of a standalone server: the newest valid snapshot
//! plus every logged transaction after it give the tree, which is written as a ZAB snapshot
//! at its last zxid; then `version-2` is renamed to `version-2.before-zab` (nothing is
//! deleted) and the conversion is logged. ZAB then starts from that snapshot in a new
//! epoch, so zxids keep increasing across the conversion.
//!
//! What the old recovery accepted is accepted here: a damaged newer snapshot is skipped for
//! an older one, a torn tail of the newest log file was never acknowledged and is left out.
//! Anything else (damage in an older log file, files of another program such as Apache
//! ZooKeeper's own `version-2`, a `zab` directory that already holds other data) refuses
//! the start with a message naming the file and saying what to do. A crash during the
//! conversion is harmless: the ZAB snapshot is written atomically before the rename, and a
//! restart that finds both (the snapshot at the converted zxid, no ZAB log) only renames.

use std::path::{Path, PathBuf};

use crate::data_tree::DataTree;
use crate::txn::Txn;
use crate::zab::epoch_file::write_epochs;
use crate::zab::snapshot_file::{newest_valid_snapshot, write_snapshot, SNAPSHOTS_KEPT};
use crate::zab::storage::StoragePaths;
use crate::zab::txn_log::StorageError;
use crate::zab::{epoch_of, HardState};

const SNAPSHOT_MAGIC: &[u8; 8] = b"ZNSNAP01";
const LOG_MAGIC: &[u8; 8] = b"ZNTXLOG1";
const LOG_RECORD_HEADER_BYTES: usize = 16;
/// The old layout's directory under `dataDir` and `dataLogDir`.
const OLD_DIR: &str = "version-2";
/// Where the old directory is moved once converted.
const CONVERTED_DIR: &str = "version-2.before-zab";

/// Why a data dir of the earlier format was not converted.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The files cannot be converted; the message says which and what to do.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Zab(#[from] StorageError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a conversion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    /// The zxid of the ZAB snapshot written (0: the old files held no transaction).
    pub zxid: i64,
    /// Znodes in the converted tree.
    pub nodes: usize,
    /// Where the old files are now.
    pub moved_to: Vec<PathBuf>,
}

/// Converts `dataDir/version-2` (and `dataLogDir/version-2`) when present; `None` when
/// there is nothing of the earlier format.
pub fn convert(data_dir: &Path, data_log_dir: &Path) -> Result<Option<Converted>, ImportError> {
    let old_dirs = old_dirs(data_dir, data_log_dir);
    if old_dirs.is_empty() {
        return Ok(None);
    }
    let snap_dir = data_dir.join(OLD_DIR);
    let log_dir = data_log_dir.join(OLD_DIR);
    let (tree, replayed) = read_old(&snap_dir, &log_dir)?;
    let zxid = tree.last_zxid();
    debug_assert!(zxid >= 0, "zxids of the old log are positive");
    let zab = StoragePaths::new(data_dir, data_log_dir);
    check_zab_dirs_free(&zab, zxid, &old_dirs)?;
    if zxid > 0 {
        let zab_zxid = zxid as u64;
        write_snapshot(
            &zab.snapshot_dir,
            zab_zxid,
            &tree.serialize(),
            SNAPSHOTS_KEPT,
        )?;
        let epoch = epoch_of(zab_zxid);
        if epoch > 0 {
            // ZAB's next epoch must be above the converted zxids' for them to keep growing.
            let h = HardState {
                accepted_epoch: epoch,
                accepted_leader: 0,
                current_epoch: epoch,
            };
            write_epochs(&zab.snapshot_dir, &h)?;
        }
    }
    let mut moved_to = Vec::new();
    for dir in &old_dirs {
        moved_to.push(move_aside(dir)?);
    }
    tracing::info!(
        zxid = format!("{zxid:#x}"),
        nodes = tree.node_count(),
        replayed,
        old = ?old_dirs,
        kept_in = ?moved_to,
        "converted a standalone data dir of the earlier format to ZAB's files"
    );
    Ok(Some(Converted {
        zxid,
        nodes: tree.node_count(),
        moved_to,
    }))
}

/// The `version-2` directories that exist (one when `dataLogDir` is `dataDir`).
fn old_dirs(data_dir: &Path, data_log_dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = [data_dir, data_log_dir]
        .iter()
        .map(|d| d.join(OLD_DIR))
        .filter(|d| d.is_dir())
        .collect();
    dirs.dedup();
    dirs
}

/// Refuses when ZAB's directories hold anything but the snapshot an interrupted earlier
/// conversion wrote.
fn check_zab_dirs_free(
    zab: &StoragePaths,
    zxid: i64,
    old_dirs: &[PathBuf],
) -> Result<(), ImportError> {
    let has_log = list(&zab.log_dir, "log.")?.iter().any(|(_, p)| p.is_file());
    let newest = newest_valid_snapshot(&zab.snapshot_dir)?.map(|(z, _)| z);
    let interrupted = newest == Some(zxid as u64) && zxid > 0;
    if has_log || (newest.is_some() && !interrupted) {
        return Err(ImportError::Refused(format!(
            "{} (standalone files of an earlier version) and {} / {} (ZAB's) both hold data; \
             move {} aside to start from ZAB's files, or move ZAB's aside to convert the \
             earlier files again",
            old_dirs[0].display(),
            zab.snapshot_dir.display(),
            zab.log_dir.display(),
            join(old_dirs)
        )));
    }
    Ok(())
}

fn join(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Renames `dir` to `version-2.before-zab` (with a number when that exists) and makes the
/// rename durable.
fn move_aside(dir: &Path) -> Result<PathBuf, ImportError> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    let mut target = parent.join(CONVERTED_DIR);
    let mut n = 1;
    while target.exists() {
        target = parent.join(format!("{CONVERTED_DIR}.{n}"));
        n += 1;
    }
    std::fs::rename(dir, &target).map_err(io_err(dir))?;
    tuning::fs::sync_dir(parent).map_err(io_err(parent))?;
    Ok(target)
}

/// `<prefix><hex zxid>` files of `dir`, oldest first (no `.tmp` leftovers).
fn list(dir: &Path, prefix: &str) -> Result<Vec<(i64, PathBuf)>, ImportError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(hex) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        if let Ok(zxid) = u64::from_str_radix(hex, 16) {
            out.push((zxid as i64, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn not_ours(path: &Path, what: &str) -> ImportError {
    ImportError::Refused(format!(
        "{}: not a {what} of this coordinator (bad magic at offset 0); the directory is not \
         one an earlier standalone coordinator wrote: start with an empty dataDir, or move \
         {} aside",
        path.display(),
        path.parent().unwrap_or(path).display()
    ))
}

/// The tree the old files describe and how many logged transactions were replayed onto the
/// snapshot.
fn read_old(snap_dir: &Path, log_dir: &Path) -> Result<(DataTree, usize), ImportError> {
    let mut tree = None;
    for (_, path) in list(snap_dir, "snapshot.")?.iter().rev() {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        if bytes.len() < SNAPSHOT_MAGIC.len() || &bytes[..8] != SNAPSHOT_MAGIC {
            return Err(not_ours(path, "snapshot"));
        }
        match read_snapshot(&bytes) {
            Ok(t) => {
                tree = Some(t);
                break;
            }
            // The old recovery fell back to an older snapshot (and more log) too.
            Err(e) => tracing::warn!("skipping invalid snapshot {}: {e}", path.display()),
        }
    }
    let mut tree = tree.unwrap_or_default();
    let logs = list(log_dir, "log.")?;
    let mut replayed = 0;
    let mut triggers = Vec::new();
    for (i, (_, path)) in logs.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let (records, damage) = read_log(path, &bytes)?;
        if let Some(damage) = damage {
            let later_records = logs[i + 1..].iter().try_fold(false, |any, (_, p)| {
                let bytes = std::fs::read(p).map_err(io_err(p))?;
                Ok::<_, ImportError>(any || !read_log(p, &bytes)?.0.is_empty())
            })?;
            if later_records {
                return Err(ImportError::Refused(format!(
                    "{damage}, and later log files hold transactions: refusing to skip \
                     acknowledged writes; restore {} from a backup, or move it aside to \
                     start empty",
                    log_dir.display()
                )));
            }
            tracing::warn!("{damage}: leaving out the unacknowledged tail");
        }
        for (zxid, payload) in records {
            if zxid <= tree.last_zxid() {
                continue;
            }
            let txn = Txn::decode(payload).map_err(|e| {
                ImportError::Refused(format!(
                    "{}: transaction {zxid:#x} does not decode: {e}",
                    path.display()
                ))
            })?;
            triggers.clear();
            tree.apply(zxid, &txn, &mut triggers);
            replayed += 1;
        }
    }
    Ok((tree, replayed))
}

/// Checks a snapshot's CRC and decodes its tree.
fn read_snapshot(bytes: &[u8]) -> Result<DataTree, String> {
    if bytes.len() < SNAPSHOT_MAGIC.len() + 4 {
        return Err("too short".into());
    }
    let body = &bytes[8..bytes.len() - 4];
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[bytes.len() - 4..]);
    if crc32c::crc32c(body) != u32::from_be_bytes(crc) {
        return Err("CRC mismatch".into());
    }
    DataTree::deserialize(body).map_err(|e| e.to_string())
}

/// The intact records of a log file, and where and why reading stopped early, if it did.
type LogRecords<'a> = (Vec<(i64, &'a [u8])>, Option<String>);

fn read_log<'a>(path: &Path, bytes: &'a [u8]) -> Result<LogRecords<'a>, ImportError> {
    if bytes.len() < LOG_MAGIC.len() || &bytes[..8] != LOG_MAGIC {
        if bytes.len() < LOG_MAGIC.len() && LOG_MAGIC.starts_with(bytes) {
            // Created, then a crash before its header was complete: holds nothing.
            return Ok((Vec::new(), None));
        }
        return Err(not_ours(path, "transaction log"));
    }
    let mut records = Vec::new();
    let mut pos = LOG_MAGIC.len();
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let damage = |what: &str| Some(format!("{}: {what} at offset {pos}", path.display()));
        if rest.len() < LOG_RECORD_HEADER_BYTES {
            return Ok((records, damage("torn record header")));
        }
        let word = |at: usize| [rest[at], rest[at + 1], rest[at + 2], rest[at + 3]];
        let len = u32::from_be_bytes(word(0)) as usize;
        let crc = u32::from_be_bytes(word(4));
        let Some(end) = LOG_RECORD_HEADER_BYTES
            .checked_add(len)
            .filter(|&e| e <= rest.len())
        else {
            return Ok((records, damage("torn record")));
        };
        if crc32c::crc32c(&rest[8..end]) != crc {
            return Ok((records, damage("CRC mismatch")));
        }
        let mut zxid = [0u8; 8];
        zxid.copy_from_slice(&rest[8..16]);
        let zxid = i64::from_be_bytes(zxid);
        if records.last().is_some_and(|&(last, _)| zxid <= last) {
            return Ok((records, damage("zxid out of order")));
        }
        records.push((zxid, &rest[LOG_RECORD_HEADER_BYTES..end]));
        pos += end;
    }
    Ok((records, None))
}
