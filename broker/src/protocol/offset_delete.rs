//! OffsetDelete (KIP-496): deletes a group's committed offsets for some partitions, unless the
//! group's live members subscribe to the topic (GROUP_SUBSCRIBED_TO_TOPIC). The tombstones are
//! durable before the answer.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::{errors, RequestContext};
use crate::group::machine::{GroupError, GroupState};
use crate::group::offsets::OffsetKey;
use crate::group::OffsetWrite;

pub async fn handle(ctx: &RequestContext, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let groups = ctx.broker.groups();
    let group_id = request.group_id.0.to_string();
    // None: the group accepts deletions of any topic; Some(topics): not of these.
    let protected = groups.read_group(&group_id, |g| match g.state {
        GroupState::Dead => Err(GroupError::GroupIdNotFound),
        GroupState::Empty => Ok(None),
        _ => g
            .subscribed_topics()
            .map(Some)
            .ok_or(GroupError::NonEmptyGroup),
    });
    let protected = match protected {
        Err(e) => Err(e),
        Ok(Some(result)) => result,
        Ok(None) => match groups.group_exists(&group_id) {
            Ok(true) => Ok(None),
            Ok(false) => Err(GroupError::GroupIdNotFound),
            Err(e) => Err(e),
        },
    };
    let protected = match protected {
        Ok(p) => p,
        Err(e) => return OffsetDeleteResponse::default().with_error_code(errors::group(&e).code()),
    };
    let image = ctx.broker.image();
    let mut writes: Vec<OffsetWrite> = Vec::new();
    let mut topics = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let subscribed = protected.as_ref().is_some_and(|t| t.contains(&name));
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                // The cluster's partitions, not this broker's (as OffsetCommit).
                let code = if image.partition(&name, p.partition_index).is_none() {
                    ResponseError::UnknownTopicOrPartition.code()
                } else if subscribed {
                    ResponseError::GroupSubscribedToTopic.code()
                } else {
                    let key = OffsetKey {
                        group: group_id.clone(),
                        topic: name.clone(),
                        partition: p.partition_index,
                    };
                    if groups.committed(&key).ok().flatten().is_some() {
                        writes.push((key, None));
                    }
                    0
                };
                (p.partition_index, code)
            })
            .collect::<Vec<_>>();
        topics.push((topic.name, partitions));
    }
    let write_code = match groups.write(&group_id, writes).await {
        Ok(()) => 0,
        Err(e) => errors::group_write(&e).code(),
    };
    if write_code != 0 {
        return OffsetDeleteResponse::default().with_error_code(write_code);
    }
    OffsetDeleteResponse::default().with_topics(
        topics
            .into_iter()
            .map(|(name, partitions)| {
                OffsetDeleteResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, code)| {
                                OffsetDeleteResponsePartition::default()
                                    .with_partition_index(index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
