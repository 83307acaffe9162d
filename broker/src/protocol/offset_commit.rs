//! OffsetCommit: allowed by the group's generation and given its place in `__consumer_offsets`
//! in one step (no rebalance can come between), acknowledged only once the record is durable
//! (then applied to the coordinator's memory).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::{errors, Reply, RequestContext};
use crate::group::machine::GroupError;
use crate::group::offsets::{CommittedOffset, OffsetKey, MAX_METADATA_BYTES};
use crate::group::OffsetWrite;

/// A topic's partitions and their error, or `None` for those being written.
type TopicResults = (kafka_protocol::messages::TopicName, Vec<(i32, Option<i16>)>);

pub async fn handle(ctx: &RequestContext, request: OffsetCommitRequest) -> Reply {
    // Backpressure: at the limit of commits in flight, this connection reads nothing more
    // until one is answered.
    let permit = ctx.broker.groups().write_permit().await;
    let group_id = request.group_id.0.to_string();
    let generation = request.generation_id_or_member_epoch;
    let member_id = request.member_id.to_string();
    let now_ms = ctx.broker.clock().now_ms();
    let mut writes: Vec<OffsetWrite> = Vec::new();
    // (topic, [(partition, code or None if written)])
    let mut results: Vec<TopicResults> = Vec::new();
    // Any partition of the cluster can be committed here, not only those this broker hosts:
    // Kafka checks its metadata cache.
    let image = ctx.broker.image();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::new();
        for p in topic.partitions {
            let error = if image.partition(&name, p.partition_index).is_none() {
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
    // `__consumer_offsets` is created on first use; if it cannot be, the group has no shard
    // and the commit is answered COORDINATOR_NOT_AVAILABLE below.
    let _ = ctx.broker.offsets_topic().await;
    // The group's verdict and the writes' place in the log, in one step; a group error
    // answers every partition, as Kafka does.
    let committed = if group_id.is_empty() {
        Err(GroupError::InvalidGroupId)
    } else {
        ctx.broker.groups().commit(
            &group_id,
            &member_id,
            request.group_instance_id.as_deref(),
            generation,
            writes,
        )
    };
    // If the task dies, every partition gets the error (as Kafka answers a request whose
    // handling threw).
    let requested = results.clone();
    ctx.later(
        async move {
            let (group_code, write_code) = match committed {
                Err(e) => (Some(errors::group(&e).code()), 0),
                Ok(written) => match written.await {
                    Ok(()) => (None, 0),
                    Err(e) => (None, errors::group_write(&e).code()),
                },
            };
            drop(permit);
            response(results, group_code, write_code)
        },
        move |error| response(requested, Some(error.code()), 0),
    )
}

/// The response: `group_code` for every partition if set, else each partition's own error, or
/// `write_code` for those that were written.
fn response(
    results: Vec<TopicResults>,
    group_code: Option<i16>,
    write_code: i16,
) -> OffsetCommitResponse {
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
                                let code = group_code.or(error).unwrap_or(write_code);
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
