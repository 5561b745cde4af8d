//! Broker configuration: TOML file < `STRATA_<KEY>` environment variables < command-line flags.
//!
//! Every key is declared once, in `BrokerConfig`, with its default and meaning; the example
//! `config/strata.toml` mirrors this list. Unknown keys are an error (a typo must not silently
//! fall back to a default).

pub mod tiering;
pub mod topic;

use std::collections::BTreeMap;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("invalid value for {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// Broker-wide settings. Topic-level defaults use Kafka's broker config names with `.`
/// replaced by `_` (for example `log_retention_ms` is the default of topic `retention.ms`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// This broker's id in the cluster (Kafka `node.id`).
    pub node_id: i32,
    /// Address the Kafka listener binds.
    pub listen: String,
    /// host:port clients are told to connect to (Metadata). Empty = same as `listen`.
    pub advertised_listener: String,
    /// Admin HTTP address: Prometheus text at /metrics, tier status JSON at /v1/tier/status,
    /// /health. Empty = off. A port already taken is logged and the broker runs without it.
    pub http_listen: String,
    /// Root of all local state: partition logs, the Raft metadata log, cluster identity.
    pub data_dir: PathBuf,
    /// Address of the internal raft (gRPC) endpoint that brokers of one cluster, and
    /// `strata cluster` commands, reach each other on. Empty = none (a lone broker only). A
    /// lone broker that cannot bind it logs that and runs without it.
    pub raft_listen: String,
    /// The metadata quorum's voters in Kafka's `controller.quorum.voters` format,
    /// `id@host:port` with the voter's raft address. Empty = this broker alone is the voter.
    /// A broker whose `node_id` is not listed joins the voters' quorum as a learner. Read on a
    /// fresh data dir only; afterwards membership is changed with `strata cluster`.
    /// Environment: comma-separated.
    pub controller_quorum_voters: Vec<String>,
    /// Snapshot the metadata (and compact the Raft log) every this many applied entries.
    pub raft_snapshot_interval_entries: u64,
    /// Create a topic when a client names an unknown one in Metadata or Produce.
    pub auto_create_topics_enable: bool,
    /// Partition count of auto-created topics and of CreateTopics with num_partitions = -1.
    pub num_partitions: i32,
    /// Replication factor of new topics when the request leaves it to the broker.
    pub default_replication_factor: i16,
    /// Largest request frame accepted, in bytes (Kafka `socket.request.max.bytes`).
    pub socket_request_max_bytes: usize,
    /// Most client connections open at once; further connections wait in the accept queue.
    pub max_connections: usize,
    /// Bytes of requests one connection may have in flight (read but not yet answered). A
    /// single request larger than this is still read, alone.
    pub connection_max_inflight_bytes: usize,
    /// Requests one connection may have in flight (pipelining depth).
    pub connection_max_inflight_requests: usize,
    /// Default of topic `segment.bytes`: roll the active segment at this size.
    pub log_segment_bytes: i64,
    /// Default of topic `segment.ms`: roll the active segment at this age.
    pub log_roll_ms: i64,
    /// Default of topic `retention.ms` (-1 = keep forever).
    pub log_retention_ms: i64,
    /// Default of topic `retention.bytes` per partition (-1 = unlimited).
    pub log_retention_bytes: i64,
    /// How often retention is enforced.
    pub log_retention_check_interval_ms: u64,
    /// Default of topic `max.message.bytes`: largest record batch accepted.
    pub message_max_bytes: i32,
    /// Default of topic `message.timestamp.type`: `CreateTime` or `LogAppendTime`.
    pub log_message_timestamp_type: String,
    /// Default of topic `flush.messages`. 1 (the default) makes every acknowledged write
    /// durable: a Produce is answered only after an fsync (group commit) covering it. Larger
    /// values acknowledge from the page cache and fsync after this many messages.
    pub log_flush_interval_messages: i64,
    /// Default of topic `flush.ms`: with relaxed `flush.messages`, fsync at least this often.
    pub log_flush_interval_ms: i64,
    /// Default of topic `index.interval.bytes`: bytes between sparse offset index entries.
    pub log_index_interval_bytes: i32,
    /// Seconds to wait for in-flight requests on shutdown before closing connections.
    pub shutdown_timeout_secs: u64,
    /// Partitions of the internal `__consumer_offsets` topic (fixed once the topic exists).
    pub offsets_topic_num_partitions: i32,
    /// Committed offsets of a group with no members expire this long after its last commit.
    pub offsets_retention_minutes: i64,
    /// How often expired offsets are removed.
    pub offsets_retention_check_interval_ms: u64,
    /// Largest metadata string accepted with a committed offset.
    pub offset_metadata_max_bytes: usize,
    /// Shortest session timeout a consumer may ask for.
    pub group_min_session_timeout_ms: i32,
    /// Longest session timeout a consumer may ask for.
    pub group_max_session_timeout_ms: i32,
    /// How long the first rebalance of an empty group waits for more members to join, so
    /// consumers started together are assigned in one generation.
    pub group_initial_rebalance_delay_ms: i32,
    /// Most members one group may have.
    pub group_max_size: usize,
    /// An idempotent producer that has not written to a partition for this long is forgotten
    /// there (Kafka `producer.id.expiration.ms`); a retry arriving later is no longer
    /// recognised as a duplicate.
    pub producer_id_expiration_ms: i64,
    /// Session timeout of members of KIP-848 (`group.protocol=consumer`) groups.
    pub group_consumer_session_timeout_ms: i32,
    /// Heartbeat interval the coordinator gives KIP-848 group members.
    pub group_consumer_heartbeat_interval_ms: i32,
    /// Default of topic `remote.storage.enable`: archive sealed segments to the object store.
    /// The internal `__consumer_offsets` topic is never tiered.
    pub log_remote_storage_enable: bool,
    /// Default of topic `local.retention.ms` (-2 = the topic's `retention.ms`).
    pub log_local_retention_ms: i64,
    /// Default of topic `local.retention.bytes` (-2 = the topic's `retention.bytes`).
    pub log_local_retention_bytes: i64,
    /// Refuse produce requests (KAFKA_STORAGE_ERROR) while the data dir's file system has
    /// less than this many bytes free, so a long object-store outage (tiered topics keep
    /// local data until uploaded) never fills the disk. 0 = off.
    pub log_dir_min_free_bytes: u64,
    /// How much of each partition's newest data stays in the OS page cache once it is on disk;
    /// older written pages are released, and so is whatever a read of uncached (old) data
    /// brought in. Keeps the broker on recycled, warm pages instead of growing the page cache
    /// (see `log::pagecache`); consumers within the window of the log end read from memory.
    /// 0 = never release (Kafka's behaviour: everything stays until memory runs out).
    pub log_page_cache_window_bytes: u64,
    /// This broker's rack (Kafka `broker.rack`); replicas of a partition are spread over
    /// racks when brokers name them. Empty = no rack.
    pub broker_rack: String,
    /// How often this broker heartbeats to the controller through the metadata quorum.
    pub broker_heartbeat_interval_ms: u64,
    /// A broker whose heartbeats stop for this long is fenced: it leaves ISRs and its
    /// partitions elect new leaders.
    pub broker_session_timeout_ms: u64,
    /// Replication factor of the internal `__consumer_offsets` topic when it is created (the
    /// first broker to start creates it, so start the cluster's brokers together).
    pub offsets_topic_replication_factor: i16,
    /// Default of topic `min.insync.replicas`: in-sync replicas an acks=all write needs.
    pub min_insync_replicas: i32,
    /// A follower that has not caught up with its leader's log end for this long leaves the
    /// ISR (Kafka `replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: u64,
    /// Longest a follower's fetch waits at the leader for new data.
    pub replica_fetch_max_wait_ms: i32,
    /// Bytes a follower fetches per partition per request.
    pub replica_fetch_max_bytes: i32,
    /// Bytes a follower fetches per request, over all partitions.
    pub replica_fetch_response_max_bytes: i32,
    /// Tiered storage: the object store, uploads and the remote-read cache.
    pub tiering: tiering::TieringConfig,
    /// Named sets of topic configs (`[tier_profiles.<name>]`, Kafka names as keys) that a topic
    /// adopts with `strata.tier.profile=<name>`; the topic's own configs override them.
    pub tier_profiles: BTreeMap<String, BTreeMap<String, String>>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            listen: "127.0.0.1:9092".into(),
            advertised_listener: String::new(),
            http_listen: "127.0.0.1:9644".into(),
            data_dir: PathBuf::from("./data"),
            raft_listen: "127.0.0.1:9093".into(),
            controller_quorum_voters: Vec::new(),
            raft_snapshot_interval_entries: 1000,
            auto_create_topics_enable: true,
            num_partitions: 3,
            default_replication_factor: 1,
            socket_request_max_bytes: 100 * 1024 * 1024,
            max_connections: 10_000,
            connection_max_inflight_bytes: 64 * 1024 * 1024,
            connection_max_inflight_requests: 64,
            log_segment_bytes: 1024 * 1024 * 1024,
            log_roll_ms: 7 * 24 * 3600 * 1000,
            log_retention_ms: 7 * 24 * 3600 * 1000,
            log_retention_bytes: -1,
            log_retention_check_interval_ms: 5 * 60 * 1000,
            message_max_bytes: 1_048_588,
            log_message_timestamp_type: "CreateTime".into(),
            log_flush_interval_messages: 1,
            log_flush_interval_ms: 1000,
            log_index_interval_bytes: 4096,
            shutdown_timeout_secs: 5,
            offsets_topic_num_partitions: 50,
            offsets_retention_minutes: 7 * 24 * 60,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3000,
            group_max_size: i32::MAX as usize,
            producer_id_expiration_ms: 24 * 3600 * 1000,
            group_consumer_session_timeout_ms: 45_000,
            group_consumer_heartbeat_interval_ms: 5_000,
            log_remote_storage_enable: false,
            log_local_retention_ms: -2,
            log_local_retention_bytes: -2,
            log_dir_min_free_bytes: 64 * 1024 * 1024,
            log_page_cache_window_bytes: 64 * 1024 * 1024,
            broker_rack: String::new(),
            broker_heartbeat_interval_ms: 2000,
            broker_session_timeout_ms: 9000,
            offsets_topic_replication_factor: 1,
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_max_wait_ms: 500,
            replica_fetch_max_bytes: 1024 * 1024,
            replica_fetch_response_max_bytes: 10 * 1024 * 1024,
            tiering: tiering::TieringConfig::default(),
            tier_profiles: BTreeMap::new(),
        }
    }
}

/// Values given on the command line; `None` leaves the file/env value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub advertised_listener: Option<String>,
}

impl BrokerConfig {
    /// Loads the config with precedence file < env (`STRATA_<KEY>`) < flags.
    pub fn load(
        file: Option<&Path>,
        env: impl Iterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.into(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        let known = toml::Table::try_from(BrokerConfig::default())
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        let mut from_env = std::collections::HashSet::new();
        for (name, raw) in env {
            let Some(key) = name.strip_prefix("STRATA_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            let Some(default) = known.get(&key).filter(|v| !v.is_table()) else {
                // Other STRATA_* variables (test harness, tools) are not broker keys; sections
                // such as [tiering] are set in the file.
                continue;
            };
            table.insert(key.clone(), env_value(&key, &raw, default)?);
            from_env.insert(key);
        }
        let mut cfg: BrokerConfig = match table.clone().try_into() {
            Ok(cfg) => cfg,
            Err(e) => {
                let e: toml::de::Error = e;
                // The merged table carries no positions: find the key that fails on its own
                // so the message names it.
                let culprit = table.iter().find(|(k, v)| {
                    let mut one = known.clone();
                    one.insert((*k).clone(), (*v).clone());
                    one.try_into::<BrokerConfig>().is_err()
                });
                return Err(match culprit {
                    Some((k, v)) if from_env.contains(k) => ConfigError::Parse(format!(
                        "STRATA_{}={v}: {}",
                        k.to_ascii_uppercase(),
                        e.message()
                    )),
                    Some((k, v)) => ConfigError::Parse(format!("{k} = {v}: {}", e.message())),
                    None => ConfigError::Parse(e.message().to_string()),
                });
            }
        };
        if let Some(v) = &overrides.data_dir {
            cfg.data_dir = v.clone();
        }
        if let Some(v) = &overrides.listen {
            cfg.listen = v.clone();
        }
        if let Some(v) = &overrides.advertised_listener {
            cfg.advertised_listener = v.clone();
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.into(),
        };
        self.listen.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "listen",
                &format!("'{}' is not host:port ({e})", self.listen),
            )
        })?;
        if !self.advertised_listener.is_empty() {
            parse_host_port(&self.advertised_listener)
                .ok_or_else(|| invalid("advertised_listener", "expected host:port"))?;
        }
        if self.node_id < 0 {
            return Err(invalid("node_id", "must be >= 0"));
        }
        self.quorum()?;
        if self.num_partitions < 1 {
            return Err(invalid("num_partitions", "must be >= 1"));
        }
        if self.socket_request_max_bytes < 1024 {
            return Err(invalid("socket_request_max_bytes", "must be >= 1024"));
        }
        if !(1..=1000).contains(&self.offsets_topic_num_partitions) {
            return Err(invalid(
                "offsets_topic_num_partitions",
                "must be between 1 and 1000",
            ));
        }
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms {
            return Err(invalid(
                "group_min_session_timeout_ms",
                "must not exceed group_max_session_timeout_ms",
            ));
        }
        if self.max_connections == 0 || self.connection_max_inflight_requests == 0 {
            return Err(invalid("max_connections", "limits must be >= 1"));
        }
        if self.connection_max_inflight_bytes < 1024 {
            return Err(invalid("connection_max_inflight_bytes", "must be >= 1024"));
        }
        if self.broker_heartbeat_interval_ms == 0
            || self.broker_session_timeout_ms <= self.broker_heartbeat_interval_ms
        {
            return Err(invalid(
                "broker_session_timeout_ms",
                "must exceed broker_heartbeat_interval_ms, which must be >= 1",
            ));
        }
        if self.replica_lag_time_max_ms == 0
            || self.replica_fetch_max_wait_ms < 0
            || self.replica_fetch_max_bytes < 1024
            || self.replica_fetch_response_max_bytes < self.replica_fetch_max_bytes
        {
            return Err(invalid(
                "replica_fetch_max_bytes",
                "replica settings: lag time >= 1 ms, max wait >= 0, fetch max bytes >= 1024 and \
                 no larger than replica_fetch_response_max_bytes",
            ));
        }
        if self.offsets_topic_replication_factor < 1 {
            return Err(invalid("offsets_topic_replication_factor", "must be >= 1"));
        }
        if self.producer_id_expiration_ms < 1 {
            return Err(invalid("producer_id_expiration_ms", "must be >= 1"));
        }
        self.tiering
            .validate()
            .map_err(|reason| ConfigError::Invalid {
                key: "tiering",
                reason,
            })?;
        for (name, configs) in &self.tier_profiles {
            if configs.contains_key(topic::PROFILE) {
                return Err(ConfigError::Parse(format!(
                    "tier_profiles.{name}: a profile cannot name another profile"
                )));
            }
            topic::validate(configs)
                .map_err(|e| ConfigError::Parse(format!("tier_profiles.{name}: {e}")))?;
        }
        // Topic-level defaults go through the same validation as topic overrides.
        topic::TopicConfig::resolve(self, &Default::default())
            .map_err(|e| ConfigError::Parse(format!("topic defaults: {e}")))?;
        Ok(())
    }

    /// The metadata quorum settings, validated: voters well formed, and a raft address
    /// other brokers can reach whenever there are other brokers.
    pub fn quorum(&self) -> Result<crate::cluster::QuorumConfig, ConfigError> {
        let invalid = |key, reason: String| ConfigError::Invalid { key, reason };
        let voters = crate::cluster::voters::parse_voters(&self.controller_quorum_voters)
            .map_err(|e| invalid("controller_quorum_voters", e))?;
        if !self.raft_listen.is_empty() {
            self.raft_listen.parse::<SocketAddr>().map_err(|e| {
                invalid(
                    "raft_listen",
                    format!("'{}' is not host:port ({e})", self.raft_listen),
                )
            })?;
        }
        let node_id = self.node_id as u64;
        if !voters.is_empty() {
            if self.raft_listen.is_empty() {
                return Err(invalid(
                    "raft_listen",
                    "must be set when controller_quorum_voters lists voters".into(),
                ));
            }
            // A learner tells the voters its raft_listen as its address.
            let unspecified = self
                .raft_listen
                .parse::<SocketAddr>()
                .is_ok_and(|a| a.ip().is_unspecified());
            if !voters.contains_key(&node_id) && unspecified {
                return Err(invalid(
                    "raft_listen",
                    format!(
                        "node {node_id} is not a voter, so it joins as a learner and tells the voters \
                         its raft_listen: '{}' is not an address they can reach",
                        self.raft_listen
                    ),
                ));
            }
        }
        if self.raft_snapshot_interval_entries < 1 {
            return Err(invalid(
                "raft_snapshot_interval_entries",
                "must be >= 1".into(),
            ));
        }
        Ok(crate::cluster::QuorumConfig {
            node_id,
            raft_listen: self.raft_listen.clone(),
            voters,
            snapshot_interval_entries: self.raft_snapshot_interval_entries,
            quorum_timeout: std::time::Duration::from_secs(60),
        })
    }

    /// The (host, port) advertised to clients.
    pub fn advertised(&self) -> (String, i32) {
        let text = if self.advertised_listener.is_empty() {
            &self.listen
        } else {
            &self.advertised_listener
        };
        parse_host_port(text).unwrap_or_else(|| ("127.0.0.1".into(), 9092))
    }
}

fn parse_host_port(s: &str) -> Option<(String, i32)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), i32::from(port)))
}

/// Parses an environment value with the type of the key's default.
fn env_value(key: &str, raw: &str, default: &toml::Value) -> Result<toml::Value, ConfigError> {
    let bad = |what: &str| {
        ConfigError::Parse(format!(
            "STRATA_{}='{raw}': expected {what}",
            key.to_ascii_uppercase()
        ))
    };
    Ok(match default {
        toml::Value::Integer(_) => {
            toml::Value::Integer(raw.trim().parse().map_err(|_| bad("an integer"))?)
        }
        toml::Value::Boolean(_) => {
            toml::Value::Boolean(raw.trim().parse().map_err(|_| bad("true or false"))?)
        }
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        _ => toml::Value::String(raw.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn precedence_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.toml");
        std::fs::write(&path, "num_partitions = 7\nlisten = \"127.0.0.1:1000\"\n").unwrap();
        let cfg = BrokerConfig::load(Some(&path), env(&[]), &Overrides::default()).unwrap();
        assert_eq!(
            (cfg.num_partitions, cfg.listen.as_str()),
            (7, "127.0.0.1:1000")
        );
        let cfg = BrokerConfig::load(
            Some(&path),
            env(&[
                ("STRATA_NUM_PARTITIONS", "9"),
                ("STRATA_LISTEN", "127.0.0.1:2000"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            (cfg.num_partitions, cfg.listen.as_str()),
            (9, "127.0.0.1:2000")
        );
        let flags = Overrides {
            listen: Some("127.0.0.1:3000".into()),
            ..Default::default()
        };
        let cfg = BrokerConfig::load(
            Some(&path),
            env(&[("STRATA_LISTEN", "127.0.0.1:2000")]),
            &flags,
        )
        .unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:3000");
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.toml");
        std::fs::write(&path, "num_partitons = 7\n").unwrap();
        assert!(BrokerConfig::load(Some(&path), env(&[]), &Overrides::default()).is_err());
        assert!(BrokerConfig::load(
            None,
            env(&[("STRATA_NUM_PARTITIONS", "x")]),
            &Overrides::default()
        )
        .is_err());
        assert!(BrokerConfig::load(
            None,
            env(&[("STRATA_NUM_PARTITIONS", "0")]),
            &Overrides::default()
        )
        .is_err());
        assert!(BrokerConfig::load(
            None,
            env(&[("STRATA_LISTEN", "nope")]),
            &Overrides::default()
        )
        .is_err());
        assert!(BrokerConfig::load(
            None,
            env(&[("STRATA_LOG_MESSAGE_TIMESTAMP_TYPE", "Sometime")]),
            &Overrides::default()
        )
        .is_err());
    }

    #[test]
    fn type_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.toml");
        std::fs::write(&path, "num_partitions = \"four\"\n").unwrap();
        let e = BrokerConfig::load(Some(&path), env(&[]), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("num_partitions"), "{e}");
        let e = BrokerConfig::load(
            None,
            env(&[("STRATA_NUM_PARTITIONS", "99999999999")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("STRATA_NUM_PARTITIONS"), "{e}");
    }

    #[test]
    fn quorum_voters_from_file_and_env() {
        let cfg = BrokerConfig::load(None, env(&[]), &Overrides::default()).unwrap();
        let q = cfg.quorum().unwrap();
        assert!(q.voters.is_empty());
        assert_eq!(q.raft_listen, "127.0.0.1:9093");
        assert_eq!(q.snapshot_interval_entries, 1000);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.toml");
        std::fs::write(
            &path,
            "node_id = 2\ncontroller_quorum_voters = [\"1@h1:9093\", \"2@h2:9093\"]\n",
        )
        .unwrap();
        let cfg = BrokerConfig::load(Some(&path), env(&[]), &Overrides::default()).unwrap();
        let q = cfg.quorum().unwrap();
        assert_eq!(q.node_id, 2);
        assert_eq!(q.voters.len(), 2);
        assert_eq!(q.voters[&1], "h1:9093");

        let cfg = BrokerConfig::load(
            None,
            env(&[
                ("STRATA_CONTROLLER_QUORUM_VOTERS", "1@a:1, 2@b:2,3@c:3"),
                ("STRATA_RAFT_LISTEN", "127.0.0.1:19093"),
                ("STRATA_RAFT_SNAPSHOT_INTERVAL_ENTRIES", "50"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        let q = cfg.quorum().unwrap();
        assert_eq!(q.voters.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(q.voters[&3], "c:3");
        assert_eq!(q.raft_listen, "127.0.0.1:19093");
        assert_eq!(q.snapshot_interval_entries, 50);

        // Not a voter: a learner, which is fine.
        let cfg = BrokerConfig::load(
            None,
            env(&[
                ("STRATA_NODE_ID", "9"),
                ("STRATA_CONTROLLER_QUORUM_VOTERS", "1@a:1"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert!(!cfg.quorum().unwrap().voters.contains_key(&9));
    }

    #[test]
    fn quorum_voters_errors_are_clear() {
        let load = |pairs: &[(&str, &str)]| {
            BrokerConfig::load(None, env(pairs), &Overrides::default())
                .unwrap_err()
                .to_string()
        };
        let e = load(&[("STRATA_CONTROLLER_QUORUM_VOTERS", "1@a:1,b:2")]);
        assert!(
            e.contains("controller_quorum_voters") && e.contains("'b:2' is not id@host:port"),
            "{e}"
        );
        let e = load(&[("STRATA_CONTROLLER_QUORUM_VOTERS", "1@a:1,1@b:2")]);
        assert!(e.contains("node id 1 is listed twice"), "{e}");
        let e = load(&[
            ("STRATA_CONTROLLER_QUORUM_VOTERS", "1@a:1"),
            ("STRATA_RAFT_LISTEN", ""),
        ]);
        assert!(
            e.contains("raft_listen") && e.contains("must be set"),
            "{e}"
        );
        let e = load(&[
            ("STRATA_NODE_ID", "4"),
            ("STRATA_CONTROLLER_QUORUM_VOTERS", "1@a:1"),
            ("STRATA_RAFT_LISTEN", "0.0.0.0:9093"),
        ]);
        assert!(e.contains("joins as a learner"), "{e}");
        let e = load(&[("STRATA_RAFT_LISTEN", "nope")]);
        assert!(e.contains("raft_listen"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.toml");
        std::fs::write(&path, "controller_quorum_voters = \"1@a:1\"\n").unwrap();
        let e = BrokerConfig::load(Some(&path), env(&[]), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("controller_quorum_voters"), "{e}");
    }

    #[test]
    fn advertised_defaults_to_listen() {
        let cfg = BrokerConfig::default();
        assert_eq!(cfg.advertised(), ("127.0.0.1".to_string(), 9092));
        let cfg = BrokerConfig {
            advertised_listener: "[::1]:19092".into(),
            ..cfg
        };
        assert_eq!(cfg.advertised(), ("::1".to_string(), 19092));
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    /// config/strata.toml documents every key with its default; keep it that way.
    #[test]
    fn example_lists_every_key_with_its_default() {
        let text = include_str!("../../config/strata.toml");
        let file: toml::Table = text.parse().unwrap();
        let defaults = toml::Table::try_from(BrokerConfig::default()).unwrap();
        assert_eq!(file, defaults);
    }
}
