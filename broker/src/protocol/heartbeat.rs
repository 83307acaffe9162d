//! Heartbeat: keeps a member's session alive; REBALANCE_IN_PROGRESS tells it to rejoin.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::{errors, RequestContext};
use crate::group::coordinator::GroupError;

pub fn handle(ctx: &RequestContext, request: HeartbeatRequest) -> HeartbeatResponse {
    let now = ctx.broker.clock().now_ms();
    let result = ctx
        .broker
        .groups()
        .with_group(&request.group_id.0, false, |group| {
            group
                .check_instance(request.group_instance_id.as_deref(), &request.member_id)
                .and_then(|()| group.heartbeat(&request.member_id, request.generation_id, now))
        })
        .unwrap_or(Err(GroupError::UnknownMemberId));
    match result {
        Ok(()) => HeartbeatResponse::default(),
        Err(e) => HeartbeatResponse::default().with_error_code(errors::group(&e).code()),
    }
}
