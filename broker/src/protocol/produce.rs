//! Produce: append each partition's record set in request order, then answer by acks.
//!
//! - acks=0: appended, no response.
//! - acks=1: answered once the batches are in the log (not yet synced). A crash can lose them,
//!   as Kafka documents for acks=1.
//! - acks=all: answered once the batches are durable (group commit under the durable policy).
//!
//! Batches from idempotent producers are checked by the partition (`txn::producer_state`): a
//! retry of a batch already in the log is answered with the original's base offset and error
//! NONE, as Kafka does, and waits for the original's durability under acks=all.
//!
//! The appends themselves (phase one) run inline in the connection's request order, so two
//! produce requests on one connection land in the order they were sent.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{errors, Reply, RequestContext};
use crate::compression;
use crate::log::{AppendError, AppendInfo};
use crate::partition::Partition;
use crate::partition::ProduceError;

struct Outcome {
    index: i32,
    result: Result<AppendInfo, (ResponseError, Option<String>)>,
    partition: Option<Arc<Partition>>,
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
                response = response.with_error_message(message.clone().map(StrBytes::from_string));
            }
        }
    }
    response
}

fn response(version: i16, topics: &[(TopicName, Vec<Outcome>)]) -> ProduceResponse {
    ProduceResponse::default().with_responses(
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

pub async fn handle(ctx: &RequestContext, request: ProduceRequest) -> Reply {
    let acks = request.acks;
    let valid_acks = matches!(acks, -1..=1);
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
            };
            if !valid_acks {
                outcomes.push(fail(
                    ResponseError::InvalidRequiredAcks,
                    Some(format!("acks must be -1, 0 or 1, not {acks}")),
                ));
                continue;
            }
            if request.transactional_id.is_some() {
                outcomes.push(fail(
                    ResponseError::TransactionalIdAuthorizationFailed,
                    Some("transactions are not supported yet".into()),
                ));
                continue;
            }
            let Some(partition) = ctx.broker.partition(&name, index) else {
                outcomes.push(fail(ResponseError::UnknownTopicOrPartition, None));
                continue;
            };
            let Some(records) = data.records else {
                outcomes.push(fail(
                    ResponseError::CorruptMessage,
                    Some("null record set".into()),
                ));
                continue;
            };
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
            let result = partition.append(&mut bytes).await;
            outcomes.push(match result {
                Ok(info) => Outcome { index, result: Ok(info), partition: Some(partition) },
                Err(e) => {
                    if let ProduceError::Append(AppendError::InvalidBatch(_)) | ProduceError::Sequence(_) = e {
                        tracing::debug!(peer = %ctx.peer, topic = %name, partition = index, %e, "refused a produce");
                    }
                    fail(errors::produce(&e), Some(e.to_string()))
                }
            });
        }
        topics.push((topic.name, outcomes));
    }
    let version = ctx.version;
    match acks {
        0 => Reply::None,
        -1 => ctx.later(async move {
            for (_, outcomes) in &mut topics {
                for outcome in outcomes.iter_mut() {
                    if let (Ok(info), Some(partition)) = (&outcome.result, &outcome.partition) {
                        if let Err(e) = partition.wait_durable(info).await {
                            outcome.result = Err((errors::append(&e), Some(e.to_string())));
                        }
                    }
                }
            }
            response(version, &topics)
        }),
        _ => ctx.now(&response(version, &topics)),
    }
}
