//! A Kafka request frame (size prefix removed) as a client may send it: the header split and
//! the body decoded for every API and version the broker serves, as `dispatch` does. Any
//! outcome but a panic is fine: errors close the connection.
//!
//! The broker's allocator, as in the binary: kafka-protocol 0.18 reserves `Vec` capacity by an
//! array's declared length before reading its elements (upstream PRs #152, #161, #200), so a
//! 14-byte Metadata v0 frame declaring 2^31-1 topics asks for ~150 GB. mimalloc reserves that
//! as address space and gives it back when the decode fails; the system allocator refuses it
//! and aborts. Run without a sanitizer (`scripts/fuzz` does), whose allocator would refuse too.
#![no_main]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use broker::kafka::{frame, offsets_legacy, produce_legacy, versions};
use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;
use libfuzzer_sys::fuzz_target;

fn decode<T: Decodable>(body: &Bytes, version: i16) {
    let mut body = body.clone();
    let _ = T::decode(&mut body, version);
}

fuzz_target!(|data: &[u8]| {
    let Ok(request) = frame::parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    let version = request.api_version;
    let Some((min, max)) = versions::range(request.api_key) else {
        return;
    };
    if version < min || version > max {
        return;
    }
    let body = &request.body;
    match request.api_key {
        ApiKey::Produce if version < versions::PRODUCE_VERSION_MIN_ACCEPTED => {
            let _ = produce_legacy::refuse(request.correlation_id, version, body.clone());
        }
        ApiKey::Produce => decode::<ProduceRequest>(body, version),
        ApiKey::Fetch => decode::<FetchRequest>(body, version),
        ApiKey::ListOffsets => decode::<ListOffsetsRequest>(body, version),
        ApiKey::Metadata => decode::<MetadataRequest>(body, version),
        ApiKey::CreateTopics => decode::<CreateTopicsRequest>(body, version),
        ApiKey::DeleteTopics => decode::<DeleteTopicsRequest>(body, version),
        ApiKey::DescribeConfigs => decode::<DescribeConfigsRequest>(body, version),
        ApiKey::FindCoordinator => decode::<FindCoordinatorRequest>(body, version),
        ApiKey::JoinGroup => decode::<JoinGroupRequest>(body, version),
        ApiKey::SyncGroup => decode::<SyncGroupRequest>(body, version),
        ApiKey::Heartbeat => decode::<HeartbeatRequest>(body, version),
        ApiKey::LeaveGroup => decode::<LeaveGroupRequest>(body, version),
        ApiKey::OffsetCommit if version < 2 => {
            let _ = offsets_legacy::decode_offset_commit(&mut body.clone(), version);
        }
        ApiKey::OffsetCommit => decode::<OffsetCommitRequest>(body, version),
        ApiKey::OffsetFetch if version == 0 => {
            let _ = offsets_legacy::decode_offset_fetch_v0(&mut body.clone());
        }
        ApiKey::OffsetFetch => decode::<OffsetFetchRequest>(body, version),
        ApiKey::ListGroups => decode::<ListGroupsRequest>(body, version),
        ApiKey::DescribeGroups => decode::<DescribeGroupsRequest>(body, version),
        ApiKey::DeleteGroups => decode::<DeleteGroupsRequest>(body, version),
        ApiKey::InitProducerId => decode::<InitProducerIdRequest>(body, version),
        _ => {}
    }
});
