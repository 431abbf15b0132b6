//! Producer ids for InitProducerId: unique for the life of the data directory, across
//! restarts and shards, as idempotence needs (a reused id would make another producer's
//! sequences look like duplicates).
//!
//! Ids are handed out from blocks of [`BLOCK`]; the end of the current block is written
//! durably (`producer-id-block`: temporary file, fsync, rename, directory fsync) before any
//! id of it is given out, so after a crash the next block starts beyond every id ever given.
//! The write happens once per [`BLOCK`] ids and blocks the calling shard for that fsync;
//! InitProducerId is a once-per-producer call, never on the produce path.
//!
//! In cluster mode ids must be unique over every broker, since a producer's id meets other
//! producers' on every leader it writes to: blocks then come from the coordinator
//! (`/latest_producer_id_block`, moved on by a conditional set, as Kafka's ZooKeeper mode
//! does) through [`ProducerIdAllocator::install_block`], and no file is used.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Ids reserved by one durable write.
pub const BLOCK: i64 = 1000;

/// The file holding the end of the reserved block.
pub const BLOCK_FILE: &str = "producer-id-block";

#[derive(Debug)]
struct Reserved {
    next: i64,
    block_end: i64,
}

/// Shared by every shard of the process.
#[derive(Debug)]
pub struct ProducerIdAllocator {
    /// The block file's directory; None when blocks come from the coordinator.
    dir: Option<PathBuf>,
    reserved: Mutex<Reserved>,
}

impl ProducerIdAllocator {
    /// Reads the reserved block's end from `data_dir` (none: ids start at 0). A damaged file is
    /// an error naming it: guessing could hand out an id twice.
    pub fn open(data_dir: &Path) -> Result<Self, String> {
        let path = data_dir.join(BLOCK_FILE);
        let block_end = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|v| *v >= 0)
                .ok_or_else(|| format!("{}: not a producer id: {:?}", path.display(), text))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(ProducerIdAllocator {
            dir: Some(data_dir.to_path_buf()),
            reserved: Mutex::new(Reserved {
                next: block_end,
                block_end,
            }),
        })
    }

    /// Cluster mode: ids only from blocks the coordinator handed out.
    pub fn from_coordinator() -> Self {
        ProducerIdAllocator {
            dir: None,
            reserved: Mutex::new(Reserved {
                next: 0,
                block_end: 0,
            }),
        }
    }

    pub fn uses_coordinator(&self) -> bool {
        self.dir.is_none()
    }

    fn reserved(&self) -> std::sync::MutexGuard<'_, Reserved> {
        self.reserved
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Cluster mode: the next id of the current block, None when it is used up.
    pub fn try_allocate(&self) -> Option<i64> {
        let mut r = self.reserved();
        (r.next < r.block_end).then(|| {
            r.next += 1;
            r.next - 1
        })
    }

    /// Cluster mode: ids `start..end` were reserved in the coordinator for this broker.
    pub fn install_block(&self, start: i64, end: i64) {
        let mut r = self.reserved();
        if r.next >= r.block_end {
            r.next = start;
            r.block_end = end;
        }
    }

    /// A producer id never given out before (single node).
    pub fn allocate(&self) -> std::io::Result<i64> {
        let mut r = self.reserved();
        if r.next >= r.block_end {
            let end = r.next + BLOCK;
            self.write_block_end(end)?;
            r.block_end = end;
        }
        let id = r.next;
        r.next += 1;
        Ok(id)
    }

    fn write_block_end(&self, end: i64) -> std::io::Result<()> {
        let Some(dir) = &self.dir else {
            return Err(std::io::Error::other(
                "producer ids come from the coordinator in cluster mode",
            ));
        };
        let tmp = dir.join(format!("{BLOCK_FILE}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(format!("{end}\n").as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, dir.join(BLOCK_FILE))?;
        std::fs::File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    //! Ids are unique across a reopen (a restart), even after a crash that lost the rest of a
    //! block; a damaged block file is an error, not a guess.
    use super::*;

    #[test]
    fn ids_are_never_reused_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIdAllocator::open(dir.path()).unwrap();
        let first: Vec<i64> = (0..3).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2]);
        drop(a);
        let b = ProducerIdAllocator::open(dir.path()).unwrap();
        let next = b.allocate().unwrap();
        assert_eq!(
            next, BLOCK,
            "a restart starts after the whole reserved block"
        );
        for _ in 0..BLOCK {
            b.allocate().unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join(BLOCK_FILE))
                .unwrap()
                .trim(),
            (3 * BLOCK).to_string()
        );
        std::fs::write(dir.path().join(BLOCK_FILE), "garbage").unwrap();
        let err = ProducerIdAllocator::open(dir.path()).unwrap_err();
        assert!(err.contains(BLOCK_FILE), "{err}");
    }
}
