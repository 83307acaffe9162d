//! SyncGroup: the leader hands out assignments, stored before any member learns its own.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::{errors, Reply, RequestContext};
use crate::group::machine::SyncRequest;

pub async fn handle(ctx: &RequestContext, request: SyncGroupRequest) -> Reply {
    let version = ctx.version;
    let group_id = request.group_id.0.to_string();
    let sync = SyncRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|i| i.to_string()),
        generation_id: request.generation_id,
        protocol_type: request.protocol_type.map(|p| p.to_string()),
        protocol_name: request.protocol_name.map(|p| p.to_string()),
        assignments: request
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    // The leader's assignments are stored in `__consumer_offsets` (created on first use).
    let _ = ctx.broker.offsets_topic().await;
    let groups = ctx.broker.groups();
    let synced = groups.sync(&group_id, sync);
    let groups = std::sync::Arc::clone(groups);
    ctx.later(
        async move {
            match synced.await {
                Err(e) => SyncGroupResponse::default().with_error_code(errors::group(&e).code()),
                Ok(assignment) => {
                    let mut response = SyncGroupResponse::default().with_assignment(assignment);
                    if version >= 5 {
                        let (protocol_type, protocol_name) = groups
                            .read_group(&group_id, |g| {
                                (g.protocol_type.clone(), g.protocol_name.clone())
                            })
                            .ok()
                            .flatten()
                            .unwrap_or_default();
                        response = response
                            .with_protocol_type(protocol_type.map(StrBytes::from_string))
                            .with_protocol_name(protocol_name.map(StrBytes::from_string));
                    }
                    response
                }
            }
        },
        |error| SyncGroupResponse::default().with_error_code(error.code()),
    )
}
