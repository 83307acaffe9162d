//! Heartbeat: keeps a member's session alive; REBALANCE_IN_PROGRESS tells it to rejoin.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::{errors, RequestContext};

pub fn handle(ctx: &RequestContext, request: HeartbeatRequest) -> HeartbeatResponse {
    let result = ctx.broker.groups().heartbeat(
        &request.group_id.0,
        &request.member_id,
        request.group_instance_id.as_deref(),
        request.generation_id,
    );
    match result {
        Ok(()) => HeartbeatResponse::default(),
        Err(e) => HeartbeatResponse::default().with_error_code(errors::group(&e).code()),
    }
}
