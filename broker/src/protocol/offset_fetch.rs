//! OffsetFetch: committed offsets of one group (v1–7) or several (v8+). A partition without a
//! committed offset answers offset -1, as Kafka does.
//!
//! Commits that arrived before the fetch and are still becoming durable are waited for, so a
//! client that commits and then fetches on one connection reads its own commit (Kafka gets this
//! by handling one request per connection at a time).

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

/// (topic, [(partition, committed)]) for the wanted partitions, or every committed one.
type Answer = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

/// The group's answer, or why this broker cannot give it (NOT_COORDINATOR,
/// COORDINATOR_LOAD_IN_PROGRESS).
fn lookup(
    ctx: &RequestContext,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Answer, GroupError> {
    let groups = ctx.broker.groups();
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
                        Ok((partition, groups.committed(&key)?))
                    })
                    .collect::<Result<_, GroupError>>()?;
                Ok((topic, found))
            })
            .collect::<Result<_, GroupError>>()?,
        None => {
            let mut answer: Answer = Vec::new();
            for (key, value) in groups.committed_for_group(group)? {
                match answer.last_mut() {
                    Some((topic, partitions)) if *topic == key.topic => {
                        partitions.push((key.partition, Some(value)))
                    }
                    _ => answer.push((key.topic, vec![(key.partition, Some(value))])),
                }
            }
            answer
        }
    })
}

fn fields(version: i16, c: &Option<CommittedOffset>) -> (i64, i32, Option<StrBytes>) {
    let epoch = |e: i32| if version >= 5 { e } else { -1 };
    match c {
        Some(c) => (
            c.offset,
            epoch(c.leader_epoch),
            Some(StrBytes::from_string(
                c.metadata.clone().unwrap_or_default(),
            )),
        ),
        None => (-1, -1, Some(StrBytes::default())),
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
        let groups = request
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let answer = match lookup(ctx, &g.group_id.0, wanted) {
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
                                        let (offset, epoch, metadata) = fields(version, c);
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(*index)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(metadata)
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
    let answer = match lookup(ctx, &request.group_id.0, wanted.clone()) {
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
                            let (offset, epoch, metadata) = fields(version, c);
                            let mut p = OffsetFetchResponsePartition::default()
                                .with_partition_index(*index)
                                .with_committed_offset(offset)
                                .with_metadata(metadata);
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
