//! DescribeTransactions (v0): the coordinator's view of transactional ids it owns (Kafka's
//! `TransactionCoordinator.handleDescribeTransactions`). Each id is answered on its own: its
//! state, producer id and epoch, timeout, start time and the partitions of the transaction in
//! flight; TRANSACTIONAL_ID_NOT_FOUND for an id this coordinator does not hold (or one being
//! removed, Dead); NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS when its shard is not here
//! or still loading.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{errors, RequestContext};
use crate::txn::coordinator::machine::TxnState;

pub fn handle(
    ctx: &RequestContext,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let states = request
        .transactional_ids
        .into_iter()
        .map(|id| {
            let state = TransactionState::default()
                .with_transactional_id(id.clone())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1);
            match ctx.broker.txns().describe(id.as_str()) {
                Err(e) => state.with_error_code(errors::txn(&e, true).code()),
                Ok(None) => state.with_error_code(ResponseError::TransactionalIdNotFound.code()),
                // Being expired: gone as far as clients know, as in Kafka.
                Ok(Some(meta)) if meta.state() == TxnState::Dead => {
                    state.with_error_code(ResponseError::TransactionalIdNotFound.code())
                }
                Ok(Some(meta)) => {
                    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                    for tp in &meta.current.partitions {
                        topics.entry(&tp.topic).or_default().push(tp.partition);
                    }
                    let topics = topics
                        .into_iter()
                        .map(|(topic, partitions)| {
                            TopicData::default()
                                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                                .with_partitions(partitions)
                        })
                        .collect();
                    state
                        .with_transaction_state(StrBytes::from_static_str(meta.state().name()))
                        .with_transaction_timeout_ms(meta.current.timeout_ms)
                        .with_transaction_start_time_ms(meta.current.start_ms)
                        .with_producer_id(ProducerId(meta.current.producer_id))
                        .with_producer_epoch(meta.current.producer_epoch)
                        .with_topics(topics)
                }
            }
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
