//! Topic-level configs (Kafka names): their definitions, validation, and resolution of a
//! topic's overrides against the broker defaults.
//!
//! One table, `DEFS`, lists every topic config the broker understands; DescribeConfigs,
//! CreateTopics, AlterConfigs and IncrementalAlterConfigs all go through it, so an unknown name
//! or a bad value is refused the same way everywhere (INVALID_CONFIG).

use std::collections::BTreeMap;

use super::BrokerConfig;

/// Kafka DescribeConfigs config types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    List = 7,
}

/// Kafka DescribeConfigs config sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    TopicConfig = 1,
    StaticBrokerConfig = 4,
    DefaultConfig = 5,
}

pub use crate::log::TimestampType;

pub struct ConfigDef {
    pub name: &'static str,
    pub kind: Kind,
    /// Lowest accepted value for numeric configs.
    pub min: i64,
    pub doc: &'static str,
}

/// The topic config naming a tier profile of the broker config.
pub const PROFILE: &str = "strata.tier.profile";

pub const DEFS: &[ConfigDef] = &[
    ConfigDef { name: "cleanup.policy", kind: Kind::List, min: 0, doc: "Retention policy for old segments. Only 'delete' is supported." },
    ConfigDef { name: "compression.type", kind: Kind::String, min: 0, doc: "Only 'producer': batches are stored with the producer's codec." },
    ConfigDef { name: "flush.messages", kind: Kind::Long, min: 1, doc: "fsync after this many messages; 1 = every acknowledged write is durable (group commit)." },
    ConfigDef { name: "flush.ms", kind: Kind::Long, min: 0, doc: "With flush.messages > 1, fsync at least this often (ms); 0 = every write is durable." },
    ConfigDef { name: "index.interval.bytes", kind: Kind::Int, min: 0, doc: "Bytes of log between offset index entries." },
    ConfigDef { name: "local.retention.bytes", kind: Kind::Long, min: -2, doc: "With remote.storage.enable, bytes kept on local disk per partition; older uploaded segments are read from the object store. -2 = retention.bytes." },
    ConfigDef { name: "local.retention.ms", kind: Kind::Long, min: -2, doc: "With remote.storage.enable, age after which uploaded segments leave local disk. -2 = retention.ms." },
    ConfigDef { name: "max.message.bytes", kind: Kind::Int, min: 0, doc: "Largest record batch accepted, in bytes." },
    ConfigDef { name: "message.timestamp.type", kind: Kind::String, min: 0, doc: "CreateTime or LogAppendTime." },
    ConfigDef { name: "min.insync.replicas", kind: Kind::Int, min: 1, doc: "Replicas that must acknowledge an acks=all write." },
    ConfigDef { name: "remote.storage.enable", kind: Kind::Boolean, min: 0, doc: "Archive sealed segments to the object store as Parquet and serve old offsets from there." },
    ConfigDef { name: "retention.bytes", kind: Kind::Long, min: -1, doc: "Bytes kept per partition before old segments are deleted; -1 = unlimited." },
    ConfigDef { name: "retention.ms", kind: Kind::Long, min: -1, doc: "Age after which segments are deleted; -1 = forever." },
    ConfigDef { name: "segment.bytes", kind: Kind::Int, min: 100, doc: "Size at which the active segment is rolled." },
    ConfigDef { name: "segment.ms", kind: Kind::Long, min: 1, doc: "Age at which the active segment is rolled." },
    ConfigDef { name: PROFILE, kind: Kind::String, min: 0, doc: "Name of a [tier_profiles.<name>] of the broker config whose topic configs this topic adopts (its own configs win)." },
    ConfigDef { name: "unclean.leader.election.enable", kind: Kind::Boolean, min: 0, doc: "Allow an out-of-sync replica to become leader (loses data)." },
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicConfigError {
    #[error("Unknown topic config name: {0}")]
    Unknown(String),
    #[error("Invalid value '{value}' for configuration {name}: {reason}")]
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
}

/// A topic's effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub segment_bytes: i64,
    pub segment_ms: i64,
    pub max_message_bytes: i32,
    pub timestamp_type: TimestampType,
    pub flush_messages: i64,
    pub flush_ms: i64,
    pub index_interval_bytes: i32,
    pub min_insync_replicas: i32,
    /// Sealed segments are archived to the object store.
    pub remote_storage_enable: bool,
    /// Local retention of a tiered topic, with -2 resolved to the total retention.
    pub local_retention_ms: i64,
    pub local_retention_bytes: i64,
    /// Not a topic config: the broker's `producer_id_expiration_ms`, carried here because the
    /// partition log enforces it.
    pub producer_id_expiration_ms: i64,
}

impl TopicConfig {
    /// True when a write must be fsynced before it is acknowledged.
    pub fn durable_ack(&self) -> bool {
        self.flush_messages <= 1 || self.flush_ms == 0
    }

    /// Resolves `overrides` (validated) on top of the broker defaults.
    pub fn resolve(
        broker: &BrokerConfig,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, TopicConfigError> {
        validate(overrides)?;
        if let Some(name) = overrides.get(PROFILE).filter(|n| !n.is_empty()) {
            if !broker.tier_profiles.contains_key(name) {
                return Err(TopicConfigError::Invalid {
                    name: PROFILE.into(),
                    value: name.clone(),
                    reason: format!(
                        "no [tier_profiles.{name}] in the broker config (known: {})",
                        broker
                            .tier_profiles
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        let values = effective(broker, overrides);
        let get = |name: &str| {
            values
                .get(name)
                .map(|(v, _)| v.as_str())
                .unwrap_or_default()
        };
        let long = |name: &str| get(name).parse::<i64>().unwrap_or_default();
        let cfg = TopicConfig {
            retention_ms: long("retention.ms"),
            retention_bytes: long("retention.bytes"),
            segment_bytes: long("segment.bytes"),
            segment_ms: long("segment.ms"),
            max_message_bytes: long("max.message.bytes") as i32,
            timestamp_type: match get("message.timestamp.type") {
                "LogAppendTime" => TimestampType::LogAppendTime,
                _ => TimestampType::CreateTime,
            },
            flush_messages: long("flush.messages"),
            flush_ms: long("flush.ms"),
            index_interval_bytes: long("index.interval.bytes") as i32,
            min_insync_replicas: long("min.insync.replicas") as i32,
            remote_storage_enable: get("remote.storage.enable") == "true",
            local_retention_ms: match long("local.retention.ms") {
                -2 => long("retention.ms"),
                v => v,
            },
            local_retention_bytes: match long("local.retention.bytes") {
                -2 => long("retention.bytes"),
                v => v,
            },
            producer_id_expiration_ms: broker.producer_id_expiration_ms,
        };
        // Broker defaults are validated through the same rules as overrides.
        let all: BTreeMap<String, String> = values
            .into_iter()
            .map(|(k, (v, _))| (k.to_string(), v))
            .collect();
        validate(&all)?;
        // Kafka's rule: the local tier cannot outlive the whole log.
        let exceeds = |local: i64, total: i64| total >= 0 && (local < 0 || local > total);
        if exceeds(cfg.local_retention_ms, cfg.retention_ms) {
            return Err(TopicConfigError::Invalid {
                name: "local.retention.ms".into(),
                value: cfg.local_retention_ms.to_string(),
                reason: format!("must not exceed retention.ms ({})", cfg.retention_ms),
            });
        }
        if exceeds(cfg.local_retention_bytes, cfg.retention_bytes) {
            return Err(TopicConfigError::Invalid {
                name: "local.retention.bytes".into(),
                value: cfg.local_retention_bytes.to_string(),
                reason: format!("must not exceed retention.bytes ({})", cfg.retention_bytes),
            });
        }
        Ok(cfg)
    }
}

/// Checks names and values of topic config overrides.
pub fn validate(overrides: &BTreeMap<String, String>) -> Result<(), TopicConfigError> {
    for (name, value) in overrides {
        let def = DEFS
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| TopicConfigError::Unknown(name.clone()))?;
        check_value(def, value).map_err(|reason| TopicConfigError::Invalid {
            name: name.clone(),
            value: value.clone(),
            reason,
        })?;
    }
    Ok(())
}

fn check_value(def: &ConfigDef, value: &str) -> Result<(), String> {
    match def.kind {
        Kind::Int | Kind::Long => {
            let v: i64 = value
                .trim()
                .parse()
                .map_err(|_| "not a number".to_string())?;
            if def.kind == Kind::Int && i32::try_from(v).is_err() {
                return Err("out of range for an int".into());
            }
            if v < def.min {
                return Err(format!("must be at least {}", def.min));
            }
        }
        Kind::Boolean => {
            value
                .trim()
                .parse::<bool>()
                .map_err(|_| "expected true or false".to_string())?;
        }
        Kind::String | Kind::List => {}
    }
    match def.name {
        "cleanup.policy" if value.trim() != "delete" => {
            Err("only 'delete' is supported; log compaction is not available yet".into())
        }
        "compression.type" if value.trim() != "producer" => Err(
            "only 'producer' is supported: batches are stored as the producer compressed them"
                .into(),
        ),
        "message.timestamp.type" if !matches!(value, "CreateTime" | "LogAppendTime") => {
            Err("expected CreateTime or LogAppendTime".into())
        }
        _ => Ok(()),
    }
}

/// Broker default of each topic config, and whether it differs from the built-in default.
fn broker_default(broker: &BrokerConfig, name: &str) -> (String, Source) {
    let builtin = BrokerConfig::default();
    let pick = |value: String, default: String| {
        let source = if value == default {
            Source::DefaultConfig
        } else {
            Source::StaticBrokerConfig
        };
        (value, source)
    };
    macro_rules! field {
        ($f:ident) => {
            pick(broker.$f.to_string(), builtin.$f.to_string())
        };
    }
    match name {
        "cleanup.policy" => ("delete".into(), Source::DefaultConfig),
        "compression.type" => ("producer".into(), Source::DefaultConfig),
        "flush.messages" => field!(log_flush_interval_messages),
        "flush.ms" => field!(log_flush_interval_ms),
        "index.interval.bytes" => field!(log_index_interval_bytes),
        "local.retention.bytes" => field!(log_local_retention_bytes),
        "local.retention.ms" => field!(log_local_retention_ms),
        "remote.storage.enable" => field!(log_remote_storage_enable),
        "max.message.bytes" => field!(message_max_bytes),
        "message.timestamp.type" => field!(log_message_timestamp_type),
        "min.insync.replicas" => field!(min_insync_replicas),
        "retention.bytes" => field!(log_retention_bytes),
        "retention.ms" => field!(log_retention_ms),
        "segment.bytes" => field!(log_segment_bytes),
        "segment.ms" => field!(log_roll_ms),
        "unclean.leader.election.enable" => ("false".into(), Source::DefaultConfig),
        _ => (String::new(), Source::DefaultConfig),
    }
}

/// Every topic config's effective value and where it came from: the topic's own override,
/// else its tier profile's value (reported as a static broker config, where it is declared),
/// else the broker default.
pub fn effective(
    broker: &BrokerConfig,
    overrides: &BTreeMap<String, String>,
) -> BTreeMap<&'static str, (String, Source)> {
    let profile = overrides
        .get(PROFILE)
        .and_then(|name| broker.tier_profiles.get(name));
    DEFS.iter()
        .map(|def| {
            let v = match overrides.get(def.name) {
                Some(v) => (v.clone(), Source::TopicConfig),
                None => match profile.and_then(|p| p.get(def.name)) {
                    Some(v) => (v.clone(), Source::StaticBrokerConfig),
                    None => broker_default(broker, def.name),
                },
            };
            (def.name, v)
        })
        .collect()
}

pub fn def(name: &str) -> Option<&'static ConfigDef> {
    DEFS.iter().find(|d| d.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn resolves_overrides_over_defaults() {
        let broker = BrokerConfig::default();
        let cfg = TopicConfig::resolve(&broker, &map(&[("retention.ms", "1000")])).unwrap();
        assert_eq!(cfg.retention_ms, 1000);
        assert_eq!(cfg.segment_bytes, broker.log_segment_bytes);
        assert!(cfg.durable_ack());
        let relaxed = TopicConfig::resolve(&broker, &map(&[("flush.messages", "10000")])).unwrap();
        assert!(!relaxed.durable_ack());
    }

    #[test]
    fn rejects_unknown_and_invalid() {
        let broker = BrokerConfig::default();
        assert_eq!(
            TopicConfig::resolve(&broker, &map(&[("retention.msx", "1")])),
            Err(TopicConfigError::Unknown("retention.msx".into()))
        );
        for (k, v) in [
            ("retention.ms", "abc"),
            ("retention.ms", "-2"),
            ("segment.bytes", "99999999999"),
            ("message.timestamp.type", "Never"),
            ("cleanup.policy", "compact"),
            ("unclean.leader.election.enable", "maybe"),
        ] {
            assert!(
                matches!(
                    validate(&map(&[(k, v)])),
                    Err(TopicConfigError::Invalid { .. })
                ),
                "{k}={v}"
            );
        }
    }

    #[test]
    fn effective_reports_sources() {
        let broker = BrokerConfig {
            log_retention_ms: 5,
            ..Default::default()
        };
        let eff = effective(&broker, &map(&[("segment.ms", "10")]));
        assert_eq!(eff["segment.ms"], ("10".to_string(), Source::TopicConfig));
        assert_eq!(
            eff["retention.ms"],
            ("5".to_string(), Source::StaticBrokerConfig)
        );
        assert_eq!(eff["retention.bytes"].1, Source::DefaultConfig);
    }

    #[test]
    fn tier_profiles_and_local_retention() {
        let mut broker = BrokerConfig::default();
        broker.tier_profiles.insert(
            "hot".into(),
            map(&[
                ("remote.storage.enable", "true"),
                ("local.retention.ms", "1000"),
            ]),
        );
        let cfg = TopicConfig::resolve(&broker, &map(&[(PROFILE, "hot")])).unwrap();
        assert!(cfg.remote_storage_enable);
        assert_eq!(cfg.local_retention_ms, 1000);
        assert_eq!(
            cfg.local_retention_bytes, cfg.retention_bytes,
            "-2 is the total retention"
        );
        let eff = effective(&broker, &map(&[(PROFILE, "hot")]));
        assert_eq!(
            eff["remote.storage.enable"],
            ("true".to_string(), Source::StaticBrokerConfig)
        );
        // The topic's own value wins over the profile's.
        let cfg = TopicConfig::resolve(
            &broker,
            &map(&[(PROFILE, "hot"), ("local.retention.ms", "5")]),
        )
        .unwrap();
        assert_eq!(cfg.local_retention_ms, 5);
        assert!(matches!(
            TopicConfig::resolve(&broker, &map(&[(PROFILE, "cold")])),
            Err(TopicConfigError::Invalid { .. })
        ));
        // Local retention may not outlive the whole log.
        assert!(matches!(
            TopicConfig::resolve(
                &broker,
                &map(&[("retention.ms", "1000"), ("local.retention.ms", "2000")])
            ),
            Err(TopicConfigError::Invalid { .. })
        ));
        assert!(TopicConfig::resolve(
            &broker,
            &map(&[("retention.ms", "-1"), ("local.retention.ms", "2000")])
        )
        .is_ok());
    }
}
