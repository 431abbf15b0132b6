//! Makes glommio's choice between its polled ring and its interrupt-driven ring for O_DIRECT
//! files rest on a real read from the device.
//!
//! glommio asks once per block device and executor thread whether the device completes
//! polled I/O (IOPOLL), by reading the first block of the first file it opens with
//! `dma_open`. When that file is a new, empty segment the read ends at end-of-file without
//! reaching the device, so the answer is "yes" for any device. On a device without poll
//! queues (a virtio disk, most SATA) the polled ring then keeps the executor from ever
//! sleeping while a write is in flight: measured here, the shard spun through ~150,000
//! reactor rounds a second (each a cancel, two timeouts and a system call) at 1M msgs/s, and
//! O_DIRECT reads failed with EOPNOTSUPP. Opening a file that holds a block first makes the
//! probe reach the device, so the answer is the device's own.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use glommio::io::OpenOptions as DmaOpenOptions;

use super::blocking;

/// Name of the short-lived file the probe reads (in the directory given to [`prepare`]).
pub const PROBE_FILE: &str = ".iopoll-probe";

/// Bytes in the probe file: a block of any logical block size up to 4 KiB.
const PROBE_BYTES: usize = 4096;

thread_local! {
    /// Devices (st_dev) already probed by this executor thread (glommio's answer is cached
    /// per thread, too).
    static PROBED: RefCell<HashSet<u64>> = RefCell::new(HashSet::new());
}

/// Before the first `dma_open` on `dir`'s device on this thread: lets glommio probe IOPOLL
/// support with a read that reaches the device. Best effort: a failure only means glommio
/// probes with the next file it opens, as it would have anyway.
pub async fn prepare(dir: &Path) {
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let dev = meta.dev();
    if PROBED.with(|p| p.borrow().contains(&dev)) {
        return;
    }
    PROBED.with(|p| p.borrow_mut().insert(dev));
    let path = dir.join(PROBE_FILE);
    let to_write = path.clone();
    // Off the shard's thread: an fsync can take seconds while the disk is busy.
    let written = blocking::run(move || {
        std::fs::File::create(&to_write).and_then(|mut f| {
            f.write_all(&[0u8; PROBE_BYTES])?;
            // On disk, so the O_DIRECT read goes to the device rather than stopping short.
            f.sync_all()
        })
    })
    .await;
    if written.is_ok() {
        if let Ok(file) = DmaOpenOptions::new().read(true).dma_open(&path).await {
            let _ = file.close().await;
        }
    }
    let _ = std::fs::remove_file(&path);
}

#[cfg(test)]
mod tests {
    //! After `prepare`, a new (empty) O_DIRECT file opened first on the device reads back what
    //! was written to it. Without it, on a device lacking poll queues (this machine's virtio
    //! disk), glommio would put the file on its polled ring and the read would fail with
    //! EOPNOTSUPP.
    use super::*;

    #[test]
    fn direct_reads_work_on_a_new_file_after_prepare() {
        let dir = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
        let path = dir.path().join("00000000000000000000.log");
        let result = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                prepare(path.parent().unwrap()).await;
                assert!(
                    !path.with_file_name(PROBE_FILE).exists(),
                    "probe file removed"
                );
                let file = DmaOpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .dma_open(&path)
                    .await
                    .unwrap();
                let mut buf = file.alloc_dma_buffer(4096);
                buf.as_bytes_mut().fill(7);
                file.write_at(buf, 0).await.unwrap();
                file.fdatasync().await.unwrap();
                let read = file.read_at_aligned(0, 4096).await;
                let _ = file.close().await;
                read.map(|r| r.iter().all(|&b| b == 7))
                    .map_err(|e| e.to_string())
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(result, Ok(true));
    }
}
