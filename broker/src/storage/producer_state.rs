//! Idempotent producers of one partition: the sequence numbers each producer id (and epoch)
//! has appended, so a retried batch is answered with its first offsets instead of being
//! appended twice, and a gap or a stale epoch is refused (Kafka's ProducerStateManager).
//!
//! A batch with `producer_id >= 0` carries `producer_epoch` and `base_sequence`; its records
//! take the sequences `base_sequence ..= last_sequence` (wrapping after `i32::MAX`). Per producer
//! the table keeps the epoch and the last [`KEPT_BATCHES`] batches (the most a client has in
//! flight per partition). Sans-IO: [`ProducerTable::check`] judges the batches of one append
//! before offsets are assigned, [`ProducerTable::record`] notes them after. A table is saved
//! in [`super::producer_snapshot`] files when a segment rolls and at a clean close; when a log
//! opens, [`super::producer_rebuild`] loads the newest snapshot and replays the batch headers
//! after it.

use std::collections::HashMap;

use super::record_batch::BatchHeader;

/// Batches remembered per producer: librdkafka and the Java client keep at most 5 requests
/// in flight per partition with idempotence on.
pub const KEPT_BATCHES: usize = 5;

/// Producers remembered per partition; past it the one that appended longest ago is
/// forgotten (its next batch is then accepted as from a new producer).
pub const MAX_PRODUCERS: usize = 10_000;

/// OUT_OF_ORDER_SEQUENCE_NUMBER: the batch does not follow the producer's last one.
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
/// INVALID_PRODUCER_EPOCH: an older epoch of a producer that has moved on.
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
/// DUPLICATE_SEQUENCE_NUMBER: a retried batch arrived together with new ones.
pub const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;

/// One appended batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendedBatch {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Producer {
    epoch: i16,
    /// Oldest first.
    batches: Vec<AppendedBatch>,
}

/// What an append of idempotent batches should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Append them.
    Append,
    /// The request is one batch that was appended already: answer with its offsets.
    Duplicate(AppendedBatch),
}

/// A refused append: the Kafka error code and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: i16,
    pub reason: String,
}

/// The sequence after `sequence` (Kafka wraps to 0 after `i32::MAX`).
fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

/// The last sequence of a batch of `records` starting at `base`.
pub fn last_sequence(base: i32, records: i32) -> i32 {
    let increment = records.max(1) - 1;
    if base > i32::MAX - increment {
        increment - (i32::MAX - base) - 1
    } else {
        base + increment
    }
}

/// The idempotent producers of one partition.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProducerTable {
    producers: HashMap<i64, Producer>,
}

impl ProducerTable {
    /// Approximate heap bytes of the table (map slots, producers and their batches), for
    /// the shard's memory budget.
    pub fn approximate_bytes(&self) -> usize {
        // A hash map slot: the key, the value and a control byte.
        let slot = std::mem::size_of::<i64>() + std::mem::size_of::<Producer>() + 1;
        let batches: usize = self
            .producers
            .values()
            .map(|p| p.batches.capacity() * std::mem::size_of::<AppendedBatch>())
            .sum();
        self.producers.capacity() * slot + batches
    }

    /// Producers known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Judges the batches of one append (in order). Batches without a producer id pass.
    pub fn check<'a>(
        &self,
        headers: impl ExactSizeIterator<Item = &'a BatchHeader>,
    ) -> Result<Verdict, Refusal> {
        let single = headers.len() == 1;
        // (producer id, epoch, last sequence) as they would be after the batches so far of
        // this append; a request carries one or a few producers, so a list will do.
        let mut pending: Vec<(i64, i16, i32)> = Vec::new();
        let pending_of = |pending: &[(i64, i16, i32)], id: i64| {
            pending
                .iter()
                .rev()
                .find(|(p, _, _)| *p == id)
                .map(|&(_, e, s)| (e, s))
        };
        for (i, h) in headers.enumerate() {
            if h.producer_id < 0 {
                continue;
            }
            let first = h.base_sequence;
            let last = last_sequence(first, h.records_count);
            let in_request = pending_of(&pending, h.producer_id);
            let known = in_request.or_else(|| {
                self.producers
                    .get(&h.producer_id)
                    .and_then(|p| p.batches.last().map(|b| (p.epoch, b.last_sequence)))
            });
            if let Some(p) = self.producers.get(&h.producer_id) {
                if h.producer_epoch == p.epoch && in_request.is_none() {
                    if let Some(done) = p
                        .batches
                        .iter()
                        .find(|b| b.first_sequence == first && b.last_sequence == last)
                    {
                        if single {
                            return Ok(Verdict::Duplicate(*done));
                        }
                        return Err(Refusal {
                            code: DUPLICATE_SEQUENCE_NUMBER,
                            reason: format!(
                                "batch {i}: producer {} sequences {first}..={last} were appended already",
                                h.producer_id
                            ),
                        });
                    }
                }
            }
            if let Some((epoch, last_appended)) = known {
                if h.producer_epoch < epoch {
                    return Err(Refusal {
                        code: INVALID_PRODUCER_EPOCH,
                        reason: format!(
                            "batch {i}: producer {} epoch {} is older than its epoch {epoch}",
                            h.producer_id, h.producer_epoch
                        ),
                    });
                }
                let expected = if h.producer_epoch > epoch {
                    0
                } else {
                    next_sequence(last_appended)
                };
                if first != expected {
                    return Err(Refusal {
                        code: OUT_OF_ORDER_SEQUENCE_NUMBER,
                        reason: format!(
                            "batch {i}: producer {} epoch {} sent sequence {first}, expected {expected}",
                            h.producer_id, h.producer_epoch
                        ),
                    });
                }
            }
            pending.push((h.producer_id, h.producer_epoch, last));
        }
        Ok(Verdict::Append)
    }

    /// Notes a batch appended at `header.base_offset` (offsets assigned).
    pub fn record(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 {
            return;
        }
        if !self.producers.contains_key(&header.producer_id)
            && self.producers.len() >= MAX_PRODUCERS
        {
            self.forget_oldest();
        }
        let batch = AppendedBatch {
            first_sequence: header.base_sequence,
            // lastOffsetDelta + 1, not recordsCount: compaction may have removed records of
            // the batch but keeps its offset range, as the sequence range follows it.
            last_sequence: last_sequence(header.base_sequence, header.last_offset_delta + 1),
            first_offset: header.base_offset,
            last_offset: header.last_offset(),
        };
        let producer = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| Producer {
                epoch: header.producer_epoch,
                batches: Vec::with_capacity(KEPT_BATCHES),
            });
        if header.producer_epoch != producer.epoch {
            producer.epoch = header.producer_epoch;
            producer.batches.clear();
        }
        if producer.batches.len() == KEPT_BATCHES {
            producer.batches.remove(0);
        }
        producer.batches.push(batch);
    }

    /// Each producer's last appended offset (compaction keeps the batch holding it).
    pub fn last_offsets(&self) -> HashMap<i64, i64> {
        self.producers
            .iter()
            .filter_map(|(id, p)| p.batches.last().map(|b| (*id, b.last_offset)))
            .collect()
    }

    /// Drops every producer (the log was truncated or deleted below them).
    pub fn clear(&mut self) {
        self.producers.clear();
    }

    /// Every producer as `(id, epoch, batches oldest first)`, in no particular order (for
    /// [`super::producer_snapshot`]).
    pub fn producers(&self) -> impl Iterator<Item = (i64, i16, &[AppendedBatch])> {
        self.producers
            .iter()
            .map(|(&id, p)| (id, p.epoch, p.batches.as_slice()))
    }

    /// Puts a producer back as a snapshot saved it: `batches` oldest first, 1 to
    /// [`KEPT_BATCHES`] of them, and room in the table (the snapshot reader checks both).
    pub fn restore(&mut self, id: i64, epoch: i16, batches: Vec<AppendedBatch>) {
        assert!(
            (1..=KEPT_BATCHES).contains(&batches.len()),
            "a producer keeps 1 to {KEPT_BATCHES} batches"
        );
        assert!(
            self.producers.len() < MAX_PRODUCERS || self.producers.contains_key(&id),
            "the table is full"
        );
        self.producers.insert(id, Producer { epoch, batches });
    }

    fn forget_oldest(&mut self) {
        let oldest = self
            .producers
            .iter()
            .min_by_key(|(_, p)| p.batches.last().map_or(i64::MIN, |b| b.last_offset))
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            self.producers.remove(&id);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The table against Kafka's rules: a retried batch is a duplicate answered with its
    //! offsets, a gap or a repeat of an older batch with new ones is refused, an older epoch
    //! is refused, a new epoch starts at sequence 0, sequences wrap after i32::MAX.
    use super::*;

    fn check(t: &ProducerTable, headers: &[BatchHeader]) -> Result<Verdict, Refusal> {
        t.check(headers.iter())
    }

    /// The header of a batch of producer `pid`: `count` records from sequence `seq`, at
    /// `offset`.
    pub(crate) fn batch(pid: i64, epoch: i16, seq: i32, count: i32, offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset: offset,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    #[test]
    fn retries_are_duplicates_and_gaps_are_refused() {
        let mut t = ProducerTable::default();
        let b0 = batch(7, 0, 0, 10, 100);
        assert_eq!(check(&t, &[b0]), Ok(Verdict::Append));
        t.record(&b0);
        let b1 = batch(7, 0, 10, 5, 110);
        assert_eq!(check(&t, &[b1]), Ok(Verdict::Append));
        t.record(&b1);
        // The first batch again (a retry after a lost answer): its offsets.
        assert_eq!(
            check(&t, &[batch(7, 0, 0, 10, -1)]),
            Ok(Verdict::Duplicate(AppendedBatch {
                first_sequence: 0,
                last_sequence: 9,
                first_offset: 100,
                last_offset: 109
            }))
        );
        // A gap.
        let gap = check(&t, &[batch(7, 0, 16, 1, -1)]).unwrap_err();
        assert_eq!(gap.code, OUT_OF_ORDER_SEQUENCE_NUMBER);
        // A retry together with a new batch.
        let mixed = check(&t, &[batch(7, 0, 10, 5, -1), batch(7, 0, 15, 1, -1)]).unwrap_err();
        assert_eq!(mixed.code, DUPLICATE_SEQUENCE_NUMBER);
        // Two new batches in one append follow each other.
        assert_eq!(
            check(&t, &[batch(7, 0, 15, 2, -1), batch(7, 0, 17, 3, -1)]),
            Ok(Verdict::Append)
        );
        assert_eq!(
            check(&t, &[batch(7, 0, 15, 2, -1), batch(7, 0, 18, 3, -1)])
                .unwrap_err()
                .code,
            OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        // Batches without a producer id are not judged.
        assert_eq!(check(&t, &[batch(-1, -1, -1, 3, -1)]), Ok(Verdict::Append));
    }

    #[test]
    fn epochs_fence_and_restart_sequences() {
        let mut t = ProducerTable::default();
        t.record(&batch(7, 1, 0, 3, 0));
        assert_eq!(
            check(&t, &[batch(7, 0, 3, 1, -1)]).unwrap_err().code,
            INVALID_PRODUCER_EPOCH
        );
        assert_eq!(
            check(&t, &[batch(7, 2, 3, 1, -1)]).unwrap_err().code,
            OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        assert_eq!(check(&t, &[batch(7, 2, 0, 1, -1)]), Ok(Verdict::Append));
        t.record(&batch(7, 2, 0, 1, 3));
        // The old epoch's batch is no longer a duplicate: it is fenced.
        assert_eq!(
            check(&t, &[batch(7, 1, 0, 3, -1)]).unwrap_err().code,
            INVALID_PRODUCER_EPOCH
        );
    }

    #[test]
    fn sequences_wrap_and_only_recent_batches_are_kept() {
        assert_eq!(last_sequence(i32::MAX - 1, 3), 0);
        assert_eq!(last_sequence(5, 1), 5);
        let mut t = ProducerTable::default();
        t.record(&batch(9, 0, i32::MAX - 1, 3, 0));
        assert_eq!(check(&t, &[batch(9, 0, 1, 1, -1)]), Ok(Verdict::Append));
        for i in 0..KEPT_BATCHES as i32 + 1 {
            t.record(&batch(9, 0, 1 + i, 1, 3 + i as i64));
        }
        // The batch at sequence 1 fell out of the window: a retry of it is now a gap.
        assert_eq!(
            check(&t, &[batch(9, 0, 1, 1, -1)]).unwrap_err().code,
            OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        assert!(matches!(
            check(&t, &[batch(9, 0, 2, 1, -1)]),
            Ok(Verdict::Duplicate(_))
        ));
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = ProducerTable::default();
        for pid in 0..MAX_PRODUCERS as i64 + 5 {
            t.record(&batch(pid, 0, 0, 1, pid));
        }
        assert_eq!(t.len(), MAX_PRODUCERS);
        // The oldest ones went.
        assert_eq!(check(&t, &[batch(0, 0, 5, 1, -1)]), Ok(Verdict::Append));
    }

    #[test]
    fn the_size_estimate_follows_producers_and_batches() {
        let mut t = ProducerTable::default();
        assert_eq!(t.approximate_bytes(), 0);
        t.record(&batch(1, 0, 0, 1, 0));
        let one = t.approximate_bytes();
        assert!(one >= std::mem::size_of::<AppendedBatch>(), "{one}");
        for pid in 2..1000 {
            t.record(&batch(pid, 0, 0, 1, pid));
        }
        // A thousand producers with a batch each: at least their batches and keys.
        let many = t.approximate_bytes();
        assert!(
            many >= 999 * (std::mem::size_of::<AppendedBatch>() + 8),
            "{many}"
        );
        t.clear();
        assert!(t.approximate_bytes() < many);
    }
}
