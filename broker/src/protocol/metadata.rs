//! Metadata: brokers, topics (with their UUIDs) and partitions, from the cluster image this
//! broker applied: every unfenced broker with its endpoint and rack, each partition's leader,
//! leader epoch, replicas, ISR and offline replicas, the active controller. Auto-creates
//! requested topics (a CreateTopics to the controller) when the broker and the request allow it.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::authorized_operations::Resource;
use super::{errors, RequestContext};
use crate::broker::{validate_topic_name, AdminError};
use crate::controller::image::{ClusterImage, PartitionImage, TopicImage};
use crate::controller::request::TopicError;
use crate::controller::{NodeId, NO_NODE};

/// Host and port of this broker's advertised listener.
pub fn advertised_host_port(ctx: &RequestContext) -> (String, i32) {
    let endpoint = crate::broker::endpoint_of(ctx.broker.config.advertised());
    (endpoint.host, i32::from(endpoint.port))
}

/// Replicas of `partition` that cannot serve now: their broker is fenced or not registered.
pub fn offline_replicas(image: &ClusterImage, partition: &PartitionImage) -> Vec<BrokerId> {
    partition
        .replicas
        .iter()
        .filter(|r| image.brokers.get(r).is_none_or(|b| b.fenced))
        .map(|&r| BrokerId(r))
        .collect()
}

fn topic_entry(
    ctx: &RequestContext,
    image: &ClusterImage,
    topic: &TopicImage,
) -> MetadataResponseTopic {
    let ids = |nodes: &[NodeId]| nodes.iter().map(|&n| BrokerId(n)).collect::<Vec<_>>();
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let mut entry = MetadataResponsePartition::default()
                .with_partition_index(index as i32)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(if ctx.version >= 7 { p.leader_epoch } else { -1 })
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr));
            if ctx.version >= 5 {
                entry = entry.with_offline_replicas(offline_replicas(image, p));
            }
            if !p.is_online() {
                entry = entry.with_error_code(ResponseError::LeaderNotAvailable.code());
            }
            entry
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
    let image = broker.image();
    // Every registered broker that is not fenced, as Kafka's metadata cache lists them.
    let brokers = image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .map(|b| {
            let mut entry = MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.endpoint.host.clone()))
                .with_port(i32::from(b.endpoint.port));
            if ctx.version >= 1 {
                entry = entry.with_rack(b.rack.clone().map(StrBytes::from_string));
            }
            entry
        })
        .collect();
    let mut response = MetadataResponse::default().with_brokers(brokers);
    if ctx.version >= 1 {
        let controller = broker.plane().active_controller();
        response = response.with_controller_id(BrokerId(controller.unwrap_or(NO_NODE)));
    }
    if ctx.version >= 2 {
        response = response.with_cluster_id(Some(StrBytes::from_string(image.cluster_id.clone())));
    }
    // v0 has no null topic list: an empty list means all topics there.
    let all = match &request.topics {
        None => true,
        Some(list) => list.is_empty() && ctx.version == 0,
    };
    let mut topics = Vec::new();
    if all {
        topics = image
            .topics
            .values()
            .map(|t| topic_entry(ctx, &image, t))
            .collect();
    } else {
        // v0-3 always auto-create; v4+ ask.
        let allow_create = broker.config.auto_create_topics
            && (ctx.version < 4 || request.allow_auto_topic_creation);
        for wanted in request.topics.unwrap_or_default() {
            let name = wanted.name.as_ref().map(|n| n.to_string());
            let found = match &name {
                Some(n) => image.topic(n).cloned(),
                None => image.topic_by_id(wanted.topic_id).cloned(),
            };
            let entry = match (found, name) {
                (Some(topic), _) => topic_entry(ctx, &image, &topic),
                (None, Some(name)) if validate_topic_name(&name).is_err() => error_entry(
                    Some(name),
                    uuid::Uuid::nil(),
                    ResponseError::InvalidTopicException,
                ),
                (None, Some(name)) if allow_create => {
                    // Auto-creation is a CreateTopics to the controller with the defaults.
                    let created = broker.create_topic(&name, -1, -1, &[], false).await;
                    let now = broker.image();
                    match (created, now.topic(&name)) {
                        // Created here, or by another creator first: report what is there now.
                        (Ok(_), Some(topic))
                        | (Err(AdminError::Topic(TopicError::AlreadyExists(_))), Some(topic)) => {
                            topic_entry(ctx, &now, topic)
                        }
                        (Err(e), _) => {
                            error_entry(Some(name), uuid::Uuid::nil(), errors::admin(&e))
                        }
                        (Ok(_), None) => error_entry(
                            Some(name),
                            uuid::Uuid::nil(),
                            ResponseError::UnknownTopicOrPartition,
                        ),
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
