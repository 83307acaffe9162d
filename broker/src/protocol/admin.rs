//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs,
//! IncrementalAlterConfigs, AlterConfigs, DeleteRecords, DescribeCluster.
//!
//! Changes are requests to the active controller through the metadata plane, from any broker
//! (Kafka forwards them to the controller); the answer comes once the change is committed and
//! applied on this broker. Descriptions read the cluster image this broker applied.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use std::collections::BTreeMap;

use super::authorized_operations::Resource;
use super::{errors, RequestContext};
use crate::config::{ConfigEntry, TopicConfigs, TOPIC_CONFIG_NAMES};
use crate::controller::request::{
    ControllerReply, ControllerRequest, CreatedTopic, NewPartitions, NewTopic, TopicError, TopicRef,
};

/// DescribeConfigs / IncrementalAlterConfigs resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// DescribeConfigs config sources.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

fn message(s: impl ToString) -> Option<StrBytes> {
    Some(StrBytes::from_string(s.to_string()))
}

/// The configs CreateTopics v5+ answers for a created topic: every topic config, with its
/// source.
fn created_configs(
    ctx: &RequestContext,
    overrides: &BTreeMap<String, String>,
) -> Vec<CreatableTopicConfigs> {
    let configs = TopicConfigs {
        overrides: overrides.clone(),
    };
    configs
        .describe(&ctx.broker.config)
        .into_iter()
        .map(|entry| {
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_string(entry.name))
                .with_value(Some(StrBytes::from_string(entry.value)))
                .with_config_source(if entry.is_default {
                    SOURCE_DEFAULT
                } else {
                    SOURCE_DYNAMIC_TOPIC
                })
        })
        .collect()
}

/// Explicit replica assignments, by partition index (`None`: the request's indexes are not
/// 0, 1, 2, ... once sorted, which Kafka refuses).
fn assignments(
    wanted: impl Iterator<Item = (i32, Vec<BrokerId>)>,
) -> Option<Vec<crate::controller::image::Assignment>> {
    let mut by_index: Vec<(i32, Vec<BrokerId>)> = wanted.collect();
    by_index.sort_by_key(|(index, _)| *index);
    by_index
        .iter()
        .enumerate()
        .all(|(i, (index, _))| *index == i as i32)
        .then(|| {
            by_index
                .into_iter()
                .map(|(_, brokers)| brokers.into_iter().map(|b| b.0).collect())
                .collect()
        })
}

pub async fn create_topics(
    ctx: &RequestContext,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut results: Vec<CreatableTopicResult> = Vec::new();
    let mut new_topics = Vec::new();
    // Index into `results` of each topic sent to the controller.
    let mut sent = Vec::new();
    for topic in &request.topics {
        let result = CreatableTopicResult::default().with_name(topic.name.clone());
        let Some(assignments) = assignments(
            topic
                .assignments
                .iter()
                .map(|a| (a.partition_index, a.broker_ids.clone())),
        ) else {
            results.push(
                result
                    .with_error_code(ResponseError::InvalidReplicaAssignment.code())
                    .with_error_message(message("partition indexes must be 0, 1, 2, ...")),
            );
            continue;
        };
        sent.push(results.len());
        results.push(result);
        new_topics.push(NewTopic {
            name: topic.name.to_string(),
            num_partitions: topic.num_partitions,
            replication_factor: topic.replication_factor,
            assignments,
            configs: topic
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), v.to_string()))
                })
                .collect(),
        });
    }
    let configs: Vec<BTreeMap<String, String>> =
        new_topics.iter().map(|t| t.configs.clone()).collect();
    let outcome = if new_topics.is_empty() {
        Ok(Vec::new())
    } else {
        match ctx
            .broker
            .submit(ControllerRequest::CreateTopics {
                topics: new_topics,
                validate_only: request.validate_only,
            })
            .await
        {
            Ok(ControllerReply::CreateTopics(per_topic)) => Ok(per_topic),
            Ok(other) => panic!("the controller answered CreateTopics with {other:?}"),
            Err(e) => Err(e),
        }
    };
    for (n, &at) in sent.iter().enumerate() {
        let outcome: Result<&CreatedTopic, (ResponseError, String)> = match &outcome {
            Ok(per_topic) => per_topic[n]
                .1
                .as_ref()
                .map_err(|e| (errors::topic(e), e.to_string())),
            Err(e) => Err((errors::admin(e), e.to_string())),
        };
        let mut result = std::mem::take(&mut results[at]);
        match outcome {
            Ok(created) => {
                if ctx.version >= 5 {
                    result = result
                        .with_num_partitions(created.num_partitions)
                        .with_replication_factor(created.replication_factor)
                        .with_configs(Some(created_configs(ctx, &configs[n])));
                }
                if ctx.version >= 7 {
                    result = result.with_topic_id(created.id);
                }
            }
            Err((error, text)) => {
                result = result
                    .with_error_code(error.code())
                    .with_error_message(message(text));
                if ctx.version >= 5 {
                    result = result.with_num_partitions(-1).with_replication_factor(-1);
                }
            }
        }
        results[at] = result;
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub async fn delete_topics(
    ctx: &RequestContext,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // v0-5 name topics in `topic_names`; v6+ in `topics` (by name or id).
    let mut wanted: Vec<TopicRef> = request
        .topic_names
        .iter()
        .map(|n| TopicRef::Name(n.to_string()))
        .collect();
    wanted.extend(request.topics.iter().map(|t| match &t.name {
        Some(name) => TopicRef::Name(name.to_string()),
        None => TopicRef::Id(t.topic_id),
    }));
    let image = ctx.broker.image();
    let names: Vec<Option<String>> = wanted
        .iter()
        .map(|r| match r {
            TopicRef::Name(name) => Some(name.clone()),
            TopicRef::Id(id) => image.topic_names.get(id).cloned(),
        })
        .collect();
    let outcome = if wanted.is_empty() {
        Ok(Vec::new())
    } else {
        match ctx
            .broker
            .submit(ControllerRequest::DeleteTopics {
                topics: wanted.clone(),
            })
            .await
        {
            Ok(ControllerReply::DeleteTopics(per_topic)) => Ok(per_topic),
            Ok(other) => panic!("the controller answered DeleteTopics with {other:?}"),
            Err(e) => Err(e),
        }
    };
    let mut responses = Vec::new();
    for (n, (topic_ref, name)) in wanted.iter().zip(names).enumerate() {
        let mut result = DeletableTopicResult::default()
            .with_name(name.map(|n| TopicName(StrBytes::from_string(n))));
        let outcome: Result<uuid::Uuid, (ResponseError, String)> = match &outcome {
            Ok(per_topic) => per_topic[n].1.as_ref().copied().map_err(|e| {
                let error = match (e, topic_ref) {
                    (TopicError::UnknownTopic, TopicRef::Id(_)) => ResponseError::UnknownTopicId,
                    _ => errors::topic(e),
                };
                (error, e.to_string())
            }),
            Err(e) => Err((errors::admin(e), e.to_string())),
        };
        match outcome {
            Ok(topic_id) => {
                if ctx.version >= 6 {
                    result = result.with_topic_id(topic_id);
                }
            }
            Err((error, text)) => {
                result = result.with_error_code(error.code());
                if ctx.version >= 5 {
                    result = result.with_error_message(message(text));
                }
            }
        }
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(
    ctx: &RequestContext,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let wanted: Vec<NewPartitions> = request
        .topics
        .iter()
        .map(|topic| NewPartitions {
            topic: topic.name.to_string(),
            count: topic.count,
            assignments: topic
                .assignments
                .iter()
                .flatten()
                .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                .collect(),
        })
        .collect();
    let outcome = if wanted.is_empty() {
        Ok(Vec::new())
    } else {
        match ctx
            .broker
            .submit(ControllerRequest::CreatePartitions {
                topics: wanted,
                validate_only: request.validate_only,
            })
            .await
        {
            Ok(ControllerReply::CreatePartitions(per_topic)) => Ok(per_topic),
            Ok(other) => panic!("the controller answered CreatePartitions with {other:?}"),
            Err(e) => Err(e),
        }
    };
    let mut results = Vec::new();
    for (n, topic) in request.topics.iter().enumerate() {
        let mut result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        let failed = match &outcome {
            Ok(per_topic) => per_topic[n]
                .1
                .as_ref()
                .err()
                .map(|e| (errors::topic(e), e.to_string())),
            Err(e) => Some((errors::admin(e), e.to_string())),
        };
        if let Some((error, text)) = failed {
            result = result
                .with_error_code(error.code())
                .with_error_message(message(text));
        }
        results.push(result);
    }
    CreatePartitionsResponse::default().with_results(results)
}

pub async fn describe_configs(
    ctx: &RequestContext,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut results = Vec::new();
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let wanted = |name: &str| {
            resource
                .configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
        };
        let entries: Result<Vec<ConfigEntry>, (ResponseError, String)> = match resource
            .resource_type
        {
            RESOURCE_TOPIC => match ctx.broker.image().topic(resource.resource_name.as_str()) {
                Some(topic) => Ok(TopicConfigs {
                    overrides: topic.configs.clone(),
                }
                .describe(&ctx.broker.config)),
                None => Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!("unknown topic {}", resource.resource_name.as_str()),
                )),
            },
            RESOURCE_BROKER => {
                let config = &ctx.broker.config;
                Ok(vec![
                    ConfigEntry::new("broker.id", config.node_id.to_string(), false),
                    ConfigEntry::new("num.partitions", config.num_partitions.to_string(), false),
                    ConfigEntry::new(
                        "auto.create.topics.enable",
                        config.auto_create_topics.to_string(),
                        false,
                    ),
                    ConfigEntry::new(
                        "socket.request.max.bytes",
                        config.socket_request_max_bytes.to_string(),
                        false,
                    ),
                    ConfigEntry::new(
                        "message.max.bytes",
                        config.message_max_bytes.to_string(),
                        false,
                    ),
                    ConfigEntry::new(
                        "log.segment.bytes",
                        config.log_segment_bytes.to_string(),
                        false,
                    ),
                    ConfigEntry::new(
                        "log.retention.ms",
                        config.log_retention_ms.to_string(),
                        false,
                    ),
                    ConfigEntry::new(
                        "log.retention.bytes",
                        config.log_retention_bytes.to_string(),
                        false,
                    ),
                ])
            }
            other => Err((
                ResponseError::InvalidRequest,
                format!("unsupported resource type {other}"),
            )),
        };
        match entries {
            Ok(entries) => {
                result = result.with_configs(
                    entries
                        .into_iter()
                        .filter(|entry| wanted(&entry.name))
                        .map(
                            |ConfigEntry {
                                 name,
                                 value,
                                 is_default,
                             }| {
                                let source = match (resource.resource_type, is_default) {
                                    (RESOURCE_TOPIC, false) => SOURCE_DYNAMIC_TOPIC,
                                    (RESOURCE_TOPIC, true) => SOURCE_DEFAULT,
                                    _ => 4, // STATIC_BROKER_CONFIG
                                };
                                let mut entry = DescribeConfigsResourceResult::default()
                                    .with_name(StrBytes::from_string(name))
                                    .with_value(Some(StrBytes::from_string(value)))
                                    .with_read_only(resource.resource_type == RESOURCE_BROKER);
                                if ctx.version >= 1 {
                                    entry = entry.with_config_source(source);
                                }
                                entry
                            },
                        )
                        .collect(),
                );
            }
            Err((error, text)) => {
                result = result
                    .with_error_code(error.code())
                    .with_error_message(message(text));
            }
        }
        results.push(result);
    }
    DescribeConfigsResponse::default().with_results(results)
}

/// An admin failure for one resource: the code and a message for the client.
type ResourceError = (ResponseError, String);

/// Alters one topic resource: `change` computes the new overrides from the current ones, and
/// the broker validates and applies them. Shared by AlterConfigs and IncrementalAlterConfigs.
async fn alter_topic_resource(
    ctx: &RequestContext,
    resource_type: i8,
    resource_name: &StrBytes,
    validate_only: bool,
    change: impl FnOnce(&TopicConfigs) -> Result<TopicConfigs, ResourceError>,
) -> Result<(), ResourceError> {
    if resource_type != RESOURCE_TOPIC {
        return Err((
            ResponseError::InvalidRequest,
            "only topic configs can be altered".to_string(),
        ));
    }
    let name = resource_name.to_string();
    let current = ctx
        .broker
        .image()
        .topic(&name)
        .map(|t| t.configs.clone())
        .ok_or((
            ResponseError::UnknownTopicOrPartition,
            format!("unknown topic {name}"),
        ))?;
    let configs = change(&TopicConfigs { overrides: current })?;
    ctx.broker
        .set_topic_configs(&name, configs, validate_only)
        .await
        .map_err(|e| (errors::admin(&e), e.to_string()))
}

pub async fn incremental_alter_configs(
    ctx: &RequestContext,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::new();
    for resource in request.resources {
        let outcome = alter_topic_resource(
            ctx,
            resource.resource_type,
            &resource.resource_name,
            request.validate_only,
            |current| {
                let mut configs = current.clone();
                for change in &resource.configs {
                    let key = change.name.to_string();
                    match change.config_operation {
                        OP_SET => {
                            let value = change
                                .value
                                .as_ref()
                                .map(|v| v.to_string())
                                .unwrap_or_default();
                            configs
                                .set(&key, &value)
                                .map_err(|e| (ResponseError::InvalidConfig, e.to_string()))?;
                        }
                        OP_DELETE if TOPIC_CONFIG_NAMES.contains(&key.as_str()) => {
                            configs.overrides.remove(&key);
                        }
                        OP_DELETE => {
                            return Err((
                                ResponseError::InvalidConfig,
                                format!("unknown topic config {key}"),
                            ));
                        }
                        OP_APPEND | OP_SUBTRACT => {
                            let items = change
                                .value
                                .as_ref()
                                .map(|v| v.to_string())
                                .unwrap_or_default();
                            configs
                                .alter_list(
                                    &ctx.broker.config,
                                    &key,
                                    &items,
                                    change.config_operation == OP_SUBTRACT,
                                )
                                .map_err(|e| (ResponseError::InvalidConfig, e.to_string()))?;
                        }
                        other => {
                            return Err((
                                ResponseError::InvalidRequest,
                                format!("unknown config operation {other}"),
                            ));
                        }
                    }
                }
                Ok(configs)
            },
        )
        .await;
        let mut response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name);
        if let Err((error, text)) = outcome {
            response = response
                .with_error_code(error.code())
                .with_error_message(message(text));
        }
        responses.push(response);
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

pub async fn delete_records(
    ctx: &RequestContext,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut topics = Vec::new();
    for topic in request.topics {
        let mut partitions = Vec::new();
        for p in topic.partitions {
            let mut result = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            match ctx.broker.leader_partition(&topic.name, p.partition_index) {
                Err(e) => result = result.with_error_code(errors::route(&e).code()),
                Ok(partition) => {
                    // A log a full disk took offline recovers without free space, and deleting
                    // records is how the operator frees it: do not wait for the maintenance.
                    partition.recover_if_offline().await;
                    let high_watermark = partition.high_watermark();
                    // -1 means "up to the high watermark".
                    let offset = if p.offset == -1 {
                        high_watermark as i64
                    } else {
                        p.offset
                    };
                    if offset < 0 || offset as u64 > high_watermark {
                        result = result.with_error_code(ResponseError::OffsetOutOfRange.code());
                    } else {
                        match partition.log.delete_records_before(offset as u64).await {
                            Ok(low_watermark) => {
                                result = result.with_low_watermark(low_watermark as i64)
                            }
                            Err(e) => {
                                result = result.with_error_code(errors::delete_records(&e).code())
                            }
                        }
                    }
                }
            }
            partitions.push(result);
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

pub fn describe_cluster(
    ctx: &RequestContext,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let image = ctx.broker.image();
    let controller = ctx.broker.plane().active_controller();
    // v2 (KIP-1073) may ask for fenced brokers too, flagged.
    let include_fenced = ctx.version >= 2 && request.include_fenced_brokers;
    let brokers = image
        .brokers
        .values()
        .filter(|b| include_fenced || !b.fenced)
        .map(|b| {
            let mut entry = DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.endpoint.host.clone()))
                .with_port(i32::from(b.endpoint.port))
                .with_rack(b.rack.clone().map(StrBytes::from_string));
            if ctx.version >= 2 {
                entry = entry.with_is_fenced(b.fenced);
            }
            entry
        })
        .collect();
    DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(image.cluster_id.clone()))
        .with_controller_id(BrokerId(controller.unwrap_or(crate::controller::NO_NODE)))
        .with_cluster_authorized_operations(
            Resource::Cluster.answer(request.include_cluster_authorized_operations),
        )
        .with_brokers(brokers)
}

/// AlterConfigs (the older, non-incremental API, which rust-rdkafka's admin client uses): the
/// given configs REPLACE the topic's whole set of overrides, as in Kafka.
pub async fn alter_configs(
    ctx: &RequestContext,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut responses = Vec::new();
    for resource in request.resources {
        let outcome = alter_topic_resource(
            ctx,
            resource.resource_type,
            &resource.resource_name,
            request.validate_only,
            |_current| {
                let mut configs = TopicConfigs::default();
                for entry in &resource.configs {
                    let value = entry
                        .value
                        .as_ref()
                        .map(|v| v.to_string())
                        .unwrap_or_default();
                    configs
                        .set(entry.name.as_str(), &value)
                        .map_err(|e| (ResponseError::InvalidConfig, e.to_string()))?;
                }
                Ok(configs)
            },
        )
        .await;
        let mut response = alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name);
        if let Err((error, text)) = outcome {
            response = response
                .with_error_code(error.code())
                .with_error_message(message(text));
        }
        responses.push(response);
    }
    AlterConfigsResponse::default().with_responses(responses)
}
