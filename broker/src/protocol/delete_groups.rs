//! DeleteGroups: an empty group's offsets and stored membership are deleted (tombstones in
//! `__consumer_offsets`, durable before the answer) and the group is gone; a group with members
//! is NON_EMPTY_GROUP.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::{errors, RequestContext};
use crate::group::offsets::OFFSETS_TOPIC;
use crate::group::OffsetWrite;

pub async fn handle(ctx: &RequestContext, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let groups = ctx.broker.groups();
    let mut results = Vec::new();
    for id in request.groups_names {
        let code = match groups.delete_group(&id.0) {
            Err(e) => errors::group(&e).code(),
            Ok(keys) => {
                let writes: Vec<OffsetWrite> = keys.into_iter().map(|k| (k, None)).collect();
                match ctx.broker.partition(OFFSETS_TOPIC, 0) {
                    // No offsets topic: the group never committed anything.
                    None if writes.is_empty() => 0,
                    Some(partition) => {
                        let written = match groups
                            .write(&partition, &writes, ctx.broker.clock().now_ms())
                            .await
                        {
                            // The group's stored membership goes too (its tombstone).
                            Ok(()) => groups.store_changed_groups(&partition).await.map(|_| ()),
                            Err(e) => Err(e),
                        };
                        match written {
                            Ok(()) => 0,
                            Err(e) => errors::offset_write(&e).code(),
                        }
                    }
                    None => ResponseError::CoordinatorNotAvailable.code(),
                }
            }
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
