//! Which version of each API to speak: the highest that both the broker (from ApiVersions) and
//! this tool support. Our ranges stop where Kafka moved to topic ids (Produce 12+, Fetch 13+),
//! since the tool addresses topics by name. Fetch stops at 11, the last version without tagged
//! fields: v12 adds nothing a benchmark uses, and some brokers (Tansu 0.6) put tagged fields in
//! v12 responses that only later versions define, which the codec rejects.

use std::collections::HashMap;

use anyhow::{bail, Result};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiKey;

/// (api, lowest, highest) this tool can speak.
pub const OURS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 11),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::ApiVersions, 0, 0),
];

/// The broker's ranges, and the choice per API.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    broker: HashMap<i16, (i16, i16)>,
}

impl Versions {
    pub fn from_broker(api_keys: &[ApiVersion]) -> Self {
        Self {
            broker: api_keys
                .iter()
                .map(|v| (v.api_key, (v.min_version, v.max_version)))
                .collect(),
        }
    }

    /// The version to use for `api`, or why there is none.
    pub fn pick(&self, api: ApiKey) -> Result<i16> {
        let Some(&(_, our_min, our_max)) = OURS.iter().find(|(k, _, _)| *k == api) else {
            bail!("{api:?} is not used by this tool");
        };
        let Some(&(broker_min, broker_max)) = self.broker.get(&(api as i16)) else {
            bail!("the broker does not support {api:?}");
        };
        let v = our_max.min(broker_max);
        if v < our_min.max(broker_min) {
            bail!("no common {api:?} version: broker {broker_min}-{broker_max}, ours {our_min}-{our_max}");
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(ranges: &[(ApiKey, i16, i16)]) -> Versions {
        let keys: Vec<ApiVersion> = ranges
            .iter()
            .map(|(k, min, max)| {
                ApiVersion::default()
                    .with_api_key(*k as i16)
                    .with_min_version(*min)
                    .with_max_version(*max)
            })
            .collect();
        Versions::from_broker(&keys)
    }

    #[test]
    fn picks_the_highest_common_version() {
        let v = broker(&[
            (ApiKey::Produce, 3, 13),
            (ApiKey::Fetch, 4, 9),
            (ApiKey::Metadata, 0, 12),
        ]);
        assert_eq!(v.pick(ApiKey::Produce).unwrap(), 11);
        assert_eq!(v.pick(ApiKey::Fetch).unwrap(), 9);
        assert_eq!(v.pick(ApiKey::Metadata).unwrap(), 12);
    }

    #[test]
    fn refuses_when_ranges_do_not_meet() {
        let v = broker(&[(ApiKey::Produce, 12, 13), (ApiKey::Fetch, 0, 3)]);
        assert!(v
            .pick(ApiKey::Produce)
            .unwrap_err()
            .to_string()
            .contains("no common"));
        assert!(v.pick(ApiKey::Fetch).is_err());
        assert!(v
            .pick(ApiKey::ListOffsets)
            .unwrap_err()
            .to_string()
            .contains("does not support"));
        assert!(v.pick(ApiKey::JoinGroup).is_err());
    }

    #[test]
    fn our_ranges_are_within_the_codec() {
        for (api, min, max) in OURS {
            let codec = api.valid_versions();
            assert!(codec.min <= *min && *max <= codec.max, "{api:?}");
        }
    }
}
