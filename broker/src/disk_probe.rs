//! Measures a data directory's disk as the broker uses it: O_DIRECT writes (sequential, of one
//! block size, kept `queue_depth` deep through an io_uring of its own) and 4 KiB write +
//! fdatasync latency. Each measurement writes one scratch file in the directory, bounded in
//! bytes and time, and removes it, also on error. Used by `broker tuning probe` and by
//! `bench limits`.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use io_uring::{opcode, types, IoUring};

/// A 4096-aligned, zeroed heap buffer, as O_DIRECT needs.
pub struct AlignedBuffer {
    pointer: *mut u8,
    layout: Layout,
}

impl AlignedBuffer {
    pub fn new(len: usize) -> AlignedBuffer {
        let layout = Layout::from_size_align(len.max(4096), 4096).expect("valid layout");
        // SAFETY: the layout has a non-zero size.
        let pointer = unsafe { alloc_zeroed(layout) };
        assert!(!pointer.is_null(), "out of memory allocating {len} bytes");
        AlignedBuffer { pointer, layout }
    }
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: pointer is valid for layout.size() initialised bytes until drop.
        unsafe { std::slice::from_raw_parts(self.pointer, self.layout.size()) }
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we hold the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.pointer, self.layout.size()) }
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in `new`.
        unsafe { dealloc(self.pointer, self.layout) }
    }
}

/// A scratch file in the probed directory, removed when dropped.
struct Scratch {
    path: PathBuf,
    file: File,
}

impl Scratch {
    fn create(dir: &Path, what: &str) -> io::Result<Scratch> {
        let path = dir.join(format!(".probe-{what}-{}.tmp", std::process::id()));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)?;
        Ok(Scratch { path, file })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What one O_DIRECT write run achieved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriteRun {
    pub block_bytes: usize,
    pub queue_depth: usize,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl WriteRun {
    pub fn mb_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
    pub fn iops(&self) -> f64 {
        (self.bytes / self.block_bytes as u64) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Sequential O_DIRECT writes of `block_bytes`, `queue_depth` in flight, into a scratch file
/// in `dir` until `max_bytes` are written or `budget` has passed (whichever first), then one
/// fdatasync (counted in the time).
pub fn o_direct_writes(
    dir: &Path,
    block_bytes: usize,
    queue_depth: usize,
    max_bytes: u64,
    budget: Duration,
) -> io::Result<WriteRun> {
    assert!(block_bytes >= 4096 && block_bytes % 4096 == 0);
    assert!((1..=256).contains(&queue_depth));
    let scratch = Scratch::create(dir, "write")?;
    let mut ring = IoUring::new(queue_depth.next_power_of_two() as u32)?;
    let mut buffer = AlignedBuffer::new(block_bytes);
    for (index, byte) in buffer.as_mut_slice().iter_mut().enumerate() {
        *byte = (index * 31 % 251) as u8;
    }
    let fd = types::Fd(scratch.file.as_raw_fd());
    let started = Instant::now();
    let mut next_position = 0u64;
    let mut written = 0u64;
    let mut in_flight = 0usize;
    loop {
        let more = next_position < max_bytes && started.elapsed() < budget;
        while more && in_flight < queue_depth && next_position < max_bytes {
            // Every write sends the same bytes: the buffer is only read while in flight.
            let entry = opcode::Write::new(fd, buffer.as_slice().as_ptr(), block_bytes as u32)
                .offset(next_position)
                .build()
                .user_data(block_bytes as u64);
            // SAFETY: the buffer outlives every write (all are reaped before it drops).
            unsafe { ring.submission().push(&entry) }
                .map_err(|_| io::Error::other("submission queue full"))?;
            next_position += block_bytes as u64;
            in_flight += 1;
        }
        if in_flight == 0 {
            break;
        }
        ring.submit_and_wait(1)?;
        let mut failure = None;
        for completion in ring.completion() {
            in_flight -= 1;
            match completion.result() {
                n if n < 0 => failure = Some(io::Error::from_raw_os_error(-n)),
                n if n as u64 != completion.user_data() => {
                    failure = Some(io::Error::other(format!("short O_DIRECT write of {n}")))
                }
                n => written += n as u64,
            }
        }
        if let Some(err) = failure {
            // Reap what is still in flight before the buffer goes.
            while in_flight > 0 {
                ring.submit_and_wait(1)?;
                in_flight -= ring.completion().count();
            }
            return Err(err);
        }
    }
    scratch.file.sync_data()?;
    Ok(WriteRun {
        block_bytes,
        queue_depth,
        bytes: written,
        elapsed: started.elapsed(),
    })
}

/// Where the synced writes of [`fdatasync_latencies`] land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncedWrite {
    /// Past the end of the file, as a log appends: each write allocates blocks and grows the
    /// file, so its fdatasync also writes the inode (and extent) metadata.
    Append,
    /// Over blocks written and synced before: the fdatasync writes the data and flushes the
    /// device's cache, nothing else (the floor a log whose blocks are written ahead of its
    /// appends would have).
    Overwrite,
}

/// Up to `iterations` x (4 KiB O_DIRECT write + fdatasync) at successive positions, within
/// `budget`; the latency of each, in order.
pub fn fdatasync_latencies(
    dir: &Path,
    write: SyncedWrite,
    iterations: u32,
    budget: Duration,
) -> io::Result<Vec<Duration>> {
    let scratch = Scratch::create(dir, "fsync")?;
    let buffer = AlignedBuffer::new(4096);
    if write == SyncedWrite::Overwrite {
        let chunk = AlignedBuffer::new(1 << 20);
        let total = iterations as u64 * 4096;
        let mut position = 0;
        while position < total {
            let len = (total - position).min(1 << 20) as usize;
            scratch
                .file
                .write_all_at(&chunk.as_slice()[..len], position)?;
            position += len as u64;
        }
        scratch.file.sync_data()?;
    }
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(iterations as usize);
    for index in 0..iterations as u64 {
        if started.elapsed() >= budget && !latencies.is_empty() {
            break;
        }
        let write_started = Instant::now();
        scratch.file.write_all_at(buffer.as_slice(), index * 4096)?;
        scratch.file.sync_data()?;
        latencies.push(write_started.elapsed());
    }
    Ok(latencies)
}

/// The `quantile` (0..=1) of `latencies` (nearest rank); zero when empty.
pub fn quantile(latencies: &[Duration], quantile: f64) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    match sorted.len() {
        0 => Duration::ZERO,
        n => sorted[((quantile * n as f64).ceil() as usize).clamp(1, n) - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reach_the_byte_bound_at_every_depth_and_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        for depth in [1, 4] {
            let run = o_direct_writes(
                dir.path(),
                64 << 10,
                depth,
                4 << 20,
                Duration::from_secs(30),
            )
            .unwrap();
            assert_eq!(run.bytes, 4 << 20, "depth {depth}");
            assert!(run.mb_s() > 0.0 && run.iops() > 0.0);
        }
        for write in [SyncedWrite::Append, SyncedWrite::Overwrite] {
            let latencies =
                fdatasync_latencies(dir.path(), write, 5, Duration::from_secs(30)).unwrap();
            assert_eq!(latencies.len(), 5, "{write:?}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let ms = |v: u64| Duration::from_millis(v);
        let values: Vec<Duration> = (1..=100).rev().map(ms).collect();
        assert_eq!(quantile(&values, 0.5), ms(50));
        assert_eq!(quantile(&values, 0.99), ms(99));
        assert_eq!(quantile(&values, 1.0), ms(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }
}
