//! AddOffsetsToTxn (v0–3): a transactional producer about to commit a consumer group's offsets
//! (`send_offsets_to_transaction`) adds the group's partition of `__consumer_offsets` to its
//! transaction, so the coordinator writes a marker there too and the offsets become visible
//! (or are dropped) with the transaction. Errors as AddPartitionsToTxn's.

use std::collections::BTreeSet;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::{errors, RequestContext};
use crate::group::offsets::OFFSETS_TOPIC;
use crate::txn::coordinator::machine::TopicPartition;

pub async fn handle(
    ctx: &RequestContext,
    request: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let id = request.transactional_id.as_str();
    if id.is_empty() {
        return AddOffsetsToTxnResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code());
    }
    if request.group_id.is_empty() {
        return AddOffsetsToTxnResponse::default()
            .with_error_code(ResponseError::InvalidGroupId.code());
    }
    // The offsets topic is created on first use, as for a group's first commit.
    if let Err(e) = ctx.broker.offsets_topic().await {
        tracing::warn!(%e, "{OFFSETS_TOPIC} not created");
        return AddOffsetsToTxnResponse::default()
            .with_error_code(ResponseError::CoordinatorNotAvailable.code());
    }
    let partition = ctx.broker.groups().partition_for(request.group_id.as_str());
    let added = ctx
        .broker
        .txns()
        .add_partitions(
            id,
            request.producer_id.0,
            request.producer_epoch,
            BTreeSet::from([TopicPartition::new(OFFSETS_TOPIC, partition)]),
        )
        .await;
    match added {
        Ok(()) => AddOffsetsToTxnResponse::default(),
        Err(e) => {
            tracing::debug!(peer = %ctx.peer, transactional_id = id, %e, "AddOffsetsToTxn refused");
            AddOffsetsToTxnResponse::default()
                .with_error_code(errors::txn(&e, ctx.version >= 2).code())
        }
    }
}
