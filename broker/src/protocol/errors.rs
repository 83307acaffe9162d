//! The one place where the broker's per-operation errors become Kafka error codes.

use kafka_protocol::error::ResponseError;

use crate::broker::{AdminError, RouteError};
use crate::compression::RecompressError;
use crate::controller::request::{ControllerError, ElectionError, ReassignmentError, TopicError};
use crate::log::batch::BatchError;
use crate::log::{AppendError, DeleteRecordsError, ReadError};
use crate::partition::ProduceError;
use crate::txn::producer_id::AllocateError;
use crate::txn::producer_state::SequenceError;

pub fn append(e: &AppendError) -> ResponseError {
    match e {
        AppendError::InvalidBatch(BatchError::BadMagic(_)) => {
            ResponseError::UnsupportedForMessageFormat
        }
        AppendError::InvalidBatch(BatchError::InconsistentCount { .. }) => {
            ResponseError::InvalidRecord
        }
        AppendError::InvalidBatch(_) => ResponseError::CorruptMessage,
        AppendError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        AppendError::InvalidRecords(_) => ResponseError::InvalidRecord,
        AppendError::Offline(_) => ResponseError::KafkaStorageError,
    }
}

/// A produced batch that could not be re-encoded in its topic's `compression.type`.
pub fn recompress(e: &RecompressError) -> ResponseError {
    match e {
        RecompressError::InvalidBatch(e) => append(&AppendError::InvalidBatch(e.clone())),
        RecompressError::UnknownCodec(_) | RecompressError::Decompress { .. } => {
            ResponseError::CorruptMessage
        }
        RecompressError::TooLarge { .. } => ResponseError::MessageTooLarge,
        RecompressError::MalformedRecords(_) => ResponseError::InvalidRecord,
    }
}

pub fn read(e: &ReadError) -> ResponseError {
    match e {
        ReadError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        ReadError::Corrupt { .. } | ReadError::Offline(_) | ReadError::Io(_) => {
            ResponseError::KafkaStorageError
        }
    }
}

pub fn delete_records(e: &DeleteRecordsError) -> ResponseError {
    match e {
        DeleteRecordsError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        DeleteRecordsError::Offline(_) => ResponseError::KafkaStorageError,
    }
}

/// A topic or config resource the controller refused.
pub fn topic(e: &TopicError) -> ResponseError {
    match e {
        TopicError::InvalidTopic(_) => ResponseError::InvalidTopicException,
        TopicError::AlreadyExists(_) => ResponseError::TopicAlreadyExists,
        TopicError::UnknownTopic => ResponseError::UnknownTopicOrPartition,
        TopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        TopicError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        TopicError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        TopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
        TopicError::InvalidRequest(_) => ResponseError::InvalidRequest,
    }
}

/// One partition's ElectLeaders outcome.
pub fn election(e: &ElectionError) -> ResponseError {
    match e {
        ElectionError::UnknownTopicOrPartition(_) => ResponseError::UnknownTopicOrPartition,
        ElectionError::ElectionNotNeeded => ResponseError::ElectionNotNeeded,
        ElectionError::PreferredLeaderNotAvailable => ResponseError::PreferredLeaderNotAvailable,
        ElectionError::EligibleLeadersNotAvailable => ResponseError::EligibleLeadersNotAvailable,
    }
}

/// One partition's AlterPartitionReassignments outcome.
pub fn reassignment(e: &ReassignmentError) -> ResponseError {
    match e {
        ReassignmentError::UnknownTopicOrPartition(_) => ResponseError::UnknownTopicOrPartition,
        ReassignmentError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        ReassignmentError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        ReassignmentError::NoReassignmentInProgress => ResponseError::NoReassignmentInProgress,
    }
}

/// A request to the active controller that failed as a whole. Kafka answers a forwarded admin
/// request whose controller is unreachable with REQUEST_TIMED_OUT (retriable: nothing of it was
/// committed, or all of it and a retry sees it).
pub fn controller(e: &ControllerError) -> ResponseError {
    match e {
        ControllerError::NotController(_) => ResponseError::NotController,
        ControllerError::Unavailable(_) => ResponseError::RequestTimedOut,
        ControllerError::StaleBrokerEpoch { .. } => ResponseError::StaleBrokerEpoch,
        ControllerError::NotRegistered(_) => ResponseError::BrokerIdNotRegistered,
        ControllerError::DuplicateRegistration(_) => ResponseError::DuplicateBrokerRegistration,
        ControllerError::ProducerIdsExhausted => ResponseError::UnknownServerError,
    }
}

/// An admin change through the broker (create, delete, grow a topic, change configs).
pub fn admin(e: &AdminError) -> ResponseError {
    match e {
        AdminError::Topic(e) => topic(e),
        AdminError::Controller(e) => controller(e),
        AdminError::Storage(_) => ResponseError::KafkaStorageError,
    }
}

/// A partition request that this broker cannot serve as leader.
pub fn route(e: &RouteError) -> ResponseError {
    match e {
        RouteError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        RouteError::NotLeader { .. } => ResponseError::NotLeaderOrFollower,
        RouteError::LeaderNotAvailable => ResponseError::LeaderNotAvailable,
        RouteError::NotOpen => ResponseError::KafkaStorageError,
    }
}

pub fn produce(e: &ProduceError) -> ResponseError {
    match e {
        ProduceError::Append(e) => append(e),
        ProduceError::Sequence(e) => sequence(e),
        ProduceError::NotLeader => ResponseError::NotLeaderOrFollower,
        ProduceError::Marker(e) => marker(e),
    }
}

/// Kafka's codes for a refused transaction marker (`ProducerAppendInfo.appendEndTxnMarker`).
pub fn marker(e: &crate::txn::producer_state::MarkerRefused) -> ResponseError {
    use crate::txn::producer_state::MarkerRefused;
    match e {
        MarkerRefused::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        MarkerRefused::CoordinatorFenced { .. } => ResponseError::TransactionCoordinatorFenced,
        MarkerRefused::NoProducer { .. } => ResponseError::InvalidRequest,
    }
}

/// An acks=all produce that did not reach the in-sync replicas.
pub fn replication_wait(e: &crate::partition::ReplicationWaitError) -> ResponseError {
    use crate::partition::ReplicationWaitError;
    match e {
        ReplicationWaitError::Append(e) => append(e),
        ReplicationWaitError::NotLeader => ResponseError::NotLeaderOrFollower,
        ReplicationWaitError::NotEnoughReplicasAfterAppend { .. } => {
            ResponseError::NotEnoughReplicasAfterAppend
        }
    }
}

/// A follower's fetch position the leader could not record.
pub fn follower_fetch(e: &crate::partition::FollowerFetchError) -> ResponseError {
    use crate::partition::FollowerFetchError;
    match e {
        FollowerFetchError::NotLeader
        | FollowerFetchError::NotAReplica(_)
        | FollowerFetchError::StaleBrokerEpoch(_) => ResponseError::NotLeaderOrFollower,
        FollowerFetchError::OutOfRange { .. } => ResponseError::OffsetOutOfRange,
    }
}

/// Kafka's codes for the idempotent producer's checks (`ProducerAppendInfo`, `LogValidator`).
pub fn sequence(e: &SequenceError) -> ResponseError {
    match e {
        SequenceError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        SequenceError::NewEpochNotAtZero { .. } | SequenceError::OutOfOrder { .. } => {
            ResponseError::OutOfOrderSequenceNumber
        }
        SequenceError::MissingSequence { .. } => ResponseError::InvalidRecord,
        SequenceError::InvalidTxnState { .. } | SequenceError::NotVerified { .. } => {
            ResponseError::InvalidTxnState
        }
        SequenceError::PastVerifiedSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
    }
}

/// A transactional batch whose partition the coordinator did not verify (KIP-890 part 1):
/// `code` is the coordinator's answer for the partition (or what stood for it: NETWORK_EXCEPTION
/// for no answer), already mapped as Kafka's `AddPartitionsToTxnManager` maps it for a produce
/// below v11. Answered as Kafka's `ReplicaManager.handleProduceAppend` does: the retriable
/// failures become NOT_ENOUGH_REPLICAS, which every client retries without a metadata refresh
/// (older clients do not retry CONCURRENT_TRANSACTIONS or NOT_COORDINATOR on a produce).
pub fn unverified(code: ResponseError) -> (ResponseError, String) {
    match code {
        ResponseError::InvalidTxnState => (
            code,
            "Partition was not added to the transaction".to_string(),
        ),
        ResponseError::ConcurrentTransactions
        | ResponseError::NetworkException
        | ResponseError::CoordinatorLoadInProgress
        | ResponseError::CoordinatorNotAvailable
        | ResponseError::NotCoordinator => (
            ResponseError::NotEnoughReplicas,
            format!(
                "Unable to verify the partition has been added to the transaction. \
                 Underlying error: {code:?}"
            ),
        ),
        other => (other, other.to_string()),
    }
}

/// InitProducerId without an id to give. Kafka answers COORDINATOR_LOAD_IN_PROGRESS while its
/// producer-id manager waits for a new block from the controller; every client retries it.
pub fn allocate_producer_id(e: &AllocateError) -> ResponseError {
    match e {
        AllocateError::Unavailable(_) => ResponseError::CoordinatorLoadInProgress,
        AllocateError::Exhausted => ResponseError::UnknownServerError,
    }
}

pub fn group(e: &crate::group::machine::GroupError) -> ResponseError {
    use crate::group::machine::GroupError;
    match e {
        GroupError::MemberIdRequired(_) => ResponseError::MemberIdRequired,
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::IllegalGeneration { .. } => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::InvalidSessionTimeout(_) => ResponseError::InvalidSessionTimeout,
        GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        GroupError::NotCoordinator => ResponseError::NotCoordinator,
        GroupError::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
        GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
    }
}

/// A write to `__consumer_offsets` that was not acknowledged: refused by the group's shard (or
/// its shard unloaded meanwhile), or not taken by the log.
pub fn group_write(e: &crate::group::WriteError) -> ResponseError {
    match e {
        crate::group::WriteError::Group(e) => group(e),
        crate::group::WriteError::Storage(e) => offset_write(e),
    }
}

/// A failed append of offset records to `__consumer_offsets`, as Kafka's coordinator maps it
/// (`GroupMetadataManager.storeOffsets`): the client retries the commit.
pub fn offset_write(e: &ProduceError) -> ResponseError {
    match e {
        ProduceError::Append(AppendError::MessageTooLarge { .. }) => {
            ResponseError::InvalidCommitOffsetSize
        }
        _ => ResponseError::CoordinatorNotAvailable,
    }
}

/// A transaction coordinator's refusal. `version_fences` is whether the request's version
/// knows PRODUCER_FENCED (KIP-588: InitProducerId v4+, AddPartitionsToTxn, AddOffsetsToTxn and
/// EndTxn v2+); older clients get INVALID_PRODUCER_EPOCH for it, as Kafka answers them.
pub fn txn(e: &crate::txn::coordinator::machine::TxnError, version_fences: bool) -> ResponseError {
    use crate::txn::coordinator::machine::TxnError;
    match e {
        TxnError::NotCoordinator => ResponseError::NotCoordinator,
        TxnError::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
        TxnError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        TxnError::InvalidTransactionTimeout(..) => ResponseError::InvalidTransactionTimeout,
        TxnError::ConcurrentTransactions => ResponseError::ConcurrentTransactions,
        TxnError::ProducerFenced { .. } if version_fences => ResponseError::ProducerFenced,
        TxnError::ProducerFenced { .. } => ResponseError::InvalidProducerEpoch,
        TxnError::InvalidProducerIdMapping { .. } => ResponseError::InvalidProducerIdMapping,
        TxnError::InvalidTxnState(..) => ResponseError::InvalidTxnState,
        TxnError::UnknownTransactionalId(_) => ResponseError::TransactionalIdNotFound,
    }
}
