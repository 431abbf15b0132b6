//! Which APIs and versions this broker answers, and the ApiVersions response built from them.
//!
//! Produce is advertised from v0 although v0-2 requests are answered with UNSUPPORTED_VERSION:
//! librdkafka turns compression off unless the advertised range starts at 0.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

use super::codes;
use super::response;

/// `(api key, lowest advertised version, highest version)`.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 10),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    // kafka-protocol 0.18 starts OffsetCommit at v2 and OffsetFetch at v1; the older ones
    // have a hand codec (`offsets_legacy`).
    (ApiKey::OffsetCommit, 0, 9),
    (ApiKey::OffsetFetch, 0, 9),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    // Idempotent producers only: a transactional id is refused (no transaction coordinator).
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::OffsetForLeaderEpoch, 0, 4),
    // Advertised from v0 (librdkafka 2.0 wants v0 in the range to use SASL at all), but a
    // v0 handshake, after which the client sends raw SASL tokens instead of
    // SaslAuthenticate requests, closes the connection (`server::sasl_api`).
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    // SECURITY_DISABLED without --authorizer, as Kafka answers. From v1 (pattern types;
    // kafka-protocol 0.18 has no v0, Kafka 4 dropped it; librdkafka and kafka-python send v1).
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeLogDirs, 1, 4),
    // Through the controller in a cluster; a single node answers as a one-broker Kafka.
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
];

/// Produce versions below this are advertised but refused (no RecordBatch v2 before v3).
pub const PRODUCE_VERSION_MIN_ACCEPTED: i16 = 3;

/// The advertised range of `key`, if this broker serves it.
pub fn range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, min, max)| (min, max))
}

/// The full ApiVersions response frame for a request of `version`; an unsupported version gets
/// a v0 body with UNSUPPORTED_VERSION and the ranges, as clients expect, so they can retry.
pub fn api_versions_response(correlation_id: i32, version: i16) -> Bytes {
    let (error_code, body_version) = if (0..=3).contains(&version) {
        (codes::NONE, version)
    } else {
        (codes::UNSUPPORTED_VERSION, 0)
    };
    let body = ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(
            SUPPORTED
                .iter()
                .map(|&(key, min, max)| {
                    ApiVersion::default()
                        .with_api_key(key as i16)
                        .with_min_version(min)
                        .with_max_version(max)
                })
                .collect(),
        );
    // The ApiVersions response header is always v0 (no tagged fields), whatever the version.
    response::encode(correlation_id, 0, &body, body_version)
}

#[cfg(test)]
mod tests {
    //! Proves the ApiVersions v3 body carries no tagged fields beyond the empty set (what
    //! librdkafka 2.0.2 needs) and that an unknown version gets a v0 body, by decoding the bytes.
    use super::*;
    use bytes::Buf;
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn v3_body_ends_with_empty_tagged_fields() {
        let mut frame = api_versions_response(7, 3);
        let size = frame.get_i32() as usize;
        assert_eq!(size, frame.len());
        assert_eq!(frame.get_i32(), 7);
        assert_eq!(*frame.last().unwrap(), 0, "no tagged fields written");
        let body = ApiVersionsResponse::decode(&mut frame, 3).unwrap();
        assert_eq!(body.error_code, 0);
        assert_eq!(body.api_keys.len(), SUPPORTED.len());
        assert!(frame.is_empty());
    }

    #[test]
    fn unknown_version_gets_v0_body() {
        let mut frame = api_versions_response(1, 9);
        frame.advance(8);
        let body = ApiVersionsResponse::decode(&mut frame, 0).unwrap();
        assert_eq!(body.error_code, codes::UNSUPPORTED_VERSION);
        assert!(body
            .api_keys
            .iter()
            .any(|k| k.api_key == 0 && k.min_version == 0));
    }
}
