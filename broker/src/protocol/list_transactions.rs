//! ListTransactions (v0–1): the transactional ids this broker coordinates (Kafka's
//! `TransactionStateManager.listTransactionStates`; a client asks every broker). Filters, each
//! ignored when empty: states (Kafka's names, matched exactly; a name Kafka does not know is
//! returned in `unknown_state_filters`), producer ids, and from v1 (KIP-994) a duration: only
//! transactions running longer than it. While a shard is loading the answer is
//! COORDINATOR_LOAD_IN_PROGRESS with no ids, as Kafka answers. v2 (KIP-1152, a regular
//! expression over the ids) is not advertised.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::txn::coordinator::machine::TxnState;

pub fn handle(ctx: &RequestContext, request: ListTransactionsRequest) -> ListTransactionsResponse {
    let txns = ctx.broker.txns();
    if txns.is_loading() {
        return ListTransactionsResponse::default()
            .with_error_code(ResponseError::CoordinatorLoadInProgress.code());
    }
    let mut states = Vec::new();
    let mut unknown = Vec::new();
    for name in &request.state_filters {
        match TxnState::from_name(name.as_str()) {
            Some(state) => states.push(state),
            None => unknown.push(name.clone()),
        }
    }
    let duration = if ctx.version >= 1 {
        request.duration_filter
    } else {
        -1
    };
    let now = txns.now_ms();
    let listed = txns
        .list()
        .into_iter()
        .filter(|m| {
            let current = &m.current;
            // Dead: being removed (expired); Kafka leaves it out.
            current.state != TxnState::Dead
                && (request.producer_id_filters.is_empty()
                    || request
                        .producer_id_filters
                        .contains(&ProducerId(current.producer_id)))
                && (states.is_empty() || states.contains(&current.state))
                // Kafka's comparison, start time -1 included: an Empty id counts as long-running.
                && (duration < 0 || now.saturating_sub(current.start_ms) > duration)
        })
        .map(|m| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(
                    m.transactional_id.clone(),
                )))
                .with_producer_id(ProducerId(m.current.producer_id))
                .with_transaction_state(StrBytes::from_static_str(m.state().name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(listed)
}
