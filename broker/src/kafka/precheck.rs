//! The pre-pass over a request body before `kafka-protocol` decodes it: every array count and
//! every string and bytes length the body declares is checked against the bytes left in it.
//!
//! kafka-protocol 0.18 reserves a `Vec` by an array's declared count before it reads one
//! element (and a `Vec<u8>` by a declared length before it copies), so a 14-byte Metadata frame
//! declaring 2^31-1 topics asks for ~150 GB. The pre-pass walks the body exactly as the decoder
//! will, by the layouts in [`super::request_schemas`] (same fields, same versions, compact
//! lengths in flexible versions, tagged fields read as the decoder reads them: known tags by
//! their type, unknown ones skipped by their size), and refuses a body in which:
//!
//! - an array declares more elements than the bytes left could hold, counting each element at
//!   the fewest bytes it can take on the wire (an int32 4, a struct the sum of its fields' least
//!   sizes, never less than 1);
//! - a string, bytes or unknown tagged field declares more bytes than are left;
//! - a length is negative other than -1 (null), a field is cut short, or a known tag comes in
//!   a version that does not have it (the decoder refuses these too).
//!
//! A body that passes therefore holds every element the decoder will reserve room for, so what
//! decoding allocates is bounded by a small multiple of the frame's size (the in-memory size of
//! an element over its least wire size). The walk allocates nothing and reads each byte once.

use std::fmt;

use kafka_protocol::messages::ApiKey;

use super::request_schemas::{self, Field, Kind};

/// Why a body was refused: the field, where its length or count starts, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    /// Offset in the body (after the request header).
    pub offset: usize,
    pub field: &'static str,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The body ends inside the field.
    Truncated,
    /// A length or count below -1.
    NegativeLength(i64),
    /// A string, bytes or unknown tagged field longer than the bytes left.
    LengthPastEnd { declared: u64, left: usize },
    /// An array with more elements than the bytes left can hold.
    CountPastEnd {
        declared: u64,
        least_bytes_each: usize,
        left: usize,
    },
    /// A known tag in a version that does not carry it.
    TagNotInVersion(u32),
    /// No layout for this API and version (the decoder does not know it either).
    NoLayout,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}` at body offset {}: ", self.field, self.offset)?;
        match &self.problem {
            Problem::Truncated => write!(f, "the body ends inside it"),
            Problem::NegativeLength(n) => write!(f, "negative length {n}"),
            Problem::LengthPastEnd { declared, left } => {
                write!(f, "declares {declared} bytes, {left} left")
            }
            Problem::CountPastEnd {
                declared,
                least_bytes_each,
                left,
            } => write!(
                f,
                "declares {declared} elements of at least {least_bytes_each} bytes, {left} bytes left"
            ),
            Problem::TagNotInVersion(tag) => write!(f, "tag {tag} is not valid in this version"),
            Problem::NoLayout => write!(f, "no layout for this version"),
        }
    }
}

impl std::error::Error for CheckError {}

/// Checks `body` (the bytes after the request header) of `api_key` at `version`. Returns the
/// number of bytes the decoder will read.
pub fn check(api_key: ApiKey, version: i16, body: &[u8]) -> Result<usize, CheckError> {
    let schema = request_schemas::find(api_key)
        .filter(|s| (s.min_version..=s.max_version).contains(&version))
        .ok_or(CheckError {
            offset: 0,
            field: "(body)",
            problem: Problem::NoLayout,
        })?;
    let mut walker = Walker {
        body,
        at: 0,
        version,
        flexible: version >= schema.flexible_from,
    };
    walker.walk_struct(schema.fields)?;
    Ok(walker.at)
}

struct Walker<'a> {
    body: &'a [u8],
    at: usize,
    version: i16,
    flexible: bool,
}

impl Walker<'_> {
    fn left(&self) -> usize {
        self.body.len() - self.at
    }

    fn error<T>(
        &self,
        offset: usize,
        field: &'static str,
        problem: Problem,
    ) -> Result<T, CheckError> {
        Err(CheckError {
            offset,
            field,
            problem,
        })
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&[u8], CheckError> {
        if n > self.left() {
            return self.error(self.at, field, Problem::Truncated);
        }
        let bytes = &self.body[self.at..self.at + n];
        self.at += n;
        Ok(bytes)
    }

    /// kafka-protocol's unsigned varint: at most 5 bytes, high bits of the fifth dropped.
    fn varint(&mut self, field: &'static str) -> Result<u32, CheckError> {
        let mut value = 0u32;
        for i in 0..5 {
            let b = self.take(1, field)?[0] as u32;
            value |= (b & 0x7f) << (i * 7);
            if b < 0x80 {
                break;
            }
        }
        Ok(value)
    }

    /// A length or count: `None` for null, else the declared value.
    fn length(&mut self, field: &'static str, wide: bool) -> Result<Option<u64>, CheckError> {
        let start = self.at;
        let n: i64 = if self.flexible {
            // Compact: 0 is null, n is n - 1.
            self.varint(field)? as i64 - 1
        } else if wide {
            let b = self.take(4, field)?;
            i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as i64
        } else {
            let b = self.take(2, field)?;
            i16::from_be_bytes([b[0], b[1]]) as i64
        };
        match n {
            -1 => Ok(None),
            n if n < -1 => self.error(start, field, Problem::NegativeLength(n)),
            n => Ok(Some(n as u64)),
        }
    }

    fn skip(&mut self, start: usize, len: u64, field: &'static str) -> Result<(), CheckError> {
        let left = self.left();
        if len > left as u64 {
            return self.error(
                start,
                field,
                Problem::LengthPastEnd {
                    declared: len,
                    left,
                },
            );
        }
        self.at += len as usize;
        Ok(())
    }

    fn walk(&mut self, field: &'static str, kind: &Kind) -> Result<(), CheckError> {
        match kind {
            Kind::Fixed(n) => self.take(*n, field).map(|_| ()),
            Kind::String | Kind::Bytes => {
                let start = self.at;
                match self.length(field, matches!(kind, Kind::Bytes))? {
                    None => Ok(()),
                    Some(len) => self.skip(start, len, field),
                }
            }
            Kind::Array(element) => {
                let start = self.at;
                let Some(count) = self.length(field, true)? else {
                    return Ok(());
                };
                let least = self.least_bytes(element).max(1);
                let left = self.left();
                if count.saturating_mul(least as u64) > left as u64 {
                    return self.error(
                        start,
                        field,
                        Problem::CountPastEnd {
                            declared: count,
                            least_bytes_each: least,
                            left,
                        },
                    );
                }
                for _ in 0..count {
                    self.walk(field, element)?;
                }
                Ok(())
            }
            Kind::Struct(fields) => self.walk_struct(fields),
        }
    }

    fn walk_struct(&mut self, fields: &'static [Field]) -> Result<(), CheckError> {
        for field in fields {
            if field.tag.is_none() && field.in_version(self.version) {
                self.walk(field.name, &field.kind)?;
            }
        }
        if self.flexible {
            self.walk_tagged(fields)?;
        }
        Ok(())
    }

    /// Tagged fields as the decoder reads them: a known tag's value by its type (the declared
    /// size is not used), an unknown one skipped by its size. Each costs at least two bytes, so
    /// the loop is bounded by the body whatever count it declares.
    fn walk_tagged(&mut self, fields: &'static [Field]) -> Result<(), CheckError> {
        let count = self.varint("(tagged fields)")?;
        for _ in 0..count {
            let start = self.at;
            let tag = self.varint("(tag)")?;
            let size = self.varint("(tagged field size)")?;
            match fields.iter().find(|f| f.tag == Some(tag)) {
                Some(field) if field.in_version(self.version) => {
                    self.walk(field.name, &field.kind)?;
                }
                Some(field) => {
                    return self.error(start, field.name, Problem::TagNotInVersion(tag));
                }
                None => self.skip(start, size as u64, "(unknown tagged field)")?,
            }
        }
        Ok(())
    }

    /// The fewest bytes a value of `kind` takes in this version.
    fn least_bytes(&self, kind: &Kind) -> usize {
        match kind {
            Kind::Fixed(n) => *n,
            Kind::String | Kind::Array(_) | Kind::Bytes if self.flexible => 1,
            Kind::String => 2,
            Kind::Bytes | Kind::Array(_) => 4,
            Kind::Struct(fields) => {
                let own: usize = fields
                    .iter()
                    .filter(|f| f.tag.is_none() && f.in_version(self.version))
                    .map(|f| self.least_bytes(&f.kind))
                    .sum();
                own + usize::from(self.flexible)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Proves lying counts and lengths are refused before decoding, at the right offset, in
    //! flexible and non-flexible versions, and that honest bodies pass, by building bodies by
    //! hand (the table-against-decoder check is `tests/request_precheck.rs`).
    use super::*;

    #[test]
    fn metadata_v0_with_a_huge_topic_count_is_refused() {
        let body = 0x7fff_ffffi32.to_be_bytes();
        let err = check(ApiKey::Metadata, 0, &body).unwrap_err();
        assert_eq!(err.field, "topics");
        assert_eq!(err.offset, 0);
        assert_eq!(
            err.problem,
            Problem::CountPastEnd {
                declared: 0x7fff_ffff,
                least_bytes_each: 2,
                left: 0
            }
        );
        // Null topics (all topics) and two honest ones pass.
        assert_eq!(check(ApiKey::Metadata, 0, &(-1i32).to_be_bytes()), Ok(4));
        let mut body = 2i32.to_be_bytes().to_vec();
        body.extend_from_slice(&[0, 1, b'a', 0, 0]);
        assert_eq!(check(ApiKey::Metadata, 0, &body), Ok(9));
        // One element too many for the bytes left.
        body[3] = 3;
        assert!(check(ApiKey::Metadata, 0, &body).is_err());
    }

    #[test]
    fn flexible_metadata_counts_compact_and_checks_tagged_fields() {
        // v12: topics compact array (varint 0xffffffff = 2^32-2 topics), then nothing.
        let body = [0xff, 0xff, 0xff, 0xff, 0x0f];
        let err = check(ApiKey::Metadata, 12, &body).unwrap_err();
        assert!(
            matches!(
                err.problem,
                Problem::CountPastEnd {
                    declared: 0xffff_fffe,
                    least_bytes_each: 18,
                    ..
                }
            ),
            "{err}"
        );
        // One topic: uuid, compact name "a", no tags; then v12's two bools and no tags.
        let mut body = vec![2];
        body.extend_from_slice(&[0; 16]);
        body.extend_from_slice(&[2, b'a', 0]);
        body.extend_from_slice(&[1, 0]);
        body.push(0);
        assert_eq!(check(ApiKey::Metadata, 12, &body), Ok(body.len()));
        // An unknown tagged field declaring more bytes than are left.
        let last = body.len() - 1;
        body[last] = 1;
        body.extend_from_slice(&[9, 0xff, 0xff, 0x03]);
        let err = check(ApiKey::Metadata, 12, &body).unwrap_err();
        assert!(
            matches!(err.problem, Problem::LengthPastEnd { .. }),
            "{err}"
        );
    }

    #[test]
    fn strings_and_bytes_longer_than_the_body_are_refused() {
        // JoinGroup v0: group_id declares 30,000 bytes.
        let body = [0x75, 0x30, b'g'];
        let err = check(ApiKey::JoinGroup, 0, &body).unwrap_err();
        assert_eq!(err.field, "group_id");
        // JoinGroup v0 with one protocol whose metadata declares 2 GB.
        let mut body = vec![0, 1, b'g', 0, 0, 0x75, 0x30, 0, 0, 0, 0, 0, 0, 0, 1];
        body.extend_from_slice(&[0, 1, b'r']);
        body.extend_from_slice(&0x7fff_fff0i32.to_be_bytes());
        let err = check(ApiKey::JoinGroup, 0, &body).unwrap_err();
        assert_eq!((err.field, err.offset), ("metadata", 18));
        // A length below -1.
        let err = check(ApiKey::Heartbeat, 0, &[0xff, 0xf0]).unwrap_err();
        assert_eq!(err.problem, Problem::NegativeLength(-16));
    }

    #[test]
    fn nested_counts_are_checked_against_what_is_left() {
        // Fetch v4: replica, max_wait, min_bytes, max_bytes, isolation, one topic "t" with
        // 1,000,000 partitions of at least 16 bytes each (v4: partition, offset, max bytes).
        let mut body = Vec::new();
        for v in [-1i32, 500, 1, 1 << 20] {
            body.extend_from_slice(&v.to_be_bytes());
        }
        body.push(0);
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&[0, 1, b't']);
        body.extend_from_slice(&1_000_000i32.to_be_bytes());
        body.extend_from_slice(&[0; 16]);
        let err = check(ApiKey::Fetch, 4, &body).unwrap_err();
        assert_eq!(err.field, "partitions");
        assert!(
            matches!(
                err.problem,
                Problem::CountPastEnd {
                    least_bytes_each: 16,
                    left: 16,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn known_tags_are_read_by_type_and_refused_outside_their_versions() {
        // Fetch v12 with no topics, no forgotten topics, rack "" and one tagged field.
        let base = |tags: &[u8]| {
            let mut body = Vec::new();
            for v in [-1i32, 500, 1, 1 << 20] {
                body.extend_from_slice(&v.to_be_bytes());
            }
            body.push(0);
            body.extend_from_slice(&0i32.to_be_bytes());
            body.extend_from_slice(&(-1i32).to_be_bytes());
            body.extend_from_slice(&[1, 1, 1]);
            body.extend_from_slice(tags);
            body
        };
        // Tag 0 (cluster_id) is a compact string read by type: a lying size is ignored.
        let body = base(&[1, 0, 0x7f, 3, b'a', b'b']);
        assert_eq!(check(ApiKey::Fetch, 12, &body), Ok(body.len()));
        // Tag 1 (replica_state) only exists from v15.
        let body = base(&[1, 1, 13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let err = check(ApiKey::Fetch, 12, &body).unwrap_err();
        assert_eq!(err.problem, Problem::TagNotInVersion(1));
    }

    #[test]
    fn versions_without_a_layout_are_refused() {
        let err = check(ApiKey::OffsetForLeaderEpoch, 1, &[]).unwrap_err();
        assert_eq!(err.problem, Problem::NoLayout);
        let err = check(ApiKey::ApiVersions, 3, &[]).unwrap_err();
        assert_eq!(err.problem, Problem::NoLayout);
    }
}
