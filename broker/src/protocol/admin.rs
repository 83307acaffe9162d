//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs,
//! IncrementalAlterConfigs, AlterConfigs, DeleteRecords, DescribeCluster.

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

use super::authorized_operations::Resource;
use super::{errors, metadata, RequestContext};
use crate::config::{ConfigEntry, TopicConfigs, TOPIC_CONFIG_NAMES};

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

pub async fn create_topics(
    ctx: &RequestContext,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut results = Vec::new();
    for topic in request.topics {
        let name = topic.name.to_string();
        let mut result = CreatableTopicResult::default().with_name(topic.name.clone());
        let configs: Vec<(String, String)> = topic
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .collect();
        let outcome = if !topic.assignments.is_empty() {
            // Manual assignment: only this broker can hold replicas.
            let node = ctx.broker.config.node_id;
            if topic
                .assignments
                .iter()
                .all(|a| a.broker_ids.iter().all(|b| b.0 == node) && a.broker_ids.len() == 1)
            {
                ctx.broker
                    .create_topic(
                        &name,
                        topic.assignments.len() as i32,
                        1,
                        &configs,
                        request.validate_only,
                    )
                    .await
            } else {
                Err(crate::broker::CreateTopicError::InvalidReplicationFactor(2))
            }
        } else {
            ctx.broker
                .create_topic(
                    &name,
                    topic.num_partitions,
                    topic.replication_factor,
                    &configs,
                    request.validate_only,
                )
                .await
        };
        match outcome {
            Ok(created) => {
                if ctx.version >= 5 {
                    let described = created.configs.describe(&ctx.broker.config);
                    result = result
                        .with_num_partitions(if request.validate_only {
                            if topic.num_partitions == -1 {
                                ctx.broker.config.num_partitions
                            } else {
                                topic.num_partitions
                            }
                        } else {
                            created.partitions.len() as i32
                        })
                        .with_replication_factor(1)
                        .with_configs(Some(
                            described
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
                                .collect(),
                        ));
                }
                if ctx.version >= 7 {
                    result = result.with_topic_id(created.id);
                }
            }
            Err(e) => {
                result = result
                    .with_error_code(errors::create_topic(&e).code())
                    .with_error_message(message(&e));
                if ctx.version >= 5 {
                    result = result.with_num_partitions(-1).with_replication_factor(-1);
                }
            }
        }
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub async fn delete_topics(
    ctx: &RequestContext,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // v0-5 name topics in `topic_names`; v6+ in `topics` (by name or id).
    let mut wanted: Vec<(Option<String>, uuid::Uuid)> = request
        .topic_names
        .iter()
        .map(|n| (Some(n.to_string()), uuid::Uuid::nil()))
        .collect();
    wanted.extend(
        request
            .topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.to_string()), t.topic_id)),
    );
    let mut responses = Vec::new();
    for (name, id) in wanted {
        let name = name.or_else(|| ctx.broker.topic_by_id(id).map(|t| t.name.clone()));
        let mut result = DeletableTopicResult::default()
            .with_name(name.clone().map(|n| TopicName(StrBytes::from_string(n))));
        match name {
            None => result = result.with_error_code(ResponseError::UnknownTopicId.code()),
            Some(name) => match ctx.broker.delete_topic(&name).await {
                Ok(topic_id) => {
                    if ctx.version >= 6 {
                        result = result.with_topic_id(topic_id);
                    }
                }
                Err(e) => {
                    result = result.with_error_code(errors::topic_change(&e).code());
                    if ctx.version >= 5 {
                        result = result.with_error_message(message(&e));
                    }
                }
            },
        }
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(
    ctx: &RequestContext,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::new();
    for topic in request.topics {
        let mut result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        let node = ctx.broker.config.node_id;
        let bad_assignment = topic.assignments.as_ref().is_some_and(|a| {
            a.iter()
                .any(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != node)
        });
        let outcome = if bad_assignment {
            Err((
                ResponseError::InvalidReplicaAssignment,
                format!("only broker {node} exists"),
            ))
        } else {
            ctx.broker
                .create_partitions(&topic.name, topic.count, request.validate_only)
                .await
                .map_err(|e| (errors::topic_change(&e), e.to_string()))
        };
        if let Err((error, text)) = outcome {
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
            RESOURCE_TOPIC => match ctx.broker.topic(resource.resource_name.as_str()) {
                Some(topic) => Ok(topic.configs.describe(&ctx.broker.config)),
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
    let topic = ctx.broker.topic(&name).ok_or((
        ResponseError::UnknownTopicOrPartition,
        format!("unknown topic {name}"),
    ))?;
    let configs = change(&topic.configs)?;
    ctx.broker
        .set_topic_configs(&name, configs, validate_only)
        .await
        .map_err(|e| (errors::topic_change(&e), e.to_string()))
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
                            return Err((
                                ResponseError::InvalidConfig,
                                format!("{key} is not a list config"),
                            ));
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
            match ctx.broker.partition(&topic.name, p.partition_index) {
                None => {
                    result = result.with_error_code(ResponseError::UnknownTopicOrPartition.code())
                }
                Some(partition) => {
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
    let (host, port) = metadata::advertised_host_port(ctx);
    let node = BrokerId(ctx.broker.config.node_id);
    DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(ctx.broker.cluster_id().to_string()))
        .with_controller_id(node)
        .with_cluster_authorized_operations(
            Resource::Cluster.answer(request.include_cluster_authorized_operations),
        )
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(node)
            .with_host(StrBytes::from_string(host))
            .with_port(port)])
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
