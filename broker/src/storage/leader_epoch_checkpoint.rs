//! The `leader-epoch-checkpoint` file of a partition directory: which leader epoch started at
//! which offset, in Kafka's text format (a version line `0`, a count line, then one
//! `epoch start_offset` line per entry), so a replica that restarts still knows where its log
//! may have diverged from a new leader's. Replaced atomically (temporary file, fsync, rename,
//! directory fsync); written only when an epoch starts or the log is cut, never per append.

use std::path::Path;

use super::error::LogError;

pub const LEADER_EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
/// Entries a checkpoint may hold (bounds what a damaged file can make us allocate).
const ENTRIES_MAX: usize = 1 << 20;

/// Reads the checkpoint of the partition in `dir`; empty when there is none.
pub fn read(dir: &Path) -> Result<Vec<(i32, i64)>, LogError> {
    let path = dir.join(LEADER_EPOCH_CHECKPOINT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => {
            return Err(LogError::io(
                &path,
                "reading the leader-epoch checkpoint",
                err,
            ))
        }
    };
    let corrupt = |line: usize, why: &str| LogError::Corrupt {
        file: path.clone(),
        position: line as u64,
        reason: format!("leader-epoch checkpoint line {}: {why}", line + 1),
    };
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("0") {
        return Err(corrupt(0, "version is not 0"));
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .filter(|&n| n <= ENTRIES_MAX)
        .ok_or_else(|| corrupt(1, "bad entry count"))?;
    let mut entries = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        let line = lines
            .next()
            .ok_or_else(|| corrupt(i + 2, "missing entry"))?;
        let mut fields = line.split_whitespace();
        let epoch = fields.next().and_then(|f| f.parse::<i32>().ok());
        let offset = fields.next().and_then(|f| f.parse::<i64>().ok());
        match (epoch, offset, fields.next()) {
            (Some(epoch), Some(offset), None) => entries.push((epoch, offset)),
            _ => return Err(corrupt(i + 2, "not `epoch offset`")),
        }
    }
    Ok(entries)
}

/// Replaces the checkpoint of the partition in `dir` with `entries`.
pub fn write(dir: &Path, entries: &[(i32, i64)]) -> Result<(), LogError> {
    let mut text = format!("0\n{}\n", entries.len());
    for (epoch, offset) in entries {
        text.push_str(&format!("{epoch} {offset}\n"));
    }
    crate::data_file::replace(
        &dir.join(LEADER_EPOCH_CHECKPOINT_FILE),
        text.as_bytes(),
        0o644,
    )
    .map_err(|err| {
        LogError::io(
            dir.join(LEADER_EPOCH_CHECKPOINT_FILE),
            "writing the leader-epoch checkpoint",
            err,
        )
    })
}

#[cfg(test)]
mod tests {
    //! Proves the file round-trips in Kafka's format and that damage is reported with the
    //! file and line, never a panic.
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_empty());
        write(dir.path(), &[(0, 0), (3, 120)]).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE)).unwrap();
        assert_eq!(text, "0\n2\n0 0\n3 120\n");
        assert_eq!(read(dir.path()).unwrap(), vec![(0, 0), (3, 120)]);
        for bad in [
            "1\n0\n",
            "0\n2\n0 0\n",
            "0\nx\n",
            "0\n1\n0 0 0\n",
            "0\n99999999999\n",
        ] {
            std::fs::write(dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE), bad).unwrap();
            let err = read(dir.path()).unwrap_err().to_string();
            assert!(err.contains(LEADER_EPOCH_CHECKPOINT_FILE), "{err}");
        }
    }
}
