//! EndTxn (v0–3): the producer commits or aborts its ongoing transaction. Answered once the
//! decision (PrepareCommit/PrepareAbort) is durable in `__transaction_state`; the markers and
//! the Complete record follow (Kafka's transaction version 1 behaviour). A retry after the
//! transaction completed with the same outcome succeeds; see
//! [`crate::txn::coordinator::machine::TxnMetadata::end_txn`] for every refusal. v4–5
//! (KIP-890 part 2: TRANSACTION_ABORTABLE, an epoch bump per transaction) are not advertised.

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};

use super::{errors, RequestContext};

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
        )
        .await;
    match ended {
        Ok(()) => EndTxnResponse::default(),
        Err(e) => {
            tracing::debug!(peer = %ctx.peer, transactional_id = id, commit = request.committed, %e,
                "EndTxn refused");
            EndTxnResponse::default().with_error_code(errors::txn(&e, ctx.version >= 2).code())
        }
    }
}
