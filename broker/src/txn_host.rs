//! The broker as the transaction coordinator's [`TxnHost`]: producer ids from the controller's
//! blocks, and the markers that end a transaction written on its partitions. A marker for a
//! partition this broker leads is appended directly ([`Broker::write_marker_here`]); the
//! markers for partitions other brokers lead go to each leader in one WriteTxnMarkers request
//! (Kafka's `TransactionMarkerChannelManager`, without its queue: the coordinator's completion
//! task retries what failed). Either way a marker counts as written once it is durable on the
//! partition's in-sync replicas (WriteTxnMarkers appends with acks=-1 in Kafka too), so a
//! transaction completed in `__transaction_state` never loses a marker to a leader change.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{ApiKey, ProducerId, TopicName, WriteTxnMarkersRequest};
use kafka_protocol::protocol::StrBytes;
use wire::{Connection, ConnectionConfig};

use crate::broker::{Broker, RouteError};
use crate::group::offsets::OFFSETS_TOPIC;
use crate::partition::{ProduceError, ReplicationWaitError};
use crate::txn::coordinator::machine::TopicPartition;
use crate::txn::coordinator::{BoxFuture, Markers, TxnHost};
use crate::txn::marker::{ControlType, Marker};
use crate::txn::producer_id::AllocateError;
use crate::txn::producer_state::MarkerRefused;

/// What the coordinator speaks to other brokers.
const SPEAKS: &[(ApiKey, i16, i16)] = &[(ApiKey::WriteTxnMarkers, 1, 1)];
/// How long a marker waits for the partition's in-sync replicas.
const MARKER_REPLICATION_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a marker was not written on a partition here (WriteTxnMarkers' per-partition errors).
#[derive(Debug, thiserror::Error)]
pub enum MarkerWriteError {
    #[error("no such partition")]
    UnknownTopicOrPartition,
    #[error("this broker does not lead the partition")]
    NotLeader,
    #[error(transparent)]
    Refused(#[from] MarkerRefused),
    #[error("storage: {0}")]
    Storage(ProduceError),
    #[error("the in-sync replicas did not get the marker in time")]
    NotReplicated,
}

impl MarkerWriteError {
    /// Kafka's code for it (WriteTxnMarkers' partition error).
    pub fn code(&self) -> ResponseError {
        match self {
            MarkerWriteError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
            MarkerWriteError::NotLeader => ResponseError::NotLeaderOrFollower,
            MarkerWriteError::Refused(refused) => crate::protocol::errors::marker(refused),
            MarkerWriteError::Storage(_) => ResponseError::KafkaStorageError,
            MarkerWriteError::NotReplicated => ResponseError::RequestTimedOut,
        }
    }
}

/// Is a marker that failed with `code` finished with anyway? A deleted partition needs no
/// marker; one refused as older than what the partition holds will never be taken.
fn settled(code: ResponseError) -> bool {
    matches!(
        code,
        ResponseError::UnknownTopicOrPartition
            | ResponseError::InvalidProducerEpoch
            | ResponseError::TransactionCoordinatorFenced
    )
}

impl Broker {
    /// Writes one marker on a partition this broker leads and waits until its in-sync
    /// replicas hold it.
    pub async fn write_marker_here(
        &self,
        topic: &str,
        index: i32,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<(), MarkerWriteError> {
        let partition = self.leader_partition(topic, index).map_err(|e| match e {
            RouteError::UnknownTopicOrPartition => MarkerWriteError::UnknownTopicOrPartition,
            _ => MarkerWriteError::NotLeader,
        })?;
        let marker = Marker {
            control: if commit {
                ControlType::Commit
            } else {
                ControlType::Abort
            },
            coordinator_epoch,
        };
        let leader_epoch = partition.leader_epoch();
        let now = self.clock().now_ms();
        let (info, _) = partition
            .write_marker(producer_id, producer_epoch, marker, now)
            .await
            .map_err(|e| match e {
                ProduceError::Marker(refused) => MarkerWriteError::Refused(refused),
                ProduceError::NotLeader => MarkerWriteError::NotLeader,
                other => MarkerWriteError::Storage(other),
            })?;
        let wait = partition.wait_replicated(&info, leader_epoch, 1);
        let replicated = match tokio::time::timeout(MARKER_REPLICATION_TIMEOUT, wait).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(ReplicationWaitError::NotLeader)) => Err(MarkerWriteError::NotLeader),
            Ok(Err(ReplicationWaitError::Append(e))) => {
                Err(MarkerWriteError::Storage(ProduceError::Append(e)))
            }
            Ok(Err(ReplicationWaitError::NotEnoughReplicasAfterAppend { .. })) => Ok(()),
            Err(_) => Err(MarkerWriteError::NotReplicated),
        };
        if replicated.is_ok() && topic == OFFSETS_TOPIC {
            // Offsets the transaction committed (TxnOffsetCommit) become visible with it.
            self.groups()
                .complete_txn(index, producer_id, commit, info.base_offset);
        }
        replicated
    }

    /// Sends the markers of `partitions` to broker `leader`; returns those to try again.
    async fn write_markers_remote(
        &self,
        leader: i32,
        markers: &Markers,
        partitions: BTreeSet<TopicPartition>,
    ) -> BTreeSet<TopicPartition> {
        let image = self.image();
        let Some(broker) = image.brokers.get(&leader) else {
            return partitions;
        };
        let addr = format!("{}:{}", broker.endpoint.host, broker.endpoint.port);
        let config = ConnectionConfig {
            client_id: format!("faultline-txn-coordinator-{}", self.config.node_id),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
        };
        let connection = match Connection::connect(&addr, config, SPEAKS).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(leader, %e, "cannot reach a partition leader for markers");
                return partitions;
            }
        };
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in &partitions {
            by_topic.entry(&tp.topic).or_default().push(tp.partition);
        }
        let topics = by_topic
            .into_iter()
            .map(|(topic, indexes)| {
                WritableTxnMarkerTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partition_indexes(indexes)
            })
            .collect();
        let request =
            WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
                .with_producer_id(ProducerId(markers.producer_id))
                .with_producer_epoch(markers.producer_epoch)
                .with_transaction_result(markers.commit)
                .with_coordinator_epoch(markers.coordinator_epoch)
                .with_topics(topics)]);
        let response = match connection.send(&request).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(leader, %e, "WriteTxnMarkers failed");
                return partitions;
            }
        };
        let mut left = partitions;
        for result in response.markers {
            for topic in result.topics {
                for p in topic.partitions {
                    let tp = TopicPartition::new(topic.name.as_str(), p.partition_index);
                    let code = ResponseError::try_from_code(p.error_code);
                    let done = match code {
                        None => true,
                        Some(code) if settled(code) => {
                            tracing::warn!(
                                ?tp,
                                ?code,
                                "marker refused; the partition has moved on"
                            );
                            true
                        }
                        Some(_) => false,
                    };
                    if done {
                        left.remove(&tp);
                    }
                }
            }
        }
        left
    }
}

impl TxnHost for Broker {
    fn allocate_producer_id(&self) -> BoxFuture<'_, Result<i64, AllocateError>> {
        Box::pin(Broker::allocate_producer_id(self))
    }

    fn write_markers(&self, markers: Markers) -> BoxFuture<'_, BTreeSet<TopicPartition>> {
        Box::pin(async move {
            let image = self.image();
            let mut left = BTreeSet::new();
            let mut remote: BTreeMap<i32, BTreeSet<TopicPartition>> = BTreeMap::new();
            for tp in &markers.partitions {
                let Some(assignment) = image.partition(&tp.topic, tp.partition) else {
                    // Deleted since it joined the transaction: nothing to mark.
                    continue;
                };
                if assignment.leader == self.config.node_id {
                    let written = self
                        .write_marker_here(
                            &tp.topic,
                            tp.partition,
                            markers.producer_id,
                            markers.producer_epoch,
                            markers.commit,
                            markers.coordinator_epoch,
                        )
                        .await;
                    match written {
                        Ok(()) => {}
                        Err(e) if settled(e.code()) => {
                            tracing::warn!(?tp, %e, "marker refused; the partition has moved on");
                        }
                        Err(e) => {
                            tracing::debug!(?tp, %e, "marker not written; retried");
                            left.insert(tp.clone());
                        }
                    }
                } else if assignment.is_online() {
                    remote
                        .entry(assignment.leader)
                        .or_default()
                        .insert(tp.clone());
                } else {
                    left.insert(tp.clone());
                }
            }
            for (leader, partitions) in remote {
                left.extend(
                    self.write_markers_remote(leader, &markers, partitions)
                        .await,
                );
            }
            left
        })
    }
}
