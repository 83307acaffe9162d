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
//! With a transactional id the request goes to the transaction coordinator
//! ([`crate::txn::coordinator::TxnCoordinator::init_producer_id`]): the id's producer id with
//! its epoch bumped (which fences every older producer of the id), a transaction left in flight
//! aborted first (answered CONCURRENT_TRANSACTIONS; the client retries), and
//! `transaction.timeout.ms` checked against `transaction.max.timeout.ms`
//! (INVALID_TRANSACTION_TIMEOUT). An empty transactional id is INVALID_REQUEST, as in Kafka.

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
    let claimed = (request.producer_id.0, request.producer_epoch);
    if (claimed.0 == NO_PRODUCER_ID) != (claimed.1 == NO_PRODUCER_EPOCH) {
        return failed(ResponseError::InvalidRequest);
    }
    match &request.transactional_id {
        Some(id) if id.is_empty() => return failed(ResponseError::InvalidRequest),
        Some(id) => {
            let expected = (claimed.0 != NO_PRODUCER_ID).then_some(claimed);
            let txns = ctx.broker.txns();
            return match txns
                .init_producer_id(id.as_str(), request.transaction_timeout_ms, expected)
                .await
            {
                Ok(answer) => InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(answer.producer_id))
                    .with_producer_epoch(answer.producer_epoch),
                Err(e) => {
                    tracing::debug!(peer = %ctx.peer, transactional_id = %id.as_str(), %e,
                        "transactional InitProducerId refused");
                    failed(errors::txn(&e, ctx.version >= 4))
                }
            };
        }
        None => {}
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
