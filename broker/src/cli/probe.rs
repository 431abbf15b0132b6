//! `broker tuning probe`: measures this host, as `rpk iotune` does for Redpanda, and writes a
//! tuning profile from what it found. It reads the topology (cores, NUMA nodes, SMT
//! siblings, which cores take the network interrupts) and the data directory's device, then
//! times O_DIRECT writes of three block sizes at three queue depths and 4 KiB write +
//! fdatasync latency ([`crate::disk_probe`], one scratch file in the data directory at a
//! time, removed after). From these it places shards (every core, except the single core all
//! network interrupts go to on a host of four or more), sizes the io_uring rings, the write
//! buffer and each shard's memory budget, and writes the figures beside the keys as comments.
//! Bounded by `--seconds` (30 by default); the profile is checked by the same parser
//! `broker serve` uses before it is written.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tuning::host::{self, BlockDevice, Topology};

use crate::disk_probe::{self, WriteRun};

/// Block sizes and queue depths tried.
const BLOCK_BYTES: [usize; 3] = [256 << 10, 1 << 20, 4 << 20];
const QUEUE_DEPTHS: [usize; 3] = [1, 4, 16];
/// Bytes one write run may write at most.
const RUN_MAX_BYTES: u64 = 1 << 30;
/// A setting is taken at the smallest value that reaches this share of the best figure.
const GOOD_ENOUGH: f64 = 0.9;

pub struct ProbeOptions {
    pub data_dir: PathBuf,
    pub out: PathBuf,
    /// The whole measurement's time budget.
    pub budget: Duration,
}

/// What the probe measured and the profile it wrote.
pub struct ProbeReport {
    pub topology: Topology,
    pub device: Option<BlockDevice>,
    pub runs: Vec<WriteRun>,
    pub fdatasync_p50: Duration,
    pub fdatasync_p99: Duration,
    pub profile: String,
}

/// Measures the host and writes the profile to `options.out`.
pub fn probe(options: &ProbeOptions) -> Result<ProbeReport, String> {
    let dir = &options.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let topology = host::topology();
    let device = host::block_device(dir);
    // Nine write runs and the fdatasync run share the budget.
    let slice = options.budget / 10;
    let mut runs = Vec::new();
    for block in BLOCK_BYTES {
        for depth in QUEUE_DEPTHS {
            let run = disk_probe::o_direct_writes(dir, block, depth, RUN_MAX_BYTES, slice)
                .map_err(|e| format!("{}: O_DIRECT writes: {e}", dir.display()))?;
            runs.push(run);
        }
    }
    let latencies =
        disk_probe::fdatasync_latencies(dir, disk_probe::SyncedWrite::Append, 2000, slice)
            .map_err(|e| format!("{}: fdatasync: {e}", dir.display()))?;
    let fdatasync_p50 = disk_probe::quantile(&latencies, 0.5);
    let fdatasync_p99 = disk_probe::quantile(&latencies, 0.99);
    let memory_bytes = total_memory_bytes();
    let profile = render(&Measured {
        topology: &topology,
        device: device.as_ref(),
        runs: &runs,
        fdatasync_p50,
        fdatasync_p99,
        memory_bytes,
        data_dir: dir,
        disk_irq_cpus: device
            .as_ref()
            .map(|d| tuning::host::disk_irq_cpus(&d.name))
            .unwrap_or_default(),
    });
    tuning::Profile::parse(&profile, &options.out, topology.online_cpus)
        .map_err(|e| format!("the probe wrote a profile its own parser refuses: {e}"))?;
    crate::data_file::replace(&options.out, profile.as_bytes(), 0o644)
        .map_err(|e| format!("{}: {e}", options.out.display()))?;
    Ok(ProbeReport {
        topology,
        device,
        runs,
        fdatasync_p50,
        fdatasync_p99,
        profile,
    })
}

fn total_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

struct Measured<'a> {
    topology: &'a Topology,
    device: Option<&'a BlockDevice>,
    runs: &'a [WriteRun],
    fdatasync_p50: Duration,
    fdatasync_p99: Duration,
    memory_bytes: Option<u64>,
    data_dir: &'a Path,
    /// Where the data device's completion interrupts go ([`tuning::host::disk_irq_cpus`]).
    disk_irq_cpus: Vec<usize>,
}

/// The cpus that run shards: all, except on four or more cores the one core that every
/// network interrupt goes to (it stays with the kernel's network work).
fn shard_cpus(topology: &Topology) -> (Vec<usize>, Option<usize>) {
    let all: Vec<usize> = (0..topology.online_cpus).collect();
    let irq_cpus: std::collections::BTreeSet<usize> = topology
        .nic_irq_cpus
        .iter()
        .flat_map(|(_, cpus)| cpus.iter().copied())
        .collect();
    if topology.online_cpus >= 4 && irq_cpus.len() == 1 {
        let irq = *irq_cpus.iter().next().expect("one");
        return (all.into_iter().filter(|&c| c != irq).collect(), Some(irq));
    }
    (all, None)
}

/// The smallest `key` among `runs` whose MB/s reaches [`GOOD_ENOUGH`] of the best.
fn smallest_good(runs: &[&WriteRun], key: impl Fn(&WriteRun) -> usize) -> usize {
    let best = runs.iter().map(|r| r.mb_s()).fold(0.0, f64::max);
    runs.iter()
        .filter(|r| r.mb_s() >= GOOD_ENOUGH * best)
        .map(|r| key(r))
        .min()
        .unwrap_or_else(|| runs.iter().map(|r| key(r)).max().unwrap_or(1))
}

fn render(m: &Measured) -> String {
    let (shards, irq_core) = shard_cpus(m.topology);
    // The appender keeps one write of `write_buffer_bytes` in flight per partition: the
    // buffer is the smallest block that writes about as fast as the best at depth 1.
    // It must also hold two of the largest batches and a tail page, so that one round carries
    // more than one batch of that size (one write and one fdatasync per batch made 1 KiB flat
    // out with 1 MiB batches 20% slower), so it is the power of two at or above both.
    let depth_one: Vec<&WriteRun> = m.runs.iter().filter(|r| r.queue_depth == 1).collect();
    let good_block = smallest_good(&depth_one, |r| r.block_bytes);
    let batch_floor = 2 * tuning::StorageLimits::default().max_batch_bytes as usize + 4096;
    let write_buffer_bytes = good_block.max(batch_floor).next_power_of_two();
    // Many partitions write at once: the depth the device needs at that block size, times
    // the rings' other users (network, splice), as the ring depth.
    let at_block: Vec<&WriteRun> = m
        .runs
        .iter()
        .filter(|r| r.block_bytes == good_block)
        .collect();
    let device_depth = smallest_good(&at_block, |r| r.queue_depth);
    let io_uring_depth = (device_depth * 64).next_power_of_two().clamp(128, 4096);
    // Half the memory for the shards, shared evenly; the rest for the page cache.
    let memory_budget_bytes = m
        .memory_bytes
        .map_or(1 << 30, |total| total / 2 / shards.len().max(1) as u64)
        .clamp(256 << 20, 16 << 30)
        & !((1 << 20) - 1);

    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Written by `broker tuning probe --data-dir {}`.",
        m.data_dir.display()
    );
    let _ = writeln!(
        t,
        "# Host: {} online cpus, {} NUMA node(s) {:?}, SMT sibling groups {:?}, {} MiB memory.",
        m.topology.online_cpus,
        m.topology.numa_nodes.len(),
        m.topology.numa_nodes,
        m.topology.smt_siblings,
        m.memory_bytes.unwrap_or(0) >> 20
    );
    let _ = writeln!(t, "# Network interrupts: {:?}.", m.topology.nic_irq_cpus);
    match m.device {
        Some(d) => {
            let _ = writeln!(
                t,
                "# Data directory device: {} (rotational {}, poll queues {}, nr_requests {:?}).",
                d.name, d.rotational, d.io_poll, d.nr_requests
            );
            let _ = writeln!(
                t,
                "# Its completion interrupts go to cpus {:?} (a shard there is woken without an \
                 inter-processor interrupt).",
                m.disk_irq_cpus
            );
        }
        None => {
            let _ = writeln!(t, "# Data directory device: not a block device.");
        }
    }
    let _ = writeln!(t, "# O_DIRECT sequential writes (MB/s, IOPS):");
    for r in m.runs {
        let _ = writeln!(
            t,
            "#   {:>5} KiB x depth {:>2}: {:>8.0} MB/s {:>9.0} IOPS",
            r.block_bytes >> 10,
            r.queue_depth,
            r.mb_s(),
            r.iops()
        );
    }
    let _ = writeln!(
        t,
        "# 4 KiB write + fdatasync: p50 {:.3} ms, p99 {:.3} ms.",
        m.fdatasync_p50.as_secs_f64() * 1e3,
        m.fdatasync_p99.as_secs_f64() * 1e3
    );
    let _ = writeln!(
        t,
        "description = \"probed: {} shard(s), {} KiB writes\"",
        shards.len(),
        write_buffer_bytes >> 10
    );
    let _ = writeln!(t);
    if let Some(irq) = irq_core {
        let _ = writeln!(
            t,
            "# cpu {irq} takes every network interrupt: no shard on it."
        );
    }
    for cpu in &shards {
        let _ = writeln!(t, "[[core]]");
        let _ = writeln!(t, "cpu = {cpu}");
        let _ = writeln!(t, "role = \"shard\"");
        let _ = writeln!(
            t,
            "io_uring_depth = {io_uring_depth}   # the device wanted depth {device_depth}"
        );
        let _ = writeln!(t, "memory_budget_bytes = {memory_budget_bytes}");
        let _ = writeln!(t);
    }
    let _ = writeln!(t, "[storage]");
    let _ = writeln!(
        t,
        "write_buffer_bytes = {write_buffer_bytes}   # {} KiB writes reach 90% of the best at depth 1",
        good_block >> 10
    );
    let _ = writeln!(t, "flush_policy = \"always\"");
    let _ = writeln!(t);
    let _ = writeln!(t, "[probed_host]");
    let _ = writeln!(t, "online_cpus = {}", m.topology.online_cpus);
    let _ = writeln!(t, "numa_nodes = {}", m.topology.numa_nodes.len());
    if let Some(d) = m.device {
        let _ = writeln!(t, "data_device = \"{}\"", d.name);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(block_bytes: usize, queue_depth: usize, mb_s: f64) -> WriteRun {
        WriteRun {
            block_bytes,
            queue_depth,
            bytes: (mb_s * 1e6) as u64,
            elapsed: Duration::from_secs(1),
        }
    }

    fn topology(cpus: usize, irq: Vec<usize>) -> Topology {
        Topology {
            online_cpus: cpus,
            numa_nodes: vec![(0..cpus).collect()],
            smt_siblings: Vec::new(),
            nic_irq_cpus: vec![("eth0".into(), irq)],
        }
    }

    #[test]
    fn decisions_follow_the_measurements_and_the_profile_parses() {
        // 64 KiB is slow, 1 MiB is as good as 4 MiB; depth 4 gets 95% of depth 16.
        let mut runs = Vec::new();
        for (block, base) in [(256 << 10, 400.0), (1 << 20, 1900.0), (4 << 20, 2000.0)] {
            for (depth, factor) in [(1, 0.5), (4, 0.95), (16, 1.0)] {
                runs.push(run(block, depth, base * factor * 2.0));
            }
        }
        let topo = topology(8, vec![3]);
        let device = BlockDevice {
            name: "nvme0n1".into(),
            rotational: false,
            io_poll: true,
            nr_requests: Some(1023),
        };
        let text = render(&Measured {
            topology: &topo,
            device: Some(&device),
            runs: &runs,
            fdatasync_p50: Duration::from_micros(300),
            fdatasync_p99: Duration::from_micros(900),
            memory_bytes: Some(32 << 30),
            data_dir: Path::new("/data"),
            disk_irq_cpus: vec![5],
        });
        let profile = tuning::Profile::parse(&text, Path::new("<probe>"), 8).unwrap();
        let shards: Vec<usize> = profile.shard_cores().iter().map(|c| c.cpu).collect();
        assert_eq!(
            shards,
            vec![0, 1, 2, 4, 5, 6, 7],
            "cpu 3 takes the interrupts"
        );
        // 1 MiB writes are good enough; the buffer holds two 1 MiB batches and a page: 4 MiB.
        assert_eq!(profile.storage.write_buffer_bytes, 4 << 20);
        assert_eq!(profile.cores[0].io_uring_depth, 256);
        assert_eq!(
            profile.cores[0].memory_budget_bytes,
            ((16 << 30) / 7) & !((1 << 20) - 1)
        );
        let probed = profile.probed_host.unwrap();
        assert_eq!(probed.data_device.as_deref(), Some("nvme0n1"));
        assert!(probed.differences(&topo, Some(&device)).is_empty());
        let other = topology(4, vec![0, 1]);
        assert_eq!(probed.differences(&other, None).len(), 2);
        assert!(text.contains("fdatasync: p50 0.300 ms, p99 0.900 ms"));
        assert!(
            text.contains("completion interrupts go to cpus [5]"),
            "{text}"
        );
    }

    #[test]
    fn small_hosts_keep_every_core() {
        assert_eq!(shard_cpus(&topology(2, vec![0])), (vec![0, 1], None));
        assert_eq!(shard_cpus(&topology(4, vec![0, 1])).0.len(), 4);
    }
}
