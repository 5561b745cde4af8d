//! ApiVersions: the table of APIs and version ranges this broker implements, and the KIP-511
//! fallback for clients that ask with a newer ApiVersions than we know.
//!
//! Every entry is a promise: a client picks the highest shared version and uses every field
//! of it, so a range is widened only together with the code and tests for the new versions.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

use super::{encode_frame, ApiError, Ctx, Reply};

/// (api, min, max) for every API served.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 0),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    // Non-transactional producers only; v4 and v5 add error codes for transactions.
    (ApiKey::InitProducerId, 0, 5),
];

pub fn supported(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == api)
        .map(|(_, min, max)| (*min, *max))
}

fn table() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(k, min, max)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

pub fn handle(ctx: &Ctx, _req: ApiVersionsRequest) -> Result<Reply, ApiError> {
    ctx.reply(&ApiVersionsResponse::default().with_api_keys(table()))
}

/// The KIP-511 answer to an ApiVersions request of a version we do not support: a v0 body
/// with UNSUPPORTED_VERSION and our ranges (response header v0, as for every ApiVersions).
pub fn unsupported_version_reply(correlation_id: i32) -> Result<Bytes, ApiError> {
    let resp = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(table());
    encode_frame(ApiKey::ApiVersions, 0, correlation_id, &resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_range_is_within_the_codec() {
        for (api, min, max) in SUPPORTED {
            let codec = api.valid_versions();
            assert!(
                codec.min <= *min && *max <= codec.max,
                "{api:?} {min}-{max} vs {codec:?}"
            );
            assert!(min <= max);
        }
    }

    #[test]
    fn kip511_reply_is_a_v0_body() {
        let frame = unsupported_version_reply(42).unwrap();
        // size, correlation id, error code 35, then the array length.
        assert_eq!(&frame[4..8], &42i32.to_be_bytes());
        assert_eq!(&frame[8..10], &35i16.to_be_bytes());
        assert_eq!(&frame[10..14], &(SUPPORTED.len() as i32).to_be_bytes());
        assert_eq!(frame.len(), 4 + 4 + 2 + 4 + SUPPORTED.len() * 6);
    }
}
