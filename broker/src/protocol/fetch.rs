//! Fetch: whole stored batches from each partition, up to the high watermark, with long
//! polling (`max_wait_ms` / `min_bytes`) and the response and partition byte limits.
//!
//! Fetch sessions (KIP-227) are answered sessionless: session id 0 and full responses, which
//! every client accepts. A client that believes it holds a session gets
//! FETCH_SESSION_ID_NOT_FOUND and starts over.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};

use super::{errors, Reply, RequestContext};

/// One partition asked for, resolved once.
struct Wanted {
    topic_index: usize,
    partition: i32,
    fetch_offset: i64,
    max_bytes: i32,
}

/// A requested topic: its name (v < 13) or id (v13+), and what it resolved to.
type RequestedTopic = (TopicName, uuid::Uuid, Option<Arc<crate::broker::Topic>>);

struct Plan {
    topics: Vec<RequestedTopic>,
    partitions: Vec<Wanted>,
    max_bytes: usize,
    version: i16,
}

/// Reads every wanted partition once; returns the response and the bytes it carries.
async fn read_all(plan: &Plan) -> (FetchResponse, usize) {
    let mut remaining = plan.max_bytes;
    let mut total = 0usize;
    let mut by_topic: Vec<Vec<PartitionData>> = vec![Vec::new(); plan.topics.len()];
    for wanted in &plan.partitions {
        let (_, _, topic) = &plan.topics[wanted.topic_index];
        let mut data = PartitionData::default()
            .with_partition_index(wanted.partition)
            .with_high_watermark(-1);
        let partition = topic.as_ref().and_then(|t| {
            usize::try_from(wanted.partition)
                .ok()
                .and_then(|i| t.partitions.get(i))
        });
        let Some(partition) = partition else {
            let error = if topic.is_none() && plan.version >= 13 {
                ResponseError::UnknownTopicId
            } else {
                ResponseError::UnknownTopicOrPartition
            };
            by_topic[wanted.topic_index].push(data.with_error_code(error.code()));
            continue;
        };
        let high_watermark = partition.high_watermark();
        data = data
            .with_high_watermark(high_watermark as i64)
            .with_last_stable_offset(high_watermark as i64)
            .with_log_start_offset(if plan.version >= 5 {
                partition.log.log_start_offset() as i64
            } else {
                -1
            });
        // Every partition, the first included, is bounded by the smaller of its own limit and
        // what is left of the response's. Only the first batch of the response is returned
        // whole when it alone is larger (KIP-74), so a consumer always makes progress.
        let limit = (wanted.max_bytes.max(0) as usize).min(remaining);
        let first_in_response = total == 0;
        let records = if wanted.fetch_offset < 0 {
            Err(ResponseError::OffsetOutOfRange)
        } else if limit == 0 && !first_in_response {
            Ok(Bytes::new())
        } else {
            match partition
                .log
                .read(
                    wanted.fetch_offset as u64,
                    limit.max(1),
                    Some(high_watermark),
                )
                .await
            {
                // The log returns its first batch whole even past `limit`: only the response's
                // first batch may be.
                Ok(read) if !first_in_response && read.records.len() > limit => Ok(Bytes::new()),
                Ok(read) => Ok(Bytes::from(read.records)),
                Err(e) => Err(errors::read(&e)),
            }
        };
        match records {
            Ok(bytes) => {
                assert!(
                    first_in_response || bytes.len() <= limit,
                    "only the response's first batch may pass the limits"
                );
                total += bytes.len();
                remaining = remaining.saturating_sub(bytes.len());
                data = data.with_records(Some(bytes));
            }
            Err(error) => data = data.with_error_code(error.code()),
        }
        by_topic[wanted.topic_index].push(data);
    }
    let responses = plan
        .topics
        .iter()
        .zip(by_topic)
        .map(|((name, id, _), partitions)| {
            let mut t = FetchableTopicResponse::default().with_partitions(partitions);
            if plan.version >= 13 {
                t = t.with_topic_id(*id);
            } else {
                t = t.with_topic(name.clone());
            }
            t
        })
        .collect();
    (FetchResponse::default().with_responses(responses), total)
}

fn has_errors(response: &FetchResponse) -> bool {
    response
        .responses
        .iter()
        .any(|t| t.partitions.iter().any(|p| p.error_code != 0))
}

pub async fn handle(ctx: &RequestContext, request: FetchRequest) -> Reply {
    if ctx.version >= 7 && request.session_id != 0 {
        return ctx.now(
            &FetchResponse::default().with_error_code(ResponseError::FetchSessionIdNotFound.code()),
        );
    }
    let broker = Arc::clone(&ctx.broker);
    let mut plan = Plan {
        topics: Vec::new(),
        partitions: Vec::new(),
        max_bytes: if ctx.version >= 3 {
            request.max_bytes.max(0) as usize
        } else {
            usize::MAX
        },
        version: ctx.version,
    };
    for (topic_index, topic) in request.topics.into_iter().enumerate() {
        let resolved = if ctx.version >= 13 {
            broker.topic_by_id(topic.topic_id)
        } else {
            broker.topic(&topic.topic)
        };
        for p in topic.partitions {
            plan.partitions.push(Wanted {
                topic_index,
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
            });
        }
        plan.topics.push((topic.topic, topic.topic_id, resolved));
    }
    let (response, total) = read_all(&plan).await;
    let min_bytes = request.min_bytes.max(0) as usize;
    if request.max_wait_ms <= 0 || total >= min_bytes.max(1) || has_errors(&response) {
        return ctx.now(&response);
    }
    let max_wait = Duration::from_millis(request.max_wait_ms as u64);
    ctx.later(async move {
        // Wait for enough data or the deadline, whichever comes first; then answer with what
        // is there. (A timeout around the wait, not a deadline Instant: the simulator's clock
        // is reached only through tokio::time's sleeps and timeouts.)
        let enough = async {
            loop {
                let notified = broker.data_arrived().notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let (response, total) = read_all(&plan).await;
                if total >= min_bytes.max(1) || has_errors(&response) {
                    return response;
                }
                notified.await;
            }
        };
        match tokio::time::timeout(max_wait, enough).await {
            Ok(response) => response,
            Err(_) => read_all(&plan).await.0,
        }
    })
}
