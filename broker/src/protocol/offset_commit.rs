//! OffsetCommit: checked against the group's generation, written to `__consumer_offsets`, and
//! acknowledged only once the record is durable (then applied to the coordinator's memory).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::{errors, Reply, RequestContext};
use crate::group::coordinator::GroupError;
use crate::group::offsets::{CommittedOffset, OffsetKey, MAX_METADATA_BYTES};
use crate::group::OffsetWrite;

/// A topic's partitions and their error, or `None` for those being written.
type TopicResults = (kafka_protocol::messages::TopicName, Vec<(i32, Option<i16>)>);

pub async fn handle(ctx: &RequestContext, request: OffsetCommitRequest) -> Reply {
    let group_id = request.group_id.0.to_string();
    let generation = request.generation_id_or_member_epoch;
    let member_id = request.member_id.to_string();
    let now_ms = ctx.broker.clock().now_ms();
    let groups = ctx.broker.groups();
    // A group with no membership yet may take commits from a consumer that assigns itself.
    let group_check = if group_id.is_empty() {
        Err(GroupError::InvalidGroupId)
    } else {
        groups
            .with_group(&group_id, generation < 0, |g| {
                g.check_instance(request.group_instance_id.as_deref(), &member_id)
                    .and_then(|()| g.check_commit(&member_id, generation))
            })
            .unwrap_or(Err(GroupError::IllegalGeneration {
                got: generation,
                current: -1,
            }))
    };
    let mut writes: Vec<OffsetWrite> = Vec::new();
    // (topic, [(partition, code or None if written)])
    let mut results: Vec<TopicResults> = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::new();
        for p in topic.partitions {
            let error = if let Err(e) = &group_check {
                Some(errors::group(e).code())
            } else if ctx.broker.partition(&name, p.partition_index).is_none() {
                Some(ResponseError::UnknownTopicOrPartition.code())
            } else if p
                .committed_metadata
                .as_ref()
                .is_some_and(|m| m.len() > MAX_METADATA_BYTES)
            {
                Some(ResponseError::OffsetMetadataTooLarge.code())
            } else {
                writes.push((
                    OffsetKey {
                        group: group_id.clone(),
                        topic: name.clone(),
                        partition: p.partition_index,
                    },
                    Some(CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.map(|m| m.to_string()),
                        commit_timestamp_ms: now_ms,
                    }),
                ));
                None
            };
            partitions.push((p.partition_index, error));
        }
        results.push((topic.name, partitions));
    }
    // Appended now, in request order; acknowledged once durable.
    let partition = if writes.is_empty() {
        None
    } else {
        ctx.broker.offsets_partition().await.ok()
    };
    let appended = match &partition {
        Some(partition) => groups
            .append(partition, &writes, now_ms)
            .await
            .map_err(|e| errors::offset_write(&e).code()),
        None if writes.is_empty() => Ok(None),
        None => Err(ResponseError::CoordinatorNotAvailable.code()),
    };
    let groups = std::sync::Arc::clone(groups);
    let requested: Vec<(kafka_protocol::messages::TopicName, Vec<i32>)> = results
        .iter()
        .map(|(name, partitions)| (name.clone(), partitions.iter().map(|(i, _)| *i).collect()))
        .collect();
    ctx.later(
        async move {
            let write_code = match (appended, partition) {
                (Ok(info), Some(partition)) => {
                    match groups.complete(&partition, &writes, info).await {
                        Ok(()) => 0,
                        Err(e) => errors::offset_write(&e).code(),
                    }
                }
                (Err(code), _) => code,
                (Ok(info), None) => {
                    assert!(info.is_none(), "appended without a partition");
                    0
                }
            };
            response(results, write_code)
        },
        move |error| {
            let results = requested
                .into_iter()
                .map(|(name, indexes)| {
                    (
                        name,
                        indexes
                            .into_iter()
                            .map(|i| (i, Some(error.code())))
                            .collect(),
                    )
                })
                .collect();
            response(results, 0)
        },
    )
}

/// The response: each partition's own error, or `write_code` for those that were written.
fn response(results: Vec<TopicResults>, write_code: i16) -> OffsetCommitResponse {
    OffsetCommitResponse::default().with_topics(
        results
            .into_iter()
            .map(|(name, partitions)| {
                OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, error)| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(index)
                                    .with_error_code(error.unwrap_or(write_code))
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
