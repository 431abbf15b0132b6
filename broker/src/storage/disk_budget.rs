//! What the data directory's file system can still take, and the shard's share of it.
//!
//! Two budgets keep a broker from filling its disk with space nobody wrote:
//! - Preallocation (`fallocate(KEEP_SIZE)` ahead of the write position) starts small and grows
//!   with the appends of each partition ([`PreallocationStep`]); the blocks a shard holds
//!   preallocated but not yet written are counted per shard ([`reserve`], [`release`]) and
//!   never exceed [`PREALLOCATION_SHARE_DIVISOR`]th of the file system's free space.
//! - A CreateTopics is checked against the free space and inodes, and against the open-file
//!   limit, before any partition directory exists ([`check_new_partitions`]): a topic that
//!   cannot fit is refused whole.
//!
//! Everything here is per shard (thread local): a shard's logs are only touched by its thread.

use std::cell::Cell;
use std::io;
use std::path::Path;

/// First preallocation of a new segment, bytes: what a partition costs before it is busy.
pub const INITIAL_PREALLOCATE_BYTES: u64 = 256 << 10;

/// A shard's preallocated-but-unwritten blocks stay below free space / this.
pub const PREALLOCATION_SHARE_DIVISOR: u64 = 8;

/// Blocks and inodes a new partition takes before its first append: the directory, the
/// segment's `.log`, `.index` and `.timeindex`, the recovery point and the leader epoch
/// checkpoint (one block each), and the first preallocation.
pub const PARTITION_FILES: u64 = 6;
pub const PARTITION_FOOTPRINT_BYTES: u64 = INITIAL_PREALLOCATE_BYTES + PARTITION_FILES * 4096;

/// New partitions may take at most free space / this (the rest is for their data).
pub const NEW_PARTITIONS_SHARE_DIVISOR: u64 = 2;

/// Files a partition keeps open while idle: its active segment's `.log` twice (the O_DIRECT
/// writer, and the buffered handle of the engine's reads and of fetches' splice). A sealed
/// segment keeps one. Index files are opened on demand (see
/// [`super::offset_index::OPEN_INDEX_FILES_MAX`]).
pub const OPEN_FILES_PER_PARTITION: u64 = 2;

/// New partitions may take at most this share (1/x) of the open files still allowed.
pub const NEW_PARTITIONS_FILES_SHARE_DIVISOR: u64 = 2;

/// Free space of a file system, as an unprivileged writer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsSpace {
    pub free_bytes: u64,
    pub free_inodes: u64,
    pub total_bytes: u64,
}

/// `statvfs` of the file system holding `path`.
pub fn fs_space(path: &Path) -> io::Result<FsSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` a valid out pointer.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok(FsSpace {
        free_bytes: st.f_bavail as u64 * frsize,
        // Some file systems (tmpfs without nr_inodes) report no inode limit: 0 files in total.
        free_inodes: if st.f_files == 0 {
            u64::MAX
        } else {
            st.f_favail as u64
        },
        total_bytes: st.f_blocks as u64 * frsize,
    })
}

/// Why new partitions do not fit: a message for the client that says what is needed and
/// what is free.
pub fn check_new_partitions(data_dir: &Path, partitions: u64) -> Result<(), String> {
    let space = fs_space(data_dir)
        .map_err(|e| format!("cannot read the free space of {}: {e}", data_dir.display()))?;
    check_against(space, partitions)?;
    let files_left =
        open_files_left().map_err(|e| format!("cannot read this process's open files: {e}"))?;
    check_files(files_left, partitions)
}

/// How many more files this process may open (RLIMIT_NOFILE minus the open ones).
pub fn open_files_left() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let open = std::fs::read_dir("/proc/self/fd")?.count() as u64;
    Ok(limit.rlim_cur.saturating_sub(open))
}

fn check_files(files_left: u64, partitions: u64) -> Result<(), String> {
    let needed = partitions.saturating_mul(OPEN_FILES_PER_PARTITION);
    if needed > files_left / NEW_PARTITIONS_FILES_SHARE_DIVISOR {
        return Err(format!(
            "too many open files: {partitions} partitions keep {needed} files open, and new \
             partitions may take at most half of the {files_left} more this broker may open \
             (raise its RLIMIT_NOFILE, `ulimit -n`)"
        ));
    }
    Ok(())
}

fn check_against(space: FsSpace, partitions: u64) -> Result<(), String> {
    let needed_bytes = partitions.saturating_mul(PARTITION_FOOTPRINT_BYTES);
    let allowed_bytes = space.free_bytes / NEW_PARTITIONS_SHARE_DIVISOR;
    if needed_bytes > allowed_bytes {
        return Err(format!(
            "not enough disk space: {partitions} partitions need {} MiB ({} KiB each before \
             any data), and new partitions may take at most half of the {} MiB free in the \
             data directory",
            needed_bytes.div_ceil(1 << 20),
            PARTITION_FOOTPRINT_BYTES / 1024,
            space.free_bytes >> 20
        ));
    }
    let needed_inodes = partitions.saturating_mul(PARTITION_FILES);
    if needed_inodes > space.free_inodes / NEW_PARTITIONS_SHARE_DIVISOR {
        return Err(format!(
            "not enough inodes: {partitions} partitions need {needed_inodes}, and new \
             partitions may take at most half of the {} free in the data directory",
            space.free_inodes
        ));
    }
    Ok(())
}

thread_local! {
    /// Bytes this shard's appenders preallocated beyond what they wrote.
    static PREALLOCATED_BYTES: Cell<u64> = const { Cell::new(0) };
}

/// Bytes this shard holds preallocated and not yet written.
pub fn shard_preallocated_bytes() -> u64 {
    PREALLOCATED_BYTES.with(Cell::get)
}

/// How much of a wanted preallocation of `want` bytes the shard may take now, given `free`
/// bytes free in the file system (0: none).
pub fn allowance(want: u64, free_bytes: u64) -> u64 {
    let cap = free_bytes / PREALLOCATION_SHARE_DIVISOR;
    want.min(cap.saturating_sub(shard_preallocated_bytes()))
}

/// Counts `bytes` as preallocated by this shard.
pub fn reserve(bytes: u64) {
    PREALLOCATED_BYTES.with(|c| c.set(c.get() + bytes));
}

/// Stops counting `bytes` (written over, or given back by a truncation or a close).
pub fn release(bytes: u64) {
    // `try_with`: an appender dropped while its thread exits finds the count already gone.
    let _ = PREALLOCATED_BYTES.try_with(|c| {
        debug_assert!(
            c.get() >= bytes,
            "released more preallocation than reserved"
        );
        c.set(c.get().saturating_sub(bytes))
    });
}

/// The next preallocation of one segment: starts at [`INITIAL_PREALLOCATE_BYTES`] and doubles
/// each time the appends used up the previous one, up to the profile's `preallocate_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreallocationStep {
    next_bytes: u64,
    max_bytes: u64,
}

impl PreallocationStep {
    pub fn new(max_bytes: u64) -> PreallocationStep {
        PreallocationStep {
            next_bytes: INITIAL_PREALLOCATE_BYTES.min(max_bytes),
            max_bytes,
        }
    }

    /// The size of the next preallocation.
    pub fn next_bytes(&self) -> u64 {
        self.next_bytes
    }

    /// A preallocation was granted: the next one is twice as large. (A step the budget did
    /// not grant does not count, so a partition does not jump to large steps while the
    /// disk is short.)
    pub fn advance(&mut self) {
        self.next_bytes = (self.next_bytes * 2).min(self.max_bytes);
    }
}

#[cfg(test)]
mod tests {
    //! The step grows geometrically to its cap; the shard allowance never passes its share of
    //! free space; the creation check names needed and free space.
    use super::*;

    #[test]
    fn step_doubles_up_to_the_profile() {
        let mut step = PreallocationStep::new(5 << 20);
        let taken: Vec<u64> = (0..7)
            .map(|_| {
                let bytes = step.next_bytes();
                step.advance();
                bytes
            })
            .collect();
        let mib = 1 << 20;
        assert_eq!(
            taken,
            vec![mib / 4, mib / 2, mib, 2 * mib, 4 * mib, 5 * mib, 5 * mib]
        );
        let small = PreallocationStep::new(4096);
        assert_eq!(small.next_bytes(), 4096);
    }

    #[test]
    fn allowance_stays_inside_the_share_of_free_space() {
        let free = 800 << 20;
        assert_eq!(allowance(64 << 20, free), 64 << 20);
        reserve(90 << 20);
        assert_eq!(allowance(64 << 20, free), 10 << 20);
        reserve(10 << 20);
        assert_eq!(allowance(64 << 20, free), 0);
        release(100 << 20);
        assert_eq!(shard_preallocated_bytes(), 0);
    }

    #[test]
    fn creation_check_names_needed_and_free() {
        let space = FsSpace {
            free_bytes: 100 << 20,
            free_inodes: 10_000,
            total_bytes: 200 << 20,
        };
        assert!(check_against(space, 150).is_ok());
        let err = check_against(space, 200).unwrap_err();
        assert!(err.contains("200 partitions need 55 MiB"), "{err}");
        assert!(err.contains("100 MiB free"), "{err}");
        let few_inodes = FsSpace {
            free_inodes: 100,
            ..space
        };
        assert!(check_against(few_inodes, 20)
            .unwrap_err()
            .contains("inodes"));
    }

    #[test]
    fn open_files_check_keeps_half_the_limit() {
        assert!(check_files(4000, 1000).is_ok());
        let err = check_files(3000, 1000).unwrap_err();
        assert!(
            err.contains("2000 files") && err.contains("3000 more"),
            "{err}"
        );
        assert!(open_files_left().unwrap() > 0);
    }

    #[test]
    fn preallocation_follows_the_writes_and_leaves_the_count_on_close() {
        use std::os::unix::fs::MetadataExt;

        use crate::storage::fault_injection::tests::{batch, config};
        use crate::storage::PartitionLog;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let mut config = config();
                config.preallocate_bytes = 64 << 20;
                config.segment_bytes = 256 << 20;
                let log = PartitionLog::open(&path, config).await.unwrap();
                let allocated = || {
                    let file = path.join(format!("{:020}.log", 0));
                    std::fs::metadata(file).unwrap().blocks() * 512
                };
                log.append(&batch("first"), 0).await.unwrap();
                // One small write: its page and the first step, not `preallocate_bytes`.
                let first = allocated();
                assert!(first <= 4096 + INITIAL_PREALLOCATE_BYTES, "{first}");
                assert_eq!(shard_preallocated_bytes(), INITIAL_PREALLOCATE_BYTES);
                // Writing past it takes the next, larger step.
                let value = "v".repeat(200_000);
                for _ in 0..3 {
                    log.append(&batch(&value), 0).await.unwrap();
                }
                let second = allocated();
                assert!(second > first, "{second} after {first}");
                assert!(second <= 4 * INITIAL_PREALLOCATE_BYTES, "{second}");
                log.close().await.unwrap();
                assert_eq!(shard_preallocated_bytes(), 0);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn fs_space_reads_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let space = fs_space(dir.path()).unwrap();
        assert!(space.total_bytes > 0 && space.free_bytes <= space.total_bytes);
    }
}
