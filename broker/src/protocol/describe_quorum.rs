//! DescribeQuorum (KIP-595; v2 adds the nodes, KIP-853): the metadata quorum as this node knows
//! it. `faultline cluster describe` reads it, as `kafka-metadata-quorum.sh describe` does.
//!
//! Kafka answers it on the active controller only (brokers forward it there). Every Faultline
//! node holds a replica of the metadata log, so any node answers from its own view: the leader,
//! its term, the committed offset, the voters, and every other registered broker as an
//! observer. A replica's log end is known only for this node (-1, Kafka's "unknown", for the
//! others) until the quorum reports its followers' progress.
//!
//! Broker epochs and fencing have no field in Kafka's schema; they ride on each node of the v2
//! answer as tagged fields ([`TAG_BROKER_EPOCH`], [`TAG_FENCED`]), which Kafka's clients skip as
//! unknown tags, as the flexible versions intend.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};
use kafka_protocol::protocol::StrBytes;

use crate::controller::image::ClusterImage;
use crate::controller::plane::QuorumStatus;
use crate::controller::NodeId;

/// The metadata log's topic name, as KRaft calls it; its only partition is 0.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// Tag of a node's broker epoch (8 bytes, big-endian) in a DescribeQuorum v2 node. Far above
/// the tags Kafka's schemas use, so a future Kafka field cannot collide with it.
pub const TAG_BROKER_EPOCH: i32 = 10_000;
/// Tag of a node's fencing (one byte, 1 = fenced) in a DescribeQuorum v2 node.
pub const TAG_FENCED: i32 = 10_001;

/// The broker epoch a node entry carries, if any.
pub fn broker_epoch(tags: &BTreeMap<i32, Bytes>) -> Option<i64> {
    let bytes: [u8; 8] = tags.get(&TAG_BROKER_EPOCH)?.as_ref().try_into().ok()?;
    Some(i64::from_be_bytes(bytes))
}

/// Whether a node entry says it is fenced, if it says.
pub fn fenced(tags: &BTreeMap<i32, Bytes>) -> Option<bool> {
    match tags.get(&TAG_FENCED)?.as_ref() {
        [0] => Some(false),
        [1] => Some(true),
        _ => None,
    }
}

/// Answers `request` at `version` from this node's quorum status and image.
pub fn describe_quorum(
    request: &DescribeQuorumRequest,
    version: i16,
    this_node: NodeId,
    status: &QuorumStatus,
    image: &ClusterImage,
) -> DescribeQuorumResponse {
    let asks_for_metadata = request.topics.len() == 1
        && request.topics[0].topic_name.as_str() == METADATA_TOPIC
        && request.topics[0].partitions.len() == 1
        && request.topics[0].partitions[0].partition_index == 0;
    if !asks_for_metadata {
        // As Kafka: every partition asked for gets UNKNOWN_TOPIC_OR_PARTITION.
        let topics = request
            .topics
            .iter()
            .map(|t| {
                TopicData::default()
                    .with_topic_name(t.topic_name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                PartitionData::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            })
                            .collect(),
                    )
            })
            .collect();
        return DescribeQuorumResponse::default().with_topics(topics);
    }
    let replica = |id: NodeId| {
        let log_end_offset = if id == this_node {
            status.applied_offset
        } else {
            -1
        };
        ReplicaState::default()
            .with_replica_id(BrokerId(id))
            .with_log_end_offset(log_end_offset)
    };
    let voters: Vec<ReplicaState> = status.voters.iter().map(|&id| replica(id)).collect();
    let observers: Vec<ReplicaState> = image
        .brokers
        .keys()
        .filter(|id| !status.voters.contains(id))
        .map(|&id| replica(id))
        .collect();
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(status.active_controller.unwrap_or(-1)))
        .with_leader_epoch(i32::try_from(status.term).unwrap_or(i32::MAX))
        .with_high_watermark(status.committed_offset)
        .with_current_voters(voters)
        .with_observers(observers);
    let mut response = DescribeQuorumResponse::default().with_topics(vec![TopicData::default()
        .with_topic_name(request.topics[0].topic_name.clone())
        .with_partitions(vec![partition])]);
    if version >= 2 {
        response.nodes = image
            .brokers
            .values()
            .map(|b| {
                let listeners = b
                    .controller_endpoint
                    .iter()
                    .map(|e| {
                        Listener::default()
                            .with_name(StrBytes::from_static_str("CONTROLLER"))
                            .with_host(StrBytes::from_string(e.host.clone()))
                            .with_port(e.port)
                    })
                    .collect();
                let mut node = Node::default()
                    .with_node_id(BrokerId(b.id))
                    .with_listeners(listeners);
                node.unknown_tagged_fields.insert(
                    TAG_BROKER_EPOCH,
                    Bytes::copy_from_slice(&b.epoch.to_be_bytes()),
                );
                node.unknown_tagged_fields.insert(
                    TAG_FENCED,
                    Bytes::from_static(if b.fenced { &[1] } else { &[0] }),
                );
                node
            })
            .collect();
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::image::{BrokerRegistration, Endpoint};
    use bytes::BytesMut;
    use kafka_protocol::messages::describe_quorum_request;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::{Decodable, Encodable};

    fn registration(id: NodeId, epoch: i64, fenced: bool) -> BrokerRegistration {
        BrokerRegistration {
            id,
            incarnation_id: uuid::Uuid::from_u128(id as u128),
            epoch,
            endpoint: Endpoint {
                host: "127.0.0.1".into(),
                port: 9092 + 100 * (id as u16 - 1),
            },
            controller_endpoint: Some(Endpoint {
                host: "127.0.0.1".into(),
                port: 9093 + 100 * (id as u16 - 1),
            }),
            rack: None,
            fenced,
            shutting_down: false,
            registered_offset: 0,
        }
    }

    fn request(topic: &str, partition: i32) -> DescribeQuorumRequest {
        DescribeQuorumRequest::default().with_topics(vec![
            describe_quorum_request::TopicData::default()
                .with_topic_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![describe_quorum_request::PartitionData::default()
                    .with_partition_index(partition)]),
        ])
    }

    /// Encoded and decoded at `version`, as a client reads it.
    fn round_trip(response: &DescribeQuorumResponse, version: i16) -> DescribeQuorumResponse {
        let mut buf = BytesMut::new();
        response.encode(&mut buf, version).expect("encodes");
        DescribeQuorumResponse::decode(&mut buf.freeze(), version).expect("decodes")
    }

    #[test]
    fn the_quorum_is_described_from_this_nodes_view_with_broker_epochs_as_tagged_fields() {
        let mut image = ClusterImage::empty();
        for (id, epoch, fenced) in [(1, 5, false), (2, 7, false), (3, 9, false), (4, 11, true)] {
            image.brokers.insert(id, registration(id, epoch, fenced));
        }
        let status = QuorumStatus {
            active_controller: Some(2),
            term: 3,
            voters: vec![1, 2, 3],
            committed_offset: 42,
            applied_offset: 40,
        };
        let answer = describe_quorum(&request(METADATA_TOPIC, 0), 2, 1, &status, &image);
        let answer = round_trip(&answer, 2);
        assert_eq!(answer.error_code, 0);
        let p = &answer.topics[0].partitions[0];
        assert_eq!((p.error_code, p.leader_id.0, p.leader_epoch), (0, 2, 3));
        assert_eq!(p.high_watermark, 42);
        let ends = |rs: &[ReplicaState]| -> Vec<(i32, i64)> {
            rs.iter()
                .map(|r| (r.replica_id.0, r.log_end_offset))
                .collect()
        };
        // Only this node's (1) log end is known here.
        assert_eq!(ends(&p.current_voters), [(1, 40), (2, -1), (3, -1)]);
        assert_eq!(ends(&p.observers), [(4, -1)]);
        let nodes: Vec<(i32, Option<i64>, Option<bool>, u16)> = answer
            .nodes
            .iter()
            .map(|n| {
                (
                    n.node_id.0,
                    broker_epoch(&n.unknown_tagged_fields),
                    fenced(&n.unknown_tagged_fields),
                    n.listeners[0].port,
                )
            })
            .collect();
        assert_eq!(
            nodes,
            [
                (1, Some(5), Some(false), 9093),
                (2, Some(7), Some(false), 9193),
                (3, Some(9), Some(false), 9293),
                (4, Some(11), Some(true), 9393)
            ]
        );
        // v0 and v1 have no nodes: the answer still encodes, without them.
        for version in [0, 1] {
            let old = round_trip(
                &describe_quorum(&request(METADATA_TOPIC, 0), version, 1, &status, &image),
                version,
            );
            assert!(old.nodes.is_empty());
            assert_eq!(old.topics[0].partitions[0].high_watermark, 42);
        }
    }

    #[test]
    fn a_partition_other_than_the_metadata_logs_is_unknown() {
        let status = QuorumStatus {
            active_controller: None,
            term: 0,
            voters: vec![1],
            committed_offset: -1,
            applied_offset: -1,
        };
        for request in [request("orders", 0), request(METADATA_TOPIC, 1)] {
            let answer = describe_quorum(&request, 2, 1, &status, &ClusterImage::empty());
            assert_eq!(
                answer.topics[0].partitions[0].error_code,
                ResponseError::UnknownTopicOrPartition.code()
            );
        }
    }
}
