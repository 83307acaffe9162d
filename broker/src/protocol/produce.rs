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
//!
//! A transactional batch that would open its producer's transaction on a partition is first
//! verified with the transactional id's coordinator (KIP-890 part 1, see
//! [`verify_transactional`]): one round trip for all such partitions of the request, before
//! any of its appends (Kafka mutes the connection meanwhile too); partitions already in the
//! producer's transaction here are not asked about.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use bytes::Bytes;

use super::{errors, Reply, RequestContext};
use crate::add_partitions_to_txn_manager::{
    coordinator_of, for_produce, CoordinatorNode, Unverified,
};
use crate::broker::RouteError;
use crate::compression;
use crate::controller::NodeId;
use crate::log::batch::BatchHeader;
use crate::log::{AppendError, AppendInfo, RecordError};
use crate::partition::Partition;
use crate::partition::ProduceError;
use crate::txn::coordinator::machine::TopicPartition;
use crate::txn::producer_state::VerificationGuard;
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
    if leaders.is_empty() {
        // The usual answer: every partition appended here. No image to look at.
        return Vec::new();
    }
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

/// A partition of the request that passed routing, waiting for its append.
struct Ready {
    partition: Arc<Partition>,
    records: Bytes,
    /// The header of its first batch when that is transactional (KIP-890 part 1 applies).
    transactional: Option<BatchHeader>,
    /// The guard its verification was started with, if one was needed.
    verification: Option<VerificationGuard>,
}

enum Slot {
    Done(Outcome),
    Ready(Ready),
}

/// A partition's outcome before anything was appended.
fn failed(index: i32, error: ResponseError, message: Option<String>) -> Outcome {
    Outcome {
        index,
        result: Err((error, message)),
        partition: None,
        current_leader: None,
        leader_epoch: -1,
        min_insync_replicas: 1,
        record_errors: Vec::new(),
    }
}

/// How long a produce waits for its verification at most (the coordinator's answer, or the
/// verifier's own timeouts, come first unless the coordinator is unreachable).
const MAX_VERIFICATION_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// KIP-890 part 1: a transactional batch that would open its producer's transaction on a
/// partition (the producer has none open there) is taken only once the transactional id's
/// coordinator confirmed the partition is in that transaction, so a produce held up in the
/// network until after its transaction ended cannot open a transaction nobody will ever end (a
/// hanging transaction, which would hold the last stable offset back for good). Each such
/// partition gets a verification guard first ([`Partition::start_transaction_verification`]);
/// the coordinator is asked for all of them at once: directly when it is this broker, else
/// with AddPartitionsToTxn v4+ through [`crate::add_partitions_to_txn_manager`]; the append
/// then presents the guard, which a marker landing meanwhile has cleared (Kafka's
/// `ReplicaManager.handleProduceAppend` and `VerificationGuard`). Refusals are answered as
/// Kafka does ([`errors::unverified`]): INVALID_TXN_STATE, INVALID_PRODUCER_EPOCH, or
/// NOT_ENOUGH_REPLICAS for what the client should retry. A transactional batch without a
/// transactional id never gets here: the whole request is refused first (see [`handle`]).
async fn verify_transactional(
    ctx: &RequestContext,
    transactional_id: &str,
    timeout: Option<std::time::Duration>,
    topics: &mut [(TopicName, Vec<Slot>)],
) {
    let producers: std::collections::BTreeSet<(i64, i16)> = topics
        .iter()
        .flat_map(|(_, slots)| slots.iter())
        .filter_map(|slot| match slot {
            Slot::Ready(Ready {
                transactional: Some(h),
                ..
            }) => Some((h.producer_id, h.producer_epoch)),
            _ => None,
        })
        .collect();
    if producers.len() > 1 {
        // Kafka's `handleProduceAppend`: one transactional producer per request.
        for (_, slots) in topics.iter_mut() {
            for slot in slots.iter_mut() {
                if let Slot::Ready(_) = slot {
                    let index = slot_index(slot);
                    *slot = Slot::Done(failed(
                        index,
                        ResponseError::InvalidProducerIdMapping,
                        Some("Transactional records contained more than one producer ID".into()),
                    ));
                }
            }
        }
        return;
    }
    let Some(&(producer_id, producer_epoch)) = producers.first() else {
        return;
    };
    let mut needed = std::collections::BTreeSet::new();
    for (name, slots) in topics.iter_mut() {
        for slot in slots.iter_mut() {
            let Slot::Ready(ready) = slot else { continue };
            let Some(header) = ready.transactional else {
                continue;
            };
            let index = ready.partition.index;
            match ready
                .partition
                .start_transaction_verification(producer_id, producer_epoch, header.base_sequence)
                .await
            {
                Ok(None) => {}
                Ok(Some(guard)) => {
                    ready.verification = Some(guard);
                    needed.insert(TopicPartition::new(name.as_str(), index));
                }
                Err(e) => {
                    *slot = Slot::Done(failed(index, errors::produce(&e), Some(e.to_string())))
                }
            }
        }
    }
    if needed.is_empty() {
        return;
    }
    let broker = &ctx.broker;
    let state_partition = broker.txns().partition_for(transactional_id);
    let unverified: Unverified =
        match coordinator_of(&broker.image(), state_partition, broker.config.node_id) {
            CoordinatorNode::Local => match broker.txns().verify_partitions(
                transactional_id,
                producer_id,
                producer_epoch,
                &needed,
            ) {
                Ok(missing) => missing
                    .into_iter()
                    .map(|tp| (tp, for_produce(ResponseError::TransactionAbortable)))
                    .collect(),
                Err(e) => {
                    let code = for_produce(errors::txn(&e, true));
                    needed.iter().map(|tp| (tp.clone(), code)).collect()
                }
            },
            CoordinatorNode::Remote { node, addr } => {
                let wait = timeout.map_or(MAX_VERIFICATION_WAIT, |t| t.min(MAX_VERIFICATION_WAIT));
                let asked = broker.add_partitions_to_txn_manager().verify(
                    node,
                    addr,
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    needed.clone(),
                );
                match tokio::time::timeout(wait, asked).await {
                    Ok(unverified) => unverified,
                    Err(_) => needed
                        .iter()
                        .map(|tp| (tp.clone(), ResponseError::NetworkException))
                        .collect(),
                }
            }
            CoordinatorNode::Unavailable => needed
                .iter()
                .map(|tp| (tp.clone(), ResponseError::CoordinatorNotAvailable))
                .collect(),
        };
    if unverified.is_empty() {
        return;
    }
    for (name, slots) in topics.iter_mut() {
        for slot in slots.iter_mut() {
            let Slot::Ready(ready) = slot else { continue };
            let index = ready.partition.index;
            let tp = TopicPartition::new(name.as_str(), index);
            let Some(&code) = unverified.get(&tp) else {
                continue;
            };
            let (error, message) = errors::unverified(code);
            if error != ResponseError::NotEnoughReplicas {
                if let Some(guard) = ready.verification {
                    ready
                        .partition
                        .end_transaction_verification(producer_id, guard)
                        .await;
                }
            }
            tracing::debug!(peer = %ctx.peer, transactional_id, topic = %name.as_str(), partition = index,
                producer_id, producer_epoch, ?code, "transactional produce not verified");
            *slot = Slot::Done(failed(index, error, Some(message)));
        }
    }
}

fn slot_index(slot: &Slot) -> i32 {
    match slot {
        Slot::Done(outcome) => outcome.index,
        Slot::Ready(ready) => ready.partition.index,
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

/// Appends one partition's records (phase one of the produce).
async fn append(ctx: &RequestContext, name: &str, acks: i16, ready: Ready) -> Outcome {
    let Ready {
        partition,
        records,
        verification,
        ..
    } = ready;
    let index = partition.index;
    let fail = |error: ResponseError, message: Option<String>| failed(index, error, message);
    // One copy: the log patches offsets into the bytes it stores. A topic with its own
    // compression.type stores every batch in that codec, as Kafka's LogValidator does.
    let copied = match partition.log.compression() {
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
            return fail(errors::recompress(&e), Some(e.to_string()));
        }
    };
    let min_insync = min_insync_replicas(ctx, name);
    // Kafka checks the ISR before appending, for acks=all only.
    let isr = partition.isr_size();
    if acks == -1 && isr < min_insync {
        return fail(
            ResponseError::NotEnoughReplicas,
            Some(format!(
                "The size of the current ISR {isr} is insufficient to satisfy the \
                 min.isr requirement of {min_insync} for partition {name}-{index}"
            )),
        );
    }
    let leader_epoch = partition.leader_epoch();
    // Only an acks=1 answer shows offsets before they are synced.
    let result = partition
        .append_from_client(&mut bytes, acks == 1, verification)
        .await;
    match result {
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
            if let ProduceError::Append(AppendError::InvalidBatch(_)) | ProduceError::Sequence(_) =
                e
            {
                tracing::debug!(peer = %ctx.peer, topic = %name, partition = index, %e, "refused a produce");
            }
            let mut outcome = fail(errors::produce(&e), Some(e.to_string()));
            if let ProduceError::Append(AppendError::InvalidRecords(records)) = &e {
                outcome.record_errors = records.clone();
            }
            outcome
        }
    }
}

pub async fn handle(ctx: &RequestContext, request: ProduceRequest) -> Reply {
    let acks = request.acks;
    let valid_acks = matches!(acks, -1..=1);
    // A request without a timeout (0, as some test tools send) waits for as long as it takes,
    // as it did before replication: the connection's own deadline bounds it.
    let timeout = (request.timeout_ms > 0)
        .then(|| std::time::Duration::from_millis(request.timeout_ms as u64));
    // KIP-890 part 1 for every transactional batch: the verification needs the producer's
    // transactional id, so a transactional batch without one is refused as Kafka's
    // `handleProduceRequest` refuses it, the whole request TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    // (otherwise a batch could open a transaction on the partition that no coordinator knows
    // of, and nobody would ever end it).
    let missing_transactional_id =
        request.transactional_id.is_none() && has_transactional_batch(&request);
    let mut slots: Vec<(TopicName, Vec<Slot>)> = Vec::new();
    for topic in request.topic_data {
        let name = topic.name.as_str();
        let mut topic_slots = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            let index = data.index;
            if missing_transactional_id {
                topic_slots.push(Slot::Done(failed(
                    index,
                    ResponseError::TransactionalIdAuthorizationFailed,
                    Some(
                        "a transactional batch in a produce request without a transactional id"
                            .into(),
                    ),
                )));
                continue;
            }
            if !valid_acks {
                topic_slots.push(Slot::Done(failed(
                    index,
                    ResponseError::InvalidRequiredAcks,
                    Some(format!("acks must be -1, 0 or 1, not {acks}")),
                )));
                continue;
            }
            let partition = match ctx.broker.leader_partition(name, index) {
                Ok(partition) => partition,
                Err(e) => {
                    let mut outcome = failed(index, errors::route(&e), None);
                    if let RouteError::NotLeader {
                        leader,
                        leader_epoch,
                    } = e
                    {
                        outcome.current_leader = Some((leader, leader_epoch));
                    }
                    topic_slots.push(Slot::Done(outcome));
                    continue;
                }
            };
            let Some(records) = data.records else {
                topic_slots.push(Slot::Done(failed(
                    index,
                    ResponseError::CorruptMessage,
                    Some("null record set".into()),
                )));
                continue;
            };
            // A batch that does not parse is refused by the append with the right code.
            let transactional = BatchHeader::parse(&records)
                .ok()
                .filter(|h| h.is_transactional());
            topic_slots.push(Slot::Ready(Ready {
                partition,
                records,
                transactional,
                verification: None,
            }));
        }
        slots.push((topic.name, topic_slots));
    }
    if let Some(id) = &request.transactional_id {
        verify_transactional(ctx, id.as_str(), timeout, &mut slots).await;
    }
    // The appends, in request order.
    let mut topics: Vec<(TopicName, Vec<Outcome>)> = Vec::with_capacity(slots.len());
    for (name, topic_slots) in slots {
        let mut outcomes = Vec::with_capacity(topic_slots.len());
        for slot in topic_slots {
            outcomes.push(match slot {
                Slot::Done(outcome) => outcome,
                Slot::Ready(ready) => append(ctx, name.as_str(), acks, ready).await,
            });
        }
        topics.push((name, outcomes));
    }
    let version = ctx.version;
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
