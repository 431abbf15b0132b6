//! Proves the open-loop schedule and the coordinated-omission correction: a fake broker with a
//! simulated clock answers every request after 50 µs, except for one injected 100 ms stall; at
//! rate R about R x 0.1 messages must then show latencies spread from 0 up to 100 ms, which a
//! closed-loop measurement (latency from the actual send) would hide.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

use super::*;

#[derive(Clone, Default)]
struct SimClock {
    now: Rc<Cell<Duration>>,
}

impl SimClock {
    fn advance_to(&self, at: Duration) {
        if at > self.now.get() {
            self.now.set(at);
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> Duration {
        self.now.get()
    }
}

/// A broker that answers after `service` and blocks one send for `stall` at `stall_at`.
struct FakeBroker {
    clock: SimClock,
    service: Duration,
    stall_at: Duration,
    stall: Duration,
    stalled: bool,
    pending: VecDeque<Duration>,
    requests: u64,
    partitions_seen: Vec<i32>,
}

impl Transport for FakeBroker {
    fn send(&mut self, batches: &[(i32, Bytes)]) -> io::Result<()> {
        // Every send costs 1 µs of simulated time, like a syscall.
        self.clock
            .advance_to(self.clock.now() + Duration::from_micros(1));
        if !self.stalled && self.clock.now() >= self.stall_at {
            self.stalled = true;
            self.clock.advance_to(self.clock.now() + self.stall);
        }
        self.requests += 1;
        self.partitions_seen.extend(batches.iter().map(|(p, _)| *p));
        self.pending.push_back(self.clock.now() + self.service);
        Ok(())
    }

    fn poll_acks(&mut self, deadline: Duration, acks: &mut Vec<Ack>) -> io::Result<()> {
        match self.pending.front().copied() {
            Some(at) if at <= deadline => {
                self.clock.advance_to(at);
                while let Some(at) = self.pending.front().copied() {
                    if at > self.clock.now() {
                        break;
                    }
                    self.pending.pop_front();
                    acks.push(Ack {
                        failed_partitions: 0,
                        error_code: 0,
                        at,
                    });
                }
            }
            _ => self.clock.advance_to(deadline),
        }
        Ok(())
    }

    fn acks_expected(&self) -> bool {
        true
    }
}

#[derive(Default)]
struct CountingSource {
    batches: u64,
    messages: u64,
    next_expected: u64,
}

impl BatchSource for CountingSource {
    fn batch(&mut self, _partition: i32, first_index: u64, count: u32, _at: Duration) -> Bytes {
        assert_eq!(
            first_index, self.next_expected,
            "messages are batched in order, once"
        );
        self.next_expected += count as u64;
        self.batches += 1;
        self.messages += count as u64;
        Bytes::from_static(b"batch")
    }
    fn message_bytes(&self) -> usize {
        100
    }
}

fn broker(clock: &SimClock, stall_at_ms: u64, stall_ms: u64) -> FakeBroker {
    FakeBroker {
        clock: clock.clone(),
        service: Duration::from_micros(50),
        stall_at: Duration::from_millis(stall_at_ms),
        stall: Duration::from_millis(stall_ms),
        stalled: false,
        pending: VecDeque::new(),
        requests: 0,
        partitions_seen: Vec::new(),
    }
}

fn plan(rate: f64) -> EnginePlan {
    EnginePlan {
        rate_per_s: Some(rate),
        duration: Duration::from_secs(1),
        partitions: vec![0, 1, 2],
        records_per_batch: 16,
        linger: Duration::from_micros(500),
        max_in_flight: 5,
        max_batches_per_request: 3,
        drain_timeout: Duration::from_secs(5),
    }
}

#[test]
fn stall_is_charged_to_every_message_intended_during_it() {
    let rate = 100_000.0;
    let clock = SimClock::default();
    let mut transport = broker(&clock, 500, 100);
    let mut source = CountingSource::default();
    let progress = Progress::default();
    let plan = plan(rate);
    let outcome = run(&plan, &clock, &mut transport, &mut source, &progress).unwrap();

    assert_eq!(outcome.offered_msgs, 100_000);
    assert_eq!(outcome.acked_msgs, 100_000);
    assert_eq!(source.messages, 100_000);
    let histogram = progress.histogram.lock().unwrap();
    assert_eq!(histogram.len(), 100_000, "one sample per message");
    // About R x 0.1 messages were due during the stall; each waited for its remainder.
    let delayed = histogram.count_at_least_us(1_000);
    assert!(
        (9_000..=11_000).contains(&delayed),
        "{delayed} samples >= 1 ms, expected about 10,000"
    );
    // Spread evenly up to 100 ms: about half of them waited more than 50 ms.
    let over_half = histogram.count_at_least_us(50_000);
    assert!(
        (4_500..=5_500).contains(&over_half),
        "{over_half} samples >= 50 ms"
    );
    let max = histogram.max_ms();
    assert!((99.0..=102.0).contains(&max), "max {max} ms");
    // Outside the stall, latency is the batch fill time + linger + service time.
    assert!(
        histogram.quantile_ms(0.5) < 0.7,
        "p50 {}",
        histogram.quantile_ms(0.5)
    );
    // The generator sent everything within 1 s + the stall: schedule kept by our definition.
    assert!(outcome.schedule_kept(&plan), "{outcome:?}");
    // Batches of distinct partitions share requests, and every partition is used.
    assert!(transport.requests < source.batches);
    for partition in 0..3 {
        assert!(transport.partitions_seen.contains(&partition));
    }
}

#[test]
fn without_a_stall_latency_is_bounded_by_linger_and_service() {
    let clock = SimClock::default();
    let mut transport = broker(&clock, u64::MAX / 2_000_000, 0);
    let mut source = CountingSource::default();
    let progress = Progress::default();
    let outcome = run(
        &plan(10_000.0),
        &clock,
        &mut transport,
        &mut source,
        &progress,
    )
    .unwrap();
    assert_eq!(outcome.acked_msgs, 10_000);
    let histogram = progress.histogram.lock().unwrap();
    // At 10k/s a 16-message batch takes 1.5 ms to fill, so linger (0.5 ms) closes it first.
    assert!(histogram.max_ms() <= 0.6, "max {} ms", histogram.max_ms());
}

#[test]
fn a_generator_that_falls_behind_reports_it() {
    // A broker that takes 2 ms per request with one request in flight can carry at most
    // 500 x 16 messages/s; at 100k/s the schedule slips and the run says so.
    let clock = SimClock::default();
    let mut transport = broker(&clock, u64::MAX / 2_000_000, 0);
    transport.service = Duration::from_millis(2);
    let mut plan = plan(100_000.0);
    plan.max_in_flight = 1;
    plan.max_batches_per_request = 1;
    plan.duration = Duration::from_millis(200);
    let mut source = CountingSource::default();
    let progress = Progress::default();
    let outcome = run(&plan, &clock, &mut transport, &mut source, &progress).unwrap();
    assert_eq!(
        outcome.acked_msgs, 20_000,
        "every planned message is still sent"
    );
    assert!(!outcome.schedule_kept(&plan), "{outcome:?}");
}

#[test]
fn flat_out_runs_for_the_duration() {
    let clock = SimClock::default();
    let mut transport = broker(&clock, u64::MAX / 2_000_000, 0);
    let mut plan = plan(1.0);
    plan.rate_per_s = None;
    plan.duration = Duration::from_millis(100);
    let mut source = CountingSource::default();
    let progress = Progress::default();
    let outcome = run(&plan, &clock, &mut transport, &mut source, &progress).unwrap();
    // 5 requests in flight, 50 µs each, 3 batches of 16 per request: ~4.8M msgs/s offered.
    assert!(outcome.acked_msgs > 100_000, "{outcome:?}");
    assert!(outcome.offered_until <= Duration::from_millis(101));
    assert!(outcome.schedule_kept(&plan));
}

#[test]
fn a_connection_never_waits_for_the_printer_and_loses_no_sample() {
    let progress = Progress::default();
    let mut local = LatencyHistogram::default();
    let mut handed_over_at = Duration::ZERO;
    let ms = Duration::from_millis;
    local.record_us(700, 3);
    {
        // The printer holds the shared histogram: the connection goes on, keeping its samples.
        let _printer = progress.histogram.lock().unwrap();
        account(
            &progress,
            &mut local,
            &mut handed_over_at,
            ms(50),
            (3, 300, 0),
        );
        assert_eq!(local.len(), 3);
    }
    assert_eq!(progress.acked_msgs.load(Ordering::Relaxed), 3);
    local.record_us(900, 2);
    account(
        &progress,
        &mut local,
        &mut handed_over_at,
        ms(51),
        (2, 200, 0),
    );
    assert!(local.is_empty());
    assert_eq!(progress.histogram.lock().unwrap().len(), 5);
    // Within HANDOVER_INTERVAL of the last handover the samples wait in `local`; the counts
    // are published at once.
    local.record_us(800, 4);
    account(
        &progress,
        &mut local,
        &mut handed_over_at,
        ms(55),
        (4, 400, 0),
    );
    assert_eq!(
        (local.len(), progress.histogram.lock().unwrap().len()),
        (4, 5)
    );
    assert_eq!(progress.acked_msgs.load(Ordering::Relaxed), 9);
    account(
        &progress,
        &mut local,
        &mut handed_over_at,
        ms(51) + HANDOVER_INTERVAL,
        (0, 0, 0),
    );
    assert_eq!(
        (local.len(), progress.histogram.lock().unwrap().len()),
        (0, 9)
    );
}
