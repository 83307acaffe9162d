//! AddPartitionsToTxn (v0–3, the client's form): the partitions a transactional producer is
//! about to write join its ongoing transaction (Kafka's `handleAddPartitionsToTransaction`),
//! durable in `__transaction_state` before the answer, so the coordinator writes their markers
//! whatever happens to the producer. A partition that does not exist fails the request: it is
//! UNKNOWN_TOPIC_OR_PARTITION and every other partition OPERATION_NOT_ATTEMPTED, as in Kafka.
//!
//! v4–5 is the brokers' form (KIP-890 part 1): a batch of transactions, each answered on its
//! own. A partition leader sends `verify_only` entries before it takes the first transactional
//! batch of a producer (`crate::add_partitions_to_txn_manager`): per partition, NONE if it is
//! in the producer's transaction, else INVALID_TXN_STATE (v4) or TRANSACTION_ABORTABLE (v5,
//! which the leader maps back for its older clients); the producer-wide errors
//! (INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED, CONCURRENT_TRANSACTIONS, the
//! NOT_COORDINATOR family) answer every partition of the entry. An entry without
//! `verify_only` adds its partitions, as v3 does. Kafka guards v4+ with CLUSTER_ACTION; with
//! no ACLs here, any peer may ask.

use std::collections::BTreeSet;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTransaction;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};

use super::{errors, RequestContext};
use crate::txn::coordinator::machine::TopicPartition;

fn answer(
    topics: &[(kafka_protocol::messages::TopicName, Vec<i32>)],
    code: impl Fn(&str, i32) -> ResponseError,
    ok: bool,
) -> AddPartitionsToTxnResponse {
    let results = topics
        .iter()
        .map(|(name, partitions)| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(name.clone())
                .with_results_by_partition(
                    partitions
                        .iter()
                        .map(|&p| {
                            let error = if ok { 0 } else { code(name.as_str(), p).code() };
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(error)
                        })
                        .collect(),
                )
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

pub async fn handle(
    ctx: &RequestContext,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    if ctx.version >= 4 {
        return handle_batch(ctx, request).await;
    }
    let topics: Vec<_> = request
        .v3_and_below_topics
        .iter()
        .map(|t| (t.name.clone(), t.partitions.clone()))
        .collect();
    let id = request.v3_and_below_transactional_id.as_str();
    if id.is_empty() {
        return answer(&topics, |_, _| ResponseError::InvalidRequest, false);
    }
    let image = ctx.broker.image();
    let unknown: BTreeSet<TopicPartition> = topics
        .iter()
        .flat_map(|(name, ps)| {
            ps.iter()
                .map(move |&p| TopicPartition::new(name.as_str(), p))
        })
        .filter(|tp| image.partition(&tp.topic, tp.partition).is_none())
        .collect();
    if !unknown.is_empty() {
        return answer(
            &topics,
            |t, p| {
                if unknown.contains(&TopicPartition::new(t, p)) {
                    ResponseError::UnknownTopicOrPartition
                } else {
                    ResponseError::OperationNotAttempted
                }
            },
            false,
        );
    }
    let partitions: BTreeSet<TopicPartition> = topics
        .iter()
        .flat_map(|(name, ps)| {
            ps.iter()
                .map(move |&p| TopicPartition::new(name.as_str(), p))
        })
        .collect();
    let added = ctx
        .broker
        .txns()
        .add_partitions(
            id,
            request.v3_and_below_producer_id.0,
            request.v3_and_below_producer_epoch,
            partitions,
        )
        .await;
    match added {
        Ok(()) => answer(&topics, |_, _| ResponseError::UnknownServerError, true),
        Err(e) => {
            tracing::debug!(peer = %ctx.peer, transactional_id = id, %e, "AddPartitionsToTxn refused");
            let code = errors::txn(&e, ctx.version >= 2);
            answer(&topics, |_, _| code, false)
        }
    }
}

/// One transaction of a v4+ request, answered per partition by `code`.
fn result_for(
    transaction: &AddPartitionsToTxnTransaction,
    code: impl Fn(&str, i32) -> i16,
) -> AddPartitionsToTxnResult {
    AddPartitionsToTxnResult::default()
        .with_transactional_id(transaction.transactional_id.clone())
        .with_topic_results(
            transaction
                .topics
                .iter()
                .map(|t| {
                    AddPartitionsToTxnTopicResult::default()
                        .with_name(t.name.clone())
                        .with_results_by_partition(
                            t.partitions
                                .iter()
                                .map(|&p| {
                                    AddPartitionsToTxnPartitionResult::default()
                                        .with_partition_index(p)
                                        .with_partition_error_code(code(t.name.as_str(), p))
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
}

/// The brokers' form (v4+): every transaction of the batch, in request order.
async fn handle_batch(
    ctx: &RequestContext,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let image = ctx.broker.image();
    let mut results = Vec::with_capacity(request.transactions.len());
    for transaction in &request.transactions {
        let id = transaction.transactional_id.as_str();
        let partitions: BTreeSet<TopicPartition> = transaction
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |&p| TopicPartition::new(t.name.as_str(), p))
            })
            .collect();
        if id.is_empty() {
            results.push(result_for(transaction, |_, _| {
                ResponseError::InvalidRequest.code()
            }));
            continue;
        }
        let unknown: BTreeSet<&TopicPartition> = partitions
            .iter()
            .filter(|tp| image.partition(&tp.topic, tp.partition).is_none())
            .collect();
        if !unknown.is_empty() {
            results.push(result_for(transaction, |t, p| {
                if unknown.contains(&TopicPartition::new(t, p)) {
                    ResponseError::UnknownTopicOrPartition.code()
                } else {
                    ResponseError::OperationNotAttempted.code()
                }
            }));
            continue;
        }
        let producer_id = transaction.producer_id.0;
        let epoch = transaction.producer_epoch;
        let outcome = if transaction.verify_only {
            ctx.broker
                .txns()
                .verify_partitions(id, producer_id, epoch, &partitions)
        } else {
            ctx.broker
                .txns()
                .add_partitions(id, producer_id, epoch, partitions)
                .await
                .map(|()| BTreeSet::new())
        };
        let result = match outcome {
            Ok(missing) => {
                if !missing.is_empty() {
                    tracing::debug!(peer = %ctx.peer, transactional_id = id, ?missing,
                        "verification: partitions not in the transaction");
                }
                let not_in = if ctx.version >= 5 {
                    ResponseError::TransactionAbortable
                } else {
                    ResponseError::InvalidTxnState
                };
                result_for(transaction, |t, p| {
                    if missing.contains(&TopicPartition::new(t, p)) {
                        not_in.code()
                    } else {
                        0
                    }
                })
            }
            Err(e) => {
                tracing::debug!(peer = %ctx.peer, transactional_id = id, %e,
                    verify_only = transaction.verify_only, "AddPartitionsToTxn refused");
                let code = errors::txn(&e, true).code();
                result_for(transaction, |_, _| code)
            }
        };
        results.push(result);
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}
