//! AlterPartitionReassignments (API 45) and ListPartitionReassignments (API 46), KIP-455: move a
//! partition's replicas to other brokers while it serves, cancel a move, list the moves running.
//! Sent to any broker and forwarded to the active controller like the other admin changes; an
//! AlterPartitionReassignments is answered once its changes are committed and applied here.
//!
//! v1 of AlterPartitionReassignments (KIP-860) carries `allow_replication_factor_change`; v0
//! allows a change of size, as Kafka did before it.

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{errors, RequestContext};
use crate::controller::request::{ControllerReply, ControllerRequest};

fn topic_name(name: String) -> TopicName {
    TopicName(StrBytes::from_string(name))
}

fn ids(ids: Vec<i32>) -> Vec<BrokerId> {
    ids.into_iter().map(BrokerId).collect()
}

pub async fn alter(
    ctx: &RequestContext,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let allow = ctx.version < 1 || request.allow_replication_factor_change;
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let target = p
                        .replicas
                        .as_ref()
                        .map(|r| r.iter().map(|id| id.0).collect());
                    (p.partition_index, target)
                })
                .collect();
            (t.name.to_string(), partitions)
        })
        .collect();
    let response = AlterPartitionReassignmentsResponse::default();
    let response = if ctx.version >= 1 {
        response.with_allow_replication_factor_change(allow)
    } else {
        response
    };
    let reply = ctx
        .broker
        .submit(ControllerRequest::AlterPartitionReassignments {
            topics,
            allow_replication_factor_change: allow,
        })
        .await;
    let results = match reply {
        Ok(ControllerReply::AlterPartitionReassignments(results)) => results,
        Ok(other) => panic!("the controller answered AlterPartitionReassignments with {other:?}"),
        // The request as a whole failed (no controller): Kafka's top-level error.
        Err(e) => {
            return response
                .with_error_code(errors::admin(&e).code())
                .with_error_message(Some(StrBytes::from_string(e.to_string())));
        }
    };
    let responses = results
        .into_iter()
        .map(|(topic, partitions)| {
            ReassignableTopicResponse::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, outcome)| {
                            let p = ReassignablePartitionResponse::default()
                                .with_partition_index(index);
                            match outcome {
                                Ok(()) => p,
                                Err(e) => p
                                    .with_error_code(errors::reassignment(&e).code())
                                    .with_error_message(Some(StrBytes::from_string(e.to_string()))),
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    response.with_responses(responses)
}

pub async fn list(
    ctx: &RequestContext,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let topics = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let reply = ctx
        .broker
        .submit(ControllerRequest::ListPartitionReassignments { topics })
        .await;
    let ongoing = match reply {
        Ok(ControllerReply::ListPartitionReassignments(ongoing)) => ongoing,
        Ok(other) => panic!("the controller answered ListPartitionReassignments with {other:?}"),
        Err(e) => {
            return ListPartitionReassignmentsResponse::default()
                .with_error_code(errors::admin(&e).code())
                .with_error_message(Some(StrBytes::from_string(e.to_string())));
        }
    };
    let topics = ongoing
        .into_iter()
        .map(|(topic, partitions)| {
            OngoingTopicReassignment::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|p| {
                            OngoingPartitionReassignment::default()
                                .with_partition_index(p.partition)
                                .with_replicas(ids(p.replicas))
                                .with_adding_replicas(ids(p.adding))
                                .with_removing_replicas(ids(p.removing))
                        })
                        .collect(),
                )
        })
        .collect();
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
