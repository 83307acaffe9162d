//! The one place where the broker's per-operation errors become Kafka error codes.

use kafka_protocol::error::ResponseError;

use crate::broker::{CreateTopicError, TopicChangeError};
use crate::compression::RecompressError;
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

pub fn create_topic(e: &CreateTopicError) -> ResponseError {
    match e {
        CreateTopicError::InvalidName(..) | CreateTopicError::Collides { .. } => {
            ResponseError::InvalidTopicException
        }
        CreateTopicError::Exists(_) => ResponseError::TopicAlreadyExists,
        CreateTopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        CreateTopicError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        CreateTopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
        CreateTopicError::Storage(_) => ResponseError::KafkaStorageError,
    }
}

pub fn topic_change(e: &TopicChangeError) -> ResponseError {
    match e {
        TopicChangeError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        TopicChangeError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        TopicChangeError::InvalidConfig(_) => ResponseError::InvalidConfig,
        TopicChangeError::Storage(_) => ResponseError::KafkaStorageError,
    }
}

pub fn produce(e: &ProduceError) -> ResponseError {
    match e {
        ProduceError::Append(e) => append(e),
        ProduceError::Sequence(e) => sequence(e),
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
    }
}

/// InitProducerId without an id to give. Kafka answers COORDINATOR_LOAD_IN_PROGRESS while its
/// producer-id manager waits for a new block; every client retries it.
pub fn allocate_producer_id(e: &AllocateError) -> ResponseError {
    match e {
        AllocateError::Storage(_) => ResponseError::CoordinatorLoadInProgress,
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
