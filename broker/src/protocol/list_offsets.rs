//! ListOffsets: earliest (-2), latest (-1, the high watermark), max timestamp (-3, KIP-734),
//! and the first offset at or after a timestamp. With `isolation_level` = 1 (read_committed,
//! v2+) the last stable offset takes the high watermark's place: LATEST answers it, and
//! nothing at or past it is found. The client's current leader epoch (v4+) is
//! checked as Fetch checks it (KIP-320): FENCED_LEADER_EPOCH or UNKNOWN_LEADER_EPOCH.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{errors, RequestContext};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub async fn handle(ctx: &RequestContext, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut topics = Vec::new();
    for topic in request.topics {
        let mut partitions = Vec::new();
        for p in topic.partitions {
            let mut response =
                ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
            let partition = match ctx.broker.leader_partition(&topic.name, p.partition_index) {
                Ok(partition) => partition,
                Err(e) => {
                    partitions.push(response.with_error_code(errors::route(&e).code()));
                    continue;
                }
            };
            if ctx.version >= 4 {
                if let Some(error) = super::fetch::check_leader_epoch(
                    p.current_leader_epoch,
                    partition.leader_epoch(),
                ) {
                    partitions.push(response.with_error_code(error.code()));
                    continue;
                }
            }
            // The bound a consumer of this isolation level may read below.
            let high_watermark = if ctx.version >= 2 && request.isolation_level == 1 {
                match partition.last_stable_offset().await {
                    Ok(lso) => lso,
                    Err(e) => {
                        partitions.push(response.with_error_code(errors::produce(&e).code()));
                        continue;
                    }
                }
            } else {
                partition.high_watermark()
            };
            let found: Result<Option<(u64, i64)>, ResponseError> = match p.timestamp {
                LATEST => Ok(Some((high_watermark, -1))),
                EARLIEST => Ok(Some((partition.log.log_start_offset(), -1))),
                MAX_TIMESTAMP => partition
                    .log
                    .max_timestamp()
                    .await
                    .map_err(|e| errors::read(&e)),
                ts if ts >= 0 => partition
                    .log
                    .offset_for_timestamp(ts)
                    .await
                    .map_err(|e| errors::read(&e)),
                _ => Err(ResponseError::InvalidRequest),
            };
            response = match found {
                // Only what consumers may read is visible (Kafka's `lastFetchableOffset`): a
                // record found must lie below the bound, which LATEST answers itself.
                Ok(Some((offset, ts)))
                    if offset < high_watermark || matches!(p.timestamp, LATEST | EARLIEST) =>
                {
                    let r = response.with_offset(offset as i64).with_timestamp(ts);
                    if ctx.version >= 4 {
                        r.with_leader_epoch(partition.leader_epoch())
                    } else {
                        r
                    }
                }
                Ok(_) => response,
                Err(error) => response.with_error_code(error.code()),
            };
            partitions.push(response);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
