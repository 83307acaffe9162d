//! Metadata: brokers, topics (with their UUIDs) and partitions. Auto-creates requested topics
//! when the broker and the request allow it.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::authorized_operations::Resource;
use super::{errors, RequestContext};
use crate::broker::{validate_topic_name, Topic};

/// Host and port of the advertised listener.
pub fn advertised_host_port(ctx: &RequestContext) -> (String, i32) {
    let advertised = ctx.broker.config.advertised();
    match advertised.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_matches(['[', ']']).to_string(),
            port.parse().unwrap_or(9092),
        ),
        None => (advertised.to_string(), 9092),
    }
}

fn topic_entry(ctx: &RequestContext, topic: &Topic) -> MetadataResponseTopic {
    let node = BrokerId(ctx.broker.config.node_id);
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_leader_id(node)
                .with_leader_epoch(if ctx.version >= 7 {
                    p.leader_epoch()
                } else {
                    -1
                })
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    let mut entry = MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_partitions(partitions);
    if ctx.version >= 10 {
        entry = entry.with_topic_id(topic.id);
    }
    if ctx.version >= 1 {
        entry = entry.with_is_internal(topic.name == crate::group::offsets::OFFSETS_TOPIC);
    }
    entry
}

fn error_entry(
    name: Option<String>,
    topic_id: uuid::Uuid,
    error: ResponseError,
) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
        .with_topic_id(topic_id)
        .with_error_code(error.code())
}

pub async fn handle(ctx: &RequestContext, request: MetadataRequest) -> MetadataResponse {
    let broker = &ctx.broker;
    let (host, port) = advertised_host_port(ctx);
    let mut response =
        MetadataResponse::default().with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(broker.config.node_id))
            .with_host(StrBytes::from_string(host))
            .with_port(port)]);
    if ctx.version >= 1 {
        response = response.with_controller_id(BrokerId(broker.config.node_id));
    }
    if ctx.version >= 2 {
        response =
            response.with_cluster_id(Some(StrBytes::from_string(broker.cluster_id().to_string())));
    }
    // v0 has no null topic list: an empty list means all topics there.
    let all = match &request.topics {
        None => true,
        Some(list) => list.is_empty() && ctx.version == 0,
    };
    let mut topics = Vec::new();
    if all {
        topics = broker
            .topics()
            .iter()
            .map(|t| topic_entry(ctx, t))
            .collect();
    } else {
        // v0-3 always auto-create; v4+ ask.
        let allow_create = broker.config.auto_create_topics
            && (ctx.version < 4 || request.allow_auto_topic_creation);
        for wanted in request.topics.unwrap_or_default() {
            let name = wanted.name.as_ref().map(|n| n.to_string());
            let found = match &name {
                Some(n) => broker.topic(n),
                None => broker.topic_by_id(wanted.topic_id),
            };
            let entry = match (found, name) {
                (Some(topic), _) => topic_entry(ctx, &topic),
                (None, Some(name)) if validate_topic_name(&name).is_err() => error_entry(
                    Some(name),
                    uuid::Uuid::nil(),
                    ResponseError::InvalidTopicException,
                ),
                (None, Some(name)) if allow_create => {
                    match broker.create_topic(&name, -1, -1, &[], false).await {
                        Ok(topic) => topic_entry(ctx, &topic),
                        // Lost a race with another creator: report what is there now.
                        Err(crate::broker::CreateTopicError::Exists(_)) => {
                            match broker.topic(&name) {
                                Some(topic) => topic_entry(ctx, &topic),
                                None => error_entry(
                                    Some(name),
                                    uuid::Uuid::nil(),
                                    ResponseError::UnknownTopicOrPartition,
                                ),
                            }
                        }
                        Err(e) => {
                            error_entry(Some(name), uuid::Uuid::nil(), errors::create_topic(&e))
                        }
                    }
                }
                (None, Some(name)) => error_entry(
                    Some(name),
                    uuid::Uuid::nil(),
                    ResponseError::UnknownTopicOrPartition,
                ),
                (None, None) => error_entry(None, wanted.topic_id, ResponseError::UnknownTopicId),
            };
            topics.push(entry);
        }
    }
    // Kafka answers the operations for every topic entry, errors included.
    let topic_operations = Resource::Topic.answer(request.include_topic_authorized_operations);
    for t in &mut topics {
        if ctx.version < 10 {
            t.topic_id = uuid::Uuid::nil();
        }
        if ctx.version >= 8 {
            t.topic_authorized_operations = topic_operations;
        }
    }
    // v8-10 only: later versions ask DescribeCluster.
    if (8..=10).contains(&ctx.version) {
        response.cluster_authorized_operations =
            Resource::Cluster.answer(request.include_cluster_authorized_operations);
    }
    response.with_topics(topics)
}
