//! `bench limits`: this host's own ceilings, measured now, so every benchmark can report its
//! figures as a fraction of what the machine can do in the same run: O_DIRECT sequential
//! write bandwidth, 4 KiB write + fdatasync latency, loopback TCP bandwidth, memcpy bandwidth.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::report::LatencyHistogram;

/// The measured limits.
#[derive(Debug, Clone, Serialize)]
pub struct HostLimits {
    pub o_direct_write_mb_s: f64,
    pub fdatasync_p50_ms: f64,
    pub fdatasync_p99_ms: f64,
    pub loopback_tcp_mb_s: f64,
    pub memcpy_gb_s: f64,
}

impl HostLimits {
    pub fn render(&self) -> String {
        format!(
            "host limits: O_DIRECT write {:.0} MB/s, 4 KiB write+fdatasync p50 {:.3} ms p99 {:.3} ms, loopback TCP {:.0} MB/s, memcpy {:.1} GB/s",
            self.o_direct_write_mb_s,
            self.fdatasync_p50_ms,
            self.fdatasync_p99_ms,
            self.loopback_tcp_mb_s,
            self.memcpy_gb_s
        )
    }
}

/// A 4096-aligned heap buffer, as O_DIRECT needs.
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

/// Writes `total_bytes` sequentially with O_DIRECT in `write_bytes` writes into a new file in
/// `dir`, fdatasyncs once, and returns MB/s. The file is removed.
pub fn o_direct_write_mb_s(dir: &Path, total_bytes: u64, write_bytes: usize) -> io::Result<f64> {
    let path = dir.join(format!(".bench-limits-{}.tmp", std::process::id()));
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)?;
    let mut buffer = AlignedBuffer::new(write_bytes);
    for (index, byte) in buffer.as_mut_slice().iter_mut().enumerate() {
        *byte = (index * 31 % 251) as u8;
    }
    let started = Instant::now();
    let mut position = 0u64;
    let result = (|| {
        while position < total_bytes {
            file.write_all_at(buffer.as_slice(), position)?;
            position += write_bytes as u64;
        }
        file.sync_data()
    })();
    let elapsed = started.elapsed();
    drop(file);
    let _ = std::fs::remove_file(&path);
    result?;
    Ok(position as f64 / elapsed.as_secs_f64() / 1e6)
}

/// `iterations` x (4 KiB O_DIRECT write + fdatasync) at successive positions; latency each.
pub fn fdatasync_latency(dir: &Path, iterations: u32) -> io::Result<LatencyHistogram> {
    let path = dir.join(format!(".bench-fsync-{}.tmp", std::process::id()));
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)?;
    let buffer = AlignedBuffer::new(4096);
    let mut histogram = LatencyHistogram::default();
    let result = (|| {
        for index in 0..iterations as u64 {
            let started = Instant::now();
            file.write_all_at(buffer.as_slice(), index * 4096)?;
            file.sync_data()?;
            histogram.record(started.elapsed());
        }
        Ok(())
    })();
    drop(file);
    let _ = std::fs::remove_file(&path);
    result.map(|()| histogram)
}

/// Streams `total_bytes` over one loopback TCP connection in 1 MiB writes; returns MB/s.
pub fn loopback_tcp_mb_s(total_bytes: u64) -> io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> io::Result<u64> {
        let (mut stream, _) = listener.accept()?;
        let mut buffer = vec![0u8; 1 << 20];
        let mut received = 0u64;
        loop {
            let read = stream.read(&mut buffer)?;
            if read == 0 {
                return Ok(received);
            }
            received += read as u64;
        }
    });
    let buffer = vec![7u8; 1 << 20];
    let started = Instant::now();
    {
        let mut stream = TcpStream::connect(address)?;
        stream.set_write_timeout(Some(Duration::from_secs(60)))?;
        let mut sent = 0u64;
        while sent < total_bytes {
            stream.write_all(&buffer)?;
            sent += buffer.len() as u64;
        }
    }
    let received = reader
        .join()
        .map_err(|_| io::Error::other("loopback reader panicked"))??;
    Ok(received as f64 / started.elapsed().as_secs_f64() / 1e6)
}

/// Copies a 64 MiB buffer `rounds` times; returns GB/s.
pub fn memcpy_gb_s(rounds: u32) -> f64 {
    let source = vec![3u8; 64 << 20];
    let mut target = vec![0u8; 64 << 20];
    let started = Instant::now();
    for round in 0..rounds {
        target.copy_from_slice(&source);
        std::hint::black_box(&mut target);
        target[round as usize] ^= 1;
    }
    (source.len() as f64 * rounds as f64) / started.elapsed().as_secs_f64() / 1e9
}

/// Measures every limit; disk figures in `dir` (which must be on the disk under test).
pub fn measure(dir: &Path) -> io::Result<HostLimits> {
    let o_direct_write_mb_s = o_direct_write_mb_s(dir, 1 << 30, 1 << 20)?;
    let fsync = fdatasync_latency(dir, 500)?;
    Ok(HostLimits {
        o_direct_write_mb_s,
        fdatasync_p50_ms: fsync.quantile_ms(0.5),
        fdatasync_p99_ms: fsync.quantile_ms(0.99),
        loopback_tcp_mb_s: loopback_tcp_mb_s(2 << 30)?,
        memcpy_gb_s: memcpy_gb_s(16),
    })
}

#[cfg(test)]
mod tests {
    //! Proves each probe runs and returns a positive figure (small sizes; not a benchmark).
    use super::*;

    #[test]
    fn probes_return_positive_figures() {
        let dir = tempfile::tempdir().unwrap();
        assert!(o_direct_write_mb_s(dir.path(), 8 << 20, 1 << 20).unwrap() > 0.0);
        assert_eq!(fdatasync_latency(dir.path(), 5).unwrap().len(), 5);
        assert!(loopback_tcp_mb_s(8 << 20).unwrap() > 0.0);
        assert!(memcpy_gb_s(1) > 0.0);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "probe files removed"
        );
    }
}
