//! DeleteGroups: an empty group's offsets and stored membership are deleted (tombstones in
//! `__consumer_offsets`, durable before the answer) and the group is gone; a group with members
//! is NON_EMPTY_GROUP.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::{errors, RequestContext};

pub async fn handle(ctx: &RequestContext, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let groups = ctx.broker.groups();
    let mut results = Vec::new();
    for id in request.groups_names {
        let code = match groups.delete_group(&id.0) {
            Err(e) => errors::group(&e).code(),
            Ok(deleted) => match deleted.await {
                Ok(()) => 0,
                Err(e) => errors::group_write(&e).code(),
            },
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
