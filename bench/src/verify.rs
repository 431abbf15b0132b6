//! Checks that a numbered produce run is all there: every message a connection sent appears
//! exactly once (no gaps, no duplicates), and within a partition each connection's numbers
//! only grow (order kept). Pure: the caller reads the messages back and feeds them in.

use std::collections::HashMap;

/// One message read back: where it was and the number it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadBack {
    pub partition: i32,
    pub offset: i64,
    pub connection: u32,
    pub sequence: u64,
}

/// What was wrong, at most a few examples of each kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub messages_read: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub examples: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.out_of_order == 0
    }
}

const EXAMPLES_MAX: usize = 10;

/// `sent[c]` is the number of messages connection `c` sent (numbered 0..sent[c]).
pub fn verify(sent: &[u64], messages: impl IntoIterator<Item = ReadBack>) -> VerifyReport {
    let mut report = VerifyReport::default();
    let mut seen: Vec<Vec<u64>> = sent
        .iter()
        .map(|count| vec![0u64; count.div_ceil(64) as usize])
        .collect();
    let mut last_in_partition: HashMap<(i32, u32), (u64, i64)> = HashMap::new();
    let example = |report: &mut VerifyReport, text: String| {
        if report.examples.len() < EXAMPLES_MAX {
            report.examples.push(text);
        }
    };
    for message in messages {
        report.messages_read += 1;
        let connection = message.connection as usize;
        if connection >= sent.len() || message.sequence >= sent[connection] {
            report.duplicates += 1;
            example(
                &mut report,
                format!(
                    "partition {} offset {}: message {}/{} was never sent",
                    message.partition, message.offset, message.connection, message.sequence
                ),
            );
            continue;
        }
        let (word, bit) = ((message.sequence / 64) as usize, message.sequence % 64);
        if seen[connection][word] & (1 << bit) != 0 {
            report.duplicates += 1;
            example(
                &mut report,
                format!(
                    "partition {} offset {}: duplicate of message {}/{}",
                    message.partition, message.offset, message.connection, message.sequence
                ),
            );
            continue;
        }
        seen[connection][word] |= 1 << bit;
        let key = (message.partition, message.connection);
        if let Some((previous, previous_offset)) = last_in_partition.get(&key) {
            if message.sequence < *previous {
                report.out_of_order += 1;
                example(
                    &mut report,
                    format!(
                        "partition {}: message {}/{} at offset {} comes after {} at offset {previous_offset}",
                        message.partition, message.connection, message.sequence, message.offset, previous
                    ),
                );
            }
        }
        last_in_partition.insert(key, (message.sequence, message.offset));
    }
    for (connection, count) in sent.iter().enumerate() {
        for sequence in 0..*count {
            let (word, bit) = ((sequence / 64) as usize, sequence % 64);
            if seen[connection][word] & (1 << bit) == 0 {
                report.missing += 1;
                if report.examples.len() < EXAMPLES_MAX {
                    report
                        .examples
                        .push(format!("message {connection}/{sequence} is missing"));
                }
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    //! Proves the verifier accepts a complete run and catches an injected gap, duplicate and
    //! reordering.
    use super::*;

    fn run(sent: &[u64]) -> Vec<ReadBack> {
        let mut messages = Vec::new();
        for (connection, count) in sent.iter().enumerate() {
            for sequence in 0..*count {
                let partition = (connection * 2 + (sequence as usize / 10) % 2) as i32;
                messages.push(ReadBack {
                    partition,
                    offset: messages.len() as i64,
                    connection: connection as u32,
                    sequence,
                });
            }
        }
        messages
    }

    #[test]
    fn a_complete_run_passes() {
        let report = verify(&[100, 250], run(&[100, 250]));
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.messages_read, 350);
    }

    #[test]
    fn a_gap_is_caught() {
        let mut messages = run(&[100, 250]);
        messages.remove(170);
        let report = verify(&[100, 250], messages);
        assert_eq!(report.missing, 1);
        assert!(!report.ok());
        assert_eq!(report.examples, vec!["message 1/70 is missing".to_string()]);
    }

    #[test]
    fn a_duplicate_is_caught() {
        let mut messages = run(&[100]);
        let copy = messages[42];
        messages.push(ReadBack {
            offset: 1000,
            ..copy
        });
        let report = verify(&[100], messages);
        assert_eq!(report.duplicates, 1);
        assert_eq!(report.missing, 0);
        assert!(!report.ok());
    }

    #[test]
    fn reordering_within_a_partition_is_caught() {
        let mut messages = run(&[100]);
        messages.swap(3, 4);
        let report = verify(&[100], messages);
        assert_eq!(report.out_of_order, 1);
        assert!(!report.ok());
    }

    #[test]
    fn a_message_never_sent_is_caught() {
        let mut messages = run(&[10]);
        messages.push(ReadBack {
            partition: 0,
            offset: 99,
            connection: 0,
            sequence: 10,
        });
        assert_eq!(verify(&[10], messages).duplicates, 1);
    }
}
