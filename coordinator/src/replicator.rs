//! The replication seam: where proposals go and how commits come back.
//!
//! The request processor hands out `(zxid, payload)` proposals; a [`Replicator`] makes them
//! durable (and, in an ensemble, agreed by a quorum) and reports each as [`Committed`], in
//! zxid order, on the channel it was given. Standalone, [`LocalLog`] is the replicator: it
//! appends to the transaction log and commits once the group's fdatasync returns. The ZAB
//! peer implements the same trait (proposal -> follower fsync -> quorum ACK -> COMMIT), and
//! also delivers the commits of proposals made by other servers.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::metrics::Histogram;
use crate::txn_log::TxnLogWriter;

/// A transaction that is durable and ordered: apply it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub zxid: i64,
    pub payload: Vec<u8>,
}

/// The replication layer stopped (its thread died or the disk failed).
#[derive(Debug, thiserror::Error)]
#[error("replicator stopped")]
pub struct ReplicatorStopped;

/// Takes proposals and reports them committed on the channel given at construction.
pub trait Replicator: Send {
    /// Hands one proposal over; may block when the replication queue is full (that is the
    /// back-pressure on writers).
    fn propose(&mut self, zxid: i64, payload: Vec<u8>) -> Result<(), ReplicatorStopped>;
    /// A snapshot covering everything up to `zxid` is on disk: logs may roll and be purged.
    fn snapshot_taken(&mut self, zxid: i64);
}

enum LogCommand {
    Append(i64, Vec<u8>),
    Roll,
}

/// The standalone replicator: a thread that group-commits proposals to the transaction log.
pub struct LocalLog {
    tx: Option<Sender<LogCommand>>,
    thread: Option<JoinHandle<()>>,
}

/// How many proposals one fdatasync may cover at most.
const GROUP_COMMIT_MAX_RECORDS: usize = 4096;

impl LocalLog {
    /// Opens the log in `dir` starting at `next_zxid`; commits go to `committed`.
    /// `sync` = false skips fdatasync (for tmpfs benchmarks; not durable).
    pub fn start(
        dir: &Path,
        next_zxid: i64,
        sync: bool,
        queue_capacity: usize,
        committed: Sender<Committed>,
        fsync_ms: Arc<Histogram>,
    ) -> std::io::Result<Self> {
        let mut writer = TxnLogWriter::open(dir, next_zxid, 64 << 20)?;
        let (tx, rx) = crossbeam_channel::bounded(queue_capacity.max(1));
        let thread = std::thread::Builder::new()
            .name("txn-log".into())
            .spawn(move || run_log(&mut writer, rx, committed, sync, &fsync_ms))?;
        Ok(LocalLog {
            tx: Some(tx),
            thread: Some(thread),
        })
    }
}

fn run_log(
    writer: &mut TxnLogWriter,
    rx: Receiver<LogCommand>,
    committed: Sender<Committed>,
    sync: bool,
    fsync_ms: &Histogram,
) {
    let mut batch: Vec<(i64, Vec<u8>)> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut roll = false;
        let mut next = Some(first);
        while let Some(cmd) = next {
            match cmd {
                LogCommand::Append(zxid, payload) => {
                    writer.append(zxid, &payload);
                    batch.push((zxid, payload));
                }
                LogCommand::Roll => roll = true,
            }
            next = if batch.len() < GROUP_COMMIT_MAX_RECORDS {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let flush_started = Instant::now();
        let result = writer.flush(sync);
        if sync && !batch.is_empty() {
            // Write + fdatasync of the group, ZooKeeper's `fsynctime`.
            fsync_ms.observe(flush_started.elapsed());
        }
        let result = result.and_then(|_| if roll { writer.roll() } else { Ok(()) });
        if let Err(e) = result {
            // Acknowledging without durability would lie to clients; ZooKeeper exits too.
            tracing::error!("transaction log {}: {e}; stopping", writer.path().display());
            return;
        }
        for (zxid, payload) in batch.drain(..) {
            if committed.send(Committed { zxid, payload }).is_err() {
                return;
            }
        }
    }
}

impl Replicator for LocalLog {
    fn propose(&mut self, zxid: i64, payload: Vec<u8>) -> Result<(), ReplicatorStopped> {
        self.tx
            .as_ref()
            .ok_or(ReplicatorStopped)?
            .send(LogCommand::Append(zxid, payload))
            .map_err(|_| ReplicatorStopped)
    }

    fn snapshot_taken(&mut self, _zxid: i64) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(LogCommand::Roll);
        }
    }
}

impl Drop for LocalLog {
    fn drop(&mut self) {
        // Closing the channel lets the thread flush what it has and exit.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
