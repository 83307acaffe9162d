//! SyncGroup: the leader hands out assignments; every member gets its own.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::{errors, Reply, RequestContext};
use crate::group::coordinator::GroupError;

pub fn handle(ctx: &RequestContext, request: SyncGroupRequest) -> Reply {
    let version = ctx.version;
    let group_id = request.group_id.0.to_string();
    let assignments = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let now = ctx.broker.clock().now_ms();
    let member_id = request.member_id.to_string();
    let generation = request.generation_id;
    let receiver = ctx.broker.groups().with_group(&group_id, false, |group| {
        let check_protocol = version >= 5
            && ((request.protocol_type.is_some()
                && request.protocol_type.as_deref() != group.protocol_type.as_deref())
                || (request.protocol_name.is_some()
                    && request.protocol_name.as_deref() != group.protocol_name.as_deref()));
        let receiver = match group.check_instance(request.group_instance_id.as_deref(), &member_id)
        {
            Ok(()) => group.sync(&member_id, generation, assignments, now),
            Err(e) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let _ = tx.send(Err(e));
                rx
            }
        };
        (
            receiver,
            check_protocol,
            group.protocol_type.clone(),
            group.protocol_name.clone(),
            group.awaits_store(generation),
        )
    });
    let broker = std::sync::Arc::clone(&ctx.broker);
    ctx.later(
        async move {
            let Some((receiver, inconsistent, protocol_type, protocol_name, store)) = receiver
            else {
                return SyncGroupResponse::default()
                    .with_error_code(errors::group(&GroupError::UnknownMemberId).code());
            };
            if store {
                // The leader's assignments: stored before anyone learns them (Kafka's storeGroup).
                let groups = broker.groups();
                let stored = match broker.offsets_partition().await {
                    Ok(partition) => groups.store_group(&partition, &group_id, generation).await,
                    Err(e) => Err(crate::partition::ProduceError::Append(
                        crate::log::AppendError::Offline(e.to_string()),
                    )),
                };
                let now = broker.clock().now_ms();
                groups.with_group(&group_id, false, |group| match stored {
                    Ok(_) => group.assignments_stored(generation, now),
                    Err(e) => {
                        tracing::warn!(group = %group_id, %e, "group assignments not stored");
                        group.assignments_not_stored(
                            generation,
                            GroupError::CoordinatorNotAvailable,
                        );
                    }
                });
            }
            let outcome = receiver
                .await
                .unwrap_or(Err(GroupError::CoordinatorNotAvailable));
            let outcome = if inconsistent {
                Err(GroupError::InconsistentGroupProtocol)
            } else {
                outcome
            };
            match outcome {
                Err(e) => SyncGroupResponse::default().with_error_code(errors::group(&e).code()),
                Ok(assignment) => {
                    let mut response = SyncGroupResponse::default().with_assignment(assignment);
                    if version >= 5 {
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
