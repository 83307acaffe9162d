//! The client's connections: [`wire::connection`] speaking the versions in [`CLIENT_VERSIONS`].

use kafka_protocol::messages::ApiKey;

pub use wire::connection::{
    ConnectError, Connection, ConnectionConfig, OutgoingRequest, Release, RequestError, RequestHold,
};

use crate::cluster::ClientConfig;

/// Opens a connection to `addr` as `config` says (its timeouts, and the network's hold on its
/// requests when the simulator installed one).
pub async fn open(addr: &str, config: &ClientConfig) -> Result<Connection, ConnectError> {
    let mut connection =
        Connection::connect(addr, config.connection.clone(), CLIENT_VERSIONS).await?;
    connection.set_hold(config.hold.clone());
    Ok(connection)
}

/// The versions this client can speak, per API: (API, lowest, highest). The request builders
/// set only fields that exist in every version of these ranges (or leave them at defaults).
pub const CLIENT_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 10),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 5),
    (ApiKey::DeleteTopics, 1, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::CreatePartitions, 0, 3),
    // From v1, which carries the election type.
    (ApiKey::ElectLeaders, 1, 2),
    // v0 allows any change of size; v1 carries allow_replication_factor_change (KIP-860).
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::InitProducerId, 0, 4),
    // Group admin (`admin.rs`): FindCoordinator v1–3 (one `key`), OffsetFetch v2–7 (one
    // `group_id`, null topics = all), OffsetCommit v2–9 (topic names, not ids).
    (ApiKey::FindCoordinator, 1, 3),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 2, 7),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    // Group membership (`group_consumer.rs`): JoinGroup from v1 (rebalance timeout; v4 adds
    // KIP-394, v5 group.instance.id), SyncGroup, Heartbeat and LeaveGroup in every version
    // (v3+ of each carries group.instance.id; LeaveGroup v3+ names members in a batch).
    (ApiKey::JoinGroup, 1, 7),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    // Transactions (`transaction.rs`): the client's forms (AddPartitionsToTxn v0–3 with one
    // transactional id; TxnOffsetCommit v3 adds the group generation, left at -1).
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::EndTxn, 0, 3),
];
