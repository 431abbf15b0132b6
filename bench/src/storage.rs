//! `bench storage`: the partition log's append throughput beside this disk's limit.
//!
//! In one run and one glommio executor: (1) the disk's O_DIRECT sequential write bandwidth,
//! written like `dd oflag=direct bs=1M` (one 1 MiB write at a time to a new file); (2) many
//! concurrent tasks appending one pre-built RecordBatch (16 KiB of 100-byte records by
//! default) to a [`PartitionLog`] with flush policy `never`; (3) the same with `always`
//! (fdatasync per group commit). Throughputs are reported in MB/s (10^6 bytes) of batch bytes
//! appended, and as ratios to the limit.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::record_batch::{encode_with_codec, Codec};
use broker::storage::{now_ms, LogConfig, LogStats, PartitionLog};
use bytes::Bytes;
use glommio::io::OpenOptions;
use hdrhistogram::Histogram;
use serde::Serialize;
use tuning::{FlushPolicy, StorageLimits};

/// What to run.
#[derive(Debug, Clone)]
pub struct StorageBenchOptions {
    /// Seconds each append phase runs.
    pub phase_seconds: f64,
    /// A scratch directory is created (and removed) inside this one.
    pub dir: PathBuf,
    /// Concurrent appending tasks.
    pub appenders: usize,
    /// Target size of the appended batch, bytes.
    pub batch_bytes: usize,
    /// Value size of each record, bytes.
    pub record_bytes: usize,
    /// Bytes the bandwidth probe writes.
    pub limit_bytes: u64,
    /// Size of one probe write, bytes (multiple of 4096).
    pub limit_write_bytes: usize,
    /// Storage settings of the appended log (the profile's `[storage]` table).
    pub storage: StorageLimits,
}

/// One append phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub policy: String,
    pub seconds: f64,
    pub appends: u64,
    pub bytes: u64,
    pub mb_s: f64,
    pub records_per_s: f64,
    /// Appends per O_DIRECT write (group commit size).
    pub appends_per_write: f64,
    pub write_rounds: u64,
    pub syncs: u64,
    /// Mean size of one O_DIRECT write, bytes (tail page rewrites and padding included).
    pub mean_write_bytes: f64,
    /// Share of the phase the disk was busy with our writes and fdatasyncs (1.0 = the disk
    /// never waited for the engine).
    pub disk_busy_fraction: f64,
    /// Bandwidth of our writes while in flight, MB/s (what the disk gave per write).
    pub write_mb_s_in_flight: f64,
    pub append_latency_us_p50: u64,
    pub append_latency_us_p99: u64,
    pub append_latency_us_max: u64,
}

/// The figures of a run; the first six fields are the ones the issue asks for.
#[derive(Debug, Clone, Serialize)]
pub struct StorageBenchReport {
    pub limit_mb_s: f64,
    pub never_mb_s: f64,
    pub always_mb_s: f64,
    pub never_ratio: f64,
    pub always_ratio: f64,
    /// Records appended per second under `never` (one shard).
    pub records_per_s: f64,
    /// The disk with a sync per write: 1 MiB O_DIRECT writes each followed by fdatasync,
    /// measured right before the `always` phase. What `always` is bounded by when fdatasync
    /// dominates.
    pub sync_limit_mb_s: f64,
    /// `always_mb_s / sync_limit_mb_s` (above 1 means group commit beat one sync per MiB).
    pub always_to_sync_limit: f64,
    /// The disk over as long as a phase: 1 MiB O_DIRECT writes into a sequence of new 1 GiB
    /// files (each deleted when full, as retention does), for the phase duration. A virtual
    /// disk absorbs a 1 GiB burst faster than it sustains writes.
    pub sustained_limit_mb_s: f64,
    /// `never_mb_s / sustained_limit_mb_s`.
    pub never_to_sustained_limit: f64,
    pub batch_bytes: usize,
    pub records_per_batch: usize,
    pub appenders: usize,
    pub never: PhaseReport,
    pub always: PhaseReport,
}

impl StorageBenchReport {
    /// Human-readable summary.
    pub fn summary(&self) -> String {
        let phase = |p: &PhaseReport, ratio: f64| {
            format!(
                "  {:<7} {:>8.1} MB/s  ratio {:.2}  {:>11.0} records/s  {:>6.1} appends/write  \
                 {} syncs  disk busy {:.0}%  append p50 {} us  p99 {} us  max {} us",
                p.policy,
                p.mb_s,
                ratio,
                p.records_per_s,
                p.appends_per_write,
                p.syncs,
                p.disk_busy_fraction * 100.0,
                p.append_latency_us_p50,
                p.append_latency_us_p99,
                p.append_latency_us_max
            )
        };
        format!(
            "storage: {} B batches of {} records, {} appenders, one shard\n  \
             limit   {:>8.1} MB/s  (O_DIRECT sequential 1 MiB writes, 1 GiB)\n  \
             sustain {:>8.1} MB/s  (the same for the phase duration; never/sustained {:.2})\n  \
             synced  {:>8.1} MB/s  (the same, fdatasync after each write)\n{}\n{}\n  \
             goals: never_ratio >= 0.8 [{}], always_ratio >= 0.5 [{}], records_per_s >= 4e6 [{}]",
            self.batch_bytes,
            self.records_per_batch,
            self.appenders,
            self.limit_mb_s,
            self.sustained_limit_mb_s,
            self.never_to_sustained_limit,
            self.sync_limit_mb_s,
            phase(&self.never, self.never_ratio),
            phase(&self.always, self.always_ratio),
            ok(self.never_ratio >= 0.8),
            ok(self.always_ratio >= 0.5),
            ok(self.records_per_s >= 4e6),
        )
    }

    /// Writes the report as JSON.
    pub fn write_json(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
    }
}

fn ok(b: bool) -> &'static str {
    if b {
        "met"
    } else {
        "missed"
    }
}

/// Encodes one batch of `record_bytes`-byte values, as many as fit in `batch_bytes`.
pub fn build_batch(batch_bytes: usize, record_bytes: usize) -> (Vec<u8>, usize) {
    // The bench's own RecordBatch writer (record_batch.rs) builds it.
    let encode = |n: usize| -> Vec<u8> {
        let records: Vec<(Option<Bytes>, Bytes)> = (0..n)
            .map(|i| {
                let value: Vec<u8> = (0..record_bytes).map(|j| (i + j) as u8).collect();
                (None, Bytes::from(value))
            })
            .collect();
        encode_with_codec(Codec::None, now_ms(), &records).to_vec()
    };
    let one = encode(1).len();
    let two = encode(2).len();
    let per_record = (two - one).max(1);
    let mut n = (batch_bytes.saturating_sub(one) / per_record + 1).max(1);
    let mut batch = encode(n);
    while batch.len() > batch_bytes && n > 1 {
        n -= 1;
        batch = encode(n);
    }
    (batch, n)
}

/// Runs the three measurements; see the module doc.
pub fn run(opts: &StorageBenchOptions) -> Result<StorageBenchReport, String> {
    let scratch = tempfile::Builder::new()
        .prefix("bench-storage-")
        .tempdir_in(&opts.dir)
        .map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    let dir = scratch.path().to_path_buf();
    let (batch, records_per_batch) = build_batch(opts.batch_bytes, opts.record_bytes);
    let opts2 = opts.clone();
    let result = glommio::LocalExecutorBuilder::default()
        .name("bench-storage")
        .io_memory(16 << 20)
        .spawn(move || async move {
            let limit =
                measure_limit(&dir.join("limit.bin"), &opts2, opts2.limit_bytes, false).await?;
            eprintln!("limit: {limit:.1} MB/s");
            let sustained = measure_sustained(&dir, &opts2).await?;
            eprintln!("sustained limit: {sustained:.1} MB/s");
            let batch = Rc::new(batch);
            let never = append_phase(
                &dir.join("never"),
                FlushPolicy::Never,
                &opts2,
                &batch,
                records_per_batch,
            )
            .await?;
            eprintln!("never: {:.1} MB/s", never.mb_s);
            let sync_limit = measure_limit(
                &dir.join("sync-limit.bin"),
                &opts2,
                opts2.limit_bytes / 4,
                true,
            )
            .await?;
            eprintln!("synced limit: {sync_limit:.1} MB/s");
            let always = append_phase(
                &dir.join("always"),
                FlushPolicy::Always,
                &opts2,
                &batch,
                records_per_batch,
            )
            .await?;
            eprintln!("always: {:.1} MB/s", always.mb_s);
            Ok::<_, String>((limit, sustained, sync_limit, never, always, batch.len()))
        })
        .map_err(|e| format!("starting the executor: {e}"))?
        .join()
        .map_err(|e| format!("executor: {e}"))?;
    let (limit_mb_s, sustained_limit_mb_s, sync_limit_mb_s, never, always, batch_len) = result?;
    Ok(StorageBenchReport {
        limit_mb_s,
        never_mb_s: never.mb_s,
        always_mb_s: always.mb_s,
        never_ratio: never.mb_s / limit_mb_s,
        always_ratio: always.mb_s / limit_mb_s,
        records_per_s: never.records_per_s,
        sync_limit_mb_s,
        always_to_sync_limit: always.mb_s / sync_limit_mb_s,
        sustained_limit_mb_s,
        never_to_sustained_limit: never.mb_s / sustained_limit_mb_s,
        batch_bytes: batch_len,
        records_per_batch,
        appenders: opts.appenders,
        never,
        always,
    })
}

/// `dd oflag=direct bs=1M`: sequential O_DIRECT writes, one at a time, to a new file
/// (`sync`: each followed by fdatasync, like `oflag=direct,dsync`).
async fn measure_limit(
    path: &Path,
    opts: &StorageBenchOptions,
    total_bytes: u64,
    sync: bool,
) -> Result<f64, String> {
    let err = |e: glommio::GlommioError<()>| format!("{}: {e}", path.display());
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(path)
        .await
        .map_err(err)?;
    let mut buffer = file.alloc_dma_buffer(opts.limit_write_bytes);
    for (i, b) in buffer.as_bytes_mut().iter_mut().enumerate() {
        *b = i as u8;
    }
    let buffer = Rc::new(buffer);
    let start = Instant::now();
    let mut pos = 0;
    while pos < total_bytes {
        let n = file.write_rc_at(buffer.clone(), pos).await.map_err(err)?;
        if n != opts.limit_write_bytes {
            return Err(format!("{}: short write of {n} bytes", path.display()));
        }
        if sync {
            file.fdatasync().await.map_err(err)?;
        }
        pos += n as u64;
    }
    let seconds = start.elapsed().as_secs_f64();
    file.close().await.map_err(err)?;
    std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(pos as f64 / seconds / 1e6)
}

/// 1 MiB O_DIRECT writes into new 1 GiB files, one after the other, for the phase duration;
/// only the time in writes counts (file creation and deletion do not).
async fn measure_sustained(dir: &Path, opts: &StorageBenchOptions) -> Result<f64, String> {
    let deadline = Instant::now() + Duration::from_secs_f64(opts.phase_seconds);
    let mut bytes = 0u64;
    let mut busy = Duration::ZERO;
    let mut n = 0;
    while Instant::now() < deadline {
        let path = dir.join(format!("sustained-{n}.bin"));
        n += 1;
        let err = |e: glommio::GlommioError<()>| format!("{}: {e}", path.display());
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(&path)
            .await
            .map_err(err)?;
        let mut buffer = file.alloc_dma_buffer(opts.limit_write_bytes);
        buffer.as_bytes_mut().fill(0x5a);
        let buffer = Rc::new(buffer);
        let mut pos = 0u64;
        while pos < (1 << 30) && Instant::now() < deadline {
            let t0 = Instant::now();
            let w = file.write_rc_at(buffer.clone(), pos).await.map_err(err)?;
            busy += t0.elapsed();
            pos += w as u64;
        }
        bytes += pos;
        file.close().await.map_err(err)?;
        std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(bytes as f64 / busy.as_secs_f64().max(1e-9) / 1e6)
}

async fn append_phase(
    dir: &Path,
    policy: FlushPolicy,
    opts: &StorageBenchOptions,
    batch: &Rc<Vec<u8>>,
    records_per_batch: usize,
) -> Result<PhaseReport, String> {
    let mut config = LogConfig::from_limits(&opts.storage);
    config.flush = policy;
    // Keep the disk use bounded: a background pass deletes all but ~2 GiB.
    config.retention_bytes = 2 << 30;
    let log = Rc::new(
        PartitionLog::open(dir, config)
            .await
            .map_err(|e| e.to_string())?,
    );
    let stop = Rc::new(Cell::new(false));
    let latencies = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
    ));
    let appends = Rc::new(Cell::new(0u64));
    let failure: Rc<RefCell<Option<String>>> = Rc::default();
    let before: LogStats = log.stats();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..opts.appenders {
        let (log, stop, latencies, appends, failure, batch) = (
            log.clone(),
            stop.clone(),
            latencies.clone(),
            appends.clone(),
            failure.clone(),
            batch.clone(),
        );
        tasks.push(glommio::spawn_local(async move {
            while !stop.get() {
                let t0 = Instant::now();
                if let Err(e) = log.append(&batch, 0).await {
                    *failure.borrow_mut() = Some(e.to_string());
                    stop.set(true);
                    return;
                }
                let us = t0.elapsed().as_micros() as u64;
                let _ = latencies.borrow_mut().record(us.max(1));
                appends.set(appends.get() + 1);
            }
        }));
    }
    let retention = {
        let (log, stop) = (log.clone(), stop.clone());
        glommio::spawn_local(async move {
            while !stop.get() {
                glommio::timer::sleep(Duration::from_millis(500)).await;
                if let Err(e) = log.apply_retention(now_ms()).await {
                    eprintln!("retention: {e}");
                }
            }
        })
    };
    glommio::timer::sleep(Duration::from_secs_f64(opts.phase_seconds)).await;
    stop.set(true);
    for t in tasks {
        t.await;
    }
    let seconds = start.elapsed().as_secs_f64();
    retention.await;
    if let Some(e) = failure.borrow().clone() {
        return Err(format!("append failed: {e}"));
    }
    let after = log.stats();
    log.close().await.map_err(|e| e.to_string())?;
    drop(log);
    std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let appends = appends.get();
    let bytes = appends * batch.len() as u64;
    let rounds = after.write_rounds - before.write_rounds;
    let written = after.bytes_written - before.bytes_written;
    let write_us = after.write_us - before.write_us;
    let sync_us = after.sync_us - before.sync_us;
    let h = latencies.borrow();
    Ok(PhaseReport {
        policy: policy.to_string(),
        seconds,
        appends,
        bytes,
        mb_s: bytes as f64 / seconds / 1e6,
        records_per_s: (appends * records_per_batch as u64) as f64 / seconds,
        appends_per_write: appends as f64 / rounds.max(1) as f64,
        write_rounds: rounds,
        syncs: after.syncs - before.syncs,
        mean_write_bytes: written as f64 / rounds.max(1) as f64,
        disk_busy_fraction: (write_us + sync_us) as f64 / 1e6 / seconds,
        write_mb_s_in_flight: written as f64 / (write_us.max(1) as f64 / 1e6) / 1e6,
        append_latency_us_p50: h.value_at_quantile(0.5),
        append_latency_us_p99: h.value_at_quantile(0.99),
        append_latency_us_max: h.max(),
    })
}
