//! JoinGroup: answered when the group's rebalance completes (see `group::coordinator`).

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::{errors, Reply, RequestContext};
use crate::group::machine::{GroupError, JoinRequest};

fn s(v: String) -> StrBytes {
    StrBytes::from_string(v)
}

fn error_response(e: &GroupError) -> JoinGroupResponse {
    let mut response = JoinGroupResponse::default()
        .with_error_code(errors::group(e).code())
        .with_generation_id(-1);
    if let GroupError::MemberIdRequired(id) = e {
        response = response.with_member_id(s(id.clone()));
    }
    response
}

pub async fn handle(ctx: &RequestContext, request: JoinGroupRequest) -> Reply {
    let version = ctx.version;
    let group_id = request.group_id.0.to_string();
    if group_id.is_empty() {
        return ctx.now(&error_response(&GroupError::InvalidGroupId));
    }
    let join = JoinRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|i| i.to_string()),
        client_id: ctx.client_id.as_deref().unwrap_or_default().to_string(),
        client_host: format!("/{}", ctx.peer.ip()),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let salt = crate::random::random_u128();
    // A static member's takeover is stored before it is answered: the coordinator needs the
    // offsets partition (created on first use, as Kafka does for FindCoordinator). If it
    // cannot be had, that store fails and the join is answered with the error.
    let _ = ctx.broker.offsets_topic().await;
    let joined = ctx.broker.groups().join(&group_id, join, salt);
    ctx.later(
        async move {
            match joined.await {
                Err(e) => error_response(&e),
                Ok(result) => {
                    let mut response = JoinGroupResponse::default()
                        .with_generation_id(result.generation_id)
                        .with_protocol_name(result.protocol_name.map(s))
                        .with_leader(s(result.leader))
                        .with_member_id(s(result.member_id))
                        .with_members(
                            result
                                .members
                                .into_iter()
                                .map(|(id, instance, metadata)| {
                                    let mut m = JoinGroupResponseMember::default()
                                        .with_member_id(s(id))
                                        .with_metadata(metadata);
                                    if version >= 5 {
                                        m = m.with_group_instance_id(instance.map(s));
                                    }
                                    m
                                })
                                .collect(),
                        );
                    if version >= 7 {
                        response = response.with_protocol_type(result.protocol_type.map(s));
                    }
                    if version < 7 && response.protocol_name.is_none() {
                        response.protocol_name = Some(StrBytes::default());
                    }
                    response.error_code = 0;
                    response
                }
            }
        },
        |error| {
            JoinGroupResponse::default()
                .with_error_code(error.code())
                .with_generation_id(-1)
        },
    )
}
