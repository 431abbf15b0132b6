//! What this host is, as the kernel describes it in `/sys` and `/proc`: online cores, NUMA
//! nodes, SMT siblings, which cores take the network cards' interrupts, and the block device
//! under a directory (its queue: rotational, poll queues, request slots; the cores its
//! completion interrupts go to). Reads only; missing
//! files read as unknown, never as an error, so containers and VMs get what they expose.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The CPU layout and the cores serving network interrupts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub online_cpus: usize,
    /// Per NUMA node, its cpus (one node when the host has no NUMA information).
    pub numa_nodes: Vec<Vec<usize>>,
    /// Groups of hardware threads sharing one core (only groups of two or more).
    pub smt_siblings: Vec<Vec<usize>>,
    /// Per network interface (not loopback), the cpus its interrupts are delivered to.
    pub nic_irq_cpus: Vec<(String, Vec<usize>)>,
}

/// The block device holding a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// The whole disk's name (`nvme0n1`, `vda`), also when the directory is on a partition.
    pub name: String,
    pub rotational: bool,
    /// The device has poll queues (`queue/io_poll` is 1): io_uring IOPOLL can be used.
    pub io_poll: bool,
    /// `queue/nr_requests`: requests the device's queue holds.
    pub nr_requests: Option<u32>,
}

/// Parses the kernel's cpu list form: `0-3,8,10-11`. Unparsable parts are skipped.
pub fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = BTreeSet::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                    cpus.extend(a..=b.min(a + 4096));
                }
            }
            None => {
                if let Ok(cpu) = part.trim().parse() {
                    cpus.insert(cpu);
                }
            }
        }
    }
    cpus.into_iter().collect()
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// This host's topology.
pub fn topology() -> Topology {
    let online = read("/sys/devices/system/cpu/online")
        .map(|t| parse_cpu_list(&t))
        .unwrap_or_default();
    let online_cpus = if online.is_empty() {
        crate::online_cpus()
    } else {
        online.len()
    };
    let mut numa_nodes: Vec<Vec<usize>> = std::fs::read_dir("/sys/devices/system/node")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("node") && name[4..].parse::<u32>().is_ok()
        })
        .filter_map(|e| read(e.path().join("cpulist")).map(|t| parse_cpu_list(&t)))
        .filter(|cpus| !cpus.is_empty())
        .collect();
    numa_nodes.sort();
    if numa_nodes.is_empty() {
        numa_nodes.push((0..online_cpus).collect());
    }
    let mut smt_siblings: Vec<Vec<usize>> = Vec::new();
    for cpu in 0..online_cpus {
        let path = format!("/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list");
        if let Some(group) = read(path).map(|t| parse_cpu_list(&t)) {
            if group.len() > 1 && !smt_siblings.contains(&group) {
                smt_siblings.push(group);
            }
        }
    }
    Topology {
        online_cpus,
        numa_nodes,
        smt_siblings,
        nic_irq_cpus: nic_irq_cpus(),
    }
}

/// Interfaces (not loopback) and the cpus their interrupts go to: the `/proc/interrupts`
/// lines naming the interface or its device (`virtio0-input.0`, `eth0-TxRx-3`), each IRQ's
/// `effective_affinity_list`.
fn nic_irq_cpus() -> Vec<(String, Vec<usize>)> {
    let interrupts = read("/proc/interrupts").unwrap_or_default();
    let mut out = Vec::new();
    let mut interfaces: Vec<String> = std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != "lo")
        .collect();
    interfaces.sort();
    for interface in interfaces {
        let device = std::fs::canonicalize(format!("/sys/class/net/{interface}/device"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        let mut cpus = BTreeSet::new();
        for line in interrupts.lines() {
            let Some(name) = line.split_whitespace().last() else {
                continue;
            };
            let names_it = name.starts_with(&interface)
                || device.as_deref().is_some_and(|d| name.starts_with(d));
            let irq = line.split(':').next().map(str::trim).unwrap_or("");
            if !names_it || irq.parse::<u32>().is_err() {
                continue;
            }
            let affinity = read(format!("/proc/irq/{irq}/effective_affinity_list"))
                .or_else(|| read(format!("/proc/irq/{irq}/smp_affinity_list")));
            if let Some(list) = affinity {
                cpus.extend(parse_cpu_list(&list));
            }
        }
        if !cpus.is_empty() {
            out.push((interface, cpus.into_iter().collect()));
        }
    }
    out
}

/// The cpus the completion interrupts of disk `name` (a [`BlockDevice::name`]) are delivered
/// to: the IRQs `/proc/interrupts` names after its device (`virtio1-req.0`, `nvme0q3`) that
/// took at least 1% of the device's interrupts so far (not its config vector), each IRQ's
/// effective affinity. Empty when unknown (no such files, nothing counted yet).
///
/// A shard waits for its writes and fdatasyncs; when the interrupt completing them lands on
/// another cpu, the kernel finishes the request there and wakes the shard with an
/// inter-processor interrupt per completion.
pub fn disk_irq_cpus(name: &str) -> Vec<usize> {
    let Some(device) = std::fs::canonicalize(format!("/sys/block/{name}/device"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    else {
        return Vec::new();
    };
    let interrupts = read("/proc/interrupts").unwrap_or_default();
    irq_cpus_of(&interrupts, &device, |irq| {
        read(format!("/proc/irq/{irq}/effective_affinity_list"))
            .or_else(|| read(format!("/proc/irq/{irq}/smp_affinity_list")))
            .map(|list| parse_cpu_list(&list))
            .unwrap_or_default()
    })
}

/// The cpus of `device`'s busy IRQs in a `/proc/interrupts` text (see [`disk_irq_cpus`]);
/// `affinity(irq)` gives an IRQ's cpus.
fn irq_cpus_of(interrupts: &str, device: &str, affinity: impl Fn(u32) -> Vec<usize>) -> Vec<usize> {
    let prefix = format!("{device}-");
    let queue_prefix = format!("{device}q");
    let irqs: Vec<(u32, u64)> = interrupts
        .lines()
        .filter_map(|line| {
            let (irq, rest) = line.split_once(':')?;
            let irq: u32 = irq.trim().parse().ok()?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let name = fields.last()?;
            if !(name.starts_with(&prefix) || name.starts_with(&queue_prefix)) {
                return None;
            }
            let count = fields
                .iter()
                .map_while(|f| f.parse::<u64>().ok())
                .sum::<u64>();
            Some((irq, count))
        })
        .collect();
    let total: u64 = irqs.iter().map(|(_, count)| count).sum();
    let mut cpus = BTreeSet::new();
    for (irq, count) in irqs {
        if total > 0 && count * 100 >= total {
            cpus.extend(affinity(irq));
        }
    }
    cpus.into_iter().collect()
}

/// The block device under `dir`, when it is one (not tmpfs, overlay or another virtual file
/// system). A directory not created yet is on its nearest existing ancestor's device.
pub fn block_device(dir: &Path) -> Option<BlockDevice> {
    let dev = dir
        .ancestors()
        .find_map(|d| std::fs::metadata(d).ok())?
        .dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    if major == 0 {
        return None;
    }
    let node = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    // A partition's directory sits inside its disk's.
    let disk: PathBuf = if node.join("partition").exists() {
        node.parent()?.to_path_buf()
    } else {
        node
    };
    let queue = |file: &str| read(disk.join("queue").join(file)).map(|t| t.trim().to_string());
    Some(BlockDevice {
        name: disk.file_name()?.to_string_lossy().into_owned(),
        rotational: queue("rotational").as_deref() == Some("1"),
        io_poll: queue("io_poll").as_deref() == Some("1"),
        nr_requests: queue("nr_requests").and_then(|t| t.parse().ok()),
    })
}

/// The mount a directory lives on, as `/proc/self/mountinfo` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    pub fs_type: String,
    /// The mount's own options and the file system's (super block) options.
    pub options: Vec<String>,
}

impl Mount {
    /// Mounted with online discard (`-o discard`): the file system sends the device a discard
    /// for the blocks it frees (in its journal commit, or at once without a journal), and
    /// writes and fdatasyncs queue behind those at the device. Measured here (ext4 on virtio):
    /// 5-15 ms of device time per 16-58 MB freed (docs/operations.md).
    pub fn online_discard(&self) -> bool {
        self.options.iter().any(|o| o == "discard")
    }

    /// Seconds between ext3/ext4 journal commits (`commit=`, 5 when not given); `None` on
    /// other file systems. Under flush `interval` and `never` appends stalled for 50-140 ms at
    /// the default 5 s commits here and not at 30 s (docs/operations.md).
    pub fn journal_commit_s(&self) -> Option<u64> {
        if self.fs_type != "ext4" && self.fs_type != "ext3" {
            return None;
        }
        let given = self
            .options
            .iter()
            .filter_map(|o| o.strip_prefix("commit="))
            .filter_map(|v| v.parse::<u64>().ok())
            .next_back();
        // commit=0 means the default.
        Some(given.filter(|&s| s > 0).unwrap_or(5))
    }
}

/// The mount holding `dir` (the longest mount point above it on its device; a directory not
/// created yet is looked up by its nearest existing parent), `None` if it cannot be told.
pub fn mount_of(dir: &Path) -> Option<Mount> {
    let absolute = std::path::absolute(dir).ok()?;
    let dir = absolute
        .ancestors()
        .find_map(|d| std::fs::canonicalize(d).ok())?;
    let dev = std::fs::metadata(&dir).ok()?.dev();
    let text = read("/proc/self/mountinfo")?;
    parse_mountinfo(&text, libc::major(dev), libc::minor(dev), &dir)
}

/// The `(major:minor)` mount of `mountinfo` with the longest mount point above `dir`.
fn parse_mountinfo(text: &str, major: u32, minor: u32, dir: &Path) -> Option<Mount> {
    let device = format!("{major}:{minor}");
    let mut best: Option<Mount> = None;
    for line in text.lines() {
        // id parent major:minor root mount_point options [optional fields] - fstype source super_options
        let Some((mount, fs)) = line.split_once(" - ") else {
            continue;
        };
        let mount: Vec<&str> = mount.split(' ').collect();
        let fs: Vec<&str> = fs.split(' ').collect();
        if mount.len() < 6 || fs.len() < 3 || mount[2] != device {
            continue;
        }
        let mount_point = PathBuf::from(unescape_mountinfo(mount[4]));
        if !dir.starts_with(&mount_point) {
            continue;
        }
        let deeper = best
            .as_ref()
            .is_none_or(|b| mount_point.as_os_str().len() > b.mount_point.as_os_str().len());
        if deeper {
            best = Some(Mount {
                mount_point,
                fs_type: fs[0].to_string(),
                options: mount[5]
                    .split(',')
                    .chain(fs[2].split(','))
                    .map(str::to_string)
                    .collect(),
            });
        }
    }
    best
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deepest_mount_above_a_directory_gives_its_options() {
        let text = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict\n\
                    40 27 254:0 /srv /data\\040dir rw,noatime shared:1 - ext4 /dev/vda rw,commit=30\n\
                    41 27 0:30 / /tmp rw - tmpfs tmpfs rw\n";
        let root = parse_mountinfo(text, 254, 0, Path::new("/var/lib/streambox")).unwrap();
        assert_eq!(root.mount_point, Path::new("/"));
        assert_eq!(root.fs_type, "ext4");
        assert!(root.online_discard());
        let data = parse_mountinfo(text, 254, 0, Path::new("/data dir/broker")).unwrap();
        assert_eq!(data.mount_point, Path::new("/data dir"));
        assert!(data.options.contains(&"noatime".to_string()));
        assert!(!data.online_discard());
        assert_eq!(root.journal_commit_s(), Some(5));
        assert_eq!(data.journal_commit_s(), Some(30));
        assert_eq!(parse_mountinfo(text, 8, 1, Path::new("/data dir")), None);
        let tmp = parse_mountinfo(text, 0, 30, Path::new("/tmp/x")).unwrap();
        assert_eq!(tmp.journal_commit_s(), None);
    }

    #[test]
    fn a_disks_interrupts_are_its_busy_vectors_only() {
        // virtio-blk as on this VM (config vector and a second, idle disk's vectors aside),
        // and NVMe, whose admin queue (q0) fires too rarely to count.
        let text = "           CPU0       CPU1       CPU2
             35:          0          1          0  PCI-MSIX-0000:00:02.0   0-edge      virtio1-config
             36:          0   22134782          0  PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0
             37:         12          0          0  PCI-MSIX-0000:00:03.0   1-edge      virtio10-req.0
             50:         30          0          0  IR-PCI-MSIX-0000:01:00.0 0-edge  nvme0q0
             51:     400000          0          0  IR-PCI-MSIX-0000:01:00.0 1-edge  nvme0q1
             52:          0     380000          0  IR-PCI-MSIX-0000:01:00.0 2-edge  nvme0q2
             53:          0          0          9  IR-PCI-MSIX-0000:01:00.0 3-edge  nvme0q3
            LOC:   13717302   27742289   1000 Local timer interrupts
";
        // Each IRQ's affinity: IRQ n goes to cpu n % 3.
        let affinity = |irq: u32| vec![irq as usize % 3];
        assert_eq!(irq_cpus_of(text, "virtio1", affinity), vec![0]);
        assert_eq!(irq_cpus_of(text, "nvme0", affinity), vec![0, 1]);
        assert!(irq_cpus_of(text, "virtio2", affinity).is_empty());
    }

    #[test]
    fn this_hosts_root_is_a_mount() {
        let root = mount_of(Path::new("/")).expect("/ is on a mount");
        assert_eq!(root.mount_point, Path::new("/"));
        assert!(!root.fs_type.is_empty());
        // A data dir not created yet is on its parent's mount.
        let dir = std::env::temp_dir().join("streambox-not-created-yet/broker");
        let parent = mount_of(&std::env::temp_dir()).unwrap();
        assert_eq!(mount_of(&dir), Some(parent));
    }

    #[test]
    fn cpu_lists_parse_as_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list("5"), vec![5]);
        assert_eq!(parse_cpu_list(""), Vec::<usize>::new());
        assert_eq!(parse_cpu_list("x,2"), vec![2]);
    }

    #[test]
    fn this_host_has_cpus_and_a_node() {
        let topology = topology();
        assert!(topology.online_cpus >= 1);
        assert!(topology.numa_nodes.iter().flatten().all(|&cpu| cpu < 4096));
        assert!(!topology.numa_nodes.is_empty());
    }
}
