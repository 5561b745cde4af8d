//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics (stored in the
//! metadata quorum) and, read-only, for the broker.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};

use super::error::ServeError;
use super::{str_bytes, ApiError, Ctx, Reply};
use crate::broker::Broker;
use crate::cluster::MetadataCommand;
use crate::config::topic::{self, Source, TopicConfig};

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

pub fn describe(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: DescribeConfigsRequest,
) -> Result<Reply, ApiError> {
    let mut results = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let wanted = |name: &str| {
            r.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
        };
        let mut result = DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let entries = match r.resource_type {
            TOPIC => match broker.metadata.image().topic(&r.resource_name) {
                Some(meta) => Ok(topic::effective(&broker.config, &meta.configs)
                    .into_iter()
                    .filter(|(name, _)| wanted(name))
                    .map(|(name, (value, source))| {
                        let kind = topic::def(name).map(|d| d.kind as i8).unwrap_or(0);
                        entry(
                            name,
                            value,
                            source,
                            false,
                            kind,
                            topic::def(name).map(|d| d.doc),
                        )
                    })
                    .chain(
                        tier_sizes(broker, meta)
                            .into_iter()
                            .filter(|e| wanted(e.name.as_str())),
                    )
                    .collect()),
                None => Err(ServeError::UnknownTopicOrPartition(
                    r.resource_name.to_string(),
                )),
            },
            BROKER
                if r.resource_name.is_empty()
                    || r.resource_name.as_str() == broker.node_id.to_string() =>
            {
                Ok(broker_entries(broker)
                    .into_iter()
                    .filter(|e| wanted(e.name.as_str()))
                    .collect())
            }
            BROKER => Err(ServeError::InvalidRequest(format!(
                "unknown broker '{}'",
                r.resource_name
            ))),
            other => Err(ServeError::UnsupportedResource(format!(
                "resource type {other} is not supported"
            ))),
        };
        match entries {
            Ok(configs) => result = result.with_configs(configs),
            Err(e) => {
                result = result
                    .with_error_code(e.code())
                    .with_error_message(Some(str_bytes(e.to_string())))
            }
        }
        results.push(result);
    }
    ctx.reply(&DescribeConfigsResponse::default().with_results(results))
}

/// Read-only entries with the bytes a tiered topic holds in each tier (all partitions), so
/// config-describing tools show both tiers. Absent for topics that were never tiered.
fn tier_sizes(
    broker: &Broker,
    meta: &crate::cluster::TopicMeta,
) -> Vec<DescribeConfigsResourceResult> {
    let image = broker.metadata.image();
    let Some(hosted) = broker.logs.topic(&meta.name) else {
        return Vec::new();
    };
    let tiered =
        hosted.partitions.values().any(|p| p.tiered()) || image.remote.contains_key(&meta.id);
    if !tiered {
        return Vec::new();
    }
    let local: u64 = hosted.partitions.values().map(|p| p.size_bytes()).sum();
    let remote: u64 = image.remote.get(&meta.id).map_or(0, |parts| {
        parts.values().map(|r| r.manifest.size_bytes()).sum()
    });
    vec![
        entry(
            "strata.local.size.bytes",
            local.to_string(),
            Source::DefaultConfig,
            true,
            topic::Kind::Long as i8,
            Some("Read-only: bytes of this topic's segments on local disk, all partitions."),
        ),
        entry(
            "strata.remote.size.bytes",
            remote.to_string(),
            Source::DefaultConfig,
            true,
            topic::Kind::Long as i8,
            Some("Read-only: bytes of this topic's archived Parquet objects, all partitions."),
        ),
    ]
}

fn entry(
    name: &str,
    value: String,
    source: Source,
    read_only: bool,
    kind: i8,
    doc: Option<&str>,
) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(value)))
        .with_read_only(read_only)
        .with_config_source(source as i8)
        .with_config_type(kind)
        .with_documentation(doc.map(str_bytes))
}

/// The broker's static settings, under Kafka-style dotted names.
fn broker_entries(broker: &Broker) -> Vec<DescribeConfigsResourceResult> {
    let current = toml::Table::try_from(&broker.config).unwrap_or_default();
    let defaults =
        toml::Table::try_from(crate::config::BrokerConfig::default()).unwrap_or_default();
    current
        .iter()
        .map(|(k, v)| {
            let value = match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let source = if defaults.get(k) == Some(v) {
                Source::DefaultConfig
            } else {
                Source::StaticBrokerConfig
            };
            entry(&k.replace('_', "."), value, source, true, 0, None)
        })
        .collect()
}

/// Validates and stores a topic's complete new set of overrides.
async fn set_topic_configs(
    broker: &Broker,
    name: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), ServeError> {
    let new = TopicConfig::resolve(&broker.config, &configs)?;
    // Kafka's rule: tiering cannot be turned off on a topic that has archived data (its
    // retention could then no longer reach the archive).
    let image = broker.metadata.image();
    let archived = image.topic(name).is_some_and(|m| {
        image
            .remote
            .get(&m.id)
            .is_some_and(|parts| parts.values().any(|r| !r.manifest.segments.is_empty()))
    });
    if archived && !new.remote_storage_enable {
        return Err(crate::config::topic::TopicConfigError::Invalid {
            name: "remote.storage.enable".into(),
            value: "false".into(),
            reason: "the topic has data in the object store; tiering cannot be disabled on it \
                     (delete the topic, or lower retention.ms to let the archive expire)"
                .into(),
        }
        .into());
    }
    if validate_only {
        return Ok(());
    }
    broker
        .metadata
        .propose(MetadataCommand::SetTopicConfigs {
            name: name.to_string(),
            configs,
        })
        .await?;
    broker.sync_logs()?;
    tracing::info!(topic = %name, "altered topic configs");
    Ok(())
}

fn topic_overrides(
    broker: &Broker,
    resource_type: i8,
    name: &str,
) -> Result<BTreeMap<String, String>, ServeError> {
    match resource_type {
        TOPIC => broker
            .metadata
            .image()
            .topic(name)
            .map(|m| m.configs.clone())
            .ok_or_else(|| ServeError::UnknownTopicOrPartition(name.to_string())),
        BROKER => Err(ServeError::UnsupportedResource(
            "broker configs are static: change the config file or STRATA_* environment and restart"
                .into(),
        )),
        other => Err(ServeError::UnsupportedResource(format!(
            "resource type {other} is not supported"
        ))),
    }
}

pub async fn alter(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: AlterConfigsRequest,
) -> Result<Reply, ApiError> {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        // Legacy AlterConfigs replaces the whole set of overrides.
        let outcome = match topic_overrides(broker, r.resource_type, &r.resource_name) {
            Ok(_) => {
                let configs = r
                    .configs
                    .iter()
                    .filter_map(|c| {
                        c.value
                            .as_ref()
                            .map(|v| (c.name.to_string(), v.to_string()))
                    })
                    .collect();
                set_topic_configs(broker, &r.resource_name, configs, req.validate_only).await
            }
            Err(e) => Err(e),
        };
        let mut resp = alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name);
        if let Err(e) = outcome {
            resp = resp
                .with_error_code(e.code())
                .with_error_message(Some(str_bytes(e.to_string())));
        }
        responses.push(resp);
    }
    ctx.reply(&AlterConfigsResponse::default().with_responses(responses))
}

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

pub async fn incremental_alter(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: IncrementalAlterConfigsRequest,
) -> Result<Reply, ApiError> {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let outcome = async {
            let mut configs = topic_overrides(broker, r.resource_type, &r.resource_name)?;
            for c in &r.configs {
                let name = c.name.to_string();
                let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
                if topic::def(&name).is_none() {
                    return Err(crate::config::topic::TopicConfigError::Unknown(name).into());
                }
                match c.config_operation {
                    SET => {
                        configs.insert(name, value);
                    }
                    DELETE => {
                        configs.remove(&name);
                    }
                    APPEND | SUBTRACT => {
                        let current = topic::effective(&broker.config, &configs)
                            .get(name.as_str())
                            .map(|(v, _)| v.clone())
                            .unwrap_or_default();
                        let mut items: Vec<String> = current
                            .split(',')
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect();
                        for v in value.split(',').filter(|s| !s.is_empty()) {
                            if c.config_operation == APPEND && !items.iter().any(|i| i == v) {
                                items.push(v.to_string());
                            } else if c.config_operation == SUBTRACT {
                                items.retain(|i| i != v);
                            }
                        }
                        configs.insert(name, items.join(","));
                    }
                    op => {
                        return Err(ServeError::InvalidRequest(format!(
                            "unknown config operation {op}"
                        )))
                    }
                }
            }
            set_topic_configs(broker, &r.resource_name, configs, req.validate_only).await
        }
        .await;
        let mut resp = incremental_alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name);
        if let Err(e) = outcome {
            resp = resp
                .with_error_code(e.code())
                .with_error_message(Some(str_bytes(e.to_string())));
        }
        responses.push(resp);
    }
    ctx.reply(&IncrementalAlterConfigsResponse::default().with_responses(responses))
}
