//! The glommio executor of one shard, built from its core's profile settings: pinned to the
//! core, rings of `io_uring_depth` entries, with `busy_poll` glommio's spin-before-park, and
//! `registered_io_bytes` of memory registered with its rings, from which the shard's aligned
//! write buffers are allocated (see [`tuning::StorageLimits::registered_io_bytes`]).

use glommio::{LocalExecutorBuilder, Placement};
use tuning::CoreConfig;

/// The builder of shard `id`'s executor on `core`, with `registered_io_bytes` of memory
/// registered for I/O buffers.
pub fn shard_executor(
    id: usize,
    core: &CoreConfig,
    registered_io_bytes: u64,
) -> LocalExecutorBuilder {
    debug_assert!(core.io_uring_depth > 0, "the profile checks the ring depth");
    let builder = LocalExecutorBuilder::new(Placement::Fixed(core.cpu))
        .name(&format!("shard-{id}"))
        .ring_depth(core.io_uring_depth as usize)
        .io_memory(usize::try_from(registered_io_bytes).unwrap_or(usize::MAX));
    match core.spin_before_park() {
        Some(spin) => builder.spin_before_park(spin),
        None => builder,
    }
}

#[cfg(test)]
mod tests {
    //! Proves the profile's core settings reach the executor: the kernel's view of the shard
    //! thread's io_uring rings (`SqMask` in /proc/self/fdinfo) shows `io_uring_depth`, and with
    //! `busy_poll` a shard that waits on short timers polls instead of sleeping (the thread's
    //! voluntary context switches, which each sleep in the kernel counts, stay far below one
    //! per wait).
    use super::*;
    use std::time::Duration;

    fn core(depth: u32, busy_poll: bool) -> CoreConfig {
        CoreConfig {
            io_uring_depth: depth,
            busy_poll,
            ..CoreConfig::with_defaults(0)
        }
    }

    /// /proc/self/fdinfo of each io_uring instance this process has open.
    fn ring_fdinfos() -> Vec<String> {
        let mut infos = Vec::new();
        for fd in std::fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .flatten()
        {
            let is_ring = std::fs::read_link(fd.path())
                .map(|target| target.to_string_lossy().contains("io_uring"))
                .unwrap_or(false);
            if !is_ring {
                continue;
            }
            let info = format!("/proc/self/fdinfo/{}", fd.file_name().to_string_lossy());
            if let Ok(text) = std::fs::read_to_string(info) {
                infos.push(text);
            }
        }
        infos
    }

    /// Submission queue sizes of the io_uring instances this process has open.
    fn ring_entries() -> Vec<u64> {
        let mut entries = Vec::new();
        for text in ring_fdinfos() {
            let mask = text.lines().find_map(|line| line.strip_prefix("SqMask:"));
            if let Some(mask) = mask {
                let mask = mask.trim().trim_start_matches("0x");
                entries.push(u64::from_str_radix(mask, 16).expect("hex SqMask") + 1);
            }
        }
        entries
    }

    #[test]
    fn io_uring_depth_sizes_the_shard_rings() {
        // 32: neither glommio's default (128) nor the profiles' (256), so rings of other tests
        // running in this process are not counted.
        let entries = shard_executor(0, &core(32, false), 1 << 20)
            .spawn(|| async { ring_entries() })
            .expect("executor starts")
            .join()
            .expect("executor ends");
        let ours = entries.iter().filter(|&&n| n == 32).count();
        assert!(
            ours >= 3,
            "rings of 32 entries: {ours}; all rings: {entries:?}"
        );
    }

    /// Sizes of the buffers registered with the io_uring instances this process has open
    /// (`UserBufs` in their fdinfo: one `index: address/length` line per buffer).
    fn registered_buffer_lengths() -> Vec<u64> {
        let mut lengths = Vec::new();
        for text in ring_fdinfos() {
            let mut lines = text
                .lines()
                .skip_while(|line| !line.starts_with("UserBufs:"));
            let Some(header) = lines.next() else {
                continue;
            };
            let count: usize = header["UserBufs:".len()..].trim().parse().unwrap_or(0);
            for line in lines.take(count) {
                if let Some((_, length)) = line.rsplit_once('/') {
                    lengths.push(length.trim().parse().expect("registered buffer length"));
                }
            }
        }
        lengths
    }

    #[test]
    fn registered_io_bytes_are_registered_with_the_shard_rings() {
        // 3 MiB + 4 KiB: no other test's executor registers that much, and not a power of two.
        const BYTES: u64 = (3 << 20) + 4096;
        let lengths = shard_executor(0, &core(64, false), BYTES)
            .spawn(|| async { registered_buffer_lengths() })
            .expect("executor starts")
            .join()
            .expect("executor ends");
        let ours = lengths.iter().filter(|&&n| n == BYTES).count();
        assert!(
            ours >= 3,
            "rings with {BYTES} bytes registered: {ours}; all registered buffers: {lengths:?}"
        );
    }

    /// Voluntary context switches of the calling thread.
    fn voluntary_switches() -> u64 {
        std::fs::read_to_string("/proc/thread-self/status")
            .expect("/proc/thread-self/status")
            .lines()
            .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("voluntary_ctxt_switches line")
    }

    /// Voluntary context switches of a shard thread over `WAITS` timer waits of 50 us.
    fn switches_over_short_waits(busy_poll: bool) -> u64 {
        const WAITS: usize = 400;
        shard_executor(0, &core(64, busy_poll), 1 << 20)
            .spawn(|| async {
                let before = voluntary_switches();
                for _ in 0..WAITS {
                    glommio::timer::sleep(Duration::from_micros(50)).await;
                }
                voluntary_switches() - before
            })
            .expect("executor starts")
            .join()
            .expect("executor ends")
    }

    #[test]
    fn busy_poll_keeps_the_shard_polling_through_short_waits() {
        assert!(CoreConfig::BUSY_POLL_SPIN > Duration::from_micros(50));
        let sleeping = switches_over_short_waits(false);
        let polling = switches_over_short_waits(true);
        eprintln!("kernel sleeps in 400 waits of 50 us: {sleeping} parked, {polling} busy-polled");
        // Without busy_poll each wait sleeps in the kernel (a wait whose timer has already run
        // out by the time the thread parks does not, hence the margin); with it, only a wait
        // during which the thread was preempted past the spin sleeps.
        assert!(
            sleeping >= 200,
            "{sleeping} sleeps in 400 waits without busy_poll"
        );
        assert!(
            polling <= 100,
            "{polling} sleeps in 400 waits with busy_poll"
        );
    }
}
