//! LeaveGroup: one member (v0–2) or a batch of members (v3+) leave; the rest rebalance. A leave
//! that empties the group is answered once the empty group is stored, so a restart cannot bring
//! the member back.

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::{errors, Reply, RequestContext};

pub async fn handle(ctx: &RequestContext, request: LeaveGroupRequest) -> Reply {
    let _ = ctx.broker.offsets_topic().await;
    let groups = ctx.broker.groups();
    let group_id = request.group_id.0.to_string();
    if ctx.version < 3 {
        let left = match groups.leave(&group_id, vec![(request.member_id.to_string(), None)]) {
            Ok(left) => left,
            Err(e) => {
                return ctx
                    .now(&LeaveGroupResponse::default().with_error_code(errors::group(&e).code()))
            }
        };
        return ctx.later(
            async move {
                match left.await.pop().expect("one answer per member") {
                    Ok(()) => LeaveGroupResponse::default(),
                    Err(e) => {
                        LeaveGroupResponse::default().with_error_code(errors::group(&e).code())
                    }
                }
            },
            |error| LeaveGroupResponse::default().with_error_code(error.code()),
        );
    }
    let members: Vec<(String, Option<String>)> = request
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.to_string(),
                m.group_instance_id.as_ref().map(|i| i.to_string()),
            )
        })
        .collect();
    // A group this broker cannot serve is refused as a whole (Kafka's top-level error).
    let left = match groups.leave(&group_id, members) {
        Ok(left) => left,
        Err(e) => {
            return ctx
                .now(&LeaveGroupResponse::default().with_error_code(errors::group(&e).code()))
        }
    };
    ctx.later(
        async move {
            let results = left.await;
            assert_eq!(results.len(), request.members.len());
            let members = request
                .members
                .into_iter()
                .zip(results)
                .map(|(m, result)| {
                    let code = match result {
                        Ok(()) => 0,
                        Err(e) => errors::group(&e).code(),
                    };
                    MemberResponse::default()
                        .with_member_id(m.member_id)
                        .with_group_instance_id(m.group_instance_id)
                        .with_error_code(code)
                })
                .collect();
            LeaveGroupResponse::default().with_members(members)
        },
        |error| LeaveGroupResponse::default().with_error_code(error.code()),
    )
}
