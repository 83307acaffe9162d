//! DescribeTopicPartitions (v0, KIP-966): topics and their partitions from the cluster image, as
//! Kafka's `DescribeTopicPartitionsRequestHandler` and `KRaftMetadataCache` answer it: what
//! Metadata says of each partition plus its eligible leader replicas and last known ELR.
//!
//! - No topics named: every topic; named: those, each unknown one answered
//!   UNKNOWN_TOPIC_OR_PARTITION (INVALID_TOPIC_EXCEPTION for an invalid name). Topics go in name
//!   order, from the cursor's topic and partition on.
//! - At most `response_partition_limit` partitions (clamped to 1..=2000, Kafka's
//!   `max.request.partition.size.limit`); the next cursor names where the answer stopped.
//! - A cursor whose topic is not among the named ones, or whose partition is negative, is an
//!   INVALID_REQUEST, answered on every named topic (Kafka's error response).
//! - The ELR fields are null on a broker without eligible leader replicas
//!   (`eligible.leader.replicas.enable` off), so a client can tell "none" from "not kept";
//!   `faultline topics describe` shows its Elr columns only when they are there.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::authorized_operations::Resource;
use super::metadata::offline_replicas;
use super::RequestContext;
use crate::controller::image::{ClusterImage, TopicImage};
use crate::group::offsets::OFFSETS_TOPIC;
use crate::topic_name::validate_topic_name;
use crate::txn::coordinator::records::TRANSACTION_STATE_TOPIC;

/// Kafka's `max.request.partition.size.limit` default: the most partitions one answer holds.
pub const MAX_PARTITIONS: i32 = 2000;

fn name(topic: &str) -> Option<TopicName> {
    Some(TopicName(StrBytes::from_string(topic.to_string())))
}

/// Kafka's `Topic.isInternal`.
fn is_internal(topic: &str) -> bool {
    topic == OFFSETS_TOPIC || topic == TRANSACTION_STATE_TOPIC
}

/// The whole request refused: every named topic carries `error` (Kafka's
/// `DescribeTopicPartitionsRequest.getErrorResponse`).
pub fn error_response(
    request: &DescribeTopicPartitionsRequest,
    error: ResponseError,
) -> DescribeTopicPartitionsResponse {
    DescribeTopicPartitionsResponse::default().with_topics(
        request
            .topics
            .iter()
            .map(|t| {
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(t.name.clone()))
                    .with_error_code(error.code())
            })
            .collect(),
    )
}

/// `topic`'s partitions from `start`, at most `limit`; the index to go on from, if any are left.
fn partitions(
    image: &ClusterImage,
    topic: &TopicImage,
    start: usize,
    limit: usize,
    elr_kept: bool,
) -> (Vec<DescribeTopicPartitionsResponsePartition>, Option<usize>) {
    let ids = |nodes: &[i32]| nodes.iter().map(|&n| BrokerId(n)).collect::<Vec<_>>();
    let end = topic.partitions.len().min(start.saturating_add(limit));
    let answered = topic
        .partitions
        .iter()
        .enumerate()
        .take(end)
        .skip(start)
        .map(|(index, p)| {
            DescribeTopicPartitionsResponsePartition::default()
                .with_partition_index(i32::try_from(index).expect("partition indexes fit in i32"))
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
                .with_eligible_leader_replicas(elr_kept.then(|| ids(&p.elr)))
                .with_last_known_elr(elr_kept.then(|| ids(&p.last_known_elr)))
                .with_offline_replicas(offline_replicas(image, p))
        })
        .collect();
    let next = (end < topic.partitions.len()).then_some(end);
    (answered, next)
}

pub fn handle(
    ctx: &RequestContext,
    request: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let image = ctx.broker.image();
    let elr_kept = ctx.broker.config.eligible_leader_replicas_enable;
    let all = request.topics.is_empty();
    let cursor_topic = request
        .cursor
        .as_ref()
        .map_or(String::new(), |c| c.topic_name.to_string());
    let mut names: Vec<String> = if all {
        image.topics.keys().cloned().collect()
    } else {
        request.topics.iter().map(|t| t.name.to_string()).collect()
    };
    names.retain(|n| *n >= cursor_topic);
    names.sort_unstable();
    names.dedup();
    if let Some(cursor) = &request.cursor {
        if !all && !names.contains(&cursor_topic) {
            // "DescribeTopicPartitionsRequest topic list should contain the cursor topic"
            return error_response(&request, ResponseError::InvalidRequest);
        }
        if cursor.partition_index < 0 {
            return error_response(&request, ResponseError::InvalidRequest);
        }
    }
    let start_of = |topic: &str| match &request.cursor {
        Some(c) if c.topic_name.as_str() == topic => {
            usize::try_from(c.partition_index).expect("checked not negative")
        }
        _ => 0,
    };
    let limit = request.response_partition_limit.clamp(1, MAX_PARTITIONS);
    let mut remaining = usize::try_from(limit).expect("clamped positive");
    let mut response = DescribeTopicPartitionsResponse::default();
    let operations = Resource::Topic.authorized_operations();
    for topic_name in names {
        if remaining == 0 {
            // Every partition of the topics before is answered: go on from this one's start.
            response.next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(StrBytes::from_string(topic_name)))
                    .with_partition_index(0),
            );
            break;
        }
        let Some(topic) = image.topic(&topic_name) else {
            if !all {
                let error = if validate_topic_name(&topic_name).is_err() {
                    ResponseError::InvalidTopicException
                } else {
                    ResponseError::UnknownTopicOrPartition
                };
                response.topics.push(
                    DescribeTopicPartitionsResponseTopic::default()
                        .with_name(name(&topic_name))
                        .with_is_internal(is_internal(&topic_name))
                        .with_error_code(error.code())
                        .with_topic_authorized_operations(operations),
                );
            }
            continue;
        };
        let (answered, next) =
            partitions(&image, topic, start_of(&topic_name), remaining, elr_kept);
        remaining -= answered.len();
        response.topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(name(&topic_name))
                .with_topic_id(topic.id)
                .with_is_internal(is_internal(&topic_name))
                .with_partitions(answered)
                .with_topic_authorized_operations(operations),
        );
        if let Some(next) = next {
            response.next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(StrBytes::from_string(topic_name)))
                    .with_partition_index(i32::try_from(next).expect("partition indexes fit")),
            );
            break;
        }
    }
    response
}
