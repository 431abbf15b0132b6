//! Proves the pre-pass (`kafka::precheck`) walks request bodies exactly as kafka-protocol's
//! decoders read them and that a body it lets through cannot make the decoder allocate by a
//! lying length. For every API and version the broker decodes with the crate:
//! - random bodies built from the layout table pass the pre-pass and decode to their last byte
//!   (a field missing from or added to the table shifts the bytes and the decode fails);
//! - a huge count or length written into any one array, string or bytes field is refused;
//! - mutated bodies either fail the pre-pass or decode reading the same bytes, with no single
//!   allocation above 64 bytes per body byte (this binary's allocator records the largest).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use broker::kafka::precheck::{self, Problem};
use broker::kafka::request_schemas::{Field, Kind, Schema, SCHEMAS};
use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Meter;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|largest| {
        if size > largest.get() {
            largest.set(size);
        }
    });
}

// SAFETY: forwards every call to the system allocator unchanged; only records sizes.
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Meter = Meter;

/// Runs `f` and returns its result with the largest single allocation it made.
fn metered<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(|l| l.get()))
}

/// Decodes `body` with kafka-protocol; the number of bytes it read, or its error.
fn decode(api: ApiKey, version: i16, body: &[u8]) -> Result<usize, String> {
    let mut buf = Bytes::copy_from_slice(body);
    macro_rules! with {
        ($($key:ident => $ty:ty),* $(,)?) => {
            match api {
                $(ApiKey::$key => <$ty>::decode(&mut buf, version).map(drop),)*
                other => panic!("no decoder listed for {other:?}"),
            }
        };
    }
    let result = with! {
        Produce => ProduceRequest,
        Fetch => FetchRequest,
        ListOffsets => ListOffsetsRequest,
        Metadata => MetadataRequest,
        CreateTopics => CreateTopicsRequest,
        DeleteTopics => DeleteTopicsRequest,
        DescribeConfigs => DescribeConfigsRequest,
        FindCoordinator => FindCoordinatorRequest,
        JoinGroup => JoinGroupRequest,
        SyncGroup => SyncGroupRequest,
        Heartbeat => HeartbeatRequest,
        LeaveGroup => LeaveGroupRequest,
        OffsetCommit => OffsetCommitRequest,
        OffsetFetch => OffsetFetchRequest,
        ListGroups => ListGroupsRequest,
        DescribeGroups => DescribeGroupsRequest,
        DeleteGroups => DeleteGroupsRequest,
        InitProducerId => InitProducerIdRequest,
        DescribeCluster => DescribeClusterRequest,
        OffsetForLeaderEpoch => OffsetForLeaderEpochRequest,
        SaslHandshake => SaslHandshakeRequest,
        SaslAuthenticate => SaslAuthenticateRequest,
        DescribeUserScramCredentials => DescribeUserScramCredentialsRequest,
        AlterUserScramCredentials => AlterUserScramCredentialsRequest,
        CreateAcls => CreateAclsRequest,
        DescribeAcls => DescribeAclsRequest,
        DeleteAcls => DeleteAclsRequest,
        DeleteRecords => DeleteRecordsRequest,
        OffsetDelete => OffsetDeleteRequest,
        DescribeProducers => DescribeProducersRequest,
        AlterConfigs => AlterConfigsRequest,
        IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
        CreatePartitions => CreatePartitionsRequest,
        DescribeLogDirs => DescribeLogDirsRequest,
        ElectLeaders => ElectLeadersRequest,
        AlterPartitionReassignments => AlterPartitionReassignmentsRequest,
        ListPartitionReassignments => ListPartitionReassignmentsRequest,
    };
    result.map_err(|err| err.to_string())?;
    Ok(body.len() - buf.len())
}

fn put_varint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Where the poisoned length starts, and its field.
type Poisoned = (usize, &'static str);

/// Builds random bodies from a layout. Every length or count written is numbered; the one
/// numbered `poison` gets the largest value its encoding holds, and its content is left out.
struct Builder<'r> {
    rng: &'r mut StdRng,
    version: i16,
    flexible: bool,
    poison: Option<usize>,
    lengths: usize,
    poisoned: Option<Poisoned>,
}

impl Builder<'_> {
    /// Writes a length; false when it was the poisoned one (the caller writes no content).
    fn length(&mut self, out: &mut Vec<u8>, n: usize, wide: bool, field: &'static str) -> bool {
        let index = self.lengths;
        self.lengths += 1;
        if self.poison == Some(index) {
            self.poisoned = Some((out.len(), field));
            if self.flexible {
                put_varint(out, u32::MAX);
            } else if wide {
                out.extend_from_slice(&i32::MAX.to_be_bytes());
            } else {
                out.extend_from_slice(&i16::MAX.to_be_bytes());
            }
            return false;
        }
        if self.flexible {
            put_varint(out, n as u32 + 1);
        } else if wide {
            out.extend_from_slice(&(n as i32).to_be_bytes());
        } else {
            out.extend_from_slice(&(n as i16).to_be_bytes());
        }
        true
    }

    fn value(&mut self, out: &mut Vec<u8>, field: &'static str, kind: &Kind) {
        match kind {
            Kind::Fixed(n) => {
                for _ in 0..*n {
                    out.push(self.rng.gen());
                }
            }
            Kind::String => {
                let n = self.rng.gen_range(0..5);
                if self.length(out, n, false, field) {
                    for _ in 0..n {
                        out.push(self.rng.gen_range(b'a'..=b'z'));
                    }
                }
            }
            Kind::Bytes => {
                let n = self.rng.gen_range(0..7);
                if self.length(out, n, true, field) {
                    for _ in 0..n {
                        out.push(self.rng.gen());
                    }
                }
            }
            Kind::Array(element) => {
                let n = self.rng.gen_range(0..3);
                if self.length(out, n, true, field) {
                    for _ in 0..n {
                        self.value(out, field, element);
                    }
                }
            }
            Kind::Struct(fields) => self.fields(out, fields),
        }
    }

    fn fields(&mut self, out: &mut Vec<u8>, fields: &'static [Field]) {
        for field in fields {
            if field.tag.is_none() && field.in_version(self.version) {
                self.value(out, field.name, &field.kind);
            }
        }
        if !self.flexible {
            return;
        }
        // Tagged fields: the known ones of this version, and tags 0..8 the layout does not
        // know (if the decoder knew one, it would read it by type and stray).
        // A value is built apart to learn its size; a length poisoned in it is recorded at an
        // offset within the value and moved once the value's place is known.
        let mut tagged: Vec<(u32, Vec<u8>, Option<Poisoned>)> = Vec::new();
        for field in fields {
            if let Some(tag) = field.tag {
                if field.in_version(self.version) && self.rng.gen_bool(0.5) {
                    let mut value = Vec::new();
                    let before = self.poisoned.take();
                    self.value(&mut value, field.name, &field.kind);
                    let inside = std::mem::replace(&mut self.poisoned, before);
                    tagged.push((tag, value, inside));
                }
            }
        }
        for tag in 0..8u32 {
            if fields.iter().all(|f| f.tag != Some(tag)) && self.rng.gen_bool(0.2) {
                let n = self.rng.gen_range(0..40);
                let value = (0..n).map(|_| self.rng.gen()).collect();
                tagged.push((tag, value, None));
            }
        }
        put_varint(out, tagged.len() as u32);
        for (tag, value, inside) in tagged {
            put_varint(out, tag);
            put_varint(out, value.len() as u32);
            if let Some((offset, field)) = inside {
                self.poisoned = Some((out.len() + offset, field));
            }
            out.extend_from_slice(&value);
        }
    }
}

fn build(
    rng: &mut StdRng,
    schema: &Schema,
    version: i16,
    poison: Option<usize>,
) -> (Vec<u8>, usize, Option<Poisoned>) {
    let mut builder = Builder {
        rng,
        version,
        flexible: version >= schema.flexible_from,
        poison,
        lengths: 0,
        poisoned: None,
    };
    let mut out = Vec::new();
    builder.fields(&mut out, schema.fields);
    (out, builder.lengths, builder.poisoned)
}

fn every_version() -> impl Iterator<Item = (&'static Schema, i16)> {
    SCHEMAS
        .iter()
        .flat_map(|s| (s.min_version..=s.max_version).map(move |v| (s, v)))
}

#[test]
fn layouts_match_the_decoder_in_every_version() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut checked = 0;
    for (schema, version) in every_version() {
        for round in 0..300 {
            let (body, _, _) = build(&mut rng, schema, version, None);
            let key = schema.api_key;
            let (walked, largest) = metered(|| precheck::check(key, version, &body));
            assert_eq!(largest, 0, "the pre-pass allocates nothing");
            assert_eq!(
                walked,
                Ok(body.len()),
                "{key:?} v{version} round {round}: {body:02x?}"
            );
            assert_eq!(
                decode(key, version, &body),
                Ok(body.len()),
                "{key:?} v{version} round {round}: the decoder reads the body differently: {body:02x?}"
            );
            checked += 1;
        }
    }
    assert!(checked > 100 * 300);
}

#[test]
fn a_huge_length_in_any_field_is_refused_where_it_is() {
    let mut rng = StdRng::seed_from_u64(12);
    for (schema, version) in every_version() {
        for _ in 0..20 {
            let (_, lengths, _) = build(&mut rng.clone(), schema, version, None);
            for poison in 0..lengths {
                let (body, _, poisoned) = build(&mut rng.clone(), schema, version, Some(poison));
                let (offset, field) = poisoned.expect("the poisoned length was written");
                let err = precheck::check(schema.api_key, version, &body).unwrap_err();
                assert_eq!(
                    (err.offset, err.field),
                    (offset, field),
                    "{:?} v{version}: {err}",
                    schema.api_key
                );
                assert!(
                    matches!(
                        err.problem,
                        Problem::CountPastEnd { .. } | Problem::LengthPastEnd { .. }
                    ),
                    "{err}"
                );
            }
            let _: u64 = rng.gen();
        }
    }
}

#[test]
fn mutated_bodies_pass_only_if_the_decoder_reads_them_the_same_within_bounds() {
    let mut rng = StdRng::seed_from_u64(13);
    let (mut passed, mut decoded) = (0, 0);
    for (schema, version) in every_version() {
        let key = schema.api_key;
        for _ in 0..200 {
            let (mut body, _, _) = build(&mut rng, schema, version, None);
            if body.is_empty() {
                continue;
            }
            let at = rng.gen_range(0..body.len());
            match rng.gen_range(0..5) {
                0 => body[at] = rng.gen(),
                1 => {
                    let end = (at + 4).min(body.len());
                    body[at..end].fill(0x7f);
                }
                2 => body.truncate(at),
                3 => {
                    body.splice(at..at, [0xff, 0xff, 0xff, 0xff, 0x0f]);
                }
                _ => {
                    let end = (at + 2).min(body.len());
                    body[at..end].fill(0xff);
                }
            }
            let Ok(walked) = precheck::check(key, version, &body) else {
                continue;
            };
            passed += 1;
            let (result, largest) = metered(|| decode(key, version, &body));
            assert!(
                largest <= 64 * body.len() + 4096,
                "{key:?} v{version}: an allocation of {largest} bytes for a body of {}: {body:02x?}",
                body.len()
            );
            if let Ok(read) = result {
                decoded += 1;
                assert_eq!(read, walked, "{key:?} v{version}: {body:02x?}");
            }
        }
    }
    // The mutations must leave enough bodies passing for the comparison to mean something.
    assert!(
        passed > 1000 && decoded > 1000,
        "{passed} passed, {decoded} decoded"
    );
}
