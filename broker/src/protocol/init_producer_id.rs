//! InitProducerId (v0–4): a producer id for an idempotent producer, from the blocks the active
//! controller hands this broker (AllocateProducerIds), so ids are unique across the cluster.
//!
//! Without a transactional id Kafka "always blindly accepts the request and returns a new
//! producerId" with epoch 0 (`TransactionCoordinator.handleInitProducerId`), including when the
//! request carries the producer's current id and epoch (KIP-360, v3+): with no transactional
//! state behind an idempotent producer id there is nothing to check the claimed epoch against,
//! so the broker does not bump it; the client starts over with a fresh id and sequence 0,
//! which is just as safe for its partitions (their state for the old id stays as it was). As in
//! Kafka's `KafkaApis`, an id without an epoch (or the reverse) is INVALID_REQUEST.
//!
//! Transactions are not implemented: a request with a transactional id gets
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED, which librdkafka and the Java client treat as fatal
//! and report at once (COORDINATOR_NOT_AVAILABLE would make them look for a transaction
//! coordinator and retry until `transaction.timeout.ms`). Produce answers transactional
//! requests the same way. An empty transactional id is INVALID_REQUEST, as in Kafka.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{errors, RequestContext};
use crate::txn::producer_state::{NO_PRODUCER_EPOCH, NO_PRODUCER_ID};

fn failed(error: ResponseError) -> InitProducerIdResponse {
    InitProducerIdResponse::default()
        .with_error_code(error.code())
        .with_producer_id(ProducerId(NO_PRODUCER_ID))
        .with_producer_epoch(NO_PRODUCER_EPOCH)
}

pub async fn handle(
    ctx: &RequestContext,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    match &request.transactional_id {
        Some(id) if id.is_empty() => return failed(ResponseError::InvalidRequest),
        Some(_) => return failed(ResponseError::TransactionalIdAuthorizationFailed),
        None => {}
    }
    let claimed = (request.producer_id.0, request.producer_epoch);
    if (claimed.0 == NO_PRODUCER_ID) != (claimed.1 == NO_PRODUCER_EPOCH) {
        return failed(ResponseError::InvalidRequest);
    }
    match ctx.broker.allocate_producer_id().await {
        Ok(producer_id) => {
            tracing::debug!(peer = %ctx.peer, client_id = ?ctx.client_id, producer_id,
                previous = ?(claimed.0 != NO_PRODUCER_ID).then_some(claimed), "producer id allocated");
            InitProducerIdResponse::default()
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(0)
        }
        Err(e) => {
            tracing::warn!(peer = %ctx.peer, %e, "InitProducerId failed");
            failed(errors::allocate_producer_id(&e))
        }
    }
}
