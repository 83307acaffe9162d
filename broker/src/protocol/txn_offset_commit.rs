//! TxnOffsetCommit (v0–3): offsets a transactional producer commits for a consumer group
//! (`send_offsets_to_transaction`), sent to the group's coordinator. They are stored as
//! pending for the producer (durable before the answer) and become the group's committed
//! offsets only when the transaction's COMMIT marker lands on the group's offsets partition;
//! an abort drops them ([`crate::group::shard::GroupShard::txn_commit`]). When this broker also
//! coordinates the transactional id, the offsets partition must be in the producer's ongoing
//! transaction (AddOffsetsToTxn first; KIP-890): INVALID_TXN_STATE otherwise, and an older
//! producer epoch is INVALID_PRODUCER_EPOCH. Group errors (v3's member id and generation)
//! answer every partition, as in OffsetCommit.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TopicName, TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::{errors, RequestContext};
use crate::group::offsets::{CommittedOffset, OffsetKey, MAX_METADATA_BYTES, OFFSETS_TOPIC};
use crate::txn::coordinator::machine::{TopicPartition, TxnError};

type Results = Vec<(TopicName, Vec<(i32, Option<i16>)>)>;

fn response(results: Results, all: Option<i16>, written: i16) -> TxnOffsetCommitResponse {
    TxnOffsetCommitResponse::default().with_topics(
        results
            .into_iter()
            .map(|(name, partitions)| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, own)| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(index)
                                    .with_error_code(all.or(own).unwrap_or(written))
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

pub async fn handle(
    ctx: &RequestContext,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let group = request.group_id.to_string();
    let now = ctx.broker.clock().now_ms();
    let mut results: Results = Vec::new();
    let mut writes = Vec::new();
    for topic in &request.topics {
        let mut partitions = Vec::new();
        for p in &topic.partitions {
            let too_large = p
                .committed_metadata
                .as_ref()
                .is_some_and(|m| m.len() > MAX_METADATA_BYTES);
            if too_large {
                partitions.push((
                    p.partition_index,
                    Some(ResponseError::OffsetMetadataTooLarge.code()),
                ));
                continue;
            }
            writes.push((
                OffsetKey {
                    group: group.clone(),
                    topic: topic.name.to_string(),
                    partition: p.partition_index,
                },
                CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    commit_timestamp_ms: now,
                },
            ));
            partitions.push((p.partition_index, None));
        }
        results.push((topic.name.clone(), partitions));
    }
    if group.is_empty() {
        return response(results, Some(ResponseError::InvalidGroupId.code()), 0);
    }
    let id = request.transactional_id.as_str();
    let offsets_partition =
        TopicPartition::new(OFFSETS_TOPIC, ctx.broker.groups().partition_for(&group));
    let verified = ctx.broker.txns().verify_partition(
        id,
        request.producer_id.0,
        request.producer_epoch,
        &offsets_partition,
    );
    if let Some(Err(e)) = verified {
        tracing::debug!(peer = %ctx.peer, transactional_id = id, %e, "TxnOffsetCommit refused");
        let code = match e {
            TxnError::ProducerFenced { .. } => ResponseError::InvalidProducerEpoch,
            _ => ResponseError::InvalidTxnState,
        };
        return response(results, Some(code.code()), 0);
    }
    let _ = ctx.broker.offsets_topic().await;
    let committed = ctx.broker.groups().txn_commit(
        &group,
        request.producer_id.0,
        request.member_id.as_str(),
        request.group_instance_id.as_deref(),
        request.generation_id,
        writes,
    );
    match committed {
        Err(e) => response(results, Some(errors::group(&e).code()), 0),
        Ok(written) => match written.await {
            Ok(()) => response(results, None, 0),
            Err(e) => response(results, None, errors::group_write(&e).code()),
        },
    }
}
