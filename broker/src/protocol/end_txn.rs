//! EndTxn (v0–5): the producer commits or aborts its ongoing transaction. Answered once the
//! decision (PrepareCommit/PrepareAbort) is durable in `__transaction_state`; the markers and
//! the Complete record follow. A retry after the transaction completed with the same outcome
//! succeeds; see [`crate::txn::coordinator::machine::TxnMetadata::end_txn_as`] for every
//! refusal.
//!
//! v0–4 are Kafka's transaction version 1 (v4 only tells the broker the client understands
//! TRANSACTION_ABORTABLE, which this coordinator never needs to answer). v5 is transaction
//! version 2 (KIP-890 part 2): the coordinator bumps the producer epoch at the end of every
//! transaction, writes the markers with the bumped epoch, and answers the producer id and
//! epoch the client continues with (a new producer id at epoch 0 when the bump exhausted the
//! epoch).

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};

use super::{errors, RequestContext};
use crate::txn::coordinator::records::TRANSACTION_VERSION_2;

/// Kafka's `TransactionVersion.transactionVersionForEndTxn`: v5+ is transaction version 2.
fn client_txn_version(version: i16) -> i16 {
    if version >= 5 {
        TRANSACTION_VERSION_2
    } else {
        0
    }
}

pub async fn handle(ctx: &RequestContext, request: EndTxnRequest) -> EndTxnResponse {
    let id = request.transactional_id.as_str();
    if id.is_empty() {
        return EndTxnResponse::default()
            .with_error_code(kafka_protocol::error::ResponseError::InvalidRequest.code());
    }
    let ended = ctx
        .broker
        .txns()
        .end_txn(
            id,
            request.producer_id.0,
            request.producer_epoch,
            request.committed,
            client_txn_version(ctx.version),
        )
        .await;
    match ended {
        Ok(next) => EndTxnResponse::default()
            .with_producer_id(ProducerId(next.producer_id))
            .with_producer_epoch(next.producer_epoch),
        Err(e) => {
            tracing::debug!(peer = %ctx.peer, transactional_id = id, commit = request.committed, %e,
                "EndTxn refused");
            EndTxnResponse::default().with_error_code(errors::txn(&e, ctx.version >= 2).code())
        }
    }
}
