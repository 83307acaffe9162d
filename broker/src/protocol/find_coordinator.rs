//! FindCoordinator: a group's coordinator is the leader of the group's partition of
//! `__consumer_offsets` (Kafka's placement, `group::coordinator::partition_for`), one key per
//! request before v4 and a batch of keys from v4. Transaction coordinators do not exist yet:
//! those keys get COORDINATOR_NOT_AVAILABLE.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::metadata::advertised_host_port;
use super::RequestContext;

const KEY_TYPE_GROUP: i8 = 0;

/// A broker as FindCoordinator names it.
struct Found {
    node: BrokerId,
    host: String,
    port: i32,
}

/// The leader of offsets partition `partition`, as clients reach it, or `None` if it has no
/// leader now (COORDINATOR_NOT_AVAILABLE: the client asks again). A single broker leads every
/// partition; in a cluster this is the partition's leader in the image and its advertised
/// endpoint.
fn offsets_partition_leader(ctx: &RequestContext, partition: i32) -> Option<Found> {
    assert!(partition >= 0);
    let (host, port) = advertised_host_port(ctx);
    Some(Found {
        node: BrokerId(ctx.broker.config.node_id),
        host,
        port,
    })
}

/// The coordinator of `key`, or the error to answer it with.
fn find(ctx: &RequestContext, key_type: i8, key: &str) -> Result<Found, ResponseError> {
    if key_type != KEY_TYPE_GROUP {
        return Err(ResponseError::CoordinatorNotAvailable);
    }
    let partition = ctx.broker.groups().partition_for(key);
    offsets_partition_leader(ctx, partition).ok_or(ResponseError::CoordinatorNotAvailable)
}

pub fn handle(ctx: &RequestContext, request: FindCoordinatorRequest) -> FindCoordinatorResponse {
    if ctx.version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let found = find(ctx, request.key_type, &key);
                let coordinator = Coordinator::default().with_key(key);
                match found {
                    Ok(found) => coordinator
                        .with_node_id(found.node)
                        .with_host(StrBytes::from_string(found.host))
                        .with_port(found.port),
                    Err(error) => coordinator
                        .with_node_id(BrokerId(-1))
                        .with_host(StrBytes::default())
                        .with_port(-1)
                        .with_error_code(error.code()),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match find(ctx, request.key_type, &request.key) {
        Ok(found) => FindCoordinatorResponse::default()
            .with_node_id(found.node)
            .with_host(StrBytes::from_string(found.host))
            .with_port(found.port),
        Err(error) => FindCoordinatorResponse::default()
            .with_error_code(error.code())
            .with_node_id(BrokerId(-1))
            .with_port(-1),
    }
}
