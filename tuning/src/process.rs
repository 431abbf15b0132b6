//! Process setup that every latency-sensitive binary here shares (the broker, the bench and its
//! embedded node).
//!
//! Transparent huge pages are turned off for the process. With THP, the first touch of a
//! 2 MiB-aligned range of fresh memory makes the kernel clear a whole 2 MiB page inside the
//! page fault, on the thread that touched it. The broker's receive buffers and O_DIRECT
//! buffers come and go at the rate data arrives, so a shard took such faults all the time:
//! with mimalloc asking for huge pages on its arenas (`MADV_HUGEPAGE`), a 1 KiB flat-out
//! produce run spent 13-18% of the shard's samples in `clear_page_erms` under
//! `do_huge_pmd_anonymous_page`, against under 2.5% with THP off (perf, docs/tuning.md), and
//! every such fault is a stall of hundreds of µs on the shard. Nothing here gains from huge
//! pages: the buffers are streamed through once.

/// Turns transparent huge pages off for this process and the threads it starts
/// (`PR_SET_THP_DISABLE`); memory already backed by huge pages stays so. Returns the OS error
/// when the kernel refuses (kernels before 3.15).
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes integer arguments only.
    let done = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if done != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether transparent huge pages are off for this process (`PR_GET_THP_DISABLE`).
pub fn transparent_huge_pages_disabled() -> bool {
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_pages_are_off_after_the_call() {
        // The test harness runs each test on its own thread; the flag is per process.
        disable_transparent_huge_pages().unwrap();
        assert!(transparent_huge_pages_disabled());
    }
}
