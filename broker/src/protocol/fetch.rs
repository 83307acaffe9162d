//! Fetch: whole stored batches from each partition, up to the high watermark, with long
//! polling (`max_wait_ms` / `min_bytes`) and the response and partition byte limits.
//!
//! A partition this broker does not hold answers NOT_LEADER_OR_FOLLOWER with the current
//! leader (v12+) and its endpoint (KIP-951, v16+). The client's current leader epoch (v9+,
//! KIP-320) is checked against this replica's: older is FENCED_LEADER_EPOCH, newer
//! UNKNOWN_LEADER_EPOCH (this broker has not seen it yet).
//!
//! Fetch from the closest replica (KIP-392): a consumer fetching with v11+ (which carries its
//! `rack_id`) may read from a follower, up to the follower's high watermark (an offset between
//! it and the follower's log end gets no records yet, one past the log end
//! OFFSET_OUT_OF_RANGE, as Kafka answers). Only an in-sync follower serves; one that left the
//! ISR or the replicas answers NOT_LEADER_OR_FOLLOWER, naming the leader. With
//! `replica-selector = "rack-aware"` the leader answers a consumer in another rack with no
//! records and `preferred_read_replica`: the most caught-up in-sync replica in the consumer's
//! rack, which the client then fetches from.
//!
//! A fetch with a replica id ≥ 0 (v15+: in `replica_state`) comes from a follower (Kafka's
//! replica fetch): it reads up to the log end, not the high watermark, and its fetch offset is
//! the follower's log end, recorded on the leader (`Partition::record_follower_fetch`), which
//! may advance the high watermark and wake acks=all produces and consumers. A parked replica
//! fetch wakes on new data and also when the high watermark moves, so followers learn it.
//!
//! A consumer fetching with `isolation_level` = 1 (read_committed) reads below the last stable
//! offset instead of the high watermark, and is told the aborted transactions that meet the
//! range it got (the partition's aborted-transaction index), so it drops their records; every
//! answer carries the LSO.
//!
//! Fetch sessions (KIP-227) are answered sessionless: session id 0 and full responses, which
//! every client accepts. A client that believes it holds a session gets
//! FETCH_SESSION_ID_NOT_FOUND and starts over.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{errors, Reply, RequestContext};
use crate::broker::RouteError;
use crate::config::ReplicaSelector;
use crate::partition::Partition;
use crate::planted::{self, Bug};
use crate::replica::{FetchBound, Wakeups};

/// One partition asked for, resolved once.
struct Wanted {
    topic_index: usize,
    partition: i32,
    fetch_offset: i64,
    max_bytes: i32,
    /// KIP-320: the leader epoch the client believes current; -1: unchecked.
    current_leader_epoch: i32,
    /// This broker's replica if it leads the partition (or, for a consumer, follows it in
    /// sync), else where the fetch should go.
    resolved: Result<Arc<Partition>, RouteError>,
    /// Read from this broker's replica as a follower (KIP-392).
    follower_read: bool,
    /// KIP-392: the replica in the consumer's rack it should read from instead of this leader.
    preferred_read_replica: Option<i32>,
}

/// A requested topic: its name (v < 13) or id (v13+), and whether this broker knows it.
type RequestedTopic = (TopicName, uuid::Uuid, bool);

struct Plan {
    topics: Vec<RequestedTopic>,
    partitions: Vec<Wanted>,
    max_bytes: usize,
    version: i16,
    /// KIP-951 (v16+): the endpoints of the leaders named in NOT_LEADER_OR_FOLLOWER answers.
    leader_endpoints: Vec<NodeEndpoint>,
    /// The follower fetching, for a replica fetch.
    replica_id: Option<i32>,
    /// Its broker epoch (v15+; -1: unsaid), and each broker's registered epoch in the image
    /// with whether it may be in an ISR (neither fenced nor shutting down), for KIP-903.
    replica_epoch: i64,
    registered: std::collections::BTreeMap<i32, (i64, bool)>,
    clock: Arc<dyn crate::clock::Clock>,
    isr_manager: Arc<crate::replica::isr::IsrManager>,
    /// A consumer's read_committed fetch (isolation level 1).
    read_committed: bool,
    /// Counts the follower reads.
    broker: Arc<crate::broker::Broker>,
}

/// KIP-320: the client's view of the leader epoch against this leader's.
pub(crate) fn check_leader_epoch(
    current_leader_epoch: i32,
    leader_epoch: i32,
) -> Option<ResponseError> {
    match current_leader_epoch {
        e if e < 0 => None,
        e if e < leader_epoch => Some(ResponseError::FencedLeaderEpoch),
        e if e > leader_epoch => Some(ResponseError::UnknownLeaderEpoch),
        _ => None,
    }
}

/// Reads every wanted partition once; returns the response and the bytes it carries.
async fn read_all(plan: &Plan) -> (FetchResponse, usize) {
    let mut remaining = plan.max_bytes;
    let mut total = 0usize;
    let mut by_topic: Vec<Vec<PartitionData>> = vec![Vec::new(); plan.topics.len()];
    for wanted in &plan.partitions {
        let (_, _, known) = &plan.topics[wanted.topic_index];
        let mut data = PartitionData::default()
            .with_partition_index(wanted.partition)
            .with_high_watermark(-1);
        let partition = match &wanted.resolved {
            Ok(partition) => partition,
            Err(e) => {
                let error = if !known && plan.version >= 13 {
                    ResponseError::UnknownTopicId
                } else {
                    errors::route(e)
                };
                if let (
                    RouteError::NotLeader {
                        leader,
                        leader_epoch,
                    },
                    true,
                ) = (e, plan.version >= 12)
                {
                    data = data.with_current_leader(
                        LeaderIdAndEpoch::default()
                            .with_leader_id(BrokerId(*leader))
                            .with_leader_epoch(*leader_epoch),
                    );
                }
                by_topic[wanted.topic_index].push(data.with_error_code(error.code()));
                continue;
            }
        };
        if let Some(error) =
            check_leader_epoch(wanted.current_leader_epoch, partition.leader_epoch())
        {
            by_topic[wanted.topic_index].push(data.with_error_code(error.code()));
            continue;
        }
        if let Some(replica) = wanted.preferred_read_replica {
            // Kafka skips the read and answers the offsets with the replica to go to.
            let last_stable_offset = match partition.last_stable_offset().await {
                Ok(lso) => lso as i64,
                Err(_) => -1,
            };
            data = data
                .with_high_watermark(partition.high_watermark() as i64)
                .with_last_stable_offset(last_stable_offset)
                .with_log_start_offset(partition.log.log_start_offset() as i64)
                .with_preferred_read_replica(BrokerId(replica))
                .with_records(Some(Bytes::new()));
            by_topic[wanted.topic_index].push(data);
            continue;
        }
        if let Some(replica_id) = plan.replica_id {
            let recorded = if wanted.fetch_offset < 0 {
                Err(ResponseError::OffsetOutOfRange)
            } else {
                partition
                    .record_follower_fetch(
                        replica_id,
                        plan.replica_epoch,
                        plan.registered.get(&replica_id).map(|r| r.0),
                        plan.registered.get(&replica_id).is_some_and(|r| r.1),
                        wanted.fetch_offset as u64,
                        plan.clock.now_ms(),
                    )
                    .map_err(|e| errors::follower_fetch(&e))
            };
            if let Ok(true) = recorded {
                // Expansion need not wait for the ISR manager's periodic check.
                plan.isr_manager.follower_may_join();
            }
            if let Err(error) = recorded {
                let data = data
                    .with_high_watermark(partition.high_watermark() as i64)
                    .with_log_start_offset(partition.log.log_start_offset() as i64);
                by_topic[wanted.topic_index].push(data.with_error_code(error.code()));
                continue;
            }
        }
        let high_watermark = partition.high_watermark();
        let last_stable_offset = match partition.last_stable_offset().await {
            Ok(lso) => lso,
            Err(e) => {
                let error = errors::produce(&e);
                by_topic[wanted.topic_index].push(data.with_error_code(error.code()));
                continue;
            }
        };
        // Followers copy the whole log; consumers see only what every in-sync replica holds,
        // and read_committed ones only what no open transaction holds back.
        let read_bound = if plan.replica_id.is_some() {
            None
        } else if plan.read_committed && !planted::is(Bug::ReadCommittedBoundedByHighWatermark) {
            Some(last_stable_offset)
        } else if planted::is(Bug::ServeAboveHighWatermark) {
            Some(partition.log.log_end_offset())
        } else {
            Some(high_watermark)
        };
        data = data
            .with_high_watermark(high_watermark as i64)
            .with_last_stable_offset(last_stable_offset as i64)
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
                .read(wanted.fetch_offset as u64, limit.max(1), read_bound)
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
                if wanted.follower_read && !bytes.is_empty() {
                    plan.broker.count_follower_read();
                }
                total += bytes.len();
                remaining = remaining.saturating_sub(bytes.len());
                // Kafka answers null to read_uncommitted, a list (maybe empty) otherwise.
                data = data.with_aborted_transactions(
                    plan.read_committed
                        .then(|| aborted_in(partition, wanted.fetch_offset as u64, &bytes)),
                );
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
    let mut response = FetchResponse::default().with_responses(responses);
    if plan.version >= 16 {
        response = response.with_node_endpoints(plan.leader_endpoints.clone());
    }
    (response, total)
}

/// The aborted transactions that meet the offsets of `records` (whole batches read from
/// `fetch_offset` on), as a read_committed consumer needs them.
fn aborted_in(partition: &Partition, fetch_offset: u64, records: &[u8]) -> Vec<AbortedTransaction> {
    let mut end = fetch_offset;
    let mut pos = 0;
    while pos < records.len() {
        let header = crate::log::batch::BatchHeader::parse(&records[pos..])
            .expect("served batches are whole and checked");
        end = end.max(header.last_offset() as u64 + 1);
        pos += header.size();
    }
    if end == fetch_offset {
        return Vec::new();
    }
    partition
        .aborted_transactions(fetch_offset, end)
        .iter()
        .map(|t| {
            AbortedTransaction::default()
                .with_producer_id(kafka_protocol::messages::ProducerId(t.producer_id))
                .with_first_offset(t.first_offset as i64)
        })
        .collect()
}

/// Every partition's high watermark in a response, in order.
fn high_watermarks(response: &FetchResponse) -> Vec<i64> {
    response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.high_watermark))
        .collect()
}

fn has_errors(response: &FetchResponse) -> bool {
    response
        .responses
        .iter()
        .any(|t| t.partitions.iter().any(|p| p.error_code != 0))
}

/// Does the response send the consumer to another replica (answered at once, as Kafka does)?
fn has_preferred_read_replica(response: &FetchResponse) -> bool {
    response
        .responses
        .iter()
        .any(|t| t.partitions.iter().any(|p| p.preferred_read_replica.0 >= 0))
}

/// Kafka's `RackAwareReplicaSelector`, as the leader of `topic`-`index` runs it for a consumer
/// in `rack` fetching from `fetch_offset`: `None` (read here) when this leader is in that rack
/// or no in-sync, live replica there has the offset yet; else the most caught-up one.
fn preferred_read_replica(
    image: &crate::controller::image::ClusterImage,
    node_id: i32,
    topic: &str,
    index: i32,
    partition: &Partition,
    rack: &str,
    fetch_offset: i64,
) -> Option<i32> {
    let assignment = image.partition(topic, index)?;
    let in_rack = |id: &i32| {
        image
            .brokers
            .get(id)
            .is_some_and(|b| b.rack.as_deref() == Some(rack) && !b.fenced && !b.shutting_down)
    };
    if in_rack(&node_id) || fetch_offset < 0 {
        return None;
    }
    partition
        .follower_log_ends()
        .into_iter()
        .filter(|(id, end)| {
            *id != node_id
                && assignment.isr.contains(id)
                && in_rack(id)
                && *end >= fetch_offset as u64
        })
        .max_by_key(|&(id, end)| (end, std::cmp::Reverse(id)))
        .map(|(id, _)| id)
}

pub async fn handle(ctx: &RequestContext, request: FetchRequest) -> Reply {
    if ctx.version >= 7 && request.session_id != 0 {
        return ctx.now(
            &FetchResponse::default().with_error_code(ResponseError::FetchSessionIdNotFound.code()),
        );
    }
    let broker = &ctx.broker;
    let mut plan = Plan {
        topics: Vec::new(),
        partitions: Vec::new(),
        max_bytes: if ctx.version >= 3 {
            request.max_bytes.max(0) as usize
        } else {
            usize::MAX
        },
        version: ctx.version,
        leader_endpoints: Vec::new(),
        replica_id: None,
        replica_epoch: -1,
        registered: std::collections::BTreeMap::new(),
        clock: Arc::clone(ctx.broker.clock()),
        isr_manager: Arc::clone(ctx.broker.isr_manager()),
        read_committed: false,
        broker: Arc::clone(&ctx.broker),
    };
    let replica_id = if ctx.version >= 15 {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    let image = broker.image();
    plan.read_committed = replica_id < 0 && request.isolation_level == 1;
    // KIP-392: v11+ carries the consumer's rack (its ClientMetadata), and with it the consumer
    // may read from followers; the leader points it at one only with the rack-aware selector.
    let consumer_v11 = replica_id < 0 && ctx.version >= 11;
    let client_rack = (consumer_v11
        && !request.rack_id.is_empty()
        && broker.config.replica_selector == ReplicaSelector::RackAware)
        .then(|| request.rack_id.to_string());
    if replica_id >= 0 {
        plan.replica_id = Some(replica_id);
        if ctx.version >= 15 {
            plan.replica_epoch = request.replica_state.replica_epoch;
        }
        plan.registered = image
            .brokers
            .values()
            .map(|b| (b.id, (b.epoch, !b.fenced && !b.shutting_down)))
            .collect();
    }
    let mut leaders = std::collections::BTreeSet::new();
    for (topic_index, topic) in request.topics.into_iter().enumerate() {
        // Borrowed, from the image or the request: a fetch copies no topic name.
        let name: Option<&str> = if ctx.version >= 13 {
            image.topic_names.get(&topic.topic_id).map(String::as_str)
        } else {
            Some(topic.topic.as_str())
        };
        for p in topic.partitions {
            let mut resolved = match name {
                Some(name) => broker.leader_partition(name, p.partition),
                None => Err(RouteError::UnknownTopicOrPartition),
            };
            let mut follower_read = false;
            if let (Some(name), Err(RouteError::NotLeader { .. }), true) =
                (name, &resolved, consumer_v11)
            {
                if let Ok(partition) = broker.follower_partition(name, p.partition) {
                    resolved = Ok(partition);
                    follower_read = true;
                }
            }
            let preferred_read_replica = match (name, &resolved, &client_rack) {
                (Some(name), Ok(partition), Some(rack)) if !follower_read => {
                    preferred_read_replica(
                        &image,
                        broker.config.node_id,
                        name,
                        p.partition,
                        partition,
                        rack,
                        p.fetch_offset,
                    )
                }
                _ => None,
            };
            if let Err(RouteError::NotLeader { leader, .. }) = &resolved {
                leaders.insert(*leader);
            }
            plan.partitions.push(Wanted {
                topic_index,
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
                current_leader_epoch: if ctx.version >= 9 {
                    p.current_leader_epoch
                } else {
                    -1
                },
                resolved,
                follower_read,
                preferred_read_replica,
            });
        }
        let known = name.is_some_and(|n| image.topic(n).is_some());
        plan.topics.push((topic.topic, topic.topic_id, known));
    }
    plan.leader_endpoints = leaders
        .into_iter()
        .filter_map(|id| image.brokers.get(&id))
        .map(|b| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.endpoint.host.clone()))
                .with_port(i32::from(b.endpoint.port))
                .with_rack(b.rack.clone().map(StrBytes::from_string))
        })
        .collect();
    let (response, total) = read_all(&plan).await;
    let min_bytes = request.min_bytes.max(0) as usize;
    if request.max_wait_ms <= 0
        || total >= min_bytes.max(1)
        || has_errors(&response)
        || has_preferred_read_replica(&response)
    {
        return ctx.now(&response);
    }
    // Only a parked follower's fetch compares them (a consumer's parks on new data alone).
    let first_high_watermarks = plan
        .replica_id
        .is_some()
        .then(|| high_watermarks(&response));
    let max_wait = Duration::from_millis(request.max_wait_ms as u64);
    // Only the partitions asked for can satisfy the fetch: it parks on their notifications
    // alone (an unknown partition answered at once above).
    let watched: Vec<Arc<Partition>> = plan
        .partitions
        .iter()
        .filter_map(|wanted| wanted.resolved.as_ref().ok().cloned())
        .collect();
    let fallback = error_response(&plan);
    let broker = Arc::clone(&ctx.broker);
    ctx.later(
        async move {
            // Wait for enough data or the deadline, whichever comes first; then answer with what
            // is there. (A timeout around the wait, not a deadline Instant: the simulator's clock
            // is reached only through tokio::time's sleeps and timeouts.)
            let enough = async {
                loop {
                    // Registered before the read, so a move during the read is not missed. A
                    // follower waits for new data (the log end) and for the high watermark.
                    let bounds: &[FetchBound] = if plan.replica_id.is_some() {
                        &[FetchBound::LogEnd, FetchBound::HighWatermark]
                    } else {
                        &[FetchBound::HighWatermark]
                    };
                    let wakeups =
                        Wakeups::register_bounds(watched.iter().map(|p| p.watch()), bounds);
                    let (response, total) = read_all(&plan).await;
                    if total >= min_bytes.max(1) || has_errors(&response) {
                        return response;
                    }
                    if let Some(first) = &first_high_watermarks {
                        if high_watermarks(&response) != *first {
                            return response;
                        }
                    }
                    wakeups.wait().await;
                }
            };
            tokio::select! {
                biased;
                waited = tokio::time::timeout(max_wait, enough) => match waited {
                    Ok(response) => response,
                    Err(_) => read_all(&plan).await.0,
                },
                // A broker shutting down answers at once with what is there, as Kafka completes
                // its fetch purgatory on shutdown.
                () = broker.stopping() => read_all(&plan).await.0,
            }
        },
        fallback,
    )
}

/// Kafka's error response for a fetch: the code on every partition asked for, and at the top
/// level from v7.
fn error_response(plan: &Plan) -> impl FnOnce(ResponseError) -> FetchResponse + Send + 'static {
    let version = plan.version;
    let mut topics: Vec<(TopicName, uuid::Uuid, Vec<i32>)> = plan
        .topics
        .iter()
        .map(|(name, id, _)| (name.clone(), *id, Vec::new()))
        .collect();
    for wanted in &plan.partitions {
        topics[wanted.topic_index].2.push(wanted.partition);
    }
    move |error| {
        let responses = topics
            .into_iter()
            .map(|(name, id, partitions)| {
                let t = FetchableTopicResponse::default().with_partitions(
                    partitions
                        .into_iter()
                        .map(|p| {
                            PartitionData::default()
                                .with_partition_index(p)
                                .with_error_code(error.code())
                                .with_high_watermark(-1)
                        })
                        .collect(),
                );
                if version >= 13 {
                    t.with_topic_id(id)
                } else {
                    t.with_topic(name)
                }
            })
            .collect();
        let response = FetchResponse::default().with_responses(responses);
        if version >= 7 {
            response.with_error_code(error.code())
        } else {
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::broker::Broker;
    use crate::clock::ManualClock;
    use crate::config::{BrokerConfig, FlushMode};
    use crate::disk::FileDisk;
    use crate::log::batch::builder;
    use crate::protocol::Reply;

    /// Counts how often the task polling a future was woken.
    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn fetch_of(topic: &str) -> FetchRequest {
        FetchRequest::default()
            .with_max_wait_ms(600_000)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])])
    }

    #[tokio::test]
    async fn a_parked_fetch_is_woken_by_its_own_partition_and_not_by_others() {
        // The bug: one broker-wide notification, so every append anywhere woke every parked
        // fetch, which then re-read all of its partitions for nothing.
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            // Lazy: an append moves the high watermark at once, with no background sync.
            flush_mode: FlushMode::Lazy,
            ..BrokerConfig::default()
        };
        let broker = Broker::open(
            config,
            Arc::new(FileDisk::new()),
            Arc::new(ManualClock::new(1_700_000_000_000)),
        )
        .await
        .unwrap();
        for topic in ["a", "b"] {
            broker.create_topic(topic, 1, 1, &[], false).await.unwrap();
        }
        let ctx = RequestContext {
            broker: Arc::clone(&broker),
            peer: "127.0.0.1:1".parse().unwrap(),
            api_key: ApiKey::Fetch,
            version: 12,
            correlation_id: 1,
            client_id: None,
        };
        let Reply::Later(mut parked) = handle(&ctx, fetch_of("a")).await else {
            panic!("an empty partition's fetch parks");
        };
        let wakeups = Arc::new(CountingWaker::default());
        let waker = Waker::from(Arc::clone(&wakeups));
        let mut cx = Context::from_waker(&waker);
        assert!(parked.as_mut().poll(&mut cx).is_pending());

        let b = broker.partition("b", 0).unwrap();
        for _ in 0..3 {
            b.append(&mut builder::simple(2, 10, b'b', 1_700_000_000_000))
                .await
                .unwrap();
        }
        assert_eq!(
            wakeups.0.load(Ordering::SeqCst),
            0,
            "appends to b woke a fetch parked on a"
        );
        assert!(parked.as_mut().poll(&mut cx).is_pending());

        let a = broker.partition("a", 0).unwrap();
        a.append(&mut builder::simple(2, 10, b'a', 1_700_000_000_000))
            .await
            .unwrap();
        assert!(
            wakeups.0.load(Ordering::SeqCst) >= 1,
            "an append to a did not wake the fetch parked on it"
        );
        let Poll::Ready(frame) = parked.as_mut().poll(&mut cx) else {
            panic!("the fetch woken by its data answers");
        };
        assert!(!frame.is_empty());
    }
}
