//! The epoch file: ZAB's `acceptedEpoch` and `currentEpoch` (plus the leader the accepted
//! epoch came from), which must survive crashes. It lives in `dataDir` as `epochs`:
//! magic `ZABEPOC1`, `accepted_epoch u32`, `accepted_leader u64`, `current_epoch u32`,
//! `crc32c u32` over the three fields, little-endian; replaced atomically (temporary file,
//! fsync, rename, directory fsync).

use std::fs;
use std::io::Write;
use std::path::Path;

use super::peer::HardState;
use super::txn_log::{io_err, sync_dir, StorageError};

const MAGIC: &[u8; 8] = b"ZABEPOC1";
const FILE_NAME: &str = "epochs";
const BYTES: usize = 8 + 4 + 8 + 4 + 4;

fn encode(h: &HardState) -> Vec<u8> {
    let mut fields = Vec::with_capacity(16);
    fields.extend_from_slice(&h.accepted_epoch.to_le_bytes());
    fields.extend_from_slice(&h.accepted_leader.to_le_bytes());
    fields.extend_from_slice(&h.current_epoch.to_le_bytes());
    let mut b = Vec::with_capacity(BYTES);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&fields);
    b.extend_from_slice(&crc32c::crc32c(&fields).to_le_bytes());
    b
}

/// Persists the epochs durably.
pub fn write_epochs(dir: &Path, h: &HardState) -> Result<(), StorageError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(FILE_NAME);
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&encode(h)).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)
}

/// Reads the epochs; a missing file is a fresh server (all zero).
pub fn read_epochs(dir: &Path) -> Result<HardState, StorageError> {
    let path = dir.join(FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HardState::default()),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let corrupt = |reason: &str| StorageError::Corrupt {
        path: path.clone(),
        offset: 0,
        reason: reason.to_string(),
    };
    if bytes.len() != BYTES || &bytes[..8] != MAGIC {
        return Err(corrupt("not an epoch file (bad size or magic)"));
    }
    let fields = &bytes[8..24];
    let mut c = [0u8; 4];
    c.copy_from_slice(&bytes[24..28]);
    if crc32c::crc32c(fields) != u32::from_le_bytes(c) {
        return Err(corrupt("CRC-32C mismatch"));
    }
    let mut a = [0u8; 4];
    a.copy_from_slice(&fields[0..4]);
    let mut l = [0u8; 8];
    l.copy_from_slice(&fields[4..12]);
    let mut cur = [0u8; 4];
    cur.copy_from_slice(&fields[12..16]);
    Ok(HardState {
        accepted_epoch: u32::from_le_bytes(a),
        accepted_leader: u64::from_le_bytes(l),
        current_epoch: u32::from_le_bytes(cur),
    })
}

#[cfg(test)]
mod tests {
    //! Proves the epoch file round-trips, defaults when missing and rejects damage.
    use super::*;

    #[test]
    fn round_trip_missing_and_damaged() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            read_epochs(dir.path()).expect("missing"),
            HardState::default()
        );
        let h = HardState {
            accepted_epoch: 7,
            accepted_leader: 3,
            current_epoch: 6,
        };
        write_epochs(dir.path(), &h).expect("write");
        assert_eq!(read_epochs(dir.path()).expect("read"), h);
        let path = dir.path().join(FILE_NAME);
        let mut b = fs::read(&path).expect("read");
        b[10] ^= 1;
        fs::write(&path, b).expect("write");
        assert!(read_epochs(dir.path()).is_err());
    }
}
