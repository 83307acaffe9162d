//! FindCoordinator: this broker coordinates every group. Transaction coordinators do not exist
//! yet: those keys get COORDINATOR_NOT_AVAILABLE.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::metadata::advertised_host_port;
use super::RequestContext;

const KEY_TYPE_GROUP: i8 = 0;

pub fn handle(ctx: &RequestContext, request: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let (host, port) = advertised_host_port(ctx);
    let node = BrokerId(ctx.broker.config.node_id);
    let error = if request.key_type == KEY_TYPE_GROUP {
        0
    } else {
        ResponseError::CoordinatorNotAvailable.code()
    };
    let found = error == 0;
    if ctx.version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(if found { node } else { BrokerId(-1) })
                    .with_host(StrBytes::from_string(if found {
                        host.clone()
                    } else {
                        String::new()
                    }))
                    .with_port(if found { port } else { -1 })
                    .with_error_code(error)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    if !found {
        return FindCoordinatorResponse::default()
            .with_error_code(error)
            .with_node_id(BrokerId(-1))
            .with_port(-1);
    }
    FindCoordinatorResponse::default()
        .with_node_id(node)
        .with_host(StrBytes::from_string(host))
        .with_port(port)
}
