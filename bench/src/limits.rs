//! `bench limits`: this host's own ceilings, measured now, so every benchmark can report its
//! figures as a fraction of what the machine can do in the same run: O_DIRECT sequential
//! write bandwidth (the best of a few block sizes and depths), 4 KiB write + fdatasync latency (both measured by the broker's
//! [`broker::disk_probe`]), loopback TCP bandwidth, memcpy bandwidth, the machine's own
//! stalls while idle ([`crate::hiccup`]), and whether the disk's file system is mounted with
//! online discard (which puts a device discard in the queue, ahead of writes and fdatasyncs,
//! for every block the file system frees).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use broker::disk_probe;

use crate::hiccup::{HiccupMeter, Hiccups};
use serde::Serialize;

/// The measured limits.
#[derive(Debug, Clone, Serialize)]
pub struct HostLimits {
    /// The best of [`O_DIRECT_SHAPES`]: the disk's sequential write ceiling.
    pub o_direct_write_mb_s: f64,
    /// Each shape measured: block bytes, writes in flight, MB/s.
    pub o_direct_write_runs: Vec<ODirectRun>,
    /// 4 KiB O_DIRECT append + fdatasync, as a log's write round syncs.
    pub fdatasync_p50_ms: f64,
    pub fdatasync_p99_ms: f64,
    /// The same over blocks written before: no metadata to write, only the data and the
    /// device cache flush.
    pub overwrite_fdatasync_p50_ms: f64,
    pub overwrite_fdatasync_p99_ms: f64,
    pub loopback_tcp_mb_s: f64,
    pub memcpy_gb_s: f64,
    /// Wake-up lateness on every core over a few idle seconds.
    pub idle_hiccups: Hiccups,
    /// The measured directory's file system is mounted with `-o discard`
    /// ([`tuning::host::Mount::online_discard`]); `None` if its mount could not be found.
    pub online_discard: Option<bool>,
    /// Seconds between the file system's journal commits, on ext3/ext4
    /// ([`tuning::host::Mount::journal_commit_s`]).
    pub journal_commit_s: Option<u64>,
}

impl HostLimits {
    pub fn render(&self) -> String {
        format!(
            "host limits: O_DIRECT write {:.0} MB/s ({}), 4 KiB write+fdatasync p50 {:.3} ms p99 {:.3} ms (over written blocks: p50 {:.3} ms p99 {:.3} ms), loopback TCP {:.0} MB/s, memcpy {:.1} GB/s",
            self.o_direct_write_mb_s,
            self.o_direct_write_runs
                .iter()
                .map(|r| format!(
                    "{} MiB x{}: {:.0}",
                    r.block_bytes >> 20,
                    r.queue_depth,
                    r.mb_s
                ))
                .collect::<Vec<_>>()
                .join(", "),
            self.fdatasync_p50_ms,
            self.fdatasync_p99_ms,
            self.overwrite_fdatasync_p50_ms,
            self.overwrite_fdatasync_p99_ms,
            self.loopback_tcp_mb_s,
            self.memcpy_gb_s
        ) + "\nidle " + &self.idle_hiccups.render()
            + match self.online_discard {
                Some(true) => "\nfile system mounted with online discard (-o discard): writes and fdatasyncs queue behind the discard of every freed block (docs/operations.md)",
                Some(false) => "\nfile system mounted without online discard",
                None => "",
            }
            + &match self.journal_commit_s {
                Some(s) if s <= 5 => format!(", journal commit every {s} s (appends under flush interval and never stalled behind those commits here: docs/operations.md)"),
                Some(s) => format!(", journal commit every {s} s"),
                None => String::new(),
            }
    }
}

/// One O_DIRECT write shape and what it reached.
#[derive(Debug, Clone, Serialize)]
pub struct ODirectRun {
    pub block_bytes: usize,
    pub queue_depth: usize,
    pub mb_s: f64,
}

/// Block sizes and writes in flight the disk ceiling is measured at, 1 GiB each: one 1 MiB
/// write at a time, one 4 MiB write at a time (a round of a full 4 MiB write buffer), and four
/// 1 MiB writes in flight (several partitions writing at once).
pub const O_DIRECT_SHAPES: [(usize, usize); 3] = [(1 << 20, 1), (4 << 20, 1), (1 << 20, 4)];

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

/// How long `measure` watches the idle machine for stalls.
const IDLE_HICCUP_WINDOW: Duration = Duration::from_secs(5);

/// Measures every limit; disk figures in `dir` (which must be on the disk under test).
pub fn measure(dir: &Path) -> io::Result<HostLimits> {
    // 1 GiB per shape, then one fdatasync each; the best shape is the ceiling.
    let mut o_direct_write_runs = Vec::with_capacity(O_DIRECT_SHAPES.len());
    for (block_bytes, queue_depth) in O_DIRECT_SHAPES {
        let run = disk_probe::o_direct_writes(
            dir,
            block_bytes,
            queue_depth,
            1 << 30,
            Duration::from_secs(120),
        )?;
        o_direct_write_runs.push(ODirectRun {
            block_bytes,
            queue_depth,
            mb_s: run.mb_s(),
        });
    }
    let o_direct_write_mb_s = o_direct_write_runs
        .iter()
        .map(|r| r.mb_s)
        .fold(0.0, f64::max);
    let synced = |write| disk_probe::fdatasync_latencies(dir, write, 500, Duration::from_secs(60));
    let fsync = synced(disk_probe::SyncedWrite::Append)?;
    let overwrite = synced(disk_probe::SyncedWrite::Overwrite)?;
    let ms = |latencies: &[Duration], q| disk_probe::quantile(latencies, q).as_secs_f64() * 1e3;
    let meter = HiccupMeter::start_on_all_cores()?;
    std::thread::sleep(IDLE_HICCUP_WINDOW);
    let idle_hiccups = meter.stop();
    Ok(HostLimits {
        o_direct_write_mb_s,
        o_direct_write_runs,
        fdatasync_p50_ms: ms(&fsync, 0.5),
        fdatasync_p99_ms: ms(&fsync, 0.99),
        overwrite_fdatasync_p50_ms: ms(&overwrite, 0.5),
        overwrite_fdatasync_p99_ms: ms(&overwrite, 0.99),
        loopback_tcp_mb_s: loopback_tcp_mb_s(2 << 30)?,
        memcpy_gb_s: memcpy_gb_s(16),
        idle_hiccups,
        online_discard: tuning::host::mount_of(dir).map(|m| m.online_discard()),
        journal_commit_s: tuning::host::mount_of(dir).and_then(|m| m.journal_commit_s()),
    })
}

#[cfg(test)]
mod tests {
    //! Proves the network and memory probes run and return a positive figure (small sizes;
    //! not a benchmark). The disk probes are tested in `broker::disk_probe`.
    use super::*;

    #[test]
    fn probes_return_positive_figures() {
        assert!(loopback_tcp_mb_s(8 << 20).unwrap() > 0.0);
        assert!(memcpy_gb_s(1) > 0.0);
    }
}
