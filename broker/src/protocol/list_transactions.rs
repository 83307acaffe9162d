//! ListTransactions (v0–1): the transactional ids this broker coordinates (Kafka's
//! `TransactionStateManager.listTransactionStates`; a client asks every broker). Filters, each
//! ignored when empty: states (Kafka's names, matched exactly; a name Kafka does not know is
//! returned in `unknown_state_filters`), producer ids, and from v1 (KIP-994) a duration: only
//! transactions running longer than it. While a shard is loading the answer is
//! COORDINATOR_LOAD_IN_PROGRESS with no ids, as Kafka answers. From v2 (KIP-1152) a regular
//! expression over the ids: an id is listed when the whole id matches (Java's
//! `Matcher.matches`), and a pattern that does not compile is INVALID_REGULAR_EXPRESSION.
//! Patterns are Rust's `regex` syntax, which agrees with Java's for everything but
//! look-around and back-references (refused here as invalid); its matching time is linear.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::txn::coordinator::machine::TxnState;

/// The v2 filter, anchored at both ends (the whole id must match); `None` when the request
/// has none (before v2, or null or empty).
fn id_pattern(
    version: i16,
    request: &ListTransactionsRequest,
) -> Result<Option<regex::Regex>, regex::Error> {
    let pattern = match &request.transactional_id_pattern {
        Some(p) if version >= 2 && !p.is_empty() => p.as_str(),
        _ => return Ok(None),
    };
    // A bound on what one request may make the broker compile.
    let build = |p: &str| regex::RegexBuilder::new(p).size_limit(1 << 20).build();
    // Compiled alone first, so that a pattern such as `a)(b` is refused as Java refuses it
    // rather than made valid by the anchoring group.
    build(pattern)?;
    build(&format!("^(?:{pattern})$")).map(Some)
}

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
    let pattern = match id_pattern(ctx.version, &request) {
        Ok(pattern) => pattern,
        Err(e) => {
            tracing::debug!(peer = %ctx.peer, %e, "ListTransactions pattern refused");
            return ListTransactionsResponse::default()
                .with_error_code(ResponseError::InvalidRegularExpression.code());
        }
    };
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
                && pattern.as_ref().is_none_or(|p| p.is_match(&m.transactional_id))
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
