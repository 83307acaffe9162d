//! FindCoordinator: a group's coordinator is the leader of the group's partition of
//! `__consumer_offsets` (Kafka's placement, `group::coordinator::partition_for`), one key per
//! request before v4 and a batch of keys from v4. A transactional id's coordinator (key
//! type 1) is the leader of its partition of `__transaction_state`, placed the same way. Each topic
//! is created when its first coordinator is looked for, as Kafka does; until then the answer
//! is COORDINATOR_NOT_AVAILABLE (the client asks again). Another key type is INVALID_REQUEST.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::controller::image::ClusterImage;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::txn::coordinator::records::TRANSACTION_STATE_TOPIC;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// A broker as FindCoordinator names it.
struct Found {
    node: BrokerId,
    host: String,
    port: i32,
}

/// The leader of offsets partition `partition` in `image` and the endpoint clients reach it
/// at, or `None` if the topic does not exist yet or the partition has no unfenced leader now
/// (COORDINATOR_NOT_AVAILABLE: the client asks again).
fn internal_partition_leader(image: &ClusterImage, topic: &str, partition: i32) -> Option<Found> {
    let index = usize::try_from(partition).expect("partition_for gives an index");
    let leader = image.topic(topic)?.partitions.get(index)?.leader;
    let broker = image.brokers.get(&leader).filter(|b| !b.fenced)?;
    Some(Found {
        node: BrokerId(broker.id),
        host: broker.endpoint.host.clone(),
        port: i32::from(broker.endpoint.port),
    })
}

/// The coordinator of `key`, or the error to answer it with.
fn find(
    ctx: &RequestContext,
    image: &ClusterImage,
    key_type: i8,
    key: &str,
) -> Result<Found, ResponseError> {
    let (topic, partition) = match key_type {
        KEY_TYPE_GROUP => (OFFSETS_TOPIC, ctx.broker.groups().partition_for(key)),
        KEY_TYPE_TRANSACTION => {
            if key.is_empty() {
                return Err(ResponseError::InvalidRequest);
            }
            (
                TRANSACTION_STATE_TOPIC,
                ctx.broker.txns().partition_for(key),
            )
        }
        _ => return Err(ResponseError::InvalidRequest),
    };
    internal_partition_leader(image, topic, partition).ok_or(ResponseError::CoordinatorNotAvailable)
}

pub async fn handle(
    ctx: &RequestContext,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    // Kafka creates the offsets topic when a coordinator is first looked for; until it exists
    // (or if creating it failed) the answer is COORDINATOR_NOT_AVAILABLE.
    match request.key_type {
        KEY_TYPE_GROUP => {
            if let Err(e) = ctx.broker.offsets_topic().await {
                tracing::warn!(%e, "{OFFSETS_TOPIC} not created");
            }
        }
        KEY_TYPE_TRANSACTION => {
            if let Err(e) = ctx.broker.transaction_state_topic().await {
                tracing::warn!(%e, "{TRANSACTION_STATE_TOPIC} not created");
            }
        }
        _ => {}
    }
    let image = ctx.broker.image();
    if ctx.version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let found = find(ctx, &image, request.key_type, &key);
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
    match find(ctx, &image, request.key_type, &request.key) {
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
