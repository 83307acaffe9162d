//! AddPartitionsToTxn (v0–3, the client's form): the partitions a transactional producer is
//! about to write join its ongoing transaction (Kafka's `handleAddPartitionsToTransaction`),
//! durable in `__transaction_state` before the answer, so the coordinator writes their markers
//! whatever happens to the producer. A partition that does not exist fails the request: it is
//! UNKNOWN_TOPIC_OR_PARTITION and every other partition OPERATION_NOT_ATTEMPTED, as in Kafka.
//! The batched coordinator-to-broker form (v4+, KIP-890's verification) is not advertised.

use std::collections::BTreeSet;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
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
