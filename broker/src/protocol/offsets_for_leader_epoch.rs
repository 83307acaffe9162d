//! OffsetsForLeaderEpoch (API key 23, KIP-101): for each partition, the largest leader epoch
//! this leader's log knows at or below the one asked for, and the offset where that epoch ended
//! (the start of the next epoch, or the log end for the latest). A follower that was told of a
//! new leader asks this before fetching and truncates where its log diverged (KIP-279); a
//! consumer asks it to detect a truncation after a leader change (KIP-320).
//!
//! Only the leader answers (NOT_LEADER_OR_FOLLOWER elsewhere), after checking the client's
//! current leader epoch (FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH). An epoch older than
//! every one the log knows gets Kafka's undefined answer: epoch -1, offset -1.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{errors, RequestContext};

/// Kafka's `UNDEFINED_EPOCH` and `UNDEFINED_EPOCH_OFFSET`.
const UNDEFINED: i64 = -1;

pub async fn handle(
    ctx: &RequestContext,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut topics = Vec::new();
    for topic in request.topics {
        let mut partitions = Vec::new();
        for p in topic.partitions {
            let answer = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(UNDEFINED as i32)
                .with_end_offset(UNDEFINED);
            let partition = match ctx.broker.leader_partition(&topic.topic, p.partition) {
                Ok(partition) => partition,
                Err(e) => {
                    partitions.push(answer.with_error_code(errors::route(&e).code()));
                    continue;
                }
            };
            if let Some(error) =
                super::fetch::check_leader_epoch(p.current_leader_epoch, partition.leader_epoch())
            {
                partitions.push(answer.with_error_code(error.code()));
                continue;
            }
            let log_end_offset = partition.log.log_end_offset();
            let found = partition
                .log
                .leader_epochs()
                .await
                .end_offset_for(p.leader_epoch, log_end_offset);
            partitions.push(match found {
                Some((epoch, end_offset)) => answer
                    .with_leader_epoch(epoch)
                    .with_end_offset(end_offset as i64),
                None => answer,
            });
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
