//! `bench`: load generators and benchmarks. Parses the command line and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use bench::produce::{self, ProduceOptions};
use bench::record_batch::Codec;
use bench::report;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Load generators and benchmarks for Kafka-API brokers and ZooKeeper-protocol servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open-loop produce load with coordinated-omission-free latency.
    Produce(ProduceArgs),
    /// Produce and consume at once: latency from intended send time to consumption.
    E2e(ProduceArgs),
    /// Consume a topic from earliest to its current end: msgs/s, MB/s, fetch latency.
    Consume(ConsumeArgs),
    /// create / setData / getData load against a ZooKeeper-protocol ensemble.
    Coordinator(CoordinatorArgs),
    /// kill -9 of a ZooKeeper-protocol ensemble's leader while a client writes: time to the
    /// first write after it, and every acknowledged write read back.
    CoordinatorFailover(CoordinatorFailoverArgs),
    /// Storage engine vs this disk: appends 16 KiB batches of 100-byte records with flush
    /// policy `never`, then `always`, beside the disk's O_DIRECT sequential write bandwidth.
    Storage(StorageArgs),
    /// This host's limits now: O_DIRECT write, fdatasync latency, loopback TCP, memcpy.
    Limits(LimitsArgs),
    /// An HTML page with SVG charts of one or more runs' `--json` (or `--hgrm`) results:
    /// throughput and p50/p99/p99.9 per second, the latency distribution, runs overlaid.
    Report(ReportArgs),
}

#[derive(clap::Args)]
struct ReportArgs {
    /// The page to write.
    #[arg(long)]
    out: PathBuf,
    /// The page's heading.
    #[arg(long, default_value = "bench report")]
    title: String,
    /// Results to draw: `--json` summaries and/or `.hgrm` distributions; each is labelled by
    /// its file name.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct ConsumeArgs {
    #[arg(long)]
    bootstrap: String,
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300.0)]
    timeout: f64,
    /// Bytes asked for per partition in each Fetch (Kafka's max.partition.fetch.bytes, whose
    /// consumers default to 1048576). The broker serves a range of at most 1 MiB from its
    /// batch cache when it holds it, a larger one from the segment file.
    #[arg(long, default_value_t = bench::consume::PARTITION_MAX_BYTES)]
    partition_max_bytes: i32,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(clap::Args)]
struct CoordinatorArgs {
    /// Comma-separated server addresses (host:port); clients are spread over them.
    #[arg(long)]
    connect: String,
    #[arg(long, value_enum, default_value = "create")]
    op: bench::coordinator::CoordinatorOp,
    /// Sessions, each its own thread.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Requests in flight per session (1 = synchronous).
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop each client after this many requests (e.g. to load N znodes).
    #[arg(long)]
    requests_per_client: Option<u64>,
    /// Znode data size, bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Parent znode of the load.
    #[arg(long, default_value = "/bench")]
    root: String,
    /// Znodes pre-created for set and get.
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Report the resident memory of these server processes after the run.
    #[arg(long)]
    server_pid: Vec<u32>,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    hgrm: Option<PathBuf>,
}

#[derive(clap::Args)]
struct CoordinatorFailoverArgs {
    /// Comma-separated client addresses of every server of the ensemble.
    #[arg(long)]
    connect: String,
    /// The process id of each server, in the order of --connect (the leader's gets SIGKILL).
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Seconds of writing before the kill.
    #[arg(long, default_value_t = 3.0)]
    kill_after: f64,
    /// Seconds of writing after the first write that succeeded after the kill.
    #[arg(long, default_value_t = 1.0)]
    write_after: f64,
    /// Fail when no write succeeded this many seconds after the kill.
    #[arg(long, default_value_t = 60.0)]
    give_up_after: f64,
    /// Session timeout asked for, ms (the session must survive the failover).
    #[arg(long, default_value_t = 30_000)]
    session_timeout_ms: i32,
    /// Parent znode of the writes.
    #[arg(long, default_value = "/failover")]
    root: String,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(clap::Args)]
struct StorageArgs {
    /// Seconds each append phase (`never`, then `always`) runs.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Directory for the scratch files (must be on the disk to measure, not tmpfs); a
    /// temporary directory inside it is created and removed.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    dir: PathBuf,
    /// Concurrent appending tasks on the one shard.
    #[arg(long, default_value_t = 64)]
    appenders: usize,
    /// Size of one record batch, bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    batch_bytes: usize,
    /// Value size of one record, bytes.
    #[arg(long, default_value_t = 100)]
    record_bytes: usize,
    /// Bytes written by the O_DIRECT bandwidth probe (in 1 MiB writes).
    #[arg(long, default_value_t = 1 << 30)]
    limit_bytes: u64,
    /// Tuning profile whose `[storage]` settings the log uses (default: built-in defaults).
    #[arg(long)]
    tuning: Option<PathBuf>,
    /// Override the profile's `storage.write_buffer_bytes`.
    #[arg(long)]
    write_buffer_bytes: Option<u32>,
    /// Override the profile's `storage.preallocate_bytes`.
    #[arg(long)]
    preallocate_bytes: Option<u64>,
    /// Override the profile's `storage.segment_bytes`.
    #[arg(long)]
    segment_bytes: Option<u64>,
}

/// The `[storage]` settings: the profile's (or the defaults), then the command-line overrides.
fn storage_limits(a: &StorageArgs) -> Result<tuning::StorageLimits, String> {
    let mut limits = match &a.tuning {
        Some(path) => {
            tuning::Profile::load(path)
                .map_err(|e| e.to_string())?
                .storage
        }
        None => tuning::StorageLimits::default(),
    };
    if let Some(v) = a.write_buffer_bytes {
        limits.write_buffer_bytes = v;
    }
    if let Some(v) = a.preallocate_bytes {
        limits.preallocate_bytes = v;
    }
    if let Some(v) = a.segment_bytes {
        limits.segment_bytes = v;
    }
    Ok(limits)
}

fn storage(a: StorageArgs) -> Result<(), String> {
    let storage = storage_limits(&a)?;
    let report = bench::storage::run(&bench::storage::StorageBenchOptions {
        phase_seconds: a.duration,
        dir: a.dir,
        appenders: a.appenders,
        batch_bytes: a.batch_bytes,
        record_bytes: a.record_bytes,
        limit_bytes: a.limit_bytes,
        limit_write_bytes: 1 << 20,
        storage,
    })?;
    println!("{}", report.summary());
    match &a.json {
        Some(path) => report.write_json(path),
        None => Ok(()),
    }
}

#[derive(clap::Args)]
struct LimitsArgs {
    /// Directory on the disk to measure.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ProduceArgs {
    /// Messages per second over all connections; omit to run flat out.
    #[arg(long)]
    rate: Option<f64>,
    /// Message value size, bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Partitions of the topic if it has to be created.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// How long to offer load, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// 0, 1 or all.
    #[arg(long, default_value = "1")]
    acks: String,
    /// Target size of one record batch, bytes.
    #[arg(long, default_value_t = 65536)]
    batch_bytes: usize,
    /// Longest wait for a batch to fill, microseconds.
    #[arg(long, default_value_t = 1000)]
    linger_us: u64,
    /// TCP connections (each its own thread); default: one per bench core of the profile
    /// (two threads taking turns on one core add milliseconds to the generator's own tail),
    /// 2 when the profile has no bench core.
    #[arg(long)]
    connections: Option<usize>,
    /// Unanswered requests per connection.
    #[arg(long, default_value_t = 8)]
    max_in_flight: usize,
    /// Broker address; without it an embedded single node is started.
    #[arg(long)]
    bootstrap: Option<String>,
    /// Distinct message keys; omit for unkeyed messages.
    #[arg(long)]
    keys: Option<u64>,
    #[arg(long, value_enum, default_value = "none")]
    compression: Codec,
    /// Write the summary as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the latency distribution (.hgrm) here.
    #[arg(long)]
    hgrm: Option<PathBuf>,
    /// Tuning profile: bench threads are pinned to its `bench` cores.
    #[arg(long)]
    tuning: Option<PathBuf>,
    /// Send to an in-process sink that acknowledges and discards everything: measures the
    /// generator's own ceiling.
    #[arg(long, conflicts_with = "bootstrap")]
    sink: bool,
    /// Number every message and read the whole run back: count, no gaps, no duplicates,
    /// per-partition order.
    #[arg(long)]
    verify: bool,
}

fn parse_acks(text: &str) -> Result<i16, String> {
    match text {
        "0" => Ok(0),
        "1" => Ok(1),
        "all" | "-1" => Ok(-1),
        other => Err(format!("--acks {other}: expected 0, 1 or all")),
    }
}

/// The load target: a sink, an address, or an embedded node; kept alive by the caller.
enum Target {
    /// Held for its Drop, which stops the broker and removes its data; its disk is read
    /// into the timeline.
    Embedded {
        node: Box<bench::embedded::EmbeddedNode>,
    },
    /// Held for its Drop, which stops the sink.
    Sink {
        _running: bench::sink::Sink,
    },
    Remote,
}

fn produce_options(args: &ProduceArgs) -> Result<(ProduceOptions, Target), String> {
    let profile = match &args.tuning {
        Some(path) => tuning::Profile::load(path).map_err(|err| err.to_string())?,
        // The dev profile leaves a core for the bench; it needs two.
        None if tuning::online_cpus() >= 2 => {
            tuning::Profile::builtin("dev-2core").ok_or("no builtin profile dev-2core")?
        }
        None => tuning::Profile::builtin("default").ok_or("no builtin profile default")?,
    };
    let (bootstrap, target) = match (args.sink, &args.bootstrap) {
        (true, _) => {
            let sink = bench::sink::Sink::start().map_err(|err| format!("sink: {err}"))?;
            (sink.address().to_string(), Target::Sink { _running: sink })
        }
        (false, Some(bootstrap)) => (bootstrap.clone(), Target::Remote),
        (false, None) => {
            let node = bench::embedded::EmbeddedNode::start(profile.clone())?;
            println!(
                "embedded single node: broker at {} (profile {}), data in {}",
                node.address(),
                profile.source.display(),
                node.data_dir().display()
            );
            (
                node.address().to_string(),
                Target::Embedded {
                    node: Box::new(node),
                },
            )
        }
    };
    let options = ProduceOptions {
        bootstrap,
        topic: args.topic.clone(),
        partitions: args.partitions,
        rate_per_s: args.rate,
        message_bytes: args.size,
        duration: Duration::from_secs_f64(args.duration),
        acks: parse_acks(&args.acks)?,
        batch_bytes: args.batch_bytes,
        linger: Duration::from_micros(args.linger_us),
        connections: args
            .connections
            .unwrap_or(match profile.bench_cores().len() {
                0 => 2,
                cores => cores,
            }),
        max_in_flight: args.max_in_flight,
        keys: args.keys,
        codec: args.compression,
        numbered: args.verify,
        cpus: profile.bench_cores(),
        progress: true,
        topic_configs: Vec::new(),
        disk: match &target {
            Target::Embedded { node } => Some(node.disk_meter()),
            _ => None,
        },
        host: None,
    };
    Ok((options, target))
}

fn write_outputs(
    args: &ProduceArgs,
    summary: &report::Summary,
    histogram: &report::LatencyHistogram,
) -> Result<(), String> {
    println!("{}", summary.render());
    if let Some(path) = &args.json {
        report::write_json(path, summary)?;
    }
    if let Some(path) = &args.hgrm {
        report::write_hgrm(path, histogram)?;
    }
    Ok(())
}

/// Runs `work` with a hiccup meter on every core (which `work` may read per second); the
/// meter's figures for the same window.
fn with_host_hiccups<T>(
    work: impl FnOnce(bench::hiccup::SlowestWakeUp) -> Result<T, String>,
) -> Result<(T, bench::hiccup::Hiccups), String> {
    let meter = bench::hiccup::HiccupMeter::start_on_all_cores()
        .map_err(|err| format!("hiccup meter: {err}"))?;
    let result = work(meter.slowest_wake_up());
    let hiccups = meter.stop();
    Ok((result?, hiccups))
}

fn produce(args: ProduceArgs) -> Result<(), String> {
    let (mut options, _target) = produce_options(&args)?;
    let (mut result, hiccups) = with_host_hiccups(|host| {
        options.host = Some(host);
        produce::run(&options)
    })?;
    result.summary.host_hiccups = Some(hiccups);
    write_outputs(&args, &result.summary, &result.histogram)?;
    if args.verify {
        let report = produce::verify_run(&options, &result)?;
        println!(
            "verify: {} messages read back, {} missing, {} duplicates, {} out of order",
            report.messages_read, report.missing, report.duplicates, report.out_of_order
        );
        for example in &report.examples {
            println!("  {example}");
        }
        if !report.ok() {
            return Err("verify failed".into());
        }
    }
    Ok(())
}

fn e2e(args: ProduceArgs) -> Result<(), String> {
    let (mut options, target) = produce_options(&args)?;
    if matches!(target, Target::Sink { .. }) {
        return Err("e2e needs a broker that serves Fetch; the sink does not".into());
    }
    let (mut result, hiccups) = with_host_hiccups(|host| {
        options.host = Some(host);
        bench::e2e::run(&options)
    })?;
    result.summary.host_hiccups = Some(hiccups);
    println!("producer: {}", result.produce.render());
    write_outputs(&args, &result.summary, &result.histogram)
}

fn consume(args: ConsumeArgs) -> Result<(), String> {
    let summary = bench::consume::consume_existing(
        &args.bootstrap,
        &args.topic,
        Duration::from_secs_f64(args.timeout),
        args.partition_max_bytes,
    )?;
    println!("{}", summary.render());
    if let Some(path) = &args.json {
        report::write_json(path, &summary)?;
    }
    Ok(())
}

fn coordinator(args: CoordinatorArgs) -> Result<(), String> {
    let options = bench::coordinator::CoordinatorOptions {
        servers: args.connect.split(',').map(str::to_string).collect(),
        op: args.op,
        clients: args.clients,
        in_flight: args.in_flight,
        duration: Duration::from_secs_f64(args.duration),
        requests_per_client: args.requests_per_client,
        data_bytes: args.size,
        root: args.root.clone(),
        keys: args.keys,
        session_timeout_ms: 30_000,
    };
    let result = bench::coordinator::run(&options)?;
    println!("{}", result.summary.render());
    for pid in &args.server_pid {
        match bench::coordinator::rss_bytes(*pid) {
            Ok(bytes) => println!(
                "  server pid {pid}: RSS {:.1} MiB",
                bytes as f64 / (1 << 20) as f64
            ),
            Err(err) => println!("  server pid {pid}: {err}"),
        }
    }
    if let Some(path) = &args.json {
        report::write_json(path, &result.summary)?;
    }
    if let Some(path) = &args.hgrm {
        report::write_hgrm(path, &result.histogram)?;
    }
    Ok(())
}

fn coordinator_failover(args: CoordinatorFailoverArgs) -> Result<(), String> {
    let options = bench::coordinator_failover::FailoverOptions {
        servers: args.connect.split(',').map(str::to_string).collect(),
        pids: args.server_pid,
        kill_after: Duration::from_secs_f64(args.kill_after),
        write_after: Duration::from_secs_f64(args.write_after),
        give_up_after: Duration::from_secs_f64(args.give_up_after),
        session_timeout_ms: args.session_timeout_ms,
        data_bytes: 100,
        root: args.root,
    };
    let result = bench::coordinator_failover::run(&options)?;
    println!("{}", result.render());
    if let Some(path) = &args.json {
        report::write_json(path, &result)?;
    }
    if result.lost > 0 {
        return Err(format!("{} acknowledged writes were lost", result.lost));
    }
    Ok(())
}

fn limits(args: LimitsArgs) -> Result<(), String> {
    let limits = bench::limits::measure(&args.dir)
        .map_err(|err| format!("{}: {err}", args.dir.display()))?;
    println!("{}", limits.render());
    if let Some(path) = &args.json {
        report::write_json(path, &limits)?;
    }
    Ok(())
}

fn report_page(args: ReportArgs) -> Result<(), String> {
    let runs = args
        .runs
        .iter()
        .map(|path| bench::charts::load_run(path))
        .collect::<Result<Vec<_>, String>>()?;
    let page = bench::charts::render(&runs, &args.title);
    std::fs::write(&args.out, page).map_err(|err| format!("{}: {err}", args.out.display()))?;
    println!("wrote {} ({} runs)", args.out.display(), runs.len());
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // As the broker does (its embedded node runs in this process), and for the generator's
    // own buffers: no 2 MiB page clears inside page faults while measuring.
    if let Err(err) = tuning::process::disable_transparent_huge_pages() {
        tracing::warn!(%err, "transparent huge pages stay on for this process");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Produce(args) => produce(args),
        Command::Consume(args) => consume(args),
        Command::E2e(args) => e2e(args),
        Command::Limits(args) => limits(args),
        Command::Storage(args) => storage(args),
        Command::Coordinator(args) => coordinator(args),
        Command::CoordinatorFailover(args) => coordinator_failover(args),
        Command::Report(args) => report_page(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench: {message}");
            ExitCode::FAILURE
        }
    }
}
