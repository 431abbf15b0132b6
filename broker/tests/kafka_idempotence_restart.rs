//! Proves an idempotent producer's retry is answered with the batch's first offsets across a
//! kill -9 of the broker process and across a clean stop (SIGTERM), not appended twice: the
//! `broker` binary runs as a child process on a data dir that outlives it; the test takes a
//! producer id (InitProducerId), produces batches, stops (then kills, then stops) the broker,
//! starts it again on the same data dir each time, and sends the same batches again, as a
//! client whose answers were lost would; after the kill the producer table comes back from the
//! snapshot of the clean stop and the log after it. Offsets of the next new batch show nothing was appended by a retry; a gap and a
//! retry sent together with a new batch get their Kafka error codes.
mod kafka_support;
mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use broker::cli::client::Client;
use kafka_protocol::messages::InitProducerIdRequest;
use kafka_protocol::records::Compression;

const TOPIC: &str = "idem";

/// A `broker serve` process on `data_dir`; killed (-9) when dropped.
struct BrokerProcess {
    child: Child,
    addr: String,
}

impl BrokerProcess {
    fn start(data_dir: &Path, log: &Path) -> BrokerProcess {
        let profile =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning/profiles/dev-2core.toml");
        let mut command = Command::new(env!("CARGO_BIN_EXE_broker"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--tuning"])
            .arg(&profile)
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .expect("log file"),
            );
        // SAFETY: prctl is async-signal-safe; it runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command.spawn().expect("broker binary starts");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let mut broker = BrokerProcess {
            child,
            addr: String::new(),
        };
        broker.addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("broker did not start: {}", read(log)));
        broker
    }

    /// kill -9, as a crash.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, a clean stop; the exit status must be success.
    fn stop(mut self) {
        // SAFETY: signals our own child, which has not been reaped.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) },
            0
        );
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A batch of `n` records of producer `(id, epoch)` from sequence `seq`.
fn batch(producer: (i64, i16), n: usize, seq: i32) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("s{}", seq + i as i32).into())
        .collect();
    support::encode_producer_batch(
        &values,
        1_700_000_000_000,
        Compression::None,
        (producer.0, producer.1, seq),
    )
}

/// Produces `records` (one or more batches) to partition 0; the error code and base offset.
fn produce(addr: &str, records: Vec<u8>) -> (i16, i64) {
    let mut client = Client::connect(addr).unwrap();
    kafka_support::produce(&mut client, TOPIC, 0, records.into())
}

#[test]
fn retries_get_their_first_offsets_after_a_kill_and_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (data, log): (PathBuf, PathBuf) = (dir.path().join("data"), dir.path().join("log"));
    let broker = BrokerProcess::start(&data, &log);
    broker::cli::topics_create(&broker.addr, TOPIC, 1, -1, &[]).unwrap();
    let mut client = Client::connect(&broker.addr).unwrap();
    let answer = client
        .call(
            &InitProducerIdRequest::default()
                .with_transaction_timeout_ms(60_000)
                .with_producer_id((-1).into())
                .with_producer_epoch(-1),
            4,
        )
        .unwrap();
    assert_eq!(answer.error_code, 0);
    let producer = (answer.producer_id.0, answer.producer_epoch);
    let (a, b) = (batch(producer, 3, 0), batch(producer, 2, 3));
    assert_eq!(produce(&broker.addr, a.clone()), (0, 0));

    // A clean stop (the producer snapshot is written) and start: a retry of a is recognized.
    broker.stop();
    let broker = BrokerProcess::start(&data, &log);
    assert_eq!(produce(&broker.addr, a.clone()), (0, 0), "a, retried");
    assert_eq!(produce(&broker.addr, b.clone()), (0, 3));

    // A crash: the answers to a and b were lost, the client retries them. The table comes
    // back from the snapshot of the clean stop (a) and the log after it (b).
    broker.kill();
    let broker = BrokerProcess::start(&data, &log);
    assert_eq!(produce(&broker.addr, b.clone()), (0, 3), "b, retried");
    assert_eq!(produce(&broker.addr, a.clone()), (0, 0), "a, retried");
    // A retry together with a new batch, and a gap, are refused.
    let c = batch(producer, 1, 5);
    assert_eq!(
        produce(&broker.addr, [b.clone(), c.clone()].concat()).0,
        46,
        "DUPLICATE_SEQUENCE_NUMBER"
    );
    assert_eq!(
        produce(&broker.addr, batch(producer, 1, 7)).0,
        45,
        "OUT_OF_ORDER_SEQUENCE_NUMBER"
    );
    // Nothing was appended by any of them: the next batch lands right after b.
    assert_eq!(produce(&broker.addr, c.clone()), (0, 5));

    // Another clean stop and start: still recognized.
    broker.stop();
    let broker = BrokerProcess::start(&data, &log);
    assert_eq!(produce(&broker.addr, c), (0, 5), "c, retried");
    assert_eq!(produce(&broker.addr, b), (0, 3), "b, retried");
    assert_eq!(produce(&broker.addr, batch(producer, 1, 6)), (0, 6));
    broker.stop();
    assert!(
        !read(&log).contains("panicked"),
        "the broker's log:\n{}",
        read(&log)
    );
}
