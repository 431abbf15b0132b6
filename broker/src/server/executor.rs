//! The glommio executor of one shard, built from its core's profile settings: pinned to the
//! core, rings of `io_uring_depth` entries, and with `busy_poll` glommio's spin-before-park.

use glommio::{LocalExecutorBuilder, Placement};
use tuning::CoreConfig;

/// The builder of shard `id`'s executor on `core`.
pub fn shard_executor(id: usize, core: &CoreConfig) -> LocalExecutorBuilder {
    debug_assert!(core.io_uring_depth > 0, "the profile checks the ring depth");
    let builder = LocalExecutorBuilder::new(Placement::Fixed(core.cpu))
        .name(&format!("shard-{id}"))
        .ring_depth(core.io_uring_depth as usize);
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

    /// Submission queue sizes of the io_uring instances this process has open.
    fn ring_entries() -> Vec<u64> {
        let mut entries = Vec::new();
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
            let Ok(text) = std::fs::read_to_string(info) else {
                continue;
            };
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
        let entries = shard_executor(0, &core(32, false))
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
        shard_executor(0, &core(64, busy_poll))
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
