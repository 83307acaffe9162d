//! OffsetFetch: committed offsets of one group (v1–7) or several (v8+). A partition without a
//! committed offset answers offset -1, as Kafka does.
//!
//! Commits that arrived before the fetch and are still becoming durable are waited for, so a
//! client that commits and then fetches on one connection reads its own commit (Kafka gets this
//! by handling one request per connection at a time).
//!
//! `require_stable` (v7+, KIP-447; librdkafka sets it for read_committed consumers): a
//! partition with an offset committed inside a transaction that has not ended yet
//! (TxnOffsetCommit before its marker) answers UNSTABLE_OFFSET_COMMIT and offset -1, and the
//! client retries until the transaction ends. Without it the last stable committed offset is
//! returned.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use kafka_protocol::error::ResponseError;

use super::{errors, Reply, RequestContext};
use crate::group::machine::GroupError;
use crate::group::offsets::{CommittedOffset, OffsetKey};

/// One partition's answer: its committed offset, or UNSTABLE_OFFSET_COMMIT.
#[derive(Clone)]
enum Fetched {
    Committed(Option<CommittedOffset>),
    Unstable,
}

/// (topic, [(partition, fetched)]) for the wanted partitions, or every committed one.
type Answer = Vec<(String, Vec<(i32, Fetched)>)>;

/// The group's answer, or why this broker cannot give it (NOT_COORDINATOR,
/// COORDINATOR_LOAD_IN_PROGRESS).
fn lookup(
    ctx: &RequestContext,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Result<Answer, GroupError> {
    let groups = ctx.broker.groups();
    let fetched =
        |key: &OffsetKey, committed: Option<CommittedOffset>| -> Result<Fetched, GroupError> {
            Ok(if require_stable && groups.has_pending_txn_offset(key)? {
                Fetched::Unstable
            } else {
                Fetched::Committed(committed)
            })
        };
    Ok(match wanted {
        Some(topics) => topics
            .into_iter()
            .map(|(topic, partitions)| {
                let found = partitions
                    .into_iter()
                    .map(|partition| {
                        let key = OffsetKey {
                            group: group.to_string(),
                            topic: topic.clone(),
                            partition,
                        };
                        let committed = groups.committed(&key)?;
                        Ok((partition, fetched(&key, committed)?))
                    })
                    .collect::<Result<_, GroupError>>()?;
                Ok((topic, found))
            })
            .collect::<Result<_, GroupError>>()?,
        None => {
            let mut answer: Answer = Vec::new();
            // Every committed offset, each checked for a pending one as Kafka's
            // `fetchAllOffsets` does.
            for (key, value) in groups.committed_for_group(group)? {
                let f = fetched(&key, Some(value))?;
                match answer.last_mut() {
                    Some((topic, partitions)) if *topic == key.topic => {
                        partitions.push((key.partition, f))
                    }
                    _ => answer.push((key.topic, vec![(key.partition, f)])),
                }
            }
            answer
        }
    })
}

/// (offset, leader epoch, metadata, error code) of one partition.
fn fields(version: i16, f: &Fetched) -> (i64, i32, Option<StrBytes>, i16) {
    let epoch = |e: i32| if version >= 5 { e } else { -1 };
    match f {
        Fetched::Committed(Some(c)) => (
            c.offset,
            epoch(c.leader_epoch),
            Some(StrBytes::from_string(
                c.metadata.clone().unwrap_or_default(),
            )),
            0,
        ),
        Fetched::Committed(None) => (-1, -1, Some(StrBytes::default()), 0),
        Fetched::Unstable => (
            -1,
            -1,
            Some(StrBytes::default()),
            ResponseError::UnstableOffsetCommit.code(),
        ),
    }
}

pub fn handle(ctx: &RequestContext, request: OffsetFetchRequest) -> Reply {
    let groups = std::sync::Arc::clone(ctx.broker.groups());
    let asked: Vec<&str> = if ctx.version >= 8 {
        request
            .groups
            .iter()
            .map(|g| g.group_id.0.as_str())
            .collect()
    } else {
        vec![request.group_id.0.as_str()]
    };
    // A group this broker cannot answer for has nothing to wait for: its error is the answer.
    let pending: Vec<_> = asked
        .into_iter()
        .filter_map(|group| groups.in_flight_for(group).ok())
        .flatten()
        .collect();
    let ctx2 = ctx.clone();
    let version = ctx.version;
    let fallback_groups: Vec<_> = request.groups.iter().map(|g| g.group_id.clone()).collect();
    ctx.later(
        async move {
            groups.wait_applied(pending).await;
            answer(&ctx2, request)
        },
        move |error| error_response(version, fallback_groups, error),
    )
}

/// Kafka's error response: the top-level code from v2, per group from v8 (v0 and v1 have only
/// per-partition codes, for partitions this answer does not know: an empty list then).
fn error_response(
    version: i16,
    groups: Vec<kafka_protocol::messages::GroupId>,
    error: kafka_protocol::error::ResponseError,
) -> OffsetFetchResponse {
    if version >= 8 {
        return OffsetFetchResponse::default().with_groups(
            groups
                .into_iter()
                .map(|g| {
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g)
                        .with_error_code(error.code())
                })
                .collect(),
        );
    }
    let response = OffsetFetchResponse::default();
    if version >= 2 {
        response.with_error_code(error.code())
    } else {
        response
    }
}

/// One group's error before v8: the top-level code from v2; v0 and v1 carry it on every
/// partition asked for, as Kafka does.
fn group_error(
    version: i16,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    error: ResponseError,
) -> OffsetFetchResponse {
    if version >= 2 {
        return OffsetFetchResponse::default().with_error_code(error.code());
    }
    let topics = wanted
        .unwrap_or_default()
        .into_iter()
        .map(|(topic, partitions)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|index| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(index)
                                .with_committed_offset(-1)
                                .with_metadata(Some(StrBytes::default()))
                                .with_error_code(error.code())
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

fn answer(ctx: &RequestContext, request: OffsetFetchRequest) -> OffsetFetchResponse {
    let version = ctx.version;
    if version >= 8 {
        let require_stable = request.require_stable;
        let groups = request
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let answer = match lookup(ctx, &g.group_id.0, wanted, require_stable) {
                    Ok(answer) => answer,
                    Err(e) => {
                        return OffsetFetchResponseGroup::default()
                            .with_group_id(g.group_id)
                            .with_error_code(errors::group(&e).code())
                    }
                };
                let topics = answer
                    .into_iter()
                    .map(|(topic, partitions)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(StrBytes::from_string(topic)))
                            .with_partitions(
                                partitions
                                    .iter()
                                    .map(|(index, c)| {
                                        let (offset, epoch, metadata, error) = fields(version, c);
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(*index)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(metadata)
                                            .with_error_code(error)
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    // require_stable exists from v7; the codec leaves it false below.
    let require_stable = version >= 7 && request.require_stable;
    let answer = match lookup(ctx, &request.group_id.0, wanted.clone(), require_stable) {
        Ok(answer) => answer,
        Err(e) => return group_error(version, wanted, errors::group(&e)),
    };
    let topics = answer
        .into_iter()
        .map(|(topic, partitions)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic)))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|(index, c)| {
                            let (offset, epoch, metadata, error) = fields(version, c);
                            let mut p = OffsetFetchResponsePartition::default()
                                .with_partition_index(*index)
                                .with_committed_offset(offset)
                                .with_metadata(metadata)
                                .with_error_code(error);
                            if version >= 5 {
                                p = p.with_committed_leader_epoch(epoch);
                            }
                            p
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}
