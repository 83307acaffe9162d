//! DescribeProducers (v0): the active producers of partitions this broker leads (Kafka's
//! `ReplicaManager.activeProducerState`): each producer id with its epoch, last sequence, last
//! timestamp, the coordinator epoch of its last marker and the first offset of its open
//! transaction (-1 for none). Errors are per partition: UNKNOWN_TOPIC_OR_PARTITION,
//! NOT_LEADER_OR_FOLLOWER when another broker leads it (or none can), KAFKA_STORAGE_ERROR
//! when its producer state cannot be read.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::RouteError;

pub async fn handle(
    ctx: &RequestContext,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partition_indexes.len());
        for index in topic.partition_indexes {
            let answer = PartitionResponse::default().with_partition_index(index);
            let fail = |error: ResponseError, message: String| {
                answer
                    .clone()
                    .with_error_code(error.code())
                    .with_error_message(Some(StrBytes::from_string(message)))
            };
            let partition = match ctx.broker.leader_partition(topic.name.as_str(), index) {
                Ok(p) => p,
                Err(RouteError::UnknownTopicOrPartition) => {
                    partitions.push(fail(
                        ResponseError::UnknownTopicOrPartition,
                        "no such topic or partition".into(),
                    ));
                    continue;
                }
                Err(RouteError::NotOpen) => {
                    partitions.push(fail(
                        ResponseError::KafkaStorageError,
                        "the partition's log is offline".into(),
                    ));
                    continue;
                }
                // Kafka answers NOT_LEADER_OR_FOLLOWER whenever this broker is not the leader.
                Err(RouteError::NotLeader { leader, .. }) => {
                    partitions.push(fail(
                        ResponseError::NotLeaderOrFollower,
                        format!("broker {leader} leads the partition"),
                    ));
                    continue;
                }
                Err(RouteError::LeaderNotAvailable) => {
                    partitions.push(fail(
                        ResponseError::NotLeaderOrFollower,
                        "no replica leads the partition now".into(),
                    ));
                    continue;
                }
            };
            let state = match partition.producer_state().await {
                Ok(state) => state,
                Err(e) => {
                    partitions.push(fail(ResponseError::KafkaStorageError, e.to_string()));
                    continue;
                }
            };
            let producers = state
                .producers()
                .map(|(producer_id, entry)| {
                    ProducerState::default()
                        .with_producer_id(ProducerId(producer_id))
                        .with_producer_epoch(i32::from(entry.epoch()))
                        .with_last_sequence(entry.last_seq())
                        .with_last_timestamp(entry.batches().last().map_or(-1, |b| b.timestamp_ms))
                        .with_coordinator_epoch(entry.coordinator_epoch())
                        .with_current_txn_start_offset(
                            entry.current_txn_first_offset().map_or(-1, |o| o as i64),
                        )
                })
                .collect();
            partitions.push(answer.with_active_producers(producers));
        }
        topics.push(
            TopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DescribeProducersResponse::default().with_topics(topics)
}
