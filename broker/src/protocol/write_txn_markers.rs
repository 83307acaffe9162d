//! WriteTxnMarkers (v1): a transaction coordinator on another broker asks this one to end a
//! transaction on the partitions it leads. Each marker is appended and awaited on the
//! partition's in-sync replicas ([`crate::broker::Broker::write_marker_here`]); errors are per
//! partition (NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, INVALID_PRODUCER_EPOCH,
//! TRANSACTION_COORDINATOR_FENCED, KAFKA_STORAGE_ERROR) and the coordinator retries what it
//! must.

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::RequestContext;

pub async fn handle(
    ctx: &RequestContext,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let mut markers = Vec::with_capacity(request.markers.len());
    for marker in request.markers {
        let mut topics = Vec::with_capacity(marker.topics.len());
        for topic in marker.topics {
            let mut partitions = Vec::with_capacity(topic.partition_indexes.len());
            for index in topic.partition_indexes {
                let written = ctx
                    .broker
                    .write_marker_here(
                        topic.name.as_str(),
                        index,
                        marker.producer_id.0,
                        marker.producer_epoch,
                        marker.transaction_result,
                        marker.coordinator_epoch,
                    )
                    .await;
                let error_code = match written {
                    Ok(()) => 0,
                    Err(e) => {
                        tracing::debug!(peer = %ctx.peer, topic = topic.name.as_str(), partition = index, %e,
                            "marker not written");
                        e.code().code()
                    }
                };
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(index)
                        .with_error_code(error_code),
                );
            }
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(topic.name)
                    .with_partitions(partitions),
            );
        }
        markers.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(marker.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(markers)
}
