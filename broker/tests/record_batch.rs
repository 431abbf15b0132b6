//! Proves the RecordBatch v2 validator against an independent encoder: every batch that
//! kafka-protocol encodes (any codec, 1..n records, several batches concatenated) is accepted
//! with the header fields kafka-protocol reports, and every malformed header field is rejected
//! with its Kafka error code (CORRUPT_MESSAGE 2, MESSAGE_TOO_LARGE 10, INVALID_RECORD 87).
mod support;

use broker::storage::record_batch::{validate_batches, BatchHeader};
use broker::storage::{kafka_code, BatchError};
use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use proptest::prelude::*;

const MAX: u32 = (1 << 20) + 12;

fn codec() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Gzip),
        Just(Compression::Snappy),
        Just(Compression::Lz4),
        Just(Compression::Zstd),
    ]
}

/// Recomputes the CRC-32C after a deliberate edit, so only the edited field is wrong.
fn fix_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

fn sample() -> Vec<u8> {
    support::encode_batch(
        &[b"hello".to_vec(), b"world".to_vec()],
        1_700_000_000_000,
        Compression::None,
    )
}

fn code(bytes: &[u8]) -> i16 {
    validate_batches(bytes, MAX)
        .expect_err("must be rejected")
        .error_code()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn encoder_batches_are_accepted(
        batches in prop::collection::vec(
            (prop::collection::vec(prop::collection::vec(any::<u8>(), 0..2000), 1..20), codec(), 0i64..2_000_000_000_000),
            1..4,
        )
    ) {
        let mut input = Vec::new();
        for (values, c, ts) in &batches {
            input.extend(support::encode_batch(values, *ts, *c));
        }
        let infos = validate_batches(&input, MAX).expect("valid input");
        let theirs = RecordBatchDecoder::decode_batch_info(&mut Bytes::from(input.clone())).expect("decodes");
        prop_assert_eq!(infos.len(), batches.len());
        for ((info, (values, c, ts)), their) in infos.iter().zip(&batches).zip(&theirs) {
            let h: BatchHeader = info.header;
            prop_assert_eq!(h.records_count as usize, values.len());
            prop_assert_eq!(h.records_count, their.record_count);
            prop_assert_eq!(h.last_offset_delta as usize, values.len() - 1);
            prop_assert_eq!(h.compression(), *c as i16);
            prop_assert_eq!(h.base_timestamp, *ts);
            prop_assert_eq!(h.max_timestamp, *ts + values.len() as i64 - 1);
            prop_assert_eq!(h.producer_id, their.producer_id);
            prop_assert_eq!(h.producer_epoch, their.producer_epoch);
            prop_assert_eq!(h.partition_leader_epoch, their.partition_leader_epoch);
        }
    }

    #[test]
    fn any_flipped_byte_under_the_crc_is_corrupt(pos in 21usize..200, bit in 0u8..8) {
        let mut b = sample();
        let pos = pos % b.len();
        prop_assume!(pos >= 21);
        b[pos] ^= 1 << bit;
        prop_assert_eq!(code(&b), kafka_code::CORRUPT_MESSAGE);
    }

    #[test]
    fn any_truncation_is_corrupt(cut in 0usize..200) {
        let b = sample();
        let cut = cut % b.len();
        let e = validate_batches(&b[..cut], MAX).expect_err("truncated");
        prop_assert_eq!(e.error_code(), kafka_code::CORRUPT_MESSAGE);
    }
}

#[test]
fn batch_length_below_header_is_corrupt() {
    let mut b = sample();
    b[8..12].copy_from_slice(&48i32.to_be_bytes());
    assert_eq!(code(&b), kafka_code::CORRUPT_MESSAGE);
    b[8..12].copy_from_slice(&(-1i32).to_be_bytes());
    assert_eq!(code(&b), kafka_code::CORRUPT_MESSAGE);
}

#[test]
fn batch_length_past_the_input_is_corrupt() {
    let mut b = sample();
    let len = i32::from_be_bytes(b[8..12].try_into().unwrap());
    b[8..12].copy_from_slice(&(len + 1).to_be_bytes());
    assert_eq!(code(&b), kafka_code::CORRUPT_MESSAGE);
}

#[test]
fn batch_over_the_limit_is_message_too_large() {
    let b = support::encode_batch(&[vec![7u8; 5000]], 0, Compression::None);
    let e = validate_batches(&b, 4096).unwrap_err();
    assert_eq!(e.error_code(), kafka_code::MESSAGE_TOO_LARGE);
    assert!(matches!(
        e,
        BatchError::TooLarge {
            max_bytes: 4096,
            ..
        }
    ));
    // A length field claiming more than the limit is rejected before the input is read.
    let mut huge = sample();
    huge[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
    assert_eq!(code(&huge), kafka_code::MESSAGE_TOO_LARGE);
}

#[test]
fn magic_other_than_2_is_corrupt() {
    for magic in [0u8, 1, 3, 0xff] {
        let mut b = sample();
        b[16] = magic;
        assert_eq!(code(&b), kafka_code::CORRUPT_MESSAGE, "magic {magic}");
    }
}

#[test]
fn crc_field_mismatch_is_corrupt() {
    let mut b = sample();
    b[17] ^= 0x01;
    assert_eq!(code(&b), kafka_code::CORRUPT_MESSAGE);
}

#[test]
fn unknown_codec_is_corrupt() {
    for c in 5u8..8 {
        let mut b = sample();
        b[22] = (b[22] & !0x07) | c;
        fix_crc(&mut b);
        assert_eq!(code(&b), kafka_code::CORRUPT_MESSAGE, "codec {c}");
    }
}

#[test]
fn negative_last_offset_delta_is_invalid_record() {
    let mut b = sample();
    b[23..27].copy_from_slice(&(-1i32).to_be_bytes());
    fix_crc(&mut b);
    assert_eq!(code(&b), kafka_code::INVALID_RECORD);
}

#[test]
fn records_count_not_delta_plus_one_is_invalid_record() {
    for count in [0i32, 1, 3, -5] {
        let mut b = sample();
        b[57..61].copy_from_slice(&count.to_be_bytes());
        fix_crc(&mut b);
        assert_eq!(code(&b), kafka_code::INVALID_RECORD, "count {count}");
    }
    // Kafka checks the header count of compressed batches too.
    let mut z = support::encode_batch(&[b"a".to_vec(), b"b".to_vec()], 0, Compression::Gzip);
    z[57..61].copy_from_slice(&5i32.to_be_bytes());
    fix_crc(&mut z);
    assert_eq!(code(&z), kafka_code::INVALID_RECORD);
}

#[test]
fn empty_input_is_corrupt() {
    assert_eq!(code(&[]), kafka_code::CORRUPT_MESSAGE);
}

#[test]
fn the_bad_batch_of_a_run_is_named_by_position() {
    let good = sample();
    let mut bad = sample();
    bad[40] ^= 0xff;
    let mut input = good.clone();
    input.extend_from_slice(&bad);
    let e = validate_batches(&input, MAX).unwrap_err();
    assert_eq!(e.position(), good.len());
    assert_eq!(e.error_code(), kafka_code::CORRUPT_MESSAGE);
    // Trailing garbage shorter than a batch header is a truncated batch.
    let mut tail = good.clone();
    tail.extend_from_slice(&[0u8; 5]);
    assert_eq!(code(&tail), kafka_code::CORRUPT_MESSAGE);
}
