//! What a load test needs to know about the cluster: brokers, partition leaders, topic
//! creation (CreateTopics), and partition offsets (ListOffsets).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, ListOffsetsRequest, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::connection::Connection;

/// ListOffsets timestamps with special meaning.
pub const EARLIEST: i64 = -2;
pub const LATEST: i64 = -1;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const LEADER_NOT_AVAILABLE: i16 = 5;
const TOPIC_ALREADY_EXISTS: i16 = 36;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub index: i32,
    pub leader: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: Vec<PartitionInfo>,
}

impl TopicInfo {
    pub fn leader_of(&self, partition: i32) -> Option<i32> {
        self.partitions
            .iter()
            .find(|p| p.index == partition)
            .map(|p| p.leader)
    }
}

pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(ResponseError::Unknown(_)) | None => format!("error code {code}"),
        Some(e) => format!("{e:?} ({code})"),
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub struct Cluster {
    bootstrap: Connection,
    brokers: BTreeMap<i32, String>,
}

impl Cluster {
    /// Connects to the first reachable of the comma-separated `bootstrap` addresses.
    pub async fn connect(bootstrap: &str) -> Result<Self> {
        let mut last_err = anyhow!("no bootstrap server given");
        for addr in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match Connection::connect(addr, 4).await {
                Ok(conn) => {
                    let mut cluster = Self {
                        bootstrap: conn,
                        brokers: BTreeMap::new(),
                    };
                    cluster.metadata(None).await?;
                    return Ok(cluster);
                }
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    pub fn broker_addr(&self, id: i32) -> Result<&str> {
        self.brokers
            .get(&id)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("broker {id} is not in the cluster metadata"))
    }

    /// A new connection to broker `id`.
    pub async fn connect_to(&self, id: i32, max_in_flight: usize) -> Result<Connection> {
        Connection::connect(self.broker_addr(id)?, max_in_flight).await
    }

    async fn metadata(&mut self, topic: Option<&str>) -> Result<MetadataResponse> {
        let version = self.bootstrap.version(ApiKey::Metadata)?;
        let topics = topic
            .map(|t| vec![MetadataRequestTopic::default().with_name(Some(topic_name(t)))])
            .unwrap_or_default();
        let mut req = MetadataRequest::default().with_topics(Some(topics));
        if version >= 4 {
            req = req.with_allow_auto_topic_creation(false);
        }
        let resp = self.bootstrap.call(&req).await?;
        self.brokers = resp
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        Ok(resp)
    }

    /// The topic with every partition's leader, `None` if it does not exist, or an error if
    /// some partition has no leader yet.
    pub async fn topic(&mut self, name: &str) -> Result<Option<TopicInfo>> {
        let resp = self.metadata(Some(name)).await?;
        let t = resp
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(name))
            .ok_or_else(|| anyhow!("metadata response without topic {name}"))?;
        match t.error_code {
            0 => {}
            UNKNOWN_TOPIC_OR_PARTITION => return Ok(None),
            code => bail!("metadata for {name}: {}", error_name(code)),
        }
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            if p.error_code != 0 && p.error_code != LEADER_NOT_AVAILABLE {
                bail!("{name}-{}: {}", p.partition_index, error_name(p.error_code));
            }
            if p.leader_id.0 < 0 || !self.brokers.contains_key(&p.leader_id.0) {
                bail!("{name}-{} has no leader yet", p.partition_index);
            }
            partitions.push(PartitionInfo {
                index: p.partition_index,
                leader: p.leader_id.0,
            });
        }
        partitions.sort_by_key(|p| p.index);
        if partitions.is_empty() {
            bail!("{name} has no partitions yet");
        }
        Ok(Some(TopicInfo {
            name: name.to_string(),
            partitions,
        }))
    }

    /// The topic, retrying until every partition has a leader or `timeout` passes.
    pub async fn wait_for_topic(&mut self, name: &str, timeout: Duration) -> Result<TopicInfo> {
        let deadline = Instant::now() + timeout;
        loop {
            let err = match self.topic(name).await {
                Ok(Some(t)) => return Ok(t),
                Ok(None) => anyhow!("topic {name} does not exist"),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(err.context(format!("waiting {timeout:?} for topic {name}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates the topic with `partitions` partitions and `configs` unless it exists, then
    /// waits for its leaders. An existing topic is used as it is.
    pub async fn ensure_topic(
        &mut self,
        name: &str,
        partitions: u32,
        configs: &[(String, String)],
    ) -> Result<TopicInfo> {
        if let Ok(Some(t)) = self.topic(name).await {
            return Ok(t);
        }
        let version = self.bootstrap.version(ApiKey::CreateTopics)?;
        let topic = CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions as i32)
            // -1 (the broker's default) needs v4+.
            .with_replication_factor(if version >= 4 { -1 } else { 1 })
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_value(Some(StrBytes::from_string(v.clone())))
                    })
                    .collect(),
            );
        let req = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(30_000);
        let resp = self.bootstrap.call(&req).await?;
        for t in &resp.topics {
            match t.error_code {
                0 | TOPIC_ALREADY_EXISTS => {}
                code => bail!(
                    "creating topic {name}: {}{}",
                    error_name(code),
                    t.error_message
                        .as_ref()
                        .map(|m| format!(": {}", m.as_str()))
                        .unwrap_or_default()
                ),
            }
        }
        self.wait_for_topic(name, Duration::from_secs(30)).await
    }

    /// Offsets of `partitions` of `topic` at `timestamp` (EARLIEST, LATEST), asking each leader.
    pub async fn list_offsets(
        &self,
        topic: &TopicInfo,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<BTreeMap<i32, i64>> {
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &p in partitions {
            let leader = topic
                .leader_of(p)
                .ok_or_else(|| anyhow!("{}-{p} does not exist", topic.name))?;
            by_leader.entry(leader).or_default().push(p);
        }
        let mut out = BTreeMap::new();
        for (leader, parts) in by_leader {
            let conn = self.connect_to(leader, 1).await?;
            let req = ListOffsetsRequest::default()
                .with_replica_id((-1).into())
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(topic_name(&topic.name))
                    .with_partitions(
                        parts
                            .iter()
                            .map(|&p| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(p)
                                    .with_timestamp(timestamp)
                            })
                            .collect(),
                    )]);
            let resp = conn.call(&req).await?;
            for t in resp.topics {
                for p in t.partitions {
                    if p.error_code != 0 {
                        bail!(
                            "ListOffsets {}-{}: {}",
                            topic.name,
                            p.partition_index,
                            error_name(p.error_code)
                        );
                    }
                    out.insert(p.partition_index, p.offset);
                }
            }
        }
        for p in partitions {
            if !out.contains_key(p) {
                bail!("ListOffsets returned nothing for {}-{p}", topic.name);
            }
        }
        Ok(out)
    }
}

/// Parses `key=value` topic configs.
pub fn parse_configs(items: &[String]) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .filter(|(k, _)| !k.is_empty())
                .with_context(|| format!("topic config {s:?} is not key=value"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_configs_are_key_value() {
        let got = parse_configs(&["flush.messages=100000".into(), " a = b ".into()]).unwrap();
        assert_eq!(
            got,
            vec![
                ("flush.messages".into(), "100000".into()),
                ("a".into(), "b".into())
            ]
        );
        assert!(parse_configs(&["novalue".into()]).is_err());
        assert!(parse_configs(&["=x".into()]).is_err());
    }

    #[test]
    fn error_names() {
        assert_eq!(error_name(3), "UnknownTopicOrPartition (3)");
        assert_eq!(error_name(-12345), "error code -12345");
    }
}
