//! Producer-state snapshots: the idempotent-producer table ([`super::producer_state`]) of a
//! partition as it stood at one offset, saved in `<offset>.snapshot` (the offset 20-digit,
//! zero-padded, as segment files are named), so that [`super::producer_rebuild`] replays only
//! the batch headers after the newest snapshot when the log opens, instead of a bounded window
//! of the log's tail that forgets older producers (Kafka's producer snapshots).
//!
//! A snapshot at offset `S` holds the table after every batch below `S` was recorded, and
//! nothing else. The log writes one when a segment rolls (`S` = the new segment's base, after
//! the rolled segment is synced) and at a clean close (`S` = the log end), keeps the newest
//! [`SNAPSHOTS_KEPT`], drops those below the log start when retention deletes segments, and
//! drops those above the new end when a follower's log is cut. At open, one above the log end
//! (its batches were lost in a crash) or below the log start is deleted.
//!
//! Format, big-endian, replaced atomically through [`crate::data_file::replace`] (temporary
//! file, fsync, rename, directory fsync), the storage engine's one way to write a small file:
//!
//! ```text
//! magic "SBPS" | version u16 = 1 | crc32c u32 of everything after it |
//! offset i64 | producers u32 |
//! per producer: id i64 | epoch i16 | batches u8 (1..=KEPT_BATCHES) |
//!   per batch (oldest first): first_sequence i32 | last_sequence i32 | first_offset i64 | last_offset i64
//! ```
//!
//! A file that fails any check (magic, version, CRC, lengths, offsets not below its own, an
//! offset other than its name's) is reported as [`LogError::Corrupt`] naming the file; the log
//! then falls back to an older snapshot or to the bounded window.

use std::path::{Path, PathBuf};

use super::error::LogError;
use super::producer_state::{AppendedBatch, ProducerTable, KEPT_BATCHES, MAX_PRODUCERS};
use super::segment::{parse_segment_file, segment_file};
use tuning::fs::sync_dir;

/// File extension of snapshots.
pub const SNAPSHOT_EXTENSION: &str = "snapshot";
/// Snapshots kept per log; older ones are deleted when a new one is written.
pub const SNAPSHOTS_KEPT: usize = 2;

const MAGIC: &[u8; 4] = b"SBPS";
const VERSION: u16 = 1;
/// Magic, version, CRC.
const PREFIX_BYTES: usize = 4 + 2 + 4;
/// Offset and producer count.
const HEAD_BYTES: usize = 8 + 4;
const PRODUCER_BYTES: usize = 8 + 2 + 1;
const BATCH_BYTES: usize = 4 + 4 + 8 + 8;
/// The largest valid file: bounds what a damaged size can make the reader allocate.
const FILE_BYTES_MAX: usize =
    PREFIX_BYTES + HEAD_BYTES + MAX_PRODUCERS * (PRODUCER_BYTES + KEPT_BATCHES * BATCH_BYTES);

/// The path of the snapshot at `offset` in `dir`.
pub fn snapshot_file(dir: &Path, offset: i64) -> PathBuf {
    segment_file(dir, offset, SNAPSHOT_EXTENSION)
}

/// The bytes of a snapshot of `table` at `offset` (every batch it holds is below `offset`).
pub fn encode(offset: i64, table: &ProducerTable) -> Vec<u8> {
    let mut body = Vec::with_capacity(HEAD_BYTES + table.len() * (PRODUCER_BYTES + BATCH_BYTES));
    body.extend_from_slice(&offset.to_be_bytes());
    body.extend_from_slice(&(table.len() as u32).to_be_bytes());
    for (id, epoch, batches) in table.producers() {
        debug_assert!((1..=KEPT_BATCHES).contains(&batches.len()));
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(&epoch.to_be_bytes());
        body.push(batches.len() as u8);
        for b in batches {
            debug_assert!(b.last_offset < offset, "a snapshot holds batches below it");
            body.extend_from_slice(&b.first_sequence.to_be_bytes());
            body.extend_from_slice(&b.last_sequence.to_be_bytes());
            body.extend_from_slice(&b.first_offset.to_be_bytes());
            body.extend_from_slice(&b.last_offset.to_be_bytes());
        }
    }
    let mut out = Vec::with_capacity(PREFIX_BYTES + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Reads big-endian fields off a byte slice, reporting where it ran short.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let field = self.bytes.get(self.at..self.at + N)?.try_into().ok()?;
        self.at += N;
        Some(field)
    }
}

/// The table a snapshot's bytes hold, checked against `expected_offset` (its name's). `Err`
/// is the byte position and what is wrong.
pub fn decode(bytes: &[u8], expected_offset: i64) -> Result<ProducerTable, (usize, String)> {
    if bytes.len() < PREFIX_BYTES + HEAD_BYTES {
        return Err((
            0,
            format!("{} bytes, too short for a snapshot", bytes.len()),
        ));
    }
    if &bytes[..4] != MAGIC {
        return Err((0, "not a producer snapshot (bad magic)".into()));
    }
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    if version != VERSION {
        return Err((4, format!("unknown version {version}")));
    }
    let crc = u32::from_be_bytes(bytes[6..10].try_into().expect("4 bytes"));
    let body = &bytes[PREFIX_BYTES..];
    let computed = crc32c::crc32c(body);
    if crc != computed {
        return Err((
            6,
            format!("CRC mismatch: stored {crc:#010x}, computed {computed:#010x}"),
        ));
    }
    let mut f = Fields { bytes: body, at: 0 };
    let short = |f: &Fields<'_>| (PREFIX_BYTES + f.at, "ends inside a field".to_string());
    let offset = i64::from_be_bytes(f.take().ok_or_else(|| short(&f))?);
    if offset != expected_offset {
        return Err((
            PREFIX_BYTES,
            format!("holds offset {offset}, its name says {expected_offset}"),
        ));
    }
    let count = u32::from_be_bytes(f.take().ok_or_else(|| short(&f))?) as usize;
    if count > MAX_PRODUCERS {
        return Err((
            PREFIX_BYTES + 8,
            format!("{count} producers, more than {MAX_PRODUCERS}"),
        ));
    }
    let mut table = ProducerTable::default();
    for _ in 0..count {
        let at = PREFIX_BYTES + f.at;
        let id = i64::from_be_bytes(f.take().ok_or_else(|| short(&f))?);
        let epoch = i16::from_be_bytes(f.take().ok_or_else(|| short(&f))?);
        let [n] = f.take::<1>().ok_or_else(|| short(&f))?;
        if id < 0 || !(1..=KEPT_BATCHES).contains(&(n as usize)) {
            return Err((at, format!("producer {id} with {n} batches")));
        }
        let mut batches = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let at = PREFIX_BYTES + f.at;
            let batch = AppendedBatch {
                first_sequence: i32::from_be_bytes(f.take().ok_or_else(|| short(&f))?),
                last_sequence: i32::from_be_bytes(f.take().ok_or_else(|| short(&f))?),
                first_offset: i64::from_be_bytes(f.take().ok_or_else(|| short(&f))?),
                last_offset: i64::from_be_bytes(f.take().ok_or_else(|| short(&f))?),
            };
            let after_previous = batches
                .last()
                .is_none_or(|b: &AppendedBatch| b.last_offset < batch.first_offset);
            if batch.first_offset < 0
                || batch.first_offset > batch.last_offset
                || batch.last_offset >= offset
                || !after_previous
            {
                return Err((
                    at,
                    format!(
                        "producer {id}: batch at offsets {}..={} does not fit below {offset}",
                        batch.first_offset, batch.last_offset
                    ),
                ));
            }
            batches.push(batch);
        }
        let before = table.len();
        table.restore(id, epoch, batches);
        if table.len() == before {
            return Err((at, format!("producer {id} appears twice")));
        }
    }
    if f.at != body.len() {
        return Err((
            PREFIX_BYTES + f.at,
            format!("{} bytes after the last producer", body.len() - f.at),
        ));
    }
    Ok(table)
}

/// Reads the snapshot at `offset` in `dir`.
pub fn read(dir: &Path, offset: i64) -> Result<ProducerTable, LogError> {
    let path = snapshot_file(dir, offset);
    let io = |err| LogError::io(&path, "reading a producer snapshot", err);
    let size = std::fs::metadata(&path).map_err(io)?.len();
    if size > FILE_BYTES_MAX as u64 {
        return Err(LogError::Corrupt {
            file: path.clone(),
            position: 0,
            reason: format!("producer snapshot of {size} bytes, more than {FILE_BYTES_MAX}"),
        });
    }
    let bytes = std::fs::read(&path).map_err(io)?;
    decode(&bytes, offset).map_err(|(position, reason)| LogError::Corrupt {
        file: path.clone(),
        position: position as u64,
        reason: format!("producer snapshot: {reason}"),
    })
}

/// Writes `bytes` (from [`encode`]) as the snapshot at `offset`, then deletes all but the
/// newest [`SNAPSHOTS_KEPT`]. Blocking file I/O: callers on a shard run it on the blocking
/// pool.
pub fn write(dir: &Path, offset: i64, bytes: &[u8]) -> std::io::Result<()> {
    let name = format!("{offset:020}.{SNAPSHOT_EXTENSION}");
    crate::data_file::replace(&dir.join(&name), bytes, 0o644)?;
    let offsets = list(dir)?;
    let keep_from = offsets.len().saturating_sub(SNAPSHOTS_KEPT);
    remove(dir, &offsets[..keep_from])
}

/// Offsets of the snapshots in `dir`, ascending.
pub fn list(dir: &Path) -> std::io::Result<Vec<i64>> {
    let mut offsets = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(offset) = entry
            .file_name()
            .to_str()
            .and_then(|name| parse_segment_file(name, SNAPSHOT_EXTENSION))
        {
            offsets.push(offset);
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

/// Deletes the snapshots at `offsets` (missing ones are fine), then syncs `dir` if any went.
pub fn remove(dir: &Path, offsets: &[i64]) -> std::io::Result<()> {
    for &offset in offsets {
        match std::fs::remove_file(snapshot_file(dir, offset)) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    if offsets.is_empty() {
        return Ok(());
    }
    sync_dir(dir)
}

/// Deletes the `.snapshot.tmp` files in `dir`: writes a crash interrupted. Only while nothing
/// writes snapshots in `dir` (when the log opens).
pub fn remove_interrupted_writes(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let interrupted = entry.file_name().to_str().is_some_and(|name| {
            name.strip_suffix(".tmp")
                .and_then(|n| parse_segment_file(n, SNAPSHOT_EXTENSION))
                .is_some()
        });
        if interrupted {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Deletes the snapshots outside `[start_offset, end_offset]`: above the end (their batches
/// are gone: a crash lost them, or a follower's log was cut) or below the start (retention
/// deleted their segments, the log cannot be replayed from them). Returns what is left,
/// ascending.
pub fn remove_outside(dir: &Path, start_offset: i64, end_offset: i64) -> std::io::Result<Vec<i64>> {
    let offsets = list(dir)?;
    let (keep, gone): (Vec<i64>, Vec<i64>) = offsets
        .into_iter()
        .partition(|&o| (start_offset..=end_offset).contains(&o));
    remove(dir, &gone)?;
    Ok(keep)
}

#[cfg(test)]
mod tests {
    //! The format round-trips a table (the restored one judges batches as the original did),
    //! pruning keeps the newest two, and every kind of damage is reported with the file name,
    //! never a panic.
    use super::*;
    use crate::storage::producer_state::tests::batch as header;
    use crate::storage::producer_state::Verdict;

    fn table() -> ProducerTable {
        let mut t = ProducerTable::default();
        let mut offset = 0;
        for i in 0..8 {
            t.record(&header(7, 0, i * 2, 2, offset));
            offset += 2;
        }
        t.record(&header(9, 3, 0, 1, offset));
        t.record(&header(11, 1, i32::MAX, 2, offset + 1));
        t
    }

    #[test]
    fn a_snapshot_round_trips() {
        let t = table();
        let bytes = encode(100, &t);
        let back = decode(&bytes, 100).unwrap();
        assert_eq!(back, t);
        // The restored table still knows producer 7's last five batches and nothing older.
        for seq in [14, 6] {
            let h = header(7, 0, seq, 2, -1);
            assert!(matches!(back.check([h].iter()), Ok(Verdict::Duplicate(_))));
        }
        let h = header(7, 0, 4, 2, -1);
        assert_eq!(back.check([h].iter()), t.check([h].iter()));
        assert!(back.check([h].iter()).is_err());
        let empty = ProducerTable::default();
        assert_eq!(decode(&encode(0, &empty), 0).unwrap(), empty);
    }

    #[test]
    fn damage_is_reported_not_trusted() {
        let good = encode(100, &table());
        let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
        let mut flipped = good.clone();
        flipped[30] ^= 1;
        cases.push((flipped, "CRC"));
        cases.push((good[..good.len() - 3].to_vec(), "CRC"));
        let mut magic = good.clone();
        magic[0] = b'X';
        cases.push((magic, "magic"));
        let mut version = good.clone();
        version[5] = 9;
        cases.push((version, "version"));
        cases.push((Vec::new(), "too short"));
        for (bytes, why) in &cases {
            let (_, reason) = decode(bytes, 100).unwrap_err();
            assert!(reason.contains(why), "{why}: {reason}");
        }
        // Well-formed files whose content cannot be right (CRC recomputed over it).
        let reseal = |mut b: Vec<u8>| {
            let crc = crc32c::crc32c(&b[PREFIX_BYTES..]);
            b[6..10].copy_from_slice(&crc.to_be_bytes());
            b
        };
        // Another offset than the name's; batches at or above the snapshot's offset.
        assert!(decode(&good, 99).unwrap_err().1.contains("name says 99"));
        let mut high = good.clone();
        high[PREFIX_BYTES..PREFIX_BYTES + 8].copy_from_slice(&10i64.to_be_bytes());
        assert!(decode(&reseal(high), 10)
            .unwrap_err()
            .1
            .contains("does not fit"));
        // A huge producer count, trailing bytes.
        let mut count = good.clone();
        count[PREFIX_BYTES + 8..PREFIX_BYTES + 12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(&reseal(count), 100)
            .unwrap_err()
            .1
            .contains("producers"));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode(&reseal(trailing), 100)
            .unwrap_err()
            .1
            .contains("after the last producer"));

        let dir = tempfile::tempdir().unwrap();
        let mut bad = good.clone();
        bad[40] ^= 0xff;
        std::fs::write(snapshot_file(dir.path(), 100), bad).unwrap();
        let err = read(dir.path(), 100).unwrap_err().to_string();
        assert!(err.contains("00000000000000000100.snapshot"), "{err}");
        assert!(err.contains("CRC"), "{err}");
    }

    #[test]
    fn writing_keeps_the_newest_two_and_removal_follows_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let t = table();
        for offset in [100, 250, 400] {
            write(dir.path(), offset, &encode(offset, &t)).unwrap();
        }
        assert_eq!(list(dir.path()).unwrap(), vec![250, 400]);
        assert_eq!(read(dir.path(), 400).unwrap(), t);
        // Other files of a partition directory are not snapshots.
        std::fs::write(dir.path().join("00000000000000000000.log"), b"").unwrap();
        std::fs::write(dir.path().join("x.snapshot"), b"").unwrap();
        // A write a crash interrupted is not a snapshot, and is cleaned up at open.
        let torn = dir.path().join("00000000000000000500.snapshot.tmp");
        std::fs::write(&torn, b"SBPS").unwrap();
        assert_eq!(list(dir.path()).unwrap(), vec![250, 400]);
        remove_interrupted_writes(dir.path()).unwrap();
        assert!(!torn.exists());
        assert_eq!(list(dir.path()).unwrap(), vec![250, 400]);
        assert_eq!(remove_outside(dir.path(), 0, 399).unwrap(), vec![250]);
        assert_eq!(
            remove_outside(dir.path(), 300, 1000).unwrap(),
            Vec::<i64>::new()
        );
        assert!(list(dir.path()).unwrap().is_empty());
    }
}
