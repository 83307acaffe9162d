//! Produce: append each partition's record set in request order, then answer by acks.
//!
//! - acks=0: appended, no response.
//! - acks=1: answered once the batches are in the log (not yet synced). A crash can lose them,
//!   as Kafka documents for acks=1.
//! - acks=all: answered once the batches are below the high watermark: every in-sync replica
//!   holds them (and under the durable policy, has synced them). Refused before the append with
//!   NOT_ENOUGH_REPLICAS when the ISR is smaller than the topic's `min.insync.replicas`;
//!   answered NOT_ENOUGH_REPLICAS_AFTER_APPEND when the ISR shrank below it while waiting;
//!   REQUEST_TIMED_OUT after the request's `timeout_ms`; NOT_LEADER_OR_FOLLOWER when the
//!   leadership moved meanwhile (the batch may or may not survive).
//!
//! Batches from idempotent producers are checked by the partition (`txn::producer_state`): a
//! retry of a batch already in the log is answered with the original's base offset and error
//! NONE, as Kafka does, and waits for the original's durability under acks=all.
//!
//! Only the partition's leader appends: another broker's partition answers
//! NOT_LEADER_OR_FOLLOWER with the current leader and its endpoint (KIP-951, v10+), a partition
//! with no leader LEADER_NOT_AVAILABLE.
//!
//! The appends themselves (phase one) run inline in the connection's request order, so two
//! produce requests on one connection land in the order they were sent.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{errors, Reply, RequestContext};
use crate::broker::RouteError;
use crate::compression;
use crate::controller::NodeId;
use crate::log::{AppendError, AppendInfo, RecordError};
use crate::partition::Partition;
use crate::partition::ProduceError;
use kafka_protocol::messages::produce_response::BatchIndexAndErrorMessage;

struct Outcome {
    index: i32,
    result: Result<AppendInfo, (ResponseError, Option<String>)>,
    partition: Option<Arc<Partition>>,
    /// The partition's current leader and epoch, for NOT_LEADER_OR_FOLLOWER (KIP-951, v10+).
    current_leader: Option<(NodeId, i32)>,
    /// The leader epoch the batches were appended in, and the topic's `min.insync.replicas`
    /// (acks=all waits on both).
    leader_epoch: i32,
    min_insync_replicas: usize,
    /// KIP-467 (v8+): the records refused, by index within their batch.
    record_errors: Vec<RecordError>,
}

/// The topic's `min.insync.replicas` (its override, else the broker's default).
fn min_insync_replicas(ctx: &RequestContext, topic: &str) -> usize {
    ctx.broker
        .topic(topic)
        .map_or(1, |t| t.configs.min_insync_replicas(&ctx.broker.config))
}

fn partition_response(version: i16, outcome: &Outcome) -> PartitionProduceResponse {
    let mut response = PartitionProduceResponse::default().with_index(outcome.index);
    match &outcome.result {
        Ok(info) => {
            response = response
                .with_base_offset(info.base_offset as i64)
                .with_log_append_time_ms(info.log_append_time_ms.unwrap_or(-1));
            if version >= 5 {
                response = response.with_log_start_offset(info.log_start_offset as i64);
            }
        }
        Err((error, message)) => {
            response = response.with_error_code(error.code()).with_base_offset(-1);
            if version >= 8 {
                response = response
                    .with_error_message(message.clone().map(StrBytes::from_string))
                    .with_record_errors(
                        outcome
                            .record_errors
                            .iter()
                            .map(|e| {
                                BatchIndexAndErrorMessage::default()
                                    .with_batch_index(e.batch_index)
                                    .with_batch_index_error_message(Some(StrBytes::from_string(
                                        e.message.clone(),
                                    )))
                            })
                            .collect(),
                    );
            }
        }
    }
    if let (Some((leader, epoch)), true) = (outcome.current_leader, version >= 10) {
        response = response.with_current_leader(
            LeaderIdAndEpoch::default()
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(epoch),
        );
    }
    response
}

/// KIP-951: the endpoints of the leaders named in NOT_LEADER_OR_FOLLOWER answers (v10+).
fn node_endpoints(ctx: &RequestContext, topics: &[(TopicName, Vec<Outcome>)]) -> Vec<NodeEndpoint> {
    if ctx.version < 10 {
        return Vec::new();
    }
    let leaders: std::collections::BTreeSet<NodeId> = topics
        .iter()
        .flat_map(|(_, outcomes)| outcomes.iter().filter_map(|o| o.current_leader))
        .map(|(leader, _)| leader)
        .collect();
    let image = ctx.broker.image();
    leaders
        .into_iter()
        .filter_map(|id| image.brokers.get(&id))
        .map(|b| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.endpoint.host.clone()))
                .with_port(i32::from(b.endpoint.port))
                .with_rack(b.rack.clone().map(StrBytes::from_string))
        })
        .collect()
}

fn response(
    version: i16,
    topics: &[(TopicName, Vec<Outcome>)],
    endpoints: Vec<NodeEndpoint>,
) -> ProduceResponse {
    ProduceResponse::default()
        .with_node_endpoints(endpoints)
        .with_responses(
            topics
                .iter()
                .map(|(name, outcomes)| {
                    TopicProduceResponse::default()
                        .with_name(name.clone())
                        .with_partition_responses(
                            outcomes
                                .iter()
                                .map(|o| partition_response(version, o))
                                .collect(),
                        )
                })
                .collect(),
        )
}

/// KIP-890 part 1: a transactional batch is taken only for a partition its producer's ongoing
/// transaction includes (AddPartitionsToTxn came first), so a produce held up in the network
/// until after its transaction ended cannot open a transaction nobody will ever end (a
/// hanging transaction, which would hold the last stable offset back for good). Checked here
/// when this broker is the id's coordinator; otherwise the batch is taken as before (the
/// leader-to-coordinator verification, AddPartitionsToTxn v4 with `verify_only`, is not
/// implemented yet). A transactional batch without a transactional id never gets here: the
/// whole request is refused first (see [`handle`]).
fn verify_transactional(
    ctx: &RequestContext,
    transactional_id: &str,
    topic: &str,
    index: i32,
    records: &[u8],
) -> Result<(), (ResponseError, String)> {
    let Ok(header) = crate::log::batch::BatchHeader::parse(records) else {
        return Ok(()); // the append refuses it with the right code
    };
    if !header.is_transactional() {
        return Ok(());
    }
    let partition = crate::txn::coordinator::machine::TopicPartition::new(topic, index);
    match ctx.broker.txns().verify_partition(
        transactional_id,
        header.producer_id,
        header.producer_epoch,
        &partition,
    ) {
        None | Some(Ok(())) => Ok(()),
        Some(Err(e)) => {
            use crate::txn::coordinator::machine::TxnError;
            let error = match e {
                TxnError::ProducerFenced { .. } => ResponseError::InvalidProducerEpoch,
                _ => ResponseError::InvalidTxnState,
            };
            tracing::debug!(peer = %ctx.peer, transactional_id, topic, partition = index, %e,
                "transactional produce refused");
            Err((error, e.to_string()))
        }
    }
}

/// Does any partition of the request carry a transactional batch?
fn has_transactional_batch(request: &ProduceRequest) -> bool {
    request
        .topic_data
        .iter()
        .flat_map(|t| t.partition_data.iter())
        .filter_map(|p| p.records.as_ref())
        .any(|records| {
            crate::log::batch::BatchHeader::parse(records).is_ok_and(|h| h.is_transactional())
        })
}

pub async fn handle(ctx: &RequestContext, request: ProduceRequest) -> Reply {
    let acks = request.acks;
    let valid_acks = matches!(acks, -1..=1);
    // KIP-890 part 1 for every transactional batch: the check above needs the producer's
    // transactional id, so a transactional batch without one is refused as Kafka's
    // `handleProduceRequest` refuses it, the whole request TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    // (otherwise a batch could open a transaction on the partition that no coordinator knows
    // of, and nobody would ever end it).
    let missing_transactional_id =
        request.transactional_id.is_none() && has_transactional_batch(&request);
    let mut topics: Vec<(TopicName, Vec<Outcome>)> = Vec::new();
    for topic in request.topic_data {
        let name = topic.name.to_string();
        let mut outcomes = Vec::new();
        for data in topic.partition_data {
            let index = data.index;
            let fail = |error: ResponseError, message: Option<String>| Outcome {
                index,
                result: Err((error, message)),
                partition: None,
                current_leader: None,
                leader_epoch: -1,
                min_insync_replicas: 1,
                record_errors: Vec::new(),
            };
            if missing_transactional_id {
                outcomes.push(fail(
                    ResponseError::TransactionalIdAuthorizationFailed,
                    Some(
                        "a transactional batch in a produce request without a transactional id"
                            .into(),
                    ),
                ));
                continue;
            }
            if !valid_acks {
                outcomes.push(fail(
                    ResponseError::InvalidRequiredAcks,
                    Some(format!("acks must be -1, 0 or 1, not {acks}")),
                ));
                continue;
            }
            let partition = match ctx.broker.leader_partition(&name, index) {
                Ok(partition) => partition,
                Err(e) => {
                    let mut outcome = fail(errors::route(&e), None);
                    if let RouteError::NotLeader {
                        leader,
                        leader_epoch,
                    } = e
                    {
                        outcome.current_leader = Some((leader, leader_epoch));
                    }
                    outcomes.push(outcome);
                    continue;
                }
            };
            let Some(records) = data.records else {
                outcomes.push(fail(
                    ResponseError::CorruptMessage,
                    Some("null record set".into()),
                ));
                continue;
            };
            if let Some(id) = &request.transactional_id {
                if let Err((error, message)) =
                    verify_transactional(ctx, id.as_str(), &name, index, &records)
                {
                    outcomes.push(fail(error, Some(message)));
                    continue;
                }
            }
            // One copy: the log patches offsets into the bytes it stores. A topic with its own
            // compression.type stores every batch in that codec, as Kafka's LogValidator does.
            let copied = match partition.log.config().compression {
                None => Ok(records.to_vec()),
                Some(codec) => compression::recompress_record_set(
                    &records,
                    codec,
                    ctx.broker.config.socket_request_max_bytes,
                ),
            };
            let mut bytes = match copied {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::debug!(peer = %ctx.peer, topic = %name, partition = index, %e,
                        "refused a produce that cannot be recompressed");
                    outcomes.push(fail(errors::recompress(&e), Some(e.to_string())));
                    continue;
                }
            };
            let min_insync = min_insync_replicas(ctx, &name);
            // Kafka checks the ISR before appending, for acks=all only.
            let isr = partition.replica_state().isr().len();
            if acks == -1 && isr < min_insync {
                outcomes.push(fail(
                    ResponseError::NotEnoughReplicas,
                    Some(format!(
                        "The size of the current ISR {isr} is insufficient to satisfy the \
                         min.isr requirement of {min_insync} for partition {name}-{index}"
                    )),
                ));
                continue;
            }
            let leader_epoch = partition.leader_epoch();
            // Only an acks=1 answer shows offsets before they are synced.
            let result = if acks == 1 {
                partition.append(&mut bytes).await
            } else {
                partition.append_unexposed(&mut bytes).await
            };
            outcomes.push(match result {
                Ok(info) => Outcome {
                    index,
                    result: Ok(info),
                    partition: Some(partition),
                    current_leader: None,
                    leader_epoch,
                    min_insync_replicas: min_insync,
                    record_errors: Vec::new(),
                },
                Err(e) => {
                    if let ProduceError::Append(AppendError::InvalidBatch(_)) | ProduceError::Sequence(_) = e {
                        tracing::debug!(peer = %ctx.peer, topic = %name, partition = index, %e, "refused a produce");
                    }
                    let mut outcome = fail(errors::produce(&e), Some(e.to_string()));
                    if let ProduceError::Append(AppendError::InvalidRecords(records)) = &e {
                        outcome.record_errors = records.clone();
                    }
                    outcome
                }
            });
        }
        topics.push((topic.name, outcomes));
    }
    let version = ctx.version;
    // A request without a timeout (0, as some test tools send) waits for as long as it takes,
    // as it did before replication: the connection's own deadline bounds it.
    let timeout = (request.timeout_ms > 0)
        .then(|| std::time::Duration::from_millis(request.timeout_ms as u64));
    let endpoints = node_endpoints(ctx, &topics);
    match acks {
        0 => Reply::None,
        -1 => {
            let requested: Vec<(TopicName, Vec<i32>)> = topics
                .iter()
                .map(|(name, outcomes)| (name.clone(), outcomes.iter().map(|o| o.index).collect()))
                .collect();
            ctx.later(
                async move {
                    for (_, outcomes) in &mut topics {
                        for outcome in outcomes.iter_mut() {
                            if let (Ok(info), Some(partition)) =
                                (&outcome.result, &outcome.partition)
                            {
                                let wait = partition.wait_replicated(
                                    info,
                                    outcome.leader_epoch,
                                    outcome.min_insync_replicas,
                                );
                                let waited = match timeout {
                                    Some(timeout) => tokio::time::timeout(timeout, wait).await,
                                    None => Ok(wait.await),
                                };
                                match waited {
                                    Ok(Ok(())) => {}
                                    Ok(Err(e)) => {
                                        outcome.result = Err((
                                            errors::replication_wait(&e),
                                            Some(e.to_string()),
                                        ))
                                    }
                                    Err(_) => {
                                        outcome.result = Err((
                                            ResponseError::RequestTimedOut,
                                            Some("the in-sync replicas did not all have the batch within the request timeout".into()),
                                        ))
                                    }
                                }
                            }
                        }
                    }
                    response(version, &topics, endpoints)
                },
                move |error| {
                    let failed: Vec<(TopicName, Vec<Outcome>)> = requested
                        .into_iter()
                        .map(|(name, indexes)| {
                            let outcomes = indexes
                                .into_iter()
                                .map(|index| Outcome {
                                    index,
                                    result: Err((error, None)),
                                    partition: None,
                                    current_leader: None,
                                    leader_epoch: -1,
                                    min_insync_replicas: 1,
                                    record_errors: Vec::new(),
                                })
                                .collect();
                            (name, outcomes)
                        })
                        .collect();
                    response(version, &failed, Vec::new())
                },
            )
        }
        _ => ctx.now(&response(version, &topics, endpoints)),
    }
}
