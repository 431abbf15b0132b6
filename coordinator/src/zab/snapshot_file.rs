//! Snapshot files: the application's opaque state at a zxid, checksummed, under `dataDir`.
//!
//! File `snapshot.<zxid, 16 hex digits>`: magic `ZABSNAP1`, `zxid u64`, `data_len u64`,
//! `crc32c u32` (over zxid and data), then the data; little-endian. A snapshot is written to
//! a temporary name, fsynced, renamed into place and the directory fsynced, so a crash
//! leaves either the old set or the new one. The newest few are kept (zoo.cfg
//! `autopurge.snapRetainCount`, default [`SNAPSHOTS_KEPT`]).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::txn_log::{io_err, sync_dir, StorageError};
use super::zxid::{fmt_zxid, Zxid};

/// Snapshot file magic.
pub const SNAP_MAGIC: &[u8; 8] = b"ZABSNAP1";
const HEADER_BYTES: usize = 8 + 8 + 8 + 4;
/// Snapshots kept on disk unless configured otherwise.
pub const SNAPSHOTS_KEPT: usize = 3;

fn snapshot_name(zxid: Zxid) -> String {
    format!("snapshot.{zxid:016x}")
}

fn parse_snapshot_name(name: &str) -> Option<Zxid> {
    let hex = name.strip_prefix("snapshot.")?;
    if hex.len() != 16 {
        return None;
    }
    Zxid::from_str_radix(hex, 16).ok()
}

fn list(dir: &Path) -> Result<Vec<(Zxid, PathBuf)>, StorageError> {
    let mut v = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if let Some(z) = entry.file_name().to_str().and_then(parse_snapshot_name) {
            v.push((z, entry.path()));
        }
    }
    v.sort();
    Ok(v)
}

/// Writes a snapshot durably and prunes all but the newest `kept`; returns its path.
pub fn write_snapshot(
    dir: &Path,
    zxid: Zxid,
    data: &[u8],
    kept: usize,
) -> Result<PathBuf, StorageError> {
    let kept = kept.max(1);
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(snapshot_name(zxid));
    let tmp = dir.join(format!("{}.tmp", snapshot_name(zxid)));
    let crc = crc32c::crc32c_append(crc32c::crc32c(&zxid.to_le_bytes()), data);
    let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(SNAP_MAGIC);
    header.extend_from_slice(&zxid.to_le_bytes());
    header.extend_from_slice(&(data.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc.to_le_bytes());
    f.write_all(&header).map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)?;
    let all = list(dir)?;
    if all.len() > kept {
        for (_, old) in &all[..all.len() - kept] {
            fs::remove_file(old).map_err(io_err(old))?;
        }
    }
    Ok(path)
}

/// The zxid of the oldest snapshot file in `dir`, if any.
pub fn oldest_snapshot(dir: &Path) -> Result<Option<Zxid>, StorageError> {
    if !dir.exists() {
        return Ok(None);
    }
    Ok(list(dir)?.first().map(|&(z, _)| z))
}

/// Deletes snapshots newer than `zxid` (before installing the leader's older one, so the
/// newest snapshot on disk is always the one the log continues).
pub fn remove_snapshots_after(dir: &Path, zxid: Zxid) -> Result<usize, StorageError> {
    if !dir.exists() {
        return Ok(0);
    }
    let mut removed = 0;
    for (z, path) in list(dir)? {
        if z > zxid {
            fs::remove_file(&path).map_err(io_err(&path))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Reads and verifies one snapshot file.
pub fn read_snapshot(path: &Path) -> Result<(Zxid, Vec<u8>), StorageError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let corrupt = |offset: u64, reason: String| StorageError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    if bytes.len() < HEADER_BYTES || &bytes[..8] != SNAP_MAGIC {
        return Err(corrupt(0, "missing or torn snapshot header".into()));
    }
    let u64_at = |at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(a)
    };
    let zxid = u64_at(8);
    let len = u64_at(16);
    let mut c = [0u8; 4];
    c.copy_from_slice(&bytes[24..28]);
    let crc = u32::from_le_bytes(c);
    let data = &bytes[HEADER_BYTES..];
    if data.len() as u64 != len {
        return Err(corrupt(
            HEADER_BYTES as u64,
            format!("{} data bytes, header says {len}", data.len()),
        ));
    }
    if crc32c::crc32c_append(crc32c::crc32c(&zxid.to_le_bytes()), data) != crc {
        return Err(corrupt(HEADER_BYTES as u64, "CRC-32C mismatch".into()));
    }
    Ok((zxid, data.to_vec()))
}

/// The snapshot taken at `zxid`, read and verified; `None` when there is no such file (it
/// was pruned or replaced). Zxid 0 without a file is the initial empty state.
pub fn read_snapshot_at(dir: &Path, zxid: Zxid) -> Result<Option<Vec<u8>>, StorageError> {
    let path = dir.join(snapshot_name(zxid));
    if !path.exists() {
        return Ok((zxid == 0).then(Vec::new));
    }
    let (inner, data) = read_snapshot(&path)?;
    if inner != zxid {
        return Err(StorageError::Corrupt {
            path,
            offset: 8,
            reason: format!(
                "holds zxid {}, its name says {}",
                fmt_zxid(inner),
                fmt_zxid(zxid)
            ),
        });
    }
    Ok(Some(data))
}

/// The newest valid snapshot in `dir`, skipping (and logging) damaged ones.
pub fn newest_valid_snapshot(dir: &Path) -> Result<Option<(Zxid, Vec<u8>)>, StorageError> {
    if !dir.exists() {
        return Ok(None);
    }
    for (z, path) in list(dir)?.into_iter().rev() {
        match read_snapshot(&path) {
            Ok((zxid, data)) if zxid == z => return Ok(Some((zxid, data))),
            Ok((zxid, _)) => tracing::warn!(
                file = %path.display(),
                inner = %fmt_zxid(zxid),
                "snapshot file name and content disagree; skipping"
            ),
            Err(e) => tracing::warn!(error = %e, "skipping a damaged snapshot"),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    //! Proves snapshots round-trip, old ones are pruned and a damaged newest one is skipped.
    use super::*;

    #[test]
    fn write_read_prune_and_skip_damaged() {
        let dir = tempfile::tempdir().expect("tempdir");
        for z in 1..=5u64 {
            write_snapshot(
                dir.path(),
                z,
                format!("state {z}").as_bytes(),
                SNAPSHOTS_KEPT,
            )
            .expect("write");
        }
        assert_eq!(list(dir.path()).expect("list").len(), SNAPSHOTS_KEPT);
        let (z, data) = newest_valid_snapshot(dir.path())
            .expect("read")
            .expect("some");
        assert_eq!((z, data.as_slice()), (5, b"state 5".as_slice()));
        let newest = dir.path().join(snapshot_name(5));
        let mut bytes = fs::read(&newest).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&newest, &bytes).expect("write");
        let err = read_snapshot(&newest).expect_err("damaged");
        assert!(err.to_string().contains("CRC-32C"), "{err}");
        let (z, _) = newest_valid_snapshot(dir.path())
            .expect("read")
            .expect("some");
        assert_eq!(z, 4);
        assert_eq!(remove_snapshots_after(dir.path(), 3).expect("remove"), 2);
        let (z, _) = newest_valid_snapshot(dir.path())
            .expect("read")
            .expect("some");
        assert_eq!(z, 3);
        assert_eq!(
            read_snapshot_at(dir.path(), 3).expect("read"),
            Some(b"state 3".to_vec())
        );
        assert_eq!(read_snapshot_at(dir.path(), 5).expect("read"), None);
        assert_eq!(read_snapshot_at(dir.path(), 0).expect("read"), Some(vec![]));
    }
}
