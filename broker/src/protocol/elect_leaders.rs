//! ElectLeaders (API 43, KIP-183 and KIP-460): elect the preferred replica of the partitions
//! named, or, for an unclean election, any live replica of an offline one. Sent to any broker
//! and forwarded to the active controller like the other admin changes; the answer comes once
//! the new leaders are committed and applied here, so a Metadata request that follows sees them.
//!
//! v0 has no election type (preferred). A null topic list means every partition of every topic,
//! and then the partitions that needed no election are left out of the answer, as Kafka does.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{errors, RequestContext};
use crate::controller::request::{ControllerReply, ControllerRequest, ElectionType};

/// The election type's wire value (0 preferred, 1 unclean; v0 carries none: preferred).
fn election_type(version: i16, value: i8) -> Option<ElectionType> {
    match (version, value) {
        (0, _) | (_, 0) => Some(ElectionType::Preferred),
        (_, 1) => Some(ElectionType::Unclean),
        _ => None,
    }
}

fn result(partition: i32, error: Option<(ResponseError, String)>) -> PartitionResult {
    let result = PartitionResult::default().with_partition_id(partition);
    match error {
        None => result,
        Some((error, message)) => result
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message))),
    }
}

/// Every partition asked for, answered with `error`, and `error` at the top level (v1+).
fn failed(
    version: i16,
    request: &ElectLeadersRequest,
    error: ResponseError,
    message: &str,
) -> ElectLeadersResponse {
    let results = request
        .topic_partitions
        .iter()
        .flatten()
        .map(|t| {
            ReplicaElectionResult::default()
                .with_topic(t.topic.clone())
                .with_partition_result(
                    t.partitions
                        .iter()
                        .map(|&p| result(p, Some((error, message.to_string()))))
                        .collect(),
                )
        })
        .collect();
    let response = ElectLeadersResponse::default().with_replica_election_results(results);
    if version >= 1 {
        response.with_error_code(error.code())
    } else {
        response
    }
}

pub async fn handle(ctx: &RequestContext, request: ElectLeadersRequest) -> ElectLeadersResponse {
    let Some(election) = election_type(ctx.version, request.election_type) else {
        let message = format!("Unknown election type {}", request.election_type);
        return failed(
            ctx.version,
            &request,
            ResponseError::InvalidRequest,
            &message,
        );
    };
    let partitions = request.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .map(|t| (t.topic.to_string(), t.partitions.clone()))
            .collect()
    });
    let reply = ctx
        .broker
        .submit(ControllerRequest::ElectLeaders {
            election,
            partitions,
        })
        .await;
    let results = match reply {
        Ok(ControllerReply::ElectLeaders(results)) => results,
        Ok(other) => panic!("the controller answered ElectLeaders with {other:?}"),
        Err(e) => {
            return failed(ctx.version, &request, errors::admin(&e), &e.to_string());
        }
    };
    let results = results
        .into_iter()
        .map(|(topic, partitions)| {
            ReplicaElectionResult::default()
                .with_topic(TopicName(StrBytes::from_string(topic)))
                .with_partition_result(
                    partitions
                        .into_iter()
                        .map(|(p, outcome)| {
                            result(
                                p,
                                outcome.err().map(|e| (errors::election(&e), e.to_string())),
                            )
                        })
                        .collect(),
                )
        })
        .collect();
    ElectLeadersResponse::default().with_replica_election_results(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v0_always_elects_the_preferred_replica_and_later_versions_read_the_type() {
        assert_eq!(election_type(0, 1), Some(ElectionType::Preferred));
        assert_eq!(election_type(1, 0), Some(ElectionType::Preferred));
        assert_eq!(election_type(2, 1), Some(ElectionType::Unclean));
        assert_eq!(election_type(2, 2), None);
    }
}
