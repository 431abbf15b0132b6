//! The open-loop produce engine of one connection, independent of any socket or clock.
//!
//! Message `i` of a connection has an intended send time `i / rate` after the start; it joins
//! the open batch at that time, the batch closes when it holds `records_per_batch` messages or
//! `linger` after its first message was due, and closed batches go out as soon as fewer than
//! `max_in_flight` requests are unanswered (several partitions' batches share one request).
//! A message's latency is its ack time minus its *intended* time, so a stall of the broker (or
//! of the generator) is charged to every message that should have been sent during it: no
//! coordinated omission. Without a rate the engine runs flat out and a message's intended time
//! is the moment its batch was built.
//!
//! The engine talks to a [`Transport`] and reads a [`Clock`]; the real ones are a Kafka TCP
//! connection and the monotonic clock, the tests' are a fake broker with an injected stall and
//! a simulated clock, so the latency correction is checked exactly.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::report::LatencyHistogram;

/// Time since the run started.
pub trait Clock {
    fn now(&self) -> Duration;
}

/// The monotonic clock.
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    pub fn starting_now() -> SystemClock {
        SystemClock {
            start: Instant::now(),
        }
    }
    pub fn start(&self) -> Instant {
        self.start
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

/// The answer to one produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Partitions of the request that came back with an error.
    pub failed_partitions: u32,
    /// The first non-zero Kafka error code, for the report.
    pub error_code: i16,
    /// When it arrived, in [`Clock`] time.
    pub at: Duration,
}

/// Where produce requests go.
pub trait Transport {
    /// Sends one produce request holding one batch for each listed partition. May block (a
    /// full socket buffer is the broker's back-pressure).
    fn send(&mut self, batches: &[(i32, Bytes)]) -> io::Result<()>;
    /// Waits until at least one answer arrives or `deadline` (clock time) passes; appends the
    /// answers in request order.
    fn poll_acks(&mut self, deadline: Duration, acks: &mut Vec<Ack>) -> io::Result<()>;
    /// False for acks=0: no answer comes, a request is done once sent.
    fn acks_expected(&self) -> bool;
}

/// Builds the record bytes of a batch. Templates make this a reference-count bump; `--verify`
/// and `e2e` encode each batch (they carry sequence numbers or send times).
pub trait BatchSource {
    /// The batch of `count` messages `first_index ..` (connection-local) for `partition`,
    /// whose first message was intended at `first_intended`.
    fn batch(
        &mut self,
        partition: i32,
        first_index: u64,
        count: u32,
        first_intended: Duration,
    ) -> Bytes;
    /// Payload bytes of one message (for MB/s).
    fn message_bytes(&self) -> usize;
}

/// What one connection does.
#[derive(Debug, Clone)]
pub struct EnginePlan {
    /// Messages per second on this connection; None runs flat out.
    pub rate_per_s: Option<f64>,
    /// How long to offer load.
    pub duration: Duration,
    /// The partitions this connection writes, used round-robin batch by batch.
    pub partitions: Vec<i32>,
    pub records_per_batch: u32,
    pub linger: Duration,
    pub max_in_flight: usize,
    /// Batches of distinct partitions packed into one request, at most.
    pub max_batches_per_request: usize,
    /// How long to wait for the last answers after the load stops.
    pub drain_timeout: Duration,
}

/// Counters shared with the progress printer; updated once per answered request.
#[derive(Default)]
pub struct Progress {
    pub acked_msgs: AtomicU64,
    pub acked_bytes: AtomicU64,
    pub errors: AtomicU64,
    pub histogram: Mutex<LatencyHistogram>,
}

/// What one connection measured.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOutcome {
    pub offered_msgs: u64,
    pub acked_msgs: u64,
    pub error_msgs: u64,
    pub first_error_code: i16,
    /// When the last message was handed to the transport.
    pub offered_until: Duration,
    /// When the last answer arrived.
    pub finished_at: Duration,
    /// Requests still unanswered when the drain timeout expired.
    pub unanswered_requests: usize,
}

impl EngineOutcome {
    /// True when the load was offered at the planned pace: every planned message handed over
    /// within 5% (+100 ms) of the planned duration.
    pub fn schedule_kept(&self, plan: &EnginePlan) -> bool {
        plan.rate_per_s.is_none()
            || self.offered_until <= plan.duration.mul_f64(1.05) + Duration::from_millis(100)
    }
}

#[derive(Debug, Clone, Copy)]
struct BatchDescriptor {
    partition: i32,
    first_index: u64,
    count: u32,
    /// Intended time of the first message; flat out, the time the batch was built.
    first_intended: Duration,
}

struct InFlight {
    batches: Vec<BatchDescriptor>,
    sent_at: Duration,
}

/// Runs one connection's load to the end and drains its answers.
pub fn run(
    plan: &EnginePlan,
    clock: &impl Clock,
    transport: &mut impl Transport,
    source: &mut impl BatchSource,
    progress: &Progress,
) -> io::Result<EngineOutcome> {
    assert!(!plan.partitions.is_empty() && plan.records_per_batch > 0 && plan.max_in_flight > 0);
    let mut engine = Engine::new(plan, source.message_bytes() as u64);
    loop {
        let now = clock.now();
        let generating = engine.generating(now);
        // 1. Messages that are due join the open batch.
        engine.batch_due_messages(now, generating);
        // 2. Closed batches go out while the in-flight window has room.
        if engine.can_send() {
            engine.send_request(clock, transport, source, progress)?;
            continue;
        }
        // 3. Done when everything planned was sent and answered (or the drain timed out).
        if engine.finished(now, generating) {
            break;
        }
        // 4. Wait for an answer, the next due message, or the open batch's linger.
        let deadline = engine.wait_deadline(now, generating);
        engine.take_acks(deadline.max(now), transport, progress)?;
    }
    // What `account` could not hand over while the printer held the shared histogram.
    if let Ok(mut shared) = progress.histogram.lock() {
        shared.add(&engine.local);
    }
    engine.outcome.finished_at = clock.now();
    Ok(engine.outcome)
}

/// When message `index` of a connection is due: `index / rate` after the start (open
/// loop); flat out every message is due at once.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    interval_ns: Option<f64>,
    /// Messages planned in all; None flat out (the duration ends the load).
    total_msgs: Option<u64>,
}

impl Schedule {
    fn intended(&self, index: u64) -> Duration {
        Duration::from_nanos((index as f64 * self.interval_ns.unwrap_or(0.0)) as u64)
    }

    fn open_loop(&self) -> bool {
        self.interval_ns.is_some()
    }
}

/// One connection's state between the steps of [`run`].
struct Engine<'a> {
    plan: &'a EnginePlan,
    schedule: Schedule,
    message_bytes: u64,
    next_index: u64,
    batch_sequence: usize,
    /// The batch messages join as they come due (open loop).
    open: Option<BatchDescriptor>,
    /// Closed batches waiting for room in the in-flight window.
    ready: VecDeque<BatchDescriptor>,
    in_flight: VecDeque<InFlight>,
    request: Vec<(i32, Bytes)>,
    request_batches: Vec<BatchDescriptor>,
    acks: Vec<Ack>,
    local: LatencyHistogram,
    /// When `local` last went into the shared histogram (the run's clock).
    handed_over_at: Duration,
    outcome: EngineOutcome,
    drain_deadline: Option<Duration>,
}

impl<'a> Engine<'a> {
    fn new(plan: &'a EnginePlan, message_bytes: u64) -> Engine<'a> {
        Engine {
            plan,
            schedule: Schedule {
                interval_ns: plan.rate_per_s.map(|rate| 1e9 / rate),
                total_msgs: plan
                    .rate_per_s
                    .map(|rate| (rate * plan.duration.as_secs_f64()).round() as u64),
            },
            message_bytes,
            next_index: 0,
            batch_sequence: 0,
            open: None,
            ready: VecDeque::new(),
            in_flight: VecDeque::with_capacity(plan.max_in_flight),
            request: Vec::with_capacity(plan.max_batches_per_request),
            request_batches: Vec::new(),
            acks: Vec::new(),
            local: LatencyHistogram::default(),
            handed_over_at: Duration::ZERO,
            outcome: EngineOutcome {
                offered_msgs: 0,
                acked_msgs: 0,
                error_msgs: 0,
                first_error_code: 0,
                offered_until: Duration::ZERO,
                finished_at: Duration::ZERO,
                unanswered_requests: 0,
            },
            drain_deadline: None,
        }
    }

    /// Whether load is still offered: planned messages left (open loop), or the duration
    /// not over (flat out).
    fn generating(&self, now: Duration) -> bool {
        match self.schedule.total_msgs {
            Some(total) => self.next_index < total,
            None => now < self.plan.duration,
        }
    }

    fn next_partition(&mut self) -> i32 {
        let partition = self.plan.partitions[self.batch_sequence % self.plan.partitions.len()];
        self.batch_sequence += 1;
        partition
    }

    /// Open loop: the messages due by `now` join the open batch, which closes when full, when
    /// its linger is over, or with the last planned message. Flat out, with the window not
    /// full and nothing ready: as many full batches as one request carries.
    fn batch_due_messages(&mut self, now: Duration, generating: bool) {
        let plan = self.plan;
        if let Some(total) = self.schedule.total_msgs {
            while self.next_index < total && self.schedule.intended(self.next_index) <= now {
                if self.open.is_none() {
                    self.open = Some(BatchDescriptor {
                        partition: self.next_partition(),
                        first_index: self.next_index,
                        count: 0,
                        first_intended: self.schedule.intended(self.next_index),
                    });
                }
                let batch = self.open.as_mut().expect("an open batch");
                batch.count += 1;
                self.next_index += 1;
                if batch.count == plan.records_per_batch {
                    self.ready.extend(self.open.take());
                }
            }
            let linger_over = self
                .open
                .as_ref()
                .is_some_and(|batch| now >= batch.first_intended + plan.linger);
            if linger_over || self.next_index == total {
                self.ready.extend(self.open.take());
            }
        } else if generating && self.ready.is_empty() && self.in_flight.len() < plan.max_in_flight {
            for _ in 0..plan.max_batches_per_request.min(plan.partitions.len()) {
                let partition = self.next_partition();
                self.ready.push_back(BatchDescriptor {
                    partition,
                    first_index: self.next_index,
                    count: plan.records_per_batch,
                    first_intended: now,
                });
                self.next_index += plan.records_per_batch as u64;
            }
        }
    }

    fn can_send(&self) -> bool {
        !self.ready.is_empty() && self.in_flight.len() < self.plan.max_in_flight
    }

    /// Sends one request of ready batches (of distinct partitions, at most
    /// `max_batches_per_request`); with acks=0 it is complete once sent.
    fn send_request(
        &mut self,
        clock: &impl Clock,
        transport: &mut impl Transport,
        source: &mut impl BatchSource,
        progress: &Progress,
    ) -> io::Result<()> {
        self.request.clear();
        self.request_batches.clear();
        while self.request.len() < self.plan.max_batches_per_request {
            let Some(batch) = self.ready.front().copied() else {
                break;
            };
            if self
                .request
                .iter()
                .any(|(partition, _)| *partition == batch.partition)
            {
                break;
            }
            self.ready.pop_front();
            let bytes = source.batch(
                batch.partition,
                batch.first_index,
                batch.count,
                batch.first_intended,
            );
            self.request.push((batch.partition, bytes));
            self.request_batches.push(batch);
        }
        transport.send(&self.request)?;
        let sent_at = clock.now();
        let messages: u64 = self
            .request_batches
            .iter()
            .map(|batch| batch.count as u64)
            .sum();
        self.outcome.offered_msgs += messages;
        self.outcome.offered_until = sent_at;
        let flight = InFlight {
            batches: std::mem::take(&mut self.request_batches),
            sent_at,
        };
        if transport.acks_expected() {
            self.in_flight.push_back(flight);
        } else {
            let ack = Ack {
                failed_partitions: 0,
                error_code: 0,
                at: sent_at,
            };
            complete(
                &flight,
                &ack,
                &self.schedule,
                &mut self.local,
                &mut self.outcome,
            );
            account(
                progress,
                &mut self.local,
                &mut self.handed_over_at,
                sent_at,
                (messages, self.message_bytes, 0),
            );
            self.request_batches = flight.batches;
        }
        Ok(())
    }

    /// True when everything planned was sent and answered, or the drain timed out (then
    /// the unanswered requests are counted).
    fn finished(&mut self, now: Duration, generating: bool) -> bool {
        let idle = !generating && self.open.is_none() && self.ready.is_empty();
        if idle && self.in_flight.is_empty() {
            return true;
        }
        if idle {
            let deadline = *self
                .drain_deadline
                .get_or_insert(now + self.plan.drain_timeout);
            if now >= deadline {
                self.outcome.unanswered_requests = self.in_flight.len();
                return true;
            }
        }
        false
    }

    /// How long to wait for answers: until the next due message or the open batch's linger
    /// when the window has room (not at all flat out), else until the drain ends.
    fn wait_deadline(&self, now: Duration, generating: bool) -> Duration {
        let plan = self.plan;
        let mut deadline = self
            .drain_deadline
            .unwrap_or(plan.duration + plan.drain_timeout);
        if self.in_flight.len() < plan.max_in_flight {
            if let Some(total) = self.schedule.total_msgs {
                if self.next_index < total {
                    deadline = deadline.min(self.schedule.intended(self.next_index));
                }
            }
            if let Some(batch) = &self.open {
                deadline = deadline.min(batch.first_intended + plan.linger);
            }
            if self.schedule.total_msgs.is_none() && generating {
                deadline = now;
            }
        }
        deadline
    }

    /// Waits until `deadline` for answers and completes the requests they answer, in order.
    fn take_acks(
        &mut self,
        deadline: Duration,
        transport: &mut impl Transport,
        progress: &Progress,
    ) -> io::Result<()> {
        self.acks.clear();
        transport.poll_acks(deadline, &mut self.acks)?;
        for ack in &self.acks {
            let Some(flight) = self.in_flight.pop_front() else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "an answer arrived for no outstanding request",
                ));
            };
            debug_assert!(ack.at >= flight.sent_at);
            let messages: u64 = flight.batches.iter().map(|batch| batch.count as u64).sum();
            let failed = complete(
                &flight,
                ack,
                &self.schedule,
                &mut self.local,
                &mut self.outcome,
            );
            account(
                progress,
                &mut self.local,
                &mut self.handed_over_at,
                ack.at,
                (
                    messages - failed,
                    (messages - failed) * self.message_bytes,
                    failed,
                ),
            );
        }
        Ok(())
    }
}

/// Records the latency of every message of an answered request; returns how many failed.
fn complete(
    flight: &InFlight,
    ack: &Ack,
    schedule: &Schedule,
    histogram: &mut LatencyHistogram,
    outcome: &mut EngineOutcome,
) -> u64 {
    let mut failed = 0u64;
    // Without per-partition detail in `Ack`, the failed partitions are charged from the end
    // of the request; counts are what the report needs.
    let failed_from = flight
        .batches
        .len()
        .saturating_sub(ack.failed_partitions as usize);
    for (position, batch) in flight.batches.iter().enumerate() {
        if position >= failed_from {
            failed += batch.count as u64;
            continue;
        }
        if schedule.open_loop() {
            for index in batch.first_index..batch.first_index + batch.count as u64 {
                histogram.record(ack.at.saturating_sub(schedule.intended(index)));
            }
        } else {
            let latency_us = ack.at.saturating_sub(batch.first_intended).as_micros() as u64;
            histogram.record_us(latency_us, batch.count as u64);
        }
    }
    if failed > 0 && outcome.first_error_code == 0 {
        outcome.first_error_code = ack.error_code;
    }
    outcome.acked_msgs += flight.batches.iter().map(|b| b.count as u64).sum::<u64>() - failed;
    outcome.error_msgs += failed;
    outcome.finished_at = ack.at;
    failed
}

/// How often a connection hands its local histogram to the shared one: adding a histogram
/// walks all its buckets, too much for every request at a million messages a second. A
/// second's line may so count up to this much of the previous second's end.
pub const HANDOVER_INTERVAL: Duration = Duration::from_millis(10);

/// Publishes a request's counts `(msgs, bytes, errors)`, and at most every
/// [`HANDOVER_INTERVAL`] (the last at `handed_over_at`; `now` by the run's clock) moves the
/// local histogram into the shared one when the shared one is free. A connection never waits
/// for it: the printer's thread takes it once a second and is not pinned, so it may be
/// preempted while holding it, and a connection waiting on it would add that wait to its
/// messages' latency. Samples not handed over stay in `local` for a later call, and `run`
/// hands over the rest at its end.
fn account(
    progress: &Progress,
    local: &mut LatencyHistogram,
    handed_over_at: &mut Duration,
    now: Duration,
    (msgs, bytes, errors): (u64, u64, u64),
) {
    progress.acked_msgs.fetch_add(msgs, Ordering::Relaxed);
    progress.acked_bytes.fetch_add(bytes, Ordering::Relaxed);
    if errors > 0 {
        progress.errors.fetch_add(errors, Ordering::Relaxed);
    }
    if now.saturating_sub(*handed_over_at) < HANDOVER_INTERVAL {
        return;
    }
    match progress.histogram.try_lock() {
        Ok(mut shared) => {
            shared.add(local);
            local.reset();
            *handed_over_at = now;
        }
        Err(std::sync::TryLockError::WouldBlock) => {}
        // A panicked printer: nobody reads the shared histogram any more.
        Err(std::sync::TryLockError::Poisoned(_)) => local.reset(),
    }
}

/// Shares one [`Progress`] between connection threads and the printer.
pub type SharedProgress = Arc<Progress>;

#[cfg(test)]
mod tests;
