//! LeaveGroup: one member (v0–2) or a batch of members (v3+) leave; the rest rebalance.

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::{errors, RequestContext};
use crate::group::coordinator::GroupError;

pub fn handle(ctx: &RequestContext, request: LeaveGroupRequest) -> LeaveGroupResponse {
    let now = ctx.broker.clock().now_ms();
    let groups = ctx.broker.groups();
    // v3+ may name a static member by its group.instance.id alone.
    let leave = |member_id: &str, instance: Option<&str>| {
        groups
            .with_group(&request.group_id.0, false, |group| {
                let member_id = match instance.and_then(|i| group.static_members.get(i)) {
                    Some(holder) if member_id.is_empty() => holder.clone(),
                    _ => member_id.to_string(),
                };
                group
                    .check_instance(instance, &member_id)
                    .and_then(|()| group.leave(&member_id, now))
            })
            .unwrap_or(Err(GroupError::UnknownMemberId))
    };
    if ctx.version < 3 {
        return match leave(&request.member_id, None) {
            Ok(()) => LeaveGroupResponse::default(),
            Err(e) => LeaveGroupResponse::default().with_error_code(errors::group(&e).code()),
        };
    }
    let members = request
        .members
        .iter()
        .map(|m| {
            let code = match leave(&m.member_id, m.group_instance_id.as_deref()) {
                Ok(()) => 0,
                Err(e) => errors::group(&e).code(),
            };
            MemberResponse::default()
                .with_member_id(m.member_id.clone())
                .with_group_instance_id(m.group_instance_id.clone())
                .with_error_code(code)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
