//! Producer ids for InitProducerId: unique for the life of the data directory, across
//! restarts and shards, as idempotence needs (a reused id would make another producer's
//! sequences look like duplicates).
//!
//! Ids are handed out from blocks of [`BLOCK`]; the end of the current block is written
//! durably (`producer-id-block`: temporary file, fsync, rename, directory fsync) before any
//! id of it is given out, so after a crash the next block starts beyond every id ever given.
//! The write happens once per [`BLOCK`] ids and blocks the calling shard for that fsync;
//! InitProducerId is a once-per-producer call, never on the produce path.

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
    dir: PathBuf,
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
            dir: data_dir.to_path_buf(),
            reserved: Mutex::new(Reserved {
                next: block_end,
                block_end,
            }),
        })
    }

    /// A producer id never given out before.
    pub fn allocate(&self) -> std::io::Result<i64> {
        let mut r = self
            .reserved
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
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
        let tmp = self.dir.join(format!("{BLOCK_FILE}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(format!("{end}\n").as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join(BLOCK_FILE))?;
        std::fs::File::open(&self.dir)?.sync_all()
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
